package frugal.nn;

import frugal.tensor.Tensor;

import java.util.List;

/**
 * A trainable tensor (F32, the master copy) with its gradient (F32), its compute copy (the weights that matmuls
 * read, in the backend's activation type: the same tensor as {@code value} on F32 backends, a BF16 copy under mixed
 * precision, refreshed by {@link Params#refreshCompute()} and by the optimizer), and how Hugging Face stores it: as one tensor (possibly
 * {@code hfTransposed}, GPT-2's Conv1D [in, out]) or as several tensors concatenated along rows (Llama's
 * q/k/v and gate/up projections, fused here into one matmul each).
 */
public record Param(String name, Tensor value, Tensor grad, boolean weightDecay, List<HfPart> hfParts,
                    boolean hfTransposed, Tensor compute) {

    /** A parameter whose compute copy is its value. */
    public Param(String name, Tensor value, Tensor grad, boolean weightDecay, List<HfPart> hfParts, boolean hfTransposed) {
        this(name, value, grad, weightDecay, hfParts, hfTransposed, value);
    }

    /** One Hugging Face tensor holding {@code rows} rows of this parameter. */
    public record HfPart(String name, int rows) {
    }
}
