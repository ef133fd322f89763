package frugal.nn;

import frugal.tensor.Tensor;

import java.util.List;

/**
 * A trainable tensor with its gradient, and how Hugging Face stores it: as one tensor (possibly
 * {@code hfTransposed}, GPT-2's Conv1D [in, out]) or as several tensors concatenated along rows (Llama's
 * q/k/v and gate/up projections, fused here into one matmul each).
 */
public record Param(String name, Tensor value, Tensor grad, boolean weightDecay, List<HfPart> hfParts,
                    boolean hfTransposed) {

    /** One Hugging Face tensor holding {@code rows} rows of this parameter. */
    public record HfPart(String name, int rows) {
    }
}
