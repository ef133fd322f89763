package frugal.model;

import frugal.FrugalException;
import frugal.nn.CausalSelfAttention;
import frugal.nn.Context;
import frugal.nn.GeluMlp;
import frugal.nn.LayerNorm;
import frugal.nn.Linear;
import frugal.nn.Mlp;
import frugal.nn.Norm;
import frugal.nn.Param;
import frugal.nn.Params;
import frugal.nn.RmsNorm;
import frugal.nn.SwiGluMlp;
import frugal.stash.StashKind;
import frugal.tensor.DType;
import frugal.tensor.Tensor;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.ArrayList;
import java.util.List;

/**
 * A decoder-only language model, GPT-2 or Llama by its config. The forward pass is a flat list of
 * module calls; backward is the same list reversed. Parameters carry their Hugging Face names.
 */
public final class Transformer {
    private final ModelConfig config;
    private final Params params;
    private final Param tokenEmbedding;
    private final Param positionEmbedding;
    private final List<Block> blocks = new ArrayList<>();
    private final Norm finalNorm;
    private final Linear head;
    /** The positions buffer last uploaded, and for which shape: uploaded again only when either changes. */
    private long positionsAddress;
    private int positionsBatch, positionsSeq;
    private frugal.nn.Workspace positionsWorkspace;

    public Transformer(ModelConfig c, frugal.backend.Backend backend) {
        this.config = c;
        this.params = new Params(backend);
        boolean gpt2 = c.family() == ModelConfig.Family.GPT2;
        int d = c.dim();
        if (gpt2) {
            tokenEmbedding = params.add("transformer.wte.weight", c.vocabSize(), d);
            positionEmbedding = params.add("transformer.wpe.weight", c.maxSeq(), d);
        } else {
            tokenEmbedding = params.add("model.embed_tokens.weight", c.vocabSize(), d);
            positionEmbedding = null;
        }
        for (int l = 0; l < c.layers(); l++) {
            blocks.add(gpt2 ? gpt2Block(l) : llamaBlock(l));
        }
        if (gpt2) {
            finalNorm = new LayerNorm("ln_f", params.add("transformer.ln_f.weight", d), params.add("transformer.ln_f.bias", d), c.normEps());
        } else {
            finalNorm = new RmsNorm("norm", params.add("model.norm.weight", d), c.normEps());
        }
        Param headWeight = c.tiedEmbeddings() ? tokenEmbedding : params.add("lm_head.weight", c.vocabSize(), d);
        head = new Linear("lm_head", headWeight, null);
    }

    private Block gpt2Block(int l) {
        String p = "transformer.h." + l + ".";
        int d = config.dim(), h = config.hidden();
        Norm ln1 = new LayerNorm(p + "ln_1", params.add(p + "ln_1.weight", d), params.add(p + "ln_1.bias", d), config.normEps());
        Linear qkv = new Linear(p + "attn.c_attn", params.addTransposed(p + "attn.c_attn.weight", 3 * d, d), params.addBias(p + "attn.c_attn.bias", 3 * d));
        Linear proj = new Linear(p + "attn.c_proj", params.addTransposed(p + "attn.c_proj.weight", d, d), params.addBias(p + "attn.c_proj.bias", d));
        Norm ln2 = new LayerNorm(p + "ln_2", params.add(p + "ln_2.weight", d), params.add(p + "ln_2.bias", d), config.normEps());
        Linear fc = new Linear(p + "mlp.c_fc", params.addTransposed(p + "mlp.c_fc.weight", h, d), params.addBias(p + "mlp.c_fc.bias", h));
        Linear fcProj = new Linear(p + "mlp.c_proj", params.addTransposed(p + "mlp.c_proj.weight", d, h), params.addBias(p + "mlp.c_proj.bias", d));
        CausalSelfAttention attn = new CausalSelfAttention(p + "attn", qkv, proj, config.heads(), config.kvHeads(), config.headDim(), 0);
        return new Block("h" + l, ln1, attn, ln2, new GeluMlp(p + "mlp", fc, fcProj), d);
    }

    private Block llamaBlock(int l) {
        String p = "model.layers." + l + ".";
        int d = config.dim(), h = config.hidden(), hd = config.headDim();
        int qRows = config.heads() * hd, kvRows = config.kvHeads() * hd;
        Norm n1 = new RmsNorm(p + "input_layernorm", params.add(p + "input_layernorm.weight", d), config.normEps());
        Param qkvW = params.addFused(p + "self_attn.qkv_proj.weight", List.of(
                new Param.HfPart(p + "self_attn.q_proj.weight", qRows),
                new Param.HfPart(p + "self_attn.k_proj.weight", kvRows),
                new Param.HfPart(p + "self_attn.v_proj.weight", kvRows)), qRows + 2 * kvRows, d);
        Linear qkv = new Linear(p + "self_attn.qkv_proj", qkvW, null);
        Linear o = new Linear(p + "self_attn.o_proj", params.add(p + "self_attn.o_proj.weight", d, qRows), null);
        Norm n2 = new RmsNorm(p + "post_attention_layernorm", params.add(p + "post_attention_layernorm.weight", d), config.normEps());
        Param gateUpW = params.addFused(p + "mlp.gate_up_proj.weight", List.of(
                new Param.HfPart(p + "mlp.gate_proj.weight", h), new Param.HfPart(p + "mlp.up_proj.weight", h)), 2 * h, d);
        Mlp mlp = new SwiGluMlp(p + "mlp", new Linear(p + "mlp.gate_up_proj", gateUpW, null),
                new Linear(p + "mlp.down_proj", params.add(p + "mlp.down_proj.weight", d, h), null));
        CausalSelfAttention attn = new CausalSelfAttention(p + "self_attn", qkv, o, config.heads(), config.kvHeads(), hd, config.ropeTheta());
        return new Block("h" + l, n1, attn, n2, mlp, d);
    }

    public ModelConfig config() {
        return config;
    }

    public Params params() {
        return params;
    }

    /**
     * Runs the model on ids [B*T] (I32, on the backend). Returns the logits [B*T, V]. When targets are
     * given, also writes the per-position losses into {@code losses} and, when {@code gradScale} is
     * non-zero, replaces the logits by dlogits·gradScale ready for {@link #backward}.
     */
    public Tensor forward(Context ctx, Tensor ids, Tensor targets, Tensor losses, int batch, int seq, float gradScale) {
        if (seq > config.maxSeq()) {
            throw new FrugalException("sequence length " + seq + " is longer than the model's " + config.maxSeq() + " positions");
        }
        int rows = batch * seq, d = config.dim(), v = config.vocabSize();
        ctx.stash().clear();
        params.refreshComputeIfStale();
        Tensor x = ctx.buffers().get("embed", rows, d);
        ctx.ops().embeddingForward(x, tokenEmbedding.value(), ids, rows, d, false);
        if (positionEmbedding != null) {
            ctx.ops().embeddingForward(x, positionEmbedding.value(), positions(ctx, batch, seq), rows, d, true);
        }
        Residual stream = new Residual(x, null);
        for (Block b : blocks) stream = b.forward(ctx, stream, batch, seq);
        Tensor normed = ctx.buffers().get("final_norm", rows, d);
        stream.normalize(ctx, finalNorm, normed, "final.in", "block.in", rows);
        // Logits that become dlogits for backward are activations (bf16 under mixed precision); logits returned
        // for reading (evaluation, sampling) are F32.
        Tensor logits = ctx.buffers().get("logits", gradScale != 0 ? ctx.ops().activationType() : DType.F32, rows, v);
        head.forward(ctx, logits, normed, rows);
        if (targets != null) {
            ctx.ops().crossEntropy(losses, gradScale != 0 ? logits : null, logits, targets, rows, v, gradScale);
        }
        ctx.stash().save("ids", StashKind.TOKEN_IDS, ids);
        return logits;
    }

    /** Accumulates every parameter's gradient from the dlogits left by {@link #forward}. */
    public void backward(Context ctx, int batch, int seq) {
        int rows = batch * seq, d = config.dim();
        Tensor dlogits = ctx.buffers().get("logits", ctx.ops().activationType(), rows, config.vocabSize());
        Tensor dnormed = ctx.buffers().get("grad.final_norm", rows, d);
        Tensor dres = ctx.buffers().get("grad.residual", rows, d);
        head.backward(ctx, dnormed, dlogits, rows);
        ctx.ops().zero(dres);
        finalNorm.backward(ctx, dres, dnormed, rows);
        for (int l = blocks.size() - 1; l >= 0; l--) blocks.get(l).backward(ctx, dres, batch, seq);
        Tensor ids = ctx.stash().load("ids");
        ctx.ops().embeddingBackward(tokenEmbedding.grad(), dres, ids, rows, d);
        if (positionEmbedding != null) {
            ctx.ops().embeddingBackward(positionEmbedding.grad(), dres, positions(ctx, batch, seq), rows, d);
        }
        ctx.stash().clear();
    }

    private Tensor positions(Context ctx, int batch, int seq) {
        Tensor pos = ctx.buffers().get("positions", DType.I32, batch * seq);
        if (pos.data().address() == positionsAddress && positionsBatch == batch && positionsSeq == seq
                && ctx.buffers() == positionsWorkspace) {
            return pos; // no upload: a captured step must not touch the host
        }
        positionsAddress = pos.data().address();
        positionsBatch = batch;
        positionsSeq = seq;
        positionsWorkspace = ctx.buffers();
        try (Arena a = Arena.ofConfined()) {
            MemorySegment host = a.allocate(ValueLayout.JAVA_INT, (long) batch * seq);
            for (int r = 0; r < batch * seq; r++) host.setAtIndex(ValueLayout.JAVA_INT, r, r % seq);
            ctx.ops().upload(pos, host);
        }
        return pos;
    }
}
