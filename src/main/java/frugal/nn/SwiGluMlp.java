package frugal.nn;

import frugal.stash.StashKind;
import frugal.tensor.Tensor;

/** Fused gate/up projection → silu(gate)·up → down. Stashes the gate/up projection. */
public final class SwiGluMlp implements Mlp {
    private final String name;
    private final Linear gateUp;
    private final Linear down;

    public SwiGluMlp(String name, Linear gateUp, Linear down) {
        this.name = name;
        this.gateUp = gateUp;
        this.down = down;
    }

    @Override
    public void forward(Context ctx, Tensor y, Tensor x, int rows) {
        int hidden = down.in();
        Tensor gu = ctx.stashed(name + ".gate_up", "mlp.gate_up", new int[]{rows, 2 * hidden}, StashKind.ACTIVATION_INPUT);
        Tensor act = ctx.stashed(name + ".act", "mlp.act", new int[]{rows, hidden}, StashKind.LINEAR_INPUT);
        gateUp.forward(ctx, gu, x, rows);
        ctx.ops().swigluForward(act, gu, rows, hidden);
        ctx.stash().save(name + ".gate_up", StashKind.ACTIVATION_INPUT, gu);
        down.forward(ctx, y, act, rows);
    }

    @Override
    public void backward(Context ctx, Tensor dx, Tensor dy, int rows) {
        int hidden = down.in();
        Tensor dact = ctx.buffers().get("grad.mlp", rows, hidden);
        Tensor dgu = ctx.buffers().get("grad.gate_up", rows, 2 * hidden);
        down.backward(ctx, dact, dy, rows);
        ctx.ops().swigluBackward(dgu, dact, ctx.stash().load(name + ".gate_up"), rows, hidden);
        gateUp.backward(ctx, dx, dgu, rows);
    }
}
