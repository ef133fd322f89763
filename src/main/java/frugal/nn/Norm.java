package frugal.nn;

import frugal.tensor.Tensor;

/** A per-row normalization: LayerNorm (GPT-2) or RMSNorm (Llama). */
public interface Norm {
    /** out[rows, cols] = norm(x); stashes what backward needs. */
    void forward(Context ctx, Tensor out, Tensor x, int rows);

    /** sum = x + r (the residual add before the norm), then out = norm(sum); a norm that can fuses the two. */
    default void forwardAdd(Context ctx, Tensor sum, Tensor out, Tensor x, Tensor r, int rows) {
        ctx.ops().add(sum, x, r, sum.size());
        forward(ctx, out, sum, rows);
    }

    /** Accumulates into dx (a residual gradient) and the parameter gradients. */
    void backward(Context ctx, Tensor dx, Tensor dout, int rows);
}
