package frugal.nn;

import frugal.FrugalException;
import frugal.quant.Quantized;
import frugal.stash.QuantPoint;
import frugal.stash.Stash;
import frugal.stash.StashKind;
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

    /** y[rows, out] = x[rows, in]·Wᵀ + b; stashes x (DSQ's q1), with x and W as the GEMM reads them at q0. */
    public void forward(Context ctx, Tensor y, Tensor x, int rows) {
        forward(ctx, y, null, null, x, rows, true);
    }

    /**
     * pre[rows, out] = x·Wᵀ + b and act = GELU(pre), in one product where the backend can (the GELU epilogue spares
     * a pass over pre); stashes and quantizes as {@link #forward(Context, Tensor, Tensor, int)}.
     */
    public void forwardGelu(Context ctx, Tensor act, Tensor pre, Tensor x, int rows) {
        forward(ctx, act, pre, null, x, rows, true);
    }

    /**
     * forwardGelu where the stash keeps pre only as its quantized copy preq: written as the product writes act, while
     * pre itself may stay unwritten (scratch).
     */
    public void forwardGelu(Context ctx, Tensor act, Tensor pre, Quantized preq, Tensor x, int rows) {
        forward(ctx, act, pre, preq, x, rows, true);
    }

    /**
     * forward without stashing x: its caller recomputes x for backward and hands it to {@link #backwardRecomputed}
     * (GeluMlp's proj, whose input GELU(pre) comes back from the stashed pre).
     */
    public void forwardRecomputable(Context ctx, Tensor y, Tensor x, int rows) {
        forward(ctx, y, null, null, x, rows, false);
    }

    /**
     * y = x·Wᵀ + b, or with pre non-null, pre = x·Wᵀ + b and y = GELU(pre); x stashed where stashInput. productq, where
     * non-null (only with pre), receives the quantized copy of pre.
     */
    private void forward(Context ctx, Tensor y, Tensor pre, Quantized productq, Tensor x, int rows, boolean stashInput) {
        Stash s = ctx.stash();
        if (stashInput) s.save(name + ".in", StashKind.LINEAR_INPUT, x);
        Tensor xq = s.gemmOperand(QuantPoint.Q0, "a", x), wq = s.gemmOperand(QuantPoint.Q0, "b", weight.compute());
        Tensor b = bias == null ? null : bias.compute();
        try {
            if (productq != null) ctx.ops().linearGeluForwardQuantized(y, pre, productq, xq, wq, b, rows, out, in);
            else if (pre == null) ctx.ops().linearForward(y, xq, wq, b, rows, out, in);
            else ctx.ops().linearGeluForward(y, pre, xq, wq, b, rows, out, in);
        } catch (FrugalException e) {
            throw s.failure("stash of " + name + "'s product", e);
        }
        s.ledger().gemm((double) rows * out * in, x.size(), s.bits(QuantPoint.Q0), wq.size(), s.bits(QuantPoint.Q0));
    }

    /** The forward computation without stashing (inference). */
    public void apply(Context ctx, Tensor y, Tensor x, int rows) {
        ctx.ops().linearForward(y, x, weight.compute(), bias == null ? null : bias.value(), rows, out, in);
    }

    /**
     * dx[rows, in] = dy·W (overwrites); dW += dyᵀ·x; db += Σ dy. Both GEMMs read dy at q2; W at q3. db comes with
     * the dW product (which may sum its operand as it reads it) only when q2 leaves dy as it is: db is Σ dy, not Σ dyq.
     */
    public void backward(Context ctx, Tensor dx, Tensor dy, int rows) {
        backward(ctx, dx, dy, null, null, true, rows);
    }

    /** The bias gradient (null without a bias), for a caller that sums dy into it as it writes dy. */
    public Tensor biasGrad() {
        return bias == null ? null : bias.grad();
    }

    /**
     * backward where the caller has already added Σ dy into {@link #biasGrad} (GeluMlp's fc: GELU's backward sums its
     * output as it writes it), Σ of dy as it is, before q2.
     */
    public void backwardSummedBias(Context ctx, Tensor dx, Tensor dy, int rows) {
        backward(ctx, dx, dy, null, null, false, rows);
    }

    /**
     * {@link #backward(Context, Tensor, Tensor, int)} of a layer whose input x was GELU(pre) (GeluMlp's proj): writes
     * dpre[rows, in] = (dy·W) ⊙ gelu'(pre) where dx would be, in one product where the backend can (the DGELU epilogue
     * spares a pass over dpre), with the same operands, quantization points and ledger entries as backward.
     */
    public void backwardThroughGelu(Context ctx, Tensor dpre, Tensor dy, Tensor pre, int rows) {
        backward(ctx, dpre, dy, pre, null, true, rows);
    }

    /** backward of a layer that ran {@link #forwardRecomputable}, with its input x recomputed. */
    public void backwardRecomputed(Context ctx, Tensor dx, Tensor dy, Tensor x, int rows) {
        backward(ctx, dx, dy, null, x, true, rows);
    }

    /**
     * dx = dy·W, or with pre non-null, dx = (dy·W) ⊙ gelu'(pre); and the parameter gradients, db where sumBias.
     * recomputed: x, else from the stash.
     */
    private void backward(Context ctx, Tensor dx, Tensor dy, Tensor pre, Tensor recomputed, boolean sumBias, int rows) {
        Stash s = ctx.stash();
        Tensor x = recomputed != null ? recomputed : s.load(name + ".in");
        double xBits = recomputed != null ? 16 : s.bits(name + ".in");
        Tensor dyq = s.gemmOperand(QuantPoint.Q2, "a", dy);
        Tensor db = bias == null || !sumBias ? null : bias.grad();
        ctx.ops().linearWeightBackward(weight.grad(), dyq == dy ? db : null, dyq, x, rows, out, in);
        s.ledger().gemm((double) rows * out * in, dy.size(), s.bits(QuantPoint.Q2), x.size(), xBits);
        if (db != null && dyq != dy) ctx.ops().biasBackward(db, dy, rows, out);
        if (dx != null) {
            Tensor wq = s.gemmOperand(QuantPoint.Q3, "b", weight.compute());
            if (pre == null) ctx.ops().matmul(dx, dyq, wq, rows, in, out, false, false, false);
            else ctx.ops().matmulGeluBackward(dx, dyq, wq, pre, rows, in, out);
            s.ledger().gemm((double) rows * out * in, dy.size(), s.bits(QuantPoint.Q2), wq.size(), s.bits(QuantPoint.Q3));
        }
    }
}
