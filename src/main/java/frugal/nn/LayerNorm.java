package frugal.nn;

import frugal.FrugalException;
import frugal.quant.Quantized;
import frugal.stash.StashKind;
import frugal.tensor.DType;
import frugal.tensor.Tensor;

/**
 * LayerNorm with weight and bias; stashes x, mean and rstd. Where the stash quantizes x, and its output (a buffer of
 * {@link Context#stashed}), the norm writes their quantized copies itself as it writes them, and backward reads x's.
 */
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
        forward(ctx, null, out, x, null, rows);
    }

    @Override
    public void forwardAdd(Context ctx, Tensor sum, Tensor out, Tensor x, Tensor r, int rows) {
        forward(ctx, sum, out, x, r, rows);
    }

    /** out = norm(x), or norm(sum) with sum = x + r where r is non-null. */
    private void forward(Context ctx, Tensor sum, Tensor out, Tensor x, Tensor r, int rows) {
        int cols = (int) weight.value().size();
        Tensor mean = ctx.buffers().get(name + ".mean", DType.F32, rows), rstd = ctx.buffers().get(name + ".rstd", DType.F32, rows);
        Tensor in = r == null ? x : sum;
        Quantized inq = ctx.stash().saveByProducer(name + ".in", StashKind.NORM_INPUT, in), outq = ctx.stash().outputByProducer(out);
        if (inq == null && outq == null) {
            if (r == null) ctx.ops().layerNormForward(out, mean, rstd, x, weight.value(), bias.value(), rows, cols, eps);
            else ctx.ops().addLayerNormForward(sum, out, mean, rstd, x, r, weight.value(), bias.value(), rows, cols, eps);
        } else {
            try {
                ctx.ops().layerNormForwardQuantized(sum, out, mean, rstd, x, r, weight.value(), bias.value(), rows, cols, eps, inq, outq);
            } catch (FrugalException e) {
                throw ctx.stash().failure("stash of " + name + "'s input and output", e);
            }
        }
        ctx.stash().save(name + ".mean", StashKind.NORM_STATS, mean);
        ctx.stash().save(name + ".rstd", StashKind.NORM_STATS, rstd);
    }

    @Override
    public void backward(Context ctx, Tensor dx, Tensor dout, int rows) {
        int cols = (int) weight.value().size();
        Tensor mean = ctx.stash().load(name + ".mean"), rstd = ctx.stash().load(name + ".rstd");
        Quantized xq = ctx.stash().quantized(name + ".in");
        if (xq != null && ctx.ops().layerNormBackward(dx, weight.grad(), bias.grad(), dout, xq, weight.value(), mean, rstd, rows, cols)) {
            ctx.stash().readByConsumer(name + ".in");
            return;
        }
        ctx.ops().layerNormBackward(dx, weight.grad(), bias.grad(), dout, ctx.stash().load(name + ".in"), weight.value(), mean, rstd,
                rows, cols);
    }
}
