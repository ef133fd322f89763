package frugal.nn;

import frugal.FrugalException;
import frugal.quant.Quantized;
import frugal.stash.StashKind;
import frugal.tensor.DType;
import frugal.tensor.Tensor;

/**
 * Fused q/k/v projection, optional rotary positions, causal grouped-query attention, output projection.
 * Stashes the (rotated) qkv, the attention output and its log-sum-exp. Where the stash policy recomputes softmax
 * statistics ({@link frugal.stash.StashPolicy#recomputesSoftmax}: by default when it quantizes qkv below 8 bits),
 * backward recomputes the output and the log-sum-exp from the q, k, v it reads back instead: backward rebuilds the
 * softmax as exp(q·k − lse), and with the forward's exact lse against coarsely quantized q and k those rows no longer
 * sum to one, an error the exponential amplifies (on GPT-2 124M with a 3–4-bit stash: gradient norms of 10²–10³). Where
 * the stash keeps the output only quantized (a buffer of {@link Context#stashed} shared by the layers), attention writes
 * its quantized copy itself as it writes it; without rotary positions it writes qkv's too, from the q, k, v it reads.
 */
public final class CausalSelfAttention {
    private final String name;
    private final Linear qkv;
    private final Linear proj;
    private final int nHead;
    private final int nKvHead;
    private final int headDim;
    private final float ropeTheta;

    /** ropeTheta ≤ 0 means no rotary embedding (GPT-2's learned positions). */
    public CausalSelfAttention(String name, Linear qkv, Linear proj, int nHead, int nKvHead, int headDim, float ropeTheta) {
        this.name = name;
        this.qkv = qkv;
        this.proj = proj;
        this.nHead = nHead;
        this.nKvHead = nKvHead;
        this.headDim = headDim;
        this.ropeTheta = ropeTheta;
    }

    /** y[B*T, C] = attention(x[B*T, C]). */
    public void forward(Context ctx, Tensor y, Tensor x, int batch, int seq) {
        int rows = batch * seq;
        boolean recompute = recomputesSoftmax(ctx);
        Tensor q = ctx.stashed(name + ".qkv", "attn.qkv", new int[]{rows, qkv.out()}, StashKind.ATTENTION_QKV);
        int[] attShape = {rows, nHead * headDim};
        Tensor att = recompute ? ctx.stashed(name + ".att", "attn.att", attShape, StashKind.LINEAR_INPUT)
                : ctx.stashed(name + ".att", "attn.att", attShape, StashKind.ATTENTION_OUTPUT, StashKind.LINEAR_INPUT);
        Tensor lse = ctx.buffers().get(recompute ? "scratch.lse" : name + ".lse", DType.F32, batch, nHead, seq);
        qkv.forward(ctx, q, x, rows);
        Quantized qkvq = null; // without rope, attention writes the stash's copy of q, k, v from what it reads of them
        if (ropeTheta > 0) { // the stash keeps the rotated q and k
            ctx.ops().rope(q, batch, seq, nHead, nKvHead, headDim, ropeTheta, false);
            ctx.stash().save(name + ".qkv", StashKind.ATTENTION_QKV, q);
        } else {
            qkvq = ctx.stash().saveByProducer(name + ".qkv", StashKind.ATTENTION_QKV, q);
        }
        Quantized attq = ctx.stash().outputByProducer(att); // then the saves of att below and in proj find it saved
        if (attq == null && qkvq == null) {
            ctx.ops().attentionForward(att, lse, q, batch, seq, nHead, nKvHead, headDim);
        } else {
            try {
                ctx.ops().attentionForwardQuantized(att, attq, lse, q, qkvq, batch, seq, nHead, nKvHead, headDim);
            } catch (FrugalException e) {
                throw ctx.stash().failure("stash of " + name + (qkvq == null ? "'s output" : "'s q, k, v or output"), e);
            }
        }
        if (!recompute) {
            ctx.stash().save(name + ".att", StashKind.ATTENTION_OUTPUT, att);
            ctx.stash().save(name + ".lse", StashKind.SOFTMAX_STATS, lse);
        }
        countAttentionGemms(ctx, batch, seq, 2);
        proj.forward(ctx, y, att, rows);
    }

    /** dx[B*T, C] = gradient of the input (overwrites); accumulates parameter gradients. */
    public void backward(Context ctx, Tensor dx, Tensor dy, int batch, int seq) {
        int rows = batch * seq;
        Tensor datt = ctx.buffers().get("grad.att", rows, nHead * headDim);
        Tensor dqkv = ctx.buffers().get("grad.qkv", rows, qkv.out());
        proj.backward(ctx, datt, dy, rows);
        Tensor q = ctx.stash().load(name + ".qkv");
        if (recomputesSoftmax(ctx)) { // the forward's output and log-sum-exp are scratch the backend may leave unwritten
            Tensor att = ctx.buffers().get("recompute.att", rows, nHead * headDim);
            Tensor lse = ctx.buffers().get("recompute.lse", DType.F32, batch, nHead, seq);
            ctx.ops().attentionBackwardRecomputing(dqkv, datt, att, lse, q, batch, seq, nHead, nKvHead, headDim);
            countAttentionGemms(ctx, batch, seq, 2);
        } else {
            ctx.ops().attentionBackward(dqkv, datt, ctx.stash().load(name + ".att"), ctx.stash().load(name + ".lse"), q, batch, seq,
                    nHead, nKvHead, headDim);
        }
        countAttentionGemms(ctx, batch, seq, 5);
        if (ropeTheta > 0) ctx.ops().rope(dqkv, batch, seq, nHead, nKvHead, headDim, ropeTheta, true);
        qkv.backward(ctx, dx, dqkv, rows);
    }

    /** Whether this step's backward recomputes attention's output and log-sum-exp from the q, k, v it reads back. */
    private static boolean recomputesSoftmax(Context ctx) {
        return ctx.stash().policy().recomputesSoftmax();
    }

    /**
     * Adds {@code products} causal [T×T]·[T×headDim] products per head to the ledger (2 in forward; 5 in backward,
     * which recomputes the scores), at 16 bits: the fused attention kernels read full-precision operands.
     */
    private void countAttentionGemms(Context ctx, int batch, int seq, int products) {
        double macs = (double) batch * nHead * seq * (seq + 1) / 2 * headDim;
        long operands = (long) batch * seq * (nHead + 2L * nKvHead) * headDim;
        for (int i = 0; i < products; i++) ctx.stash().ledger().gemm(macs, operands, 16, 0, 16);
    }
}
