package frugal.nn;

import frugal.stash.StashKind;
import frugal.tensor.DType;
import frugal.tensor.Tensor;

/** LayerNorm with weight and bias; stashes x, mean and rstd. */
public final class LayerNorm implements Norm {
    private final String name;
    private final Param weight;
    private final Param bias;
    private final float eps;

    public LayerNorm(String name, Param weight, Param bias, float eps) {
        this.name = name;
        this.weight = weight;
        this.bias = bias;
        this.eps = eps;
    }

    @Override
    public void forward(Context ctx, Tensor out, Tensor x, int rows) {
        int cols = (int) weight.value().size();
        Tensor mean = ctx.buffers().get(name + ".mean", DType.F32, rows), rstd = ctx.buffers().get(name + ".rstd", DType.F32, rows);
        ctx.ops().layerNormForward(out, mean, rstd, x, weight.value(), bias.value(), rows, cols, eps);
        ctx.stash().save(name + ".in", StashKind.NORM_INPUT, x);
        ctx.stash().save(name + ".mean", StashKind.NORM_STATS, mean);
        ctx.stash().save(name + ".rstd", StashKind.NORM_STATS, rstd);
    }

    @Override
    public void backward(Context ctx, Tensor dx, Tensor dout, int rows) {
        int cols = (int) weight.value().size();
        ctx.ops().layerNormBackward(dx, weight.grad(), bias.grad(), dout, ctx.stash().load(name + ".in"),
                weight.value(), ctx.stash().load(name + ".mean"), ctx.stash().load(name + ".rstd"), rows, cols);
    }
}
