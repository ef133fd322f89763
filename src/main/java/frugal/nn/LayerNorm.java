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
        Tensor mean = mean(ctx, rows), rstd = rstd(ctx, rows);
        ctx.ops().layerNormForward(out, mean, rstd, x, weight.value(), bias.value(), rows, cols(), eps);
        save(ctx, x, mean, rstd);
    }

    @Override
    public void forwardAdd(Context ctx, Tensor sum, Tensor out, Tensor x, Tensor r, int rows) {
        Tensor mean = mean(ctx, rows), rstd = rstd(ctx, rows);
        ctx.ops().addLayerNormForward(sum, out, mean, rstd, x, r, weight.value(), bias.value(), rows, cols(), eps);
        save(ctx, sum, mean, rstd);
    }

    private int cols() {
        return (int) weight.value().size();
    }

    private Tensor mean(Context ctx, int rows) {
        return ctx.buffers().get(name + ".mean", DType.F32, rows);
    }

    private Tensor rstd(Context ctx, int rows) {
        return ctx.buffers().get(name + ".rstd", DType.F32, rows);
    }

    private void save(Context ctx, Tensor x, Tensor mean, Tensor rstd) {
        ctx.stash().save(name + ".in", StashKind.NORM_INPUT, x);
        ctx.stash().save(name + ".mean", StashKind.NORM_STATS, mean);
        ctx.stash().save(name + ".rstd", StashKind.NORM_STATS, rstd);
    }

    @Override
    public void backward(Context ctx, Tensor dx, Tensor dout, int rows) {
        ctx.ops().layerNormBackward(dx, weight.grad(), bias.grad(), dout, ctx.stash().load(name + ".in"),
                weight.value(), ctx.stash().load(name + ".mean"), ctx.stash().load(name + ".rstd"), rows, cols());
    }
}
