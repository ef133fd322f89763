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

    /**
     * Takes the residual stream as the previous block left it and returns this block's, both unsummed: its input is
     * summed by norm1, its output by the next norm. The sums live in buffers of their own while backward keeps them,
     * shared by the blocks once they are quantized.
     */
    Residual forward(Context ctx, Residual in, int batch, int seq) {
        int rows = batch * seq;
        int[] shape = {rows, dim};
        Tensor normed1 = ctx.stashed(name + ".norm1", "block.norm1", shape, StashKind.LINEAR_INPUT);
        Tensor x = in.normalize(ctx, norm1, normed1, name + ".in", "block.in", rows);
        Tensor branch = ctx.buffers().get("scratch.branch", rows, dim); // in.r() too: read above
        attn.forward(ctx, branch, normed1, batch, seq);
        // mid is asked for only now: it may share a buffer with the previous block's mid (in.x()), read above.
        Tensor normed2 = ctx.stashed(name + ".norm2", "block.norm2", shape, StashKind.LINEAR_INPUT);
        Tensor mid = new Residual(x, branch).normalize(ctx, norm2, normed2, name + ".mid", "block.mid", rows);
        mlp.forward(ctx, branch, normed2, rows);
        return new Residual(mid, branch);
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
