package frugal.nn;

import frugal.quant.Quantized;
import frugal.stash.StashKind;
import frugal.tensor.Tensor;

/**
 * fc → GELU(tanh) → proj; fc and GELU in one product where the backend can, and in backward proj's input gradient and
 * GELU's. Stashes the pre-activation (GELU's input) and GELU's output (proj's input). Where the stash quantizes both,
 * GELU's output is not stashed but recomputed from the pre-activation in backward: it is a function of the
 * pre-activation, whose quantized copy carries what it would. Where the stash keeps the pre-activation quantized,
 * GELU's backward reads that copy itself and sums fc's bias gradient as it writes its output (one pass over the
 * gradient, after proj's plain input-gradient product, instead of the product's GELU epilogue reading a dequantized
 * pre-activation and a pass of bias backward).
 */
public final class GeluMlp implements Mlp {
    private final String name;
    private final Linear fc;
    private final Linear proj;

    public GeluMlp(String name, Linear fc, Linear proj) {
        this.name = name;
        this.fc = fc;
        this.proj = proj;
    }

    @Override
    public void forward(Context ctx, Tensor y, Tensor x, int rows) {
        int[] shape = {rows, fc.out()};
        Tensor pre = ctx.stashed(name + ".fc", "mlp.fc", shape, StashKind.ACTIVATION_INPUT);
        boolean recompute = ctx.stash().policy().format(StashKind.ACTIVATION_INPUT) != null
                && ctx.stash().policy().format(StashKind.LINEAR_INPUT) != null;
        Tensor act = recompute ? ctx.buffers().get("mlp.gelu.recomputed", shape)
                : ctx.stashed(name + ".gelu", "mlp.gelu", shape, StashKind.LINEAR_INPUT);
        Quantized preq = ctx.stash().saveByProducer(name + ".fc", StashKind.ACTIVATION_INPUT, pre);
        if (preq != null) fc.forwardGelu(ctx, act, pre, preq, x, rows);
        else fc.forwardGelu(ctx, act, pre, x, rows);
        if (recompute) proj.forwardRecomputable(ctx, y, act, rows);
        else proj.forward(ctx, y, act, rows);
    }

    @Override
    public void backward(Context ctx, Tensor dx, Tensor dy, int rows) {
        int hidden = fc.out();
        Tensor dpre = ctx.buffers().get("grad.mlp", rows, hidden);
        Quantized preq = ctx.stash().quantized(name + ".fc");
        if (preq == null) {
            proj.backwardThroughGelu(ctx, dpre, dy, ctx.stash().load(name + ".fc"), rows);
            fc.backward(ctx, dx, dpre, rows);
            return;
        }
        Tensor act = ctx.buffers().get("mlp.gelu.recomputed", rows, hidden), dact = ctx.buffers().get("grad.mlp.gelu", rows, hidden);
        ctx.stash().readByConsumer(name + ".fc");
        ctx.ops().geluRecompute(act, null, preq, (long) rows * hidden);
        proj.backwardRecomputed(ctx, dact, dy, act, rows);
        ctx.ops().geluBackwardQuantized(dpre, fc.biasGrad(), dact, preq, rows, hidden);
        fc.backwardSummedBias(ctx, dx, dpre, rows);
    }
}
