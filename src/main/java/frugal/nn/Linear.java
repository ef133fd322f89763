package frugal.nn;

import frugal.tensor.Tensor;

/**
 * y = x·Wᵀ + b with W stored [out, in]; the products read W's compute copy (bf16 under mixed precision) and
 * accumulate W's gradient in F32. Every weight matmul of a model goes through this class: the
 * seam where other number formats (INT8 per-block, sparse, fake-quant) plug in.
 */
public final class Linear {
    private final String name;
    private final Param weight;
    private final Param bias;
    private final int in;
    private final int out;

    public Linear(String name, Param weight, Param bias) {
        this.name = name;
        this.weight = weight;
        this.bias = bias;
        this.out = weight.value().dim(0);
        this.in = weight.value().dim(1);
    }

    public int in() {
        return in;
    }

    public int out() {
        return out;
    }

    /** y[rows, out] = x[rows, in]·Wᵀ + b; stashes x. */
    public void forward(Context ctx, Tensor y, Tensor x, int rows) {
        ctx.stash().save(name + ".in", x);
        apply(ctx, y, x, rows);
    }

    /** The forward computation without stashing (inference). */
    public void apply(Context ctx, Tensor y, Tensor x, int rows) {
        ctx.ops().linearForward(y, x, weight.compute(), bias == null ? null : bias.value(), rows, out, in);
    }

    /** dx[rows, in] = dy·W (overwrites); dW += dyᵀ·x; db += Σ dy. */
    public void backward(Context ctx, Tensor dx, Tensor dy, int rows) {
        Tensor x = ctx.stash().load(name + ".in");
        ctx.ops().matmul(weight.grad(), dy, x, out, in, rows, true, false, true);
        if (bias != null) ctx.ops().biasBackward(bias.grad(), dy, rows, out);
        if (dx != null) ctx.ops().matmul(dx, dy, weight.compute(), rows, in, out, false, false, false);
    }
}
