package frugal.backend;

import frugal.quant.QuantFormat;
import frugal.tensor.DType;
import frugal.tensor.Tensor;

import java.lang.foreign.MemorySegment;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;

/**
 * Wraps a backend and records wall time, calls and FLOPs per op: the per-op breakdown of
 * {@code frugal bench}. Synchronizes after each op so that asynchronous backends are timed honestly.
 */
public final class ProfilingBackend implements Backend {
    private final Backend inner;
    private final Map<String, OpStats> stats = new TreeMap<>();
    private boolean enabled = true;

    /** Accumulated figures of one op (or one matmul shape). */
    public static final class OpStats {
        public long calls;
        public long nanos;
        public double flops;
    }

    public ProfilingBackend(Backend inner) {
        this.inner = inner;
    }

    public Map<String, OpStats> stats() {
        return stats;
    }

    public void reset() {
        stats.clear();
    }

    /** When off, ops pass straight through (no synchronization, no timing) and graphs can be captured. */
    public void setEnabled(boolean enabled) {
        this.enabled = enabled;
    }

    @Override
    public DType activationType() {
        return inner.activationType();
    }

    @Override
    public long peakMemory() {
        return inner.peakMemory();
    }

    @Override
    public void convert(Tensor dst, Tensor src, long n) {
        long t = start();
        inner.convert(dst, src, n);
        stop("convert", t, 0);
    }

    @Override
    public void adamw(Tensor param, Tensor grad, Tensor m, Tensor v, Tensor compute, long n, Tensor hyper, float beta1,
                      float beta2, float eps, float weightDecay, Tensor normSquared, float maxNorm) {
        long t = start();
        inner.adamw(param, grad, m, v, compute, n, hyper, beta1, beta2, eps, weightDecay, normSquared, maxNorm);
        stop("adamw", t, 0);
    }

    @Override
    public void linearForward(Tensor out, Tensor a, Tensor b, Tensor bias, int m, int n, int k) {
        long t = start();
        inner.linearForward(out, a, b, bias, m, n, k);
        stop(bias != null ? "matmul fwd (NT) + bias" : "matmul fwd (NT)", t, 2.0 * m * n * k);
    }

    @Override
    public void linearGeluForward(Tensor act, Tensor pre, Tensor a, Tensor b, Tensor bias, int m, int n, int k) {
        long t = start();
        inner.linearGeluForward(act, pre, a, b, bias, m, n, k);
        stop(bias != null ? "matmul fwd (NT) + bias + gelu" : "matmul fwd (NT) + gelu", t, 2.0 * m * n * k);
    }

    @Override
    public void linearWeightBackward(Tensor dweight, Tensor dbias, Tensor dout, Tensor a, int m, int n, int k) {
        long t = start();
        inner.linearWeightBackward(dweight, dbias, dout, a, m, n, k);
        stop(dbias != null ? "matmul dW (TN) + bias backward" : "matmul dW (TN)", t, 2.0 * m * n * k);
    }

    @Override
    public void matmulGeluBackward(Tensor dpre, Tensor dy, Tensor w, Tensor pre, int m, int n, int k) {
        long t = start();
        inner.matmulGeluBackward(dpre, dy, w, pre, m, n, k);
        stop("matmul dX (NN) + gelu backward", t, 2.0 * m * n * k);
    }

    /** Captures through the wrapped backend while profiling is off (a profiled op synchronizes, which a graph cannot). */
    @Override
    public Graph capture(Runnable work) {
        return enabled ? null : inner.capture(work);
    }

    private long start() {
        return System.nanoTime();
    }

    private void stop(String op, long t0, double flops) {
        if (!enabled) return;
        inner.synchronize();
        OpStats s = stats.computeIfAbsent(op, k -> new OpStats());
        s.calls++;
        s.nanos += System.nanoTime() - t0;
        s.flops += flops;
    }

    @Override
    public String name() {
        return inner.name();
    }

    @Override
    public Tensor allocate(DType dtype, int... shape) {
        return inner.allocate(dtype, shape);
    }

    @Override
    public void upload(Tensor dst, MemorySegment host) {
        long t = start();
        inner.upload(dst, host);
        stop("upload", t, 0);
    }

    @Override
    public void download(Tensor src, MemorySegment host) {
        long t = start();
        inner.download(src, host);
        stop("download", t, 0);
    }

    @Override
    public void zero(Tensor t) {
        long t0 = start();
        inner.zero(t);
        stop("zero", t0, 0);
    }

    @Override
    public void zero(List<Tensor> ts) {
        long t0 = start();
        inner.zero(ts);
        stop("zero (all gradients)", t0, 0);
    }

    @Override
    public void copy(Tensor dst, Tensor src) {
        long t = start();
        inner.copy(dst, src);
        stop("copy", t, 0);
    }

    @Override
    public void synchronize() {
        inner.synchronize();
    }

    @Override
    public void matmul(Tensor out, Tensor a, Tensor b, int m, int n, int k, boolean transA, boolean transB, boolean accumulate) {
        long t = start();
        inner.matmul(out, a, b, m, n, k, transA, transB, accumulate);
        String kind = transA ? "matmul dW (TN)" : transB ? "matmul fwd (NT)" : "matmul dX (NN)";
        stop(kind, t, 2.0 * m * n * k);
    }

    @Override
    public void addBias(Tensor out, Tensor bias, int rows, int cols) {
        long t = start();
        inner.addBias(out, bias, rows, cols);
        stop("bias", t, 0);
    }

    @Override
    public void biasBackward(Tensor dbias, Tensor dout, int rows, int cols) {
        long t = start();
        inner.biasBackward(dbias, dout, rows, cols);
        stop("bias backward", t, 0);
    }

    @Override
    public void layerNormForward(Tensor out, Tensor mean, Tensor rstd, Tensor x, Tensor weight, Tensor bias, int rows, int cols, float eps) {
        long t = start();
        inner.layerNormForward(out, mean, rstd, x, weight, bias, rows, cols, eps);
        stop("layernorm", t, 0);
    }

    @Override
    public void layerNormBackward(Tensor dx, Tensor dweight, Tensor dbias, Tensor dout, Tensor x, Tensor weight, Tensor mean, Tensor rstd, int rows, int cols) {
        long t = start();
        inner.layerNormBackward(dx, dweight, dbias, dout, x, weight, mean, rstd, rows, cols);
        stop("layernorm backward", t, 0);
    }

    @Override
    public void rmsNormForward(Tensor out, Tensor rstd, Tensor x, Tensor weight, int rows, int cols, float eps) {
        long t = start();
        inner.rmsNormForward(out, rstd, x, weight, rows, cols, eps);
        stop("rmsnorm", t, 0);
    }

    @Override
    public void rmsNormBackward(Tensor dx, Tensor dweight, Tensor dout, Tensor x, Tensor weight, Tensor rstd, int rows, int cols) {
        long t = start();
        inner.rmsNormBackward(dx, dweight, dout, x, weight, rstd, rows, cols);
        stop("rmsnorm backward", t, 0);
    }

    @Override
    public void geluForward(Tensor out, Tensor x, long n) {
        long t = start();
        inner.geluForward(out, x, n);
        stop("gelu", t, 0);
    }

    @Override
    public void geluBackward(Tensor dx, Tensor dout, Tensor x, long n) {
        long t = start();
        inner.geluBackward(dx, dout, x, n);
        stop("gelu backward", t, 0);
    }

    @Override
    public void swigluForward(Tensor out, Tensor gateUp, int rows, int hidden) {
        long t = start();
        inner.swigluForward(out, gateUp, rows, hidden);
        stop("swiglu", t, 0);
    }

    @Override
    public void swigluBackward(Tensor dGateUp, Tensor dout, Tensor gateUp, int rows, int hidden) {
        long t = start();
        inner.swigluBackward(dGateUp, dout, gateUp, rows, hidden);
        stop("swiglu backward", t, 0);
    }

    @Override
    public void rope(Tensor qkv, int batch, int seq, int nHead, int nKvHead, int headDim, float theta, boolean inverse) {
        long t = start();
        inner.rope(qkv, batch, seq, nHead, nKvHead, headDim, theta, inverse);
        stop("rope", t, 0);
    }

    @Override
    public void attentionForward(Tensor out, Tensor lse, Tensor qkv, int batch, int seq, int nHead, int nKvHead, int headDim) {
        long t = start();
        inner.attentionForward(out, lse, qkv, batch, seq, nHead, nKvHead, headDim);
        stop("attention", t, 2.0 * batch * nHead * seq * (seq + 1) / 2.0 * headDim * 2);
    }

    @Override
    public void attentionBackward(Tensor dqkv, Tensor dout, Tensor out, Tensor lse, Tensor qkv, int batch, int seq, int nHead, int nKvHead, int headDim) {
        long t = start();
        inner.attentionBackward(dqkv, dout, out, lse, qkv, batch, seq, nHead, nKvHead, headDim);
        stop("attention backward", t, 2.0 * batch * nHead * seq * (seq + 1) / 2.0 * headDim * 5);
    }

    @Override
    public void embeddingForward(Tensor out, Tensor table, Tensor ids, int rows, int cols, boolean accumulate) {
        long t = start();
        inner.embeddingForward(out, table, ids, rows, cols, accumulate);
        stop("embedding", t, 0);
    }

    @Override
    public void embeddingBackward(Tensor dtable, Tensor dout, Tensor ids, int rows, int cols) {
        long t = start();
        inner.embeddingBackward(dtable, dout, ids, rows, cols);
        stop("embedding backward", t, 0);
    }

    @Override
    public void add(Tensor out, Tensor a, Tensor b, long n) {
        long t = start();
        inner.add(out, a, b, n);
        stop("residual add", t, 0);
    }

    @Override
    public void crossEntropy(Tensor losses, Tensor dlogits, Tensor logits, Tensor targets, int rows, int vocab, float gradScale) {
        long t = start();
        inner.crossEntropy(losses, dlogits, logits, targets, rows, vocab, gradScale);
        stop("cross-entropy", t, 0);
    }

    @Override
    public void sumOfSquares(Tensor out, Tensor x, long n, boolean accumulate) {
        long t = start();
        inner.sumOfSquares(out, x, n, accumulate);
        stop("grad norm", t, 0);
    }

    @Override
    public void adamw(Tensor param, Tensor grad, Tensor m, Tensor v, long n, float lr, float beta1, float beta2, float eps,
                      float weightDecay, int step, Tensor normSquared, float maxNorm) {
        long t = start();
        inner.adamw(param, grad, m, v, n, lr, beta1, beta2, eps, weightDecay, step, normSquared, maxNorm);
        stop("adamw", t, 0);
    }

    @Override
    public void sumOfSquares(Tensor out, List<Tensor> xs) {
        long t = start();
        inner.sumOfSquares(out, xs);
        stop("grad norm (all gradients)", t, 0);
    }

    @Override
    public void adamw(List<AdamWTensors> params, Tensor hyper, float beta1, float beta2, float eps, Tensor normSquared,
                      float maxNorm) {
        long t = start();
        inner.adamw(params, hyper, beta1, beta2, eps, normSquared, maxNorm);
        stop("adamw (all parameters)", t, 0);
    }

    @Override
    public void quantize(Tensor packed, Tensor scales, Tensor src, long n, QuantFormat format, long seed) {
        long t = start();
        inner.quantize(packed, scales, src, n, format, seed);
        stop("quantize", t, 0);
    }

    @Override
    public void dequantize(Tensor dst, Tensor packed, Tensor scales, long n, QuantFormat format) {
        long t = start();
        inner.dequantize(dst, packed, scales, n, format);
        stop("dequantize", t, 0);
    }

    @Override
    public void close() {
        inner.close();
    }
}
