package frugal.backend;

import frugal.quant.QuantFormat;
import frugal.quant.Quantized;
import frugal.tensor.DType;
import frugal.tensor.Tensor;

import java.lang.foreign.MemorySegment;
import java.util.List;

/**
 * The op set of a training step. Models call only these. Dimensions are passed explicitly (as llm.c does)
 * so that each op reads like its formula; shapes are given in the comments as [rows, cols].
 *
 * <p>Conventions: float32 tensors unless noted; ids and targets are I32. "Accumulates" means the op adds
 * into its output (gradients), otherwise it overwrites. Layouts shared by the attention ops: a fused
 * projection row holds the heads of q, then of k, then of v: [B*T, (nHead + 2*nKvHead) * headDim].
 */
public interface Backend extends AutoCloseable {

    String name();

    /**
     * Element type of activations, activation gradients and the compute copies of weights (see
     * {@link frugal.nn.Param#compute()}): F32 on the CPU, BF16 for mixed precision on CUDA. Parameters, their
     * gradients, optimizer state, norm statistics (mean, rstd, lse) and losses are F32 on every backend. Ops take
     * activations of this type and parameters of F32; matmul takes operands of one type and writes F32 or that type.
     */
    default DType activationType() {
        return DType.F32;
    }

    /**
     * Bytes held at most so far by this backend's allocations (device memory on a GPU): weights, optimizer state,
     * gradients, activations, stash and scratch.
     */
    long peakMemory();

    /** A zero-filled tensor owned by this backend. */
    Tensor allocate(DType dtype, int... shape);

    /** Copies {@code dst.byteSize()} bytes from host memory into dst. */
    void upload(Tensor dst, MemorySegment host);

    /** Copies {@code src.byteSize()} bytes of src into host memory. */
    void download(Tensor src, MemorySegment host);

    void zero(Tensor t);

    /** Zeroes every tensor of ts (one launch where the backend can: all the gradients of a model). */
    default void zero(List<Tensor> ts) {
        for (Tensor t : ts) zero(t);
    }

    void copy(Tensor dst, Tensor src);

    /** dst[0, n) = src[0, n) converted to dst's element type (round to nearest even); a copy when the types agree. */
    default void convert(Tensor dst, Tensor src, long n) {
        if (dst == src) return;
        if (dst.dtype() != src.dtype()) {
            throw new UnsupportedOperationException(name() + " cannot convert " + src + " to " + dst);
        }
        copy(dst.slice(0, Math.toIntExact(n)), src.slice(0, Math.toIntExact(n)));
    }

    /** Waits until all queued work is done (a no-op where ops run synchronously). */
    default void synchronize() {
    }

    // ---- linear algebra

    /**
     * out[m,n] (+)= op(a)·op(b) with fp32 accumulation; a is [m,k] ([k,m] if transA), b is [k,n]
     * ([n,k] if transB). Accumulates into out when {@code accumulate}, otherwise overwrites.
     */
    void matmul(Tensor out, Tensor a, Tensor b, int m, int n, int k, boolean transA, boolean transB, boolean accumulate);

    /**
     * The forward of a linear layer, out[m,n] = a[m,k]·b[n,k]ᵀ (+ bias[n] when bias is non-null): matmul then addBias,
     * which a backend may fuse (cuBLASLt's bias epilogue).
     */
    default void linearForward(Tensor out, Tensor a, Tensor b, Tensor bias, int m, int n, int k) {
        matmul(out, a, b, m, n, k, false, true, false);
        if (bias != null) addBias(out, bias, m, n);
    }

    /**
     * The forward of a linear layer followed by GELU (tanh): pre[m,n] = a[m,k]·b[n,k]ᵀ (+ bias[n] when bias is
     * non-null), act = GELU(pre); pre and act have one element type. linearForward then geluForward, which a backend
     * may do in one product (cuBLASLt's GELU_AUX_BIAS epilogue writes act and pre together), sparing a pass over pre.
     */
    default void linearGeluForward(Tensor act, Tensor pre, Tensor a, Tensor b, Tensor bias, int m, int n, int k) {
        linearForward(pre, a, b, bias, m, n, k);
        geluForward(act, pre, (long) m * n);
    }

    /**
     * {@link #linearForward} that also writes what the stash keeps of out: its quantized copy outq, exactly as
     * {@link #quantize} would from the out written. Backends fuse it into the product's epilogue where they can.
     */
    default void linearForwardQuantized(Tensor out, Quantized outq, Tensor a, Tensor b, Tensor bias, int m, int n, int k) {
        linearForward(out, a, b, bias, m, n, k);
        quantize(outq.packed(), outq.scales(), out, (long) m * n, outq.format(), outq.seed());
    }

    /**
     * {@link #linearGeluForward} where the stash keeps the pre-activation only as its quantized copy preq (exactly as
     * {@link #quantize} would make it from pre): pre is scratch that a backend which quantizes in the product's
     * epilogue leaves unwritten, so that no full-precision copy of it goes to memory.
     */
    default void linearGeluForwardQuantized(Tensor act, Tensor pre, Quantized preq, Tensor a, Tensor b, Tensor bias, int m, int n, int k) {
        linearGeluForward(act, pre, a, b, bias, m, n, k);
        quantize(preq.packed(), preq.scales(), pre, (long) m * n, preq.format(), preq.seed());
    }

    /**
     * The parameter gradients of {@link #linearForward} (same m, n, k): dweight[n,k] += dout[m,n]ᵀ·a[m,k] (F32
     * dweight, fp32 accumulation) and, when dbias is non-null, dbias[n] += Σ over rows of dout. matmul then
     * biasBackward, which a backend may do in one product (cuBLASLt's BGRADB epilogue sums dout while reading it).
     */
    default void linearWeightBackward(Tensor dweight, Tensor dbias, Tensor dout, Tensor a, int m, int n, int k) {
        matmul(dweight, dout, a, n, k, m, true, false, true);
        if (dbias != null) biasBackward(dbias, dout, m, n);
    }

    /**
     * The input gradient of a linear layer whose input was GELU(pre), carried back through the GELU:
     * dpre[m,n] = (dy[m,k]·w[k,n]) ⊙ gelu'(pre[m,n]) (tanh GELU; overwrites dpre, which aliases none of the others;
     * dy, w, pre and dpre have one element type). matmul then geluBackward, which a backend may do in one product
     * (cuBLASLt's DGELU epilogue reads pre as it writes the product), sparing a pass over dpre.
     */
    default void matmulGeluBackward(Tensor dpre, Tensor dy, Tensor w, Tensor pre, int m, int n, int k) {
        matmul(dpre, dy, w, m, n, k, false, false, false);
        geluBackward(dpre, dpre, pre, (long) m * n);
    }

    /** out[r,c] += bias[c]. */
    void addBias(Tensor out, Tensor bias, int rows, int cols);

    /** dbias[c] += sum over r of dout[r,c]. */
    void biasBackward(Tensor dbias, Tensor dout, int rows, int cols);

    // ---- normalization

    /** out = (x - mean) * rstd * weight + bias per row; writes mean[rows] and rstd[rows]. */
    void layerNormForward(Tensor out, Tensor mean, Tensor rstd, Tensor x, Tensor weight, Tensor bias,
                          int rows, int cols, float eps);

    /** sum = x + r (the residual add), then {@link #layerNormForward} of sum into out; one pass where the backend fuses it. */
    default void addLayerNormForward(Tensor sum, Tensor out, Tensor mean, Tensor rstd, Tensor x, Tensor r, Tensor weight,
                                     Tensor bias, int rows, int cols, float eps) {
        add(sum, x, r, (long) rows * cols);
        layerNormForward(out, mean, rstd, sum, weight, bias, rows, cols, eps);
    }

    /**
     * {@link #layerNormForward} of x, or {@link #addLayerNormForward} of x + r where r is non-null, that also writes what
     * the stash keeps of it: the normalized row (x, or the sum) quantized into xq and out into outq, each where non-null,
     * exactly as {@link #quantize} would from the tensors written. Backends fuse it where they can.
     */
    default void layerNormForwardQuantized(Tensor sum, Tensor out, Tensor mean, Tensor rstd, Tensor x, Tensor r, Tensor weight,
                                           Tensor bias, int rows, int cols, float eps, Quantized xq, Quantized outq) {
        if (r == null) layerNormForward(out, mean, rstd, x, weight, bias, rows, cols, eps);
        else addLayerNormForward(sum, out, mean, rstd, x, r, weight, bias, rows, cols, eps);
        long n = (long) rows * cols;
        if (xq != null) quantize(xq.packed(), xq.scales(), r == null ? x : sum, n, xq.format(), xq.seed());
        if (outq != null) quantize(outq.packed(), outq.scales(), out, n, outq.format(), outq.seed());
    }

    /** Accumulates dx, dweight, dbias. */
    void layerNormBackward(Tensor dx, Tensor dweight, Tensor dbias, Tensor dout, Tensor x, Tensor weight,
                           Tensor mean, Tensor rstd, int rows, int cols);

    /**
     * {@link #layerNormBackward} reading x from its quantized copy (in x's activation type), where this backend has a
     * kernel for its format and shape; returns false, having done nothing, where it has not (dequantize x first).
     */
    default boolean layerNormBackward(Tensor dx, Tensor dweight, Tensor dbias, Tensor dout, Quantized x, Tensor weight,
                                      Tensor mean, Tensor rstd, int rows, int cols) {
        return false;
    }

    /** out = x * rstd * weight per row, rstd = 1/sqrt(mean(x²) + eps); writes rstd[rows]. */
    void rmsNormForward(Tensor out, Tensor rstd, Tensor x, Tensor weight, int rows, int cols, float eps);

    /** Accumulates dx and dweight. */
    void rmsNormBackward(Tensor dx, Tensor dweight, Tensor dout, Tensor x, Tensor weight, Tensor rstd, int rows, int cols);

    // ---- activations

    /** GELU, tanh approximation (GPT-2's gelu_new); out may be x (in place). */
    void geluForward(Tensor out, Tensor x, long n);

    /**
     * For backward, GELU's output recomputed from the stash's quantized copy of its input: act = GELU of the values
     * {@link #dequantize} writes, as {@link #geluForward} computes it, and those values into pre where pre is non-null
     * (one pass where the backend can).
     */
    default void geluRecompute(Tensor act, Tensor pre, Quantized preq, long n) {
        Tensor x = pre != null ? pre : act;
        dequantize(x, preq.packed(), preq.scales(), n, preq.format());
        geluForward(act, x, n);
    }

    /** dx = dout * gelu'(x) (overwrites dx; dx may alias dout or x). */
    void geluBackward(Tensor dx, Tensor dout, Tensor x, long n);

    /**
     * GELU's backward from the stash's quantized copy of its input, pre[rows, cols]: dpre = dact ⊙ gelu'(pre), pre the
     * values {@link #dequantize} writes, as {@link #geluBackward} computes it; and where dbias is non-null the bias
     * gradient of the product that made pre, dbias[c] += Σ_r dpre[r,c] as {@link #biasBackward} sums the dpre written.
     * dpre aliases none of the others. The composed ops (dpre holds the dequantized pre first), which a backend may do
     * in one pass (sparing a pass over pre and one over dpre).
     */
    default void geluBackwardQuantized(Tensor dpre, Tensor dbias, Tensor dact, Quantized preq, int rows, int cols) {
        long n = (long) rows * cols;
        dequantize(dpre, preq.packed(), preq.scales(), n, preq.format());
        geluBackward(dpre, dact, dpre, n);
        if (dbias != null) biasBackward(dbias, dpre, rows, cols);
    }

    /** out[r,j] = silu(gateUp[r,j]) * gateUp[r,hidden+j]; gateUp is [rows, 2*hidden]. */
    void swigluForward(Tensor out, Tensor gateUp, int rows, int hidden);

    /** Writes dGateUp[rows, 2*hidden] from dout[rows, hidden]. */
    void swigluBackward(Tensor dGateUp, Tensor dout, Tensor gateUp, int rows, int hidden);

    // ---- attention

    /**
     * Rotates q and k heads of qkv in place by position t (rotate-half convention, as Hugging Face Llama):
     * pairs (i, i + headDim/2) with angle t·theta^(-2i/headDim). {@code inverse} applies the transpose
     * (used on gradients).
     */
    void rope(Tensor qkv, int batch, int seq, int nHead, int nKvHead, int headDim, float theta, boolean inverse);

    /**
     * Causal attention, softmax(q·kᵀ/sqrt(headDim))·v, query heads grouped over nKvHead key/value heads.
     * qkv [B*T, (nHead+2*nKvHead)*headDim] → out [B*T, nHead*headDim]; writes the row log-sum-exp of the
     * scaled scores lse[B, nHead, T], which is all backward needs to rebuild the probabilities.
     */
    void attentionForward(Tensor out, Tensor lse, Tensor qkv, int batch, int seq, int nHead, int nKvHead, int headDim);

    /**
     * {@link #attentionForward} that also writes what the stash keeps of out and of qkv: their quantized copies outq and
     * qkvq (either may be null: none), exactly as {@link #quantize} would from the out written and from the whole qkv.
     * Backends fuse them into the kernel's epilogue where they can (qkv's from the q, k, v the kernel has read anyway).
     */
    default void attentionForwardQuantized(Tensor out, Quantized outq, Tensor lse, Tensor qkv, Quantized qkvq, int batch, int seq,
                                           int nHead, int nKvHead, int headDim) {
        attentionForward(out, lse, qkv, batch, seq, nHead, nKvHead, headDim);
        if (outq != null) quantize(outq.packed(), outq.scales(), out, (long) batch * seq * nHead * headDim, outq.format(), outq.seed());
        if (qkvq != null) {
            quantize(qkvq.packed(), qkvq.scales(), qkv, (long) batch * seq * (nHead + 2L * nKvHead) * headDim, qkvq.format(), qkvq.seed());
        }
    }

    /** Writes dqkv (same layout as qkv) from dout, given the forward's out and lse. */
    void attentionBackward(Tensor dqkv, Tensor dout, Tensor out, Tensor lse, Tensor qkv,
                           int batch, int seq, int nHead, int nKvHead, int headDim);

    /**
     * {@link #attentionBackward} where backward recomputes the forward (from a qkv read back from its quantized copy):
     * attentionForward into out and lse, then attentionBackward. out and lse are scratch, which a backend that computes
     * what its backward needs of them in the recomputation itself may leave unwritten.
     */
    default void attentionBackwardRecomputing(Tensor dqkv, Tensor dout, Tensor out, Tensor lse, Tensor qkv, int batch, int seq,
                                              int nHead, int nKvHead, int headDim) {
        attentionForward(out, lse, qkv, batch, seq, nHead, nKvHead, headDim);
        attentionBackward(dqkv, dout, out, lse, qkv, batch, seq, nHead, nKvHead, headDim);
    }

    // ---- embedding, residual, loss

    /** out[r,:] (+)= table[ids[r],:]. */
    void embeddingForward(Tensor out, Tensor table, Tensor ids, int rows, int cols, boolean accumulate);

    /** dtable[ids[r],:] += dout[r,:]. */
    void embeddingBackward(Tensor dtable, Tensor dout, Tensor ids, int rows, int cols);

    /** out = a + b (out may alias a or b). */
    void add(Tensor out, Tensor a, Tensor b, long n);

    /**
     * Softmax cross-entropy per row: losses[r] = logsumexp(logits[r,:]) - logits[r,targets[r]]. When dlogits
     * is non-null also writes dlogits = (softmax - onehot) * gradScale; dlogits may alias logits.
     */
    void crossEntropy(Tensor losses, Tensor dlogits, Tensor logits, Tensor targets, int rows, int vocab, float gradScale);

    // ---- optimizer

    /** out[0] (+)= sum of x². */
    void sumOfSquares(Tensor out, Tensor x, long n, boolean accumulate);

    /**
     * One AdamW step with decoupled weight decay and bias correction. Gradients are first multiplied by
     * min(1, maxNorm / (sqrt(normSquared[0]) + 1e-6)) when normSquared is non-null (global-norm clipping
     * without a round trip to the host).
     */
    void adamw(Tensor param, Tensor grad, Tensor m, Tensor v, long n, float lr, float beta1, float beta2,
               float eps, float weightDecay, int step, Tensor normSquared, float maxNorm);

    /**
     * {@link #adamw(Tensor, Tensor, Tensor, Tensor, long, float, float, float, float, float, int, Tensor, float)} with
     * the learning rate and the step count read from {@code hyper} = F32[2] {lr, step} on the backend, so that a
     * captured step replays with new values; also refreshes {@code compute}, the parameter's compute copy, when it is
     * neither null nor the parameter itself.
     */
    default void adamw(Tensor param, Tensor grad, Tensor m, Tensor v, Tensor compute, long n, Tensor hyper, float beta1,
                       float beta2, float eps, float weightDecay, Tensor normSquared, float maxNorm) {
        float[] h = new float[2];
        download(hyper.slice(0, 2), MemorySegment.ofArray(h));
        adamw(param, grad, m, v, n, h[0], beta1, beta2, eps, weightDecay, (int) h[1], normSquared, maxNorm);
        if (compute != null && compute != param) convert(compute, param, n);
    }

    /** out[0] = the sum of x² over every element of every tensor of xs (F32), overwriting out: a global gradient norm². */
    default void sumOfSquares(Tensor out, List<Tensor> xs) {
        if (xs.isEmpty()) zero(out.slice(0, 1));
        for (int i = 0; i < xs.size(); i++) sumOfSquares(out, xs.get(i), xs.get(i).size(), i > 0);
    }

    /** One parameter's part in {@link #adamw(List, Tensor, float, float, float, Tensor, float)}. */
    record AdamWTensors(Tensor param, Tensor grad, Tensor m, Tensor v, Tensor compute, float weightDecay) {
    }

    /**
     * The {@code hyper} overload of adamw over many parameters at once (one launch where the backend can), each with
     * its own weight decay and compute copy.
     */
    default void adamw(List<AdamWTensors> params, Tensor hyper, float beta1, float beta2, float eps, Tensor normSquared,
                       float maxNorm) {
        for (AdamWTensors p : params) {
            adamw(p.param(), p.grad(), p.m(), p.v(), p.compute(), p.param().size(), hyper, beta1, beta2, eps, p.weightDecay(),
                    normSquared, maxNorm);
        }
    }

    // ---- quantization (DSQ's stash and GEMM operands)

    /**
     * Quantizes src[0, n) (activations: F32, or BF16 where the backend computes in it) block by block into
     * {@code format}: the packed values into {@code packed} (at least {@link QuantFormat#packedBytes} bytes) and one
     * scale per block into {@code scales} (at least {@link QuantFormat#scalesBytes} bytes); both are byte tensors (I8).
     * Every backend writes the same bytes for the same values. {@code seed} drives stochastic rounding, so that a run is
     * repeatable. Rejects NaN and ±Inf with an error naming the block; a GPU, which cannot stop there, stores the block
     * as NaN and throws at the host's next wait on it (see {@code CudaBackend#quantize}).
     */
    void quantize(Tensor packed, Tensor scales, Tensor src, long n, QuantFormat format, long seed);

    /** dst[0, n) = the values that {@link #quantize} packed, as dst's type (F32, or BF16 rounded to nearest even). */
    void dequantize(Tensor dst, Tensor packed, Tensor scales, long n, QuantFormat format);

    // ---- graphs

    /** A recorded sequence of ops that replays without the host (a CUDA graph). */
    interface Graph extends AutoCloseable {
        /** Queues the recorded ops again, on the same tensors. */
        void replay();

        @Override
        void close();
    }

    /**
     * Records the ops that {@code work} queues (without running them) as a graph, or returns null, having done
     * nothing, where the backend cannot. The work must not read device memory on the host, allocate or
     * synchronize; tensors and scalar arguments are fixed at capture (scalars that change go through device memory,
     * as {@code hyper} of adamw).
     */
    default Graph capture(Runnable work) {
        return null;
    }

    @Override
    void close();
}
