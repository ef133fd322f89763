package frugal.model;

import frugal.nn.CausalSelfAttention;
import frugal.nn.Context;
import frugal.nn.Mlp;
import frugal.nn.Norm;
import frugal.stash.StashKind;
import frugal.tensor.Tensor;

/** One pre-norm transformer block: x + attn(norm1(x)), then + mlp(norm2(·)). */
final class Block {
    private final String name;
    private final Norm norm1;
    private final CausalSelfAttention attn;
    private final Norm norm2;
    private final Mlp mlp;
    private final int dim;

    Block(String name, Norm norm1, CausalSelfAttention attn, Norm norm2, Mlp mlp, int dim) {
        this.name = name;
        this.norm1 = norm1;
        this.attn = attn;
        this.norm2 = norm2;
        this.mlp = mlp;
        this.dim = dim;
    }

    /** Returns this block's output [B*T, C] (a buffer of its own while the next block keeps it for backward, shared with the other blocks once it is quantized). */
    Tensor forward(Context ctx, Tensor x, int batch, int seq) {
        int rows = batch * seq;
        long n = (long) rows * dim;
        int[] shape = {rows, dim};
        Tensor normed1 = ctx.stashed(name + ".norm1", "block.norm1", shape, StashKind.LINEAR_INPUT);
        Tensor mid = ctx.stashed(name + ".mid", "block.mid", shape, StashKind.NORM_INPUT);
        Tensor normed2 = ctx.stashed(name + ".norm2", "block.norm2", shape, StashKind.LINEAR_INPUT);
        Tensor branch = ctx.buffers().get("scratch.branch", rows, dim);
        norm1.forward(ctx, normed1, x, rows);
        attn.forward(ctx, branch, normed1, batch, seq);
        ctx.ops().add(mid, x, branch, n);
        norm2.forward(ctx, normed2, mid, rows);
        mlp.forward(ctx, branch, normed2, rows);
        // Asked for only now: x (the previous block's output) may be in the same shared buffer, last read above.
        Tensor out = ctx.stashed(name + ".out", "block.out", shape, StashKind.NORM_INPUT);
        ctx.ops().add(out, mid, branch, n);
        return out;
    }

    /** dres holds the gradient of the block's output on entry and of its input on return. */
    void backward(Context ctx, Tensor dres, int batch, int seq) {
        int rows = batch * seq;
        Tensor dbranch = ctx.buffers().get("grad.branch", rows, dim);
        mlp.backward(ctx, dbranch, dres, rows);
        norm2.backward(ctx, dres, dbranch, rows);
        attn.backward(ctx, dbranch, dres, batch, seq);
        norm1.backward(ctx, dres, dbranch, rows);
    }
}
