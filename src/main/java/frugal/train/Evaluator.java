package frugal.train;

import frugal.backend.Backend;
import frugal.model.Transformer;
import frugal.nn.Context;
import frugal.tensor.DType;
import frugal.tensor.Tensor;

import java.lang.foreign.MemorySegment;

/**
 * Mean next-token loss over a token stream cut into windows of seq+1 tokens, each starting on the previous one's last
 * token: every token after the first is predicted once, from the preceding tokens of its window.
 */
public final class Evaluator {
    private final Transformer model;
    private final Backend ops;
    private final Context ctx;

    public Evaluator(Transformer model, Backend ops) {
        this.model = model;
        this.ops = ops;
        this.ctx = Context.of(ops);
    }

    /** Result of an evaluation: mean loss (nats per token) and the number of tokens scored. */
    public record Result(double loss, long tokens) {
        public double perplexity() {
            return Math.exp(loss);
        }
    }

    /** Scores at most {@code maxWindows} windows (all when ≤ 0), {@code batch} at a time. */
    public Result evaluate(int[] tokens, int batch, int seq, int maxWindows) {
        int windows = (tokens.length - 1) / seq;
        if (maxWindows > 0) windows = Math.min(windows, maxWindows);
        if (windows == 0) {
            throw new frugal.FrugalException("evaluation needs at least " + (seq + 1) + " tokens, got " + tokens.length);
        }
        // From the context's workspace: an evaluation every few hundred steps reuses them instead of allocating anew.
        Tensor ids = ctx.buffers().get("eval.ids", DType.I32, batch * seq), targets = ctx.buffers().get("eval.targets", DType.I32, batch * seq);
        Tensor losses = ctx.buffers().get("eval.losses", DType.F32, batch * seq);
        double total = 0;
        long count = 0;
        float[] hostLosses = new float[batch * seq];
        for (int w = 0; w < windows; w += batch) {
            int b = Math.min(batch, windows - w), rows = b * seq;
            int[] in = new int[rows], tg = new int[rows];
            for (int i = 0; i < b; i++) {
                int start = (w + i) * seq;
                System.arraycopy(tokens, start, in, i * seq, seq);
                System.arraycopy(tokens, start + 1, tg, i * seq, seq);
            }
            ops.upload(ids.slice(0, rows), MemorySegment.ofArray(in));
            ops.upload(targets.slice(0, rows), MemorySegment.ofArray(tg));
            model.forward(ctx, ids.slice(0, rows), targets.slice(0, rows), losses.slice(0, rows), b, seq, 0f);
            ops.download(losses.slice(0, rows), MemorySegment.ofArray(hostLosses));
            for (int r = 0; r < rows; r++) total += hostLosses[r];
            count += rows;
        }
        ctx.stash().clear();
        return new Result(total / count, count);
    }
}
