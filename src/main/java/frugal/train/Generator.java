package frugal.train;

import frugal.backend.Backend;
import frugal.model.Transformer;
import frugal.nn.Context;
import frugal.tensor.DType;
import frugal.tensor.Tensor;

import java.lang.foreign.MemorySegment;
import java.util.Arrays;
import java.util.Random;
import java.util.function.IntConsumer;

/**
 * Samples tokens one at a time with temperature and top-k. Each token re-runs the model over the last
 * {@code window} tokens of the context (no KV cache: generation here is for samples, not serving).
 */
public final class Generator {
    private final Transformer model;
    private final Backend ops;
    private final Context ctx;
    private final int window;

    /** Over the model's whole context. */
    public Generator(Transformer model, Backend ops) {
        this(model, ops, model.config().maxSeq());
    }

    /** Over at most {@code window} tokens: a model trained on shorter sequences than it has positions knows no more. */
    public Generator(Transformer model, Backend ops, int window) {
        if (window <= 0 || window > model.config().maxSeq()) {
            throw new IllegalArgumentException("window " + window + " outside 1.." + model.config().maxSeq());
        }
        this.model = model;
        this.ops = ops;
        this.ctx = Context.of(ops);
        this.window = window;
    }

    /** Appends {@code count} sampled tokens to the prompt, calling {@code onToken} for each. */
    public int[] generate(int[] prompt, int count, float temperature, int topK, long seed, IntConsumer onToken) {
        if (prompt.length == 0) throw new IllegalArgumentException("empty prompt");
        int vocab = model.config().vocabSize();
        Random rng = new Random(seed);
        int[] tokens = Arrays.copyOf(prompt, prompt.length + count);
        int length = prompt.length;
        Tensor ids = ops.allocate(DType.I32, window);
        float[] row = new float[vocab];
        for (int i = 0; i < count; i++) {
            int start = Math.max(0, length - window), seq = length - start;
            Tensor window = ids.slice(0, seq);
            ops.upload(window, MemorySegment.ofArray(Arrays.copyOfRange(tokens, start, length)));
            Tensor logits = model.forward(ctx, window, null, null, 1, seq, 0f);
            ops.download(logits.slice((long) (seq - 1) * vocab, vocab), MemorySegment.ofArray(row));
            int next = sample(row, temperature, topK, rng);
            tokens[length++] = next;
            onToken.accept(next);
        }
        ctx.stash().clear();
        return tokens;
    }

    /** Greedy when temperature ≤ 0; otherwise softmax(logits/temperature) over the top-k (all when k ≤ 0). */
    static int sample(float[] logits, float temperature, int topK, Random rng) {
        int best = 0;
        for (int i = 1; i < logits.length; i++) if (logits[i] > logits[best]) best = i;
        if (temperature <= 0) return best;
        float cutoff = Float.NEGATIVE_INFINITY;
        if (topK > 0 && topK < logits.length) {
            float[] sorted = logits.clone();
            Arrays.sort(sorted);
            cutoff = sorted[sorted.length - topK];
        }
        double[] p = new double[logits.length];
        double sum = 0;
        for (int i = 0; i < logits.length; i++) {
            p[i] = logits[i] >= cutoff ? Math.exp((logits[i] - logits[best]) / temperature) : 0;
            sum += p[i];
        }
        double u = rng.nextDouble() * sum;
        for (int i = 0; i < p.length; i++) {
            u -= p[i];
            if (u <= 0 && p[i] > 0) return i;
        }
        return best;
    }
}
