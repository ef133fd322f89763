package frugal.nn;

import frugal.stash.StashKind;
import frugal.tensor.Tensor;

/**
 * fc → GELU(tanh) → proj; fc and GELU in one product where the backend can, and in backward proj's input gradient and
 * GELU's. Stashes the pre-activation (GELU's input).
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
        int hidden = fc.out();
        Tensor pre = ctx.stashed(name + ".fc", "mlp.fc", new int[]{rows, hidden}, StashKind.ACTIVATION_INPUT);
        Tensor act = ctx.stashed(name + ".gelu", "mlp.gelu", new int[]{rows, hidden}, StashKind.LINEAR_INPUT);
        fc.forwardGelu(ctx, act, pre, x, rows);
        ctx.stash().save(name + ".fc", StashKind.ACTIVATION_INPUT, pre);
        proj.forward(ctx, y, act, rows);
    }

    @Override
    public void backward(Context ctx, Tensor dx, Tensor dy, int rows) {
        int hidden = fc.out();
        Tensor dpre = ctx.buffers().get("grad.mlp", rows, hidden);
        proj.backwardThroughGelu(ctx, dpre, dy, ctx.stash().load(name + ".fc"), rows);
        fc.backward(ctx, dx, dpre, rows);
    }
}
