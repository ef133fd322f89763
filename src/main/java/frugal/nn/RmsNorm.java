package frugal.nn;

import frugal.stash.StashKind;
import frugal.tensor.DType;
import frugal.tensor.Tensor;

/** RMSNorm with a weight; stashes x and rstd. */
public final class RmsNorm implements Norm {
    private final String name;
    private final Param weight;
    private final float eps;

    public RmsNorm(String name, Param weight, float eps) {
        this.name = name;
        this.weight = weight;
        this.eps = eps;
    }

    @Override
    public void forward(Context ctx, Tensor out, Tensor x, int rows) {
        int cols = (int) weight.value().size();
        Tensor rstd = ctx.buffers().get(name + ".rstd", DType.F32, rows);
        ctx.ops().rmsNormForward(out, rstd, x, weight.value(), rows, cols, eps);
        ctx.stash().save(name + ".in", StashKind.NORM_INPUT, x);
        ctx.stash().save(name + ".rstd", StashKind.NORM_STATS, rstd);
    }

    @Override
    public void backward(Context ctx, Tensor dx, Tensor dout, int rows) {
        int cols = (int) weight.value().size();
        ctx.ops().rmsNormBackward(dx, weight.grad(), dout, ctx.stash().load(name + ".in"), weight.value(),
                ctx.stash().load(name + ".rstd"), rows, cols);
    }
}
