package frugal.backend.cpu;

import frugal.backend.Backend;
import frugal.quant.QuantFormat;
import frugal.quant.Quantized;
import frugal.tensor.DType;
import frugal.tensor.Tensor;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.util.concurrent.atomic.AtomicLong;

/** The reference backend: float32, off-heap, Vector API kernels over all cores. */
public final class CpuBackend implements Backend {
    private final Arena arena = Arena.ofShared();
    /** Bytes of every tensor allocated so far; the arena frees nothing before close, so this is also the peak. */
    private final AtomicLong allocatedBytes = new AtomicLong();

    @Override
    public String name() {
        return "cpu";
    }

    @Override
    public Tensor allocate(DType dtype, int... shape) {
        long bytes = Math.max(1, Tensor.count(shape) * dtype.bytes);
        allocatedBytes.addAndGet(bytes);
        return new Tensor(arena.allocate(bytes, 64), dtype, shape);
    }

    /**
     * The off-heap bytes of the tensors this backend allocated (weights, optimizer state, gradients, activations,
     * stash, scratch): what CudaBackend counts of device memory, less its cuBLASLt workspace. The kernels' small
     * per-thread heap arrays (matmul panels, attention rows) are not counted.
     */
    @Override
    public long peakMemory() {
        return allocatedBytes.get();
    }

    @Override
    public void upload(Tensor dst, MemorySegment host) {
        MemorySegment.copy(host, 0, dst.data(), 0, dst.byteSize());
    }

    @Override
    public void download(Tensor src, MemorySegment host) {
        MemorySegment.copy(src.data(), 0, host, 0, src.byteSize());
    }

    @Override
    public void zero(Tensor t) {
        // Both cores: one core alone cannot saturate memory bandwidth, and gradients are ~0.5 GB for GPT-2 124M.
        MemorySegment data = t.data();
        int bytes = t.dtype().bytes;
        Parallel.forElements(t.size(), (from, to) -> data.asSlice(from * bytes, (to - from) * bytes).fill((byte) 0));
    }

    @Override
    public void copy(Tensor dst, Tensor src) {
        MemorySegment.copy(src.data(), 0, dst.data(), 0, src.byteSize());
    }

    @Override
    public void matmul(Tensor out, Tensor a, Tensor b, int m, int n, int k, boolean transA, boolean transB, boolean accumulate) {
        CpuMatmul.matmul(out, a, b, m, n, k, transA, transB, accumulate);
    }

    /** Fused (CpuLinear: quantized in the GEMM's epilogue) where n is a multiple of the block; else the composition. */
    @Override
    public void linearForwardQuantized(Tensor out, Quantized outq, Tensor a, Tensor b, Tensor bias, int m, int n, int k) {
        if (n % outq.format().block() != 0) {
            Backend.super.linearForwardQuantized(out, outq, a, b, bias, m, n, k);
            return;
        }
        outq.format().checkBuffers(outq.packed(), outq.scales(), (long) m * n);
        CpuLinear.forwardQuantized(out, outq, a, b, bias, m, n, k);
    }

    /** Fused as linearForwardQuantized, leaving pre unwritten, where n is a multiple of the block; else the composition. */
    @Override
    public void linearGeluForwardQuantized(Tensor act, Tensor pre, Quantized preq, Tensor a, Tensor b, Tensor bias, int m, int n, int k) {
        if (n % preq.format().block() != 0) {
            Backend.super.linearGeluForwardQuantized(act, pre, preq, a, b, bias, m, n, k);
            return;
        }
        preq.format().checkBuffers(preq.packed(), preq.scales(), (long) m * n);
        CpuLinear.geluForwardQuantized(act, preq, a, b, bias, m, n, k);
    }

    @Override
    public void addBias(Tensor out, Tensor bias, int rows, int cols) {
        MemorySegment o = out.data(), b = bias.data();
        Parallel.forRange(rows, 16, (r0, r1) -> {
            for (int r = r0; r < r1; r++) Vec.axpy(1f, b, 0, o, (long) r * cols, cols);
        });
    }

    @Override
    public void biasBackward(Tensor dbias, Tensor dout, int rows, int cols) {
        MemorySegment d = dbias.data(), dos = dout.data();
        Parallel.forRange(cols, 64, (c0, c1) -> {
            for (int r = 0; r < rows; r++) Vec.axpy(1f, dos, (long) r * cols + c0, d, c0, c1 - c0);
        });
    }

    @Override
    public void layerNormForward(Tensor out, Tensor mean, Tensor rstd, Tensor x, Tensor weight, Tensor bias,
                                 int rows, int cols, float eps) {
        CpuNorms.layerNormForward(out, mean, rstd, x, weight, bias, rows, cols, eps);
    }

    @Override
    public void layerNormBackward(Tensor dx, Tensor dweight, Tensor dbias, Tensor dout, Tensor x, Tensor weight,
                                  Tensor mean, Tensor rstd, int rows, int cols) {
        CpuNorms.layerNormBackward(dx, dweight, dbias, dout, x, weight, mean, rstd, rows, cols);
    }

    /** Fused (CpuNorms) where cols is a multiple of each quantized tensor's block; else the composition. */
    @Override
    public void layerNormForwardQuantized(Tensor sum, Tensor out, Tensor mean, Tensor rstd, Tensor x, Tensor r, Tensor weight,
                                          Tensor bias, int rows, int cols, float eps, Quantized xq, Quantized outq) {
        if ((xq != null && cols % xq.format().block() != 0) || (outq != null && cols % outq.format().block() != 0)) {
            Backend.super.layerNormForwardQuantized(sum, out, mean, rstd, x, r, weight, bias, rows, cols, eps, xq, outq);
            return;
        }
        long n = (long) rows * cols;
        if (xq != null) xq.format().checkBuffers(xq.packed(), xq.scales(), n);
        if (outq != null) outq.format().checkBuffers(outq.packed(), outq.scales(), n);
        CpuNorms.layerNormForwardQuantized(sum, out, mean, rstd, x, r, weight, bias, rows, cols, eps, xq, outq);
    }

    @Override
    public boolean layerNormBackward(Tensor dx, Tensor dweight, Tensor dbias, Tensor dout, Quantized x, Tensor weight, Tensor mean,
                                     Tensor rstd, int rows, int cols) {
        if (cols % x.format().block() != 0) return false;
        x.format().checkBuffers(x.packed(), x.scales(), (long) rows * cols);
        CpuNorms.layerNormBackward(dx, dweight, dbias, dout, x, weight, mean, rstd, rows, cols);
        return true;
    }

    @Override
    public void geluRecompute(Tensor act, Tensor pre, Quantized preq, long n) {
        preq.format().checkBuffers(preq.packed(), preq.scales(), n);
        CpuActivations.geluRecompute(act, pre, preq, n);
    }

    @Override
    public void rmsNormForward(Tensor out, Tensor rstd, Tensor x, Tensor weight, int rows, int cols, float eps) {
        CpuNorms.rmsNormForward(out, rstd, x, weight, rows, cols, eps);
    }

    @Override
    public void rmsNormBackward(Tensor dx, Tensor dweight, Tensor dout, Tensor x, Tensor weight, Tensor rstd, int rows, int cols) {
        CpuNorms.rmsNormBackward(dx, dweight, dout, x, weight, rstd, rows, cols);
    }

    @Override
    public void geluForward(Tensor out, Tensor x, long n) {
        CpuActivations.geluForward(out, x, n);
    }

    @Override
    public void geluBackward(Tensor dx, Tensor dout, Tensor x, long n) {
        CpuActivations.geluBackward(dx, dout, x, n);
    }

    @Override
    public void swigluForward(Tensor out, Tensor gateUp, int rows, int hidden) {
        CpuActivations.swigluForward(out, gateUp, rows, hidden);
    }

    @Override
    public void swigluBackward(Tensor dGateUp, Tensor dout, Tensor gateUp, int rows, int hidden) {
        CpuActivations.swigluBackward(dGateUp, dout, gateUp, rows, hidden);
    }

    @Override
    public void rope(Tensor qkv, int batch, int seq, int nHead, int nKvHead, int headDim, float theta, boolean inverse) {
        CpuAttention.rope(qkv, batch, seq, nHead, nKvHead, headDim, theta, inverse);
    }

    @Override
    public void attentionForward(Tensor out, Tensor lse, Tensor qkv, int batch, int seq, int nHead, int nKvHead, int headDim) {
        CpuAttention.forward(out, null, lse, qkv, batch, seq, nHead, nKvHead, headDim);
    }

    /** out's copy fused (CpuAttention) where headDim is a multiple of outq's block; else, and qkv's, composed. */
    @Override
    public void attentionForwardQuantized(Tensor out, Quantized outq, Tensor lse, Tensor qkv, Quantized qkvq, int batch, int seq,
                                          int nHead, int nKvHead, int headDim) {
        if (outq == null || headDim % outq.format().block() != 0) {
            Backend.super.attentionForwardQuantized(out, outq, lse, qkv, qkvq, batch, seq, nHead, nKvHead, headDim);
            return;
        }
        outq.format().checkBuffers(outq.packed(), outq.scales(), (long) batch * seq * nHead * headDim);
        CpuAttention.forward(out, outq, lse, qkv, batch, seq, nHead, nKvHead, headDim);
        if (qkvq != null) {
            quantize(qkvq.packed(), qkvq.scales(), qkv, (long) batch * seq * (nHead + 2L * nKvHead) * headDim, qkvq.format(), qkvq.seed());
        }
    }

    @Override
    public void attentionBackward(Tensor dqkv, Tensor dout, Tensor out, Tensor lse, Tensor qkv,
                                  int batch, int seq, int nHead, int nKvHead, int headDim) {
        CpuAttention.backward(dqkv, dout, out, lse, qkv, batch, seq, nHead, nKvHead, headDim);
    }

    @Override
    public void embeddingForward(Tensor out, Tensor table, Tensor ids, int rows, int cols, boolean accumulate) {
        CpuEmbedding.forward(out, table, ids, rows, cols, accumulate);
    }

    @Override
    public void embeddingBackward(Tensor dtable, Tensor dout, Tensor ids, int rows, int cols) {
        CpuEmbedding.backward(dtable, dout, ids, rows, cols);
    }

    @Override
    public void add(Tensor out, Tensor a, Tensor b, long n) {
        MemorySegment o = out.data(), as = a.data(), bs = b.data();
        Parallel.forElements(n, (from, to) -> Vec.add(o, as, bs, from, to));
    }

    @Override
    public void crossEntropy(Tensor losses, Tensor dlogits, Tensor logits, Tensor targets, int rows, int vocab, float gradScale) {
        CpuLoss.crossEntropy(losses, dlogits, logits, targets, rows, vocab, gradScale);
    }

    @Override
    public void sumOfSquares(Tensor out, Tensor x, long n, boolean accumulate) {
        CpuOptimizer.sumOfSquares(out, x, n, accumulate);
    }

    @Override
    public void adamw(Tensor param, Tensor grad, Tensor m, Tensor v, long n, float lr, float beta1, float beta2,
                      float eps, float weightDecay, int step, Tensor normSquared, float maxNorm) {
        CpuOptimizer.adamw(param, grad, m, v, n, lr, beta1, beta2, eps, weightDecay, step, normSquared, maxNorm);
    }

    @Override
    public void quantize(Tensor packed, Tensor scales, Tensor src, long n, QuantFormat format, long seed) {
        CpuQuant.quantize(packed, scales, src, n, format, seed);
    }

    @Override
    public void dequantize(Tensor dst, Tensor packed, Tensor scales, long n, QuantFormat format) {
        CpuQuant.dequantize(dst, packed, scales, n, format);
    }

    @Override
    public void close() {
        arena.close();
    }
}
