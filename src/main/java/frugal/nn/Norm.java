package frugal.nn;

import frugal.tensor.Tensor;

/** A per-row normalization: LayerNorm (GPT-2) or RMSNorm (Llama). */
public interface Norm {
    /** out[rows, cols] = norm(x); stashes what backward needs. */
    void forward(Context ctx, Tensor out, Tensor x, int rows);

    /** Accumulates into dx (a residual gradient) and the parameter gradients. */
    void backward(Context ctx, Tensor dx, Tensor dout, int rows);
}
