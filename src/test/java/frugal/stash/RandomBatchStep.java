package frugal.stash;

import frugal.backend.Backend;
import frugal.model.Transformer;
import frugal.nn.Context;
import frugal.tensor.DType;
import frugal.tensor.Tensor;

import java.lang.foreign.MemorySegment;
import java.util.Random;

/** The first half of a training step as the stash tests run it: zeroed gradients, then a forward on random tokens. */
final class RandomBatchStep {
    private RandomBatchStep() {
    }

    /** Runs the forward of step 1 through ctx's stash on a batch drawn from seed; returns the per-position losses. */
    static Tensor forward(Backend ops, Transformer model, Context ctx, int batch, int seq, long seed) {
        int rows = batch * seq, vocab = model.config().vocabSize();
        Random rng = new Random(seed);
        Tensor ids = ops.allocate(DType.I32, rows), targets = ops.allocate(DType.I32, rows), losses = ops.allocate(DType.F32, rows);
        ops.upload(ids, MemorySegment.ofArray(rng.ints(rows, 0, vocab).toArray()));
        ops.upload(targets, MemorySegment.ofArray(rng.ints(rows, 0, vocab).toArray()));
        model.params().zeroGrad();
        ctx.stash().beginStep(1);
        model.forward(ctx, ids, targets, losses, batch, seq, 1f / rows);
        return losses;
    }
}
