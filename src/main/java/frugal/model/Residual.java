package frugal.model;

import frugal.nn.Context;
import frugal.nn.Norm;
import frugal.stash.StashKind;
import frugal.tensor.Tensor;

/**
 * The residual stream between blocks left unsummed, x + r (r null: x alone), so that the norm which reads it next does
 * the add in the same pass (one read of the stream fewer per add).
 */
record Residual(Tensor x, Tensor r) {
    /**
     * out = norm(x + r); returns the sum, written when there is an add into the buffer of a norm input stashed as
     * {@code name} ({@link Context#stashed}, shared by the layers in {@code sharedRole} once quantized).
     */
    Tensor normalize(Context ctx, Norm norm, Tensor out, String name, String sharedRole, int rows) {
        if (r == null) {
            norm.forward(ctx, out, x, rows);
            return x;
        }
        Tensor sum = ctx.stashed(name, sharedRole, x.shape(), StashKind.NORM_INPUT);
        norm.forwardAdd(ctx, sum, out, x, r, rows);
        return sum;
    }
}
