package frugal.backend;

import frugal.quant.QuantFormat;
import frugal.quant.Quantized;
import frugal.tensor.DType;
import frugal.tensor.Tensor;

import java.lang.foreign.MemorySegment;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;

/**
 * Wraps a backend and records wall time, calls, FLOPs and memory traffic per op: the per-op breakdown of
 * {@code frugal bench}. Synchronizes after each op so that asynchronous backends are timed honestly. The traffic of
 * an op is what it must read and write at its operands' types (each input read once, each output written once,
 * accumulated outputs read too): what a fused, cache-perfect kernel would move, not what a kernel actually moves.
 * Traffic is counted also while timing is off, so a training run can report it every step.
 */
public final class ProfilingBackend implements Backend {
    private final Backend inner;
    private final Map<String, OpStats> stats = new TreeMap<>();
    private boolean enabled = true;
    private long trafficBytes;

    /** Accumulated figures of one op (or one matmul shape). */
    public static final class OpStats {
        public long calls;
        public long nanos;
        public double flops;
        public long bytes;
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
        stop("convert", t, 0, n * (elem(src) + elem(dst)));
    }

    @Override
    public void adamw(Tensor param, Tensor grad, Tensor m, Tensor v, Tensor compute, long n, Tensor hyper, float beta1,
                      float beta2, float eps, float weightDecay, Tensor normSquared, float maxNorm) {
        long t = start();
        inner.adamw(param, grad, m, v, compute, n, hyper, beta1, beta2, eps, weightDecay, normSquared, maxNorm);
        stop("adamw", t, 0, adamwBytes(param, grad, m, v, compute, n));
    }

    @Override
    public void linearForward(Tensor out, Tensor a, Tensor b, Tensor bias, int m, int n, int k) {
        long t = start();
        inner.linearForward(out, a, b, bias, m, n, k);
        stop(bias != null ? "matmul fwd (NT) + bias" : "matmul fwd (NT)", t, 2.0 * m * n * k,
                (long) m * k * elem(a) + (long) n * k * elem(b) + (long) m * n * elem(out) + (bias == null ? 0 : n * elem(bias)));
    }

    @Override
    public void linearGeluForward(Tensor act, Tensor pre, Tensor a, Tensor b, Tensor bias, int m, int n, int k) {
        long t = start();
        inner.linearGeluForward(act, pre, a, b, bias, m, n, k);
        stop(bias != null ? "matmul fwd (NT) + bias + gelu" : "matmul fwd (NT) + gelu", t, 2.0 * m * n * k,
                (long) m * k * elem(a) + (long) n * k * elem(b) + (long) m * n * (elem(act) + elem(pre)) + (bias == null ? 0 : n * elem(bias)));
    }

    @Override
    public void linearForwardQuantized(Tensor out, Quantized outq, Tensor a, Tensor b, Tensor bias, int m, int n, int k) {
        long t = start();
        inner.linearForwardQuantized(out, outq, a, b, bias, m, n, k);
        stop((bias != null ? "matmul fwd (NT) + bias" : "matmul fwd (NT)") + " + stash quantization", t, 2.0 * m * n * k,
                (long) m * k * elem(a) + (long) n * k * elem(b) + (long) m * n * elem(out) + (bias == null ? 0 : n * elem(bias))
                        + outq.format().bytes((long) m * n));
    }

    /** Its traffic leaves pre out: scratch, which a fused kernel does not write. */
    @Override
    public void linearGeluForwardQuantized(Tensor act, Tensor pre, Quantized preq, Tensor a, Tensor b, Tensor bias, int m, int n, int k) {
        long t = start();
        inner.linearGeluForwardQuantized(act, pre, preq, a, b, bias, m, n, k);
        stop((bias != null ? "matmul fwd (NT) + bias + gelu" : "matmul fwd (NT) + gelu") + " + stash quantization", t, 2.0 * m * n * k,
                (long) m * k * elem(a) + (long) n * k * elem(b) + (long) m * n * elem(act) + (bias == null ? 0 : n * elem(bias))
                        + preq.format().bytes((long) m * n));
    }

    @Override
    public void linearWeightBackward(Tensor dweight, Tensor dbias, Tensor dout, Tensor a, int m, int n, int k) {
        long t = start();
        inner.linearWeightBackward(dweight, dbias, dout, a, m, n, k);
        stop(dbias != null ? "matmul dW (TN) + bias backward" : "matmul dW (TN)", t, 2.0 * m * n * k,
                (long) m * n * elem(dout) + (long) m * k * elem(a) + 2L * n * k * elem(dweight) + (dbias == null ? 0 : 2L * n * elem(dbias)));
    }

    @Override
    public void matmulGeluBackward(Tensor dpre, Tensor dy, Tensor w, Tensor pre, int m, int n, int k) {
        long t = start();
        inner.matmulGeluBackward(dpre, dy, w, pre, m, n, k);
        stop("matmul dX (NN) + gelu backward", t, 2.0 * m * n * k,
                (long) m * k * elem(dy) + (long) k * n * elem(w) + (long) m * n * (elem(dpre) + elem(pre)));
    }

    /** Captures through the wrapped backend while profiling is off (a profiled op synchronizes, which a graph cannot). */
    @Override
    public Graph capture(Runnable work) {
        return enabled ? null : inner.capture(work);
    }

    private long start() {
        return System.nanoTime();
    }

    private void stop(String op, long t0, double flops, long bytes) {
        trafficBytes += bytes;
        if (!enabled) return;
        inner.synchronize();
        OpStats s = stats.computeIfAbsent(op, k -> new OpStats());
        s.calls++;
        s.nanos += System.nanoTime() - t0;
        s.flops += flops;
        s.bytes += bytes;
    }

    /** Bytes all ops issued so far read and wrote (see the class comment); counted also while timing is off. */
    public long trafficBytes() {
        return trafficBytes;
    }

    /** A wrapper that only counts traffic: ops pass straight through, and graphs can be captured. */
    public static ProfilingBackend countingTraffic(Backend inner) {
        ProfilingBackend p = new ProfilingBackend(inner);
        p.setEnabled(false);
        return p;
    }

    private static long elem(Tensor t) {
        return t.dtype().bytes;
    }

    /** AdamW reads param, grad, m, v and writes param, m, v and the compute copy. */
    private static long adamwBytes(Tensor param, Tensor grad, Tensor m, Tensor v, Tensor compute, long n) {
        return n * (2 * elem(param) + elem(grad) + 2 * elem(m) + 2 * elem(v) + (compute == null ? 0 : elem(compute)));
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
        stop("upload", t, 0, 0); // host transfers are not device memory traffic
    }

    @Override
    public void download(Tensor src, MemorySegment host) {
        long t = start();
        inner.download(src, host);
        stop("download", t, 0, 0);
    }

    @Override
    public void zero(Tensor t) {
        long t0 = start();
        inner.zero(t);
        stop("zero", t0, 0, t.byteSize());
    }

    @Override
    public void zero(List<Tensor> ts) {
        long t0 = start();
        inner.zero(ts);
        stop("zero (all gradients)", t0, 0, ts.stream().mapToLong(Tensor::byteSize).sum());
    }

    @Override
    public void copy(Tensor dst, Tensor src) {
        long t = start();
        inner.copy(dst, src);
        stop("copy", t, 0, 2 * src.byteSize());
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
        stop(kind, t, 2.0 * m * n * k, (long) m * k * elem(a) + (long) k * n * elem(b) + (accumulate ? 2L : 1L) * m * n * elem(out));
    }

    @Override
    public void addBias(Tensor out, Tensor bias, int rows, int cols) {
        long t = start();
        inner.addBias(out, bias, rows, cols);
        stop("bias", t, 0, 2L * rows * cols * elem(out) + cols * elem(bias));
    }

    @Override
    public void biasBackward(Tensor dbias, Tensor dout, int rows, int cols) {
        long t = start();
        inner.biasBackward(dbias, dout, rows, cols);
        stop("bias backward", t, 0, (long) rows * cols * elem(dout) + 2L * cols * elem(dbias));
    }

    @Override
    public void layerNormForward(Tensor out, Tensor mean, Tensor rstd, Tensor x, Tensor weight, Tensor bias, int rows, int cols, float eps) {
        long t = start();
        inner.layerNormForward(out, mean, rstd, x, weight, bias, rows, cols, eps);
        stop("layernorm", t, 0, (long) rows * cols * (elem(x) + elem(out)) + 2L * cols * elem(weight) + 2L * rows * elem(mean));
    }

    @Override
    public void addLayerNormForward(Tensor sum, Tensor out, Tensor mean, Tensor rstd, Tensor x, Tensor r, Tensor weight, Tensor bias,
                                    int rows, int cols, float eps) {
        long t = start();
        inner.addLayerNormForward(sum, out, mean, rstd, x, r, weight, bias, rows, cols, eps);
        stop("residual add + layernorm", t, 0, (long) rows * cols * (elem(x) + elem(r) + elem(sum) + elem(out))
                + 2L * cols * elem(weight) + 2L * rows * elem(mean));
    }

    @Override
    public void layerNormForwardQuantized(Tensor sum, Tensor out, Tensor mean, Tensor rstd, Tensor x, Tensor r, Tensor weight,
                                          Tensor bias, int rows, int cols, float eps, Quantized xq, Quantized outq) {
        long t = start();
        inner.layerNormForwardQuantized(sum, out, mean, rstd, x, r, weight, bias, rows, cols, eps, xq, outq);
        long n = (long) rows * cols;
        stop("layernorm + stash quantization", t, 0, n * (elem(x) + elem(out)) + (r == null ? 0 : n * (elem(r) + elem(sum)))
                + (xq == null ? 0 : xq.format().bytes(n)) + (outq == null ? 0 : outq.format().bytes(n))
                + 2L * cols * elem(weight) + 2L * rows * elem(mean));
    }

    @Override
    public boolean layerNormBackward(Tensor dx, Tensor dweight, Tensor dbias, Tensor dout, Quantized x, Tensor weight, Tensor mean,
                                     Tensor rstd, int rows, int cols) {
        long t = start();
        boolean done = inner.layerNormBackward(dx, dweight, dbias, dout, x, weight, mean, rstd, rows, cols);
        if (done) {
            long n = (long) rows * cols;
            stop("layernorm backward, quantized x", t, 0, n * (2L * elem(dx) + elem(dout)) + x.format().bytes(n) + 5L * cols * elem(weight)
                    + 2L * rows * elem(mean));
        }
        return done;
    }

    @Override
    public void layerNormBackward(Tensor dx, Tensor dweight, Tensor dbias, Tensor dout, Tensor x, Tensor weight, Tensor mean, Tensor rstd, int rows, int cols) {
        long t = start();
        inner.layerNormBackward(dx, dweight, dbias, dout, x, weight, mean, rstd, rows, cols);
        stop("layernorm backward", t, 0,
                (long) rows * cols * (2 * elem(dx) + elem(dout) + elem(x)) + 5L * cols * elem(weight) + 2L * rows * elem(mean));
    }

    @Override
    public void rmsNormForward(Tensor out, Tensor rstd, Tensor x, Tensor weight, int rows, int cols, float eps) {
        long t = start();
        inner.rmsNormForward(out, rstd, x, weight, rows, cols, eps);
        stop("rmsnorm", t, 0, (long) rows * cols * (elem(x) + elem(out)) + cols * elem(weight) + rows * elem(rstd));
    }

    @Override
    public void rmsNormBackward(Tensor dx, Tensor dweight, Tensor dout, Tensor x, Tensor weight, Tensor rstd, int rows, int cols) {
        long t = start();
        inner.rmsNormBackward(dx, dweight, dout, x, weight, rstd, rows, cols);
        stop("rmsnorm backward", t, 0,
                (long) rows * cols * (2 * elem(dx) + elem(dout) + elem(x)) + 3L * cols * elem(weight) + rows * elem(rstd));
    }

    @Override
    public void geluForward(Tensor out, Tensor x, long n) {
        long t = start();
        inner.geluForward(out, x, n);
        stop("gelu", t, 0, n * (elem(x) + elem(out)));
    }

    @Override
    public void geluBackward(Tensor dx, Tensor dout, Tensor x, long n) {
        long t = start();
        inner.geluBackward(dx, dout, x, n);
        stop("gelu backward", t, 0, n * (elem(dx) + elem(dout) + elem(x)));
    }

    @Override
    public void swigluForward(Tensor out, Tensor gateUp, int rows, int hidden) {
        long t = start();
        inner.swigluForward(out, gateUp, rows, hidden);
        stop("swiglu", t, 0, (long) rows * hidden * (2 * elem(gateUp) + elem(out)));
    }

    @Override
    public void swigluBackward(Tensor dGateUp, Tensor dout, Tensor gateUp, int rows, int hidden) {
        long t = start();
        inner.swigluBackward(dGateUp, dout, gateUp, rows, hidden);
        stop("swiglu backward", t, 0, (long) rows * hidden * (2 * elem(dGateUp) + elem(dout) + 2 * elem(gateUp)));
    }

    @Override
    public void rope(Tensor qkv, int batch, int seq, int nHead, int nKvHead, int headDim, float theta, boolean inverse) {
        long t = start();
        inner.rope(qkv, batch, seq, nHead, nKvHead, headDim, theta, inverse);
        stop("rope", t, 0, 2L * batch * seq * (nHead + nKvHead) * headDim * elem(qkv));
    }

    @Override
    public void attentionForward(Tensor out, Tensor lse, Tensor qkv, int batch, int seq, int nHead, int nKvHead, int headDim) {
        long t = start();
        inner.attentionForward(out, lse, qkv, batch, seq, nHead, nKvHead, headDim);
        stop("attention", t, 2.0 * batch * nHead * seq * (seq + 1) / 2.0 * headDim * 2,
                (long) batch * seq * ((nHead + 2L * nKvHead) * headDim * elem(qkv) + (long) nHead * headDim * elem(out) + nHead * elem(lse)));
    }

    @Override
    public void attentionBackward(Tensor dqkv, Tensor dout, Tensor out, Tensor lse, Tensor qkv, int batch, int seq, int nHead, int nKvHead, int headDim) {
        long t = start();
        inner.attentionBackward(dqkv, dout, out, lse, qkv, batch, seq, nHead, nKvHead, headDim);
        stop("attention backward", t, 2.0 * batch * nHead * seq * (seq + 1) / 2.0 * headDim * 5, (long) batch * seq
                * ((nHead + 2L * nKvHead) * headDim * (elem(qkv) + elem(dqkv)) + (long) nHead * headDim * (elem(dout) + elem(out)) + nHead * elem(lse)));
    }

    @Override
    public void attentionForwardQuantized(Tensor out, Quantized outq, Tensor lse, Tensor qkv, Quantized qkvq, int batch, int seq,
                                          int nHead, int nKvHead, int headDim) {
        long t = start();
        inner.attentionForwardQuantized(out, outq, lse, qkv, qkvq, batch, seq, nHead, nKvHead, headDim);
        long outN = (long) batch * seq * nHead * headDim, qkvN = (long) batch * seq * (nHead + 2L * nKvHead) * headDim;
        stop("attention + stash quantization" + (outq == null ? " (qkv)" : qkvq == null ? "" : " (out, qkv)"), t,
                2.0 * batch * nHead * seq * (seq + 1) / 2.0 * headDim * 2,
                qkvN * elem(qkv) + outN * elem(out) + (long) batch * seq * nHead * elem(lse)
                        + (outq == null ? 0 : outq.format().bytes(outN)) + (qkvq == null ? 0 : qkvq.format().bytes(qkvN)));
    }

    /** Counted as the recomputed forward (which writes lse, not out) and the backward. */
    @Override
    public void attentionBackwardRecomputing(Tensor dqkv, Tensor dout, Tensor out, Tensor lse, Tensor qkv, int batch, int seq, int nHead,
                                             int nKvHead, int headDim) {
        long t = start();
        inner.attentionBackwardRecomputing(dqkv, dout, out, lse, qkv, batch, seq, nHead, nKvHead, headDim);
        long qkvBytes = (long) batch * seq * (nHead + 2L * nKvHead) * headDim * elem(qkv), lseBytes = (long) batch * seq * nHead * elem(lse);
        long doutBytes = (long) batch * seq * nHead * headDim * elem(dout);
        stop("attention backward, forward recomputed", t, 2.0 * batch * nHead * seq * (seq + 1) / 2.0 * headDim * 7,
                2 * qkvBytes + 2 * lseBytes + 2 * doutBytes + (long) batch * seq * (nHead + 2L * nKvHead) * headDim * elem(dqkv));
    }

    @Override
    public void embeddingForward(Tensor out, Tensor table, Tensor ids, int rows, int cols, boolean accumulate) {
        long t = start();
        inner.embeddingForward(out, table, ids, rows, cols, accumulate);
        stop("embedding", t, 0, (long) rows * cols * ((accumulate ? 2 : 1) * elem(out) + elem(table)) + rows * elem(ids));
    }

    @Override
    public void embeddingBackward(Tensor dtable, Tensor dout, Tensor ids, int rows, int cols) {
        long t = start();
        inner.embeddingBackward(dtable, dout, ids, rows, cols);
        stop("embedding backward", t, 0, (long) rows * cols * (2 * elem(dtable) + elem(dout)) + rows * elem(ids));
    }

    @Override
    public void add(Tensor out, Tensor a, Tensor b, long n) {
        long t = start();
        inner.add(out, a, b, n);
        stop("residual add", t, 0, n * (elem(out) + elem(a) + elem(b)));
    }

    @Override
    public void crossEntropy(Tensor losses, Tensor dlogits, Tensor logits, Tensor targets, int rows, int vocab, float gradScale) {
        long t = start();
        inner.crossEntropy(losses, dlogits, logits, targets, rows, vocab, gradScale);
        stop("cross-entropy", t, 0,
                (long) rows * vocab * (elem(logits) + (dlogits == null ? 0 : elem(dlogits))) + rows * (elem(losses) + elem(targets)));
    }

    @Override
    public void sumOfSquares(Tensor out, Tensor x, long n, boolean accumulate) {
        long t = start();
        inner.sumOfSquares(out, x, n, accumulate);
        stop("grad norm", t, 0, n * elem(x));
    }

    @Override
    public void adamw(Tensor param, Tensor grad, Tensor m, Tensor v, long n, float lr, float beta1, float beta2, float eps,
                      float weightDecay, int step, Tensor normSquared, float maxNorm) {
        long t = start();
        inner.adamw(param, grad, m, v, n, lr, beta1, beta2, eps, weightDecay, step, normSquared, maxNorm);
        stop("adamw", t, 0, adamwBytes(param, grad, m, v, null, n));
    }

    @Override
    public void sumOfSquares(Tensor out, List<Tensor> xs) {
        long t = start();
        inner.sumOfSquares(out, xs);
        stop("grad norm (all gradients)", t, 0, xs.stream().mapToLong(Tensor::byteSize).sum());
    }

    @Override
    public void adamw(List<AdamWTensors> params, Tensor hyper, float beta1, float beta2, float eps, Tensor normSquared,
                      float maxNorm) {
        long t = start();
        inner.adamw(params, hyper, beta1, beta2, eps, normSquared, maxNorm);
        stop("adamw (all parameters)", t, 0,
                params.stream().mapToLong(p -> adamwBytes(p.param(), p.grad(), p.m(), p.v(), p.compute(), p.param().size())).sum());
    }

    @Override
    public void geluRecompute(Tensor act, Tensor pre, Quantized preq, long n) {
        long t = start();
        inner.geluRecompute(act, pre, preq, n);
        stop("gelu recomputed from the stash", t, 0, n * (elem(act) + (pre == null ? 0 : elem(pre))) + preq.format().bytes(n));
    }

    @Override
    public void geluBackwardQuantized(Tensor dpre, Tensor dbias, Tensor dact, Quantized preq, int rows, int cols) {
        long t = start();
        inner.geluBackwardQuantized(dpre, dbias, dact, preq, rows, cols);
        long n = (long) rows * cols;
        stop(dbias != null ? "gelu backward from the stash + bias backward" : "gelu backward from the stash", t, 0,
                n * (elem(dpre) + elem(dact)) + preq.format().bytes(n) + (dbias == null ? 0 : 2L * cols * elem(dbias)));
    }

    @Override
    public void quantize(Tensor packed, Tensor scales, Tensor src, long n, QuantFormat format, long seed) {
        long t = start();
        inner.quantize(packed, scales, src, n, format, seed);
        stop("quantize", t, 0, n * elem(src) + format.bytes(n));
    }

    @Override
    public void dequantize(Tensor dst, Tensor packed, Tensor scales, long n, QuantFormat format) {
        long t = start();
        inner.dequantize(dst, packed, scales, n, format);
        stop("dequantize", t, 0, n * elem(dst) + format.bytes(n));
    }

    @Override
    public void close() {
        inner.close();
    }
}
