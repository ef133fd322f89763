package frugal.bench;

import frugal.FrugalException;
import frugal.backend.Backend;
import frugal.backend.Backends;
import frugal.model.Init;
import frugal.model.ModelConfig;
import frugal.model.Transformer;
import frugal.nn.Context;
import frugal.stash.StashPolicy;
import frugal.train.AdamW;
import frugal.train.TrainStep;

import java.util.Random;
import java.util.function.IntFunction;

/**
 * The largest batch whose training step fits a memory budget, by the backend's own count of what it allocates (the
 * peak of weights, optimizer state, gradients, activations, stash and scratch). Each probe trains two steps on a
 * fresh backend (every stage of a two-step schedule, so a stash policy's largest formats are allocated); peak memory
 * is affine in the batch, so two probes predict the answer and probes around it confirm it.
 */
public final class LargestBatch {
    /** A batch size and the peak bytes its step allocated. */
    public record Probe(int batch, long peakBytes) {
    }

    /** The answer: the largest batch that fits, and the probe just above it that does not. */
    public record Fit(Probe fits, Probe exceeds) {
    }

    private final String device;
    private final ModelConfig config;
    private final int seq;
    private final IntFunction<StashPolicy> policyForSteps;

    public LargestBatch(String device, ModelConfig config, int seq, IntFunction<StashPolicy> policyForSteps) {
        this.device = device;
        this.config = config;
        this.seq = seq;
        this.policyForSteps = policyForSteps;
    }

    public Fit within(long budgetBytes) {
        Probe one = probe(1), two = probe(2);
        long perSequence = two.peakBytes() - one.peakBytes();
        if (one.peakBytes() > budgetBytes) throw new FrugalException("not even batch 1 fits in " + budgetBytes + " bytes (it needs " + one.peakBytes() + ")");
        if (perSequence <= 0) throw new FrugalException("peak memory does not grow with the batch (" + one + ", " + two + "): cannot fit a batch");
        int guess = (int) Math.max(1, 1 + (budgetBytes - one.peakBytes()) / perSequence);
        Probe at = probe(guess);
        while (at.peakBytes() > budgetBytes && at.batch() > 1) at = probe(at.batch() - 1);
        Probe above = probe(at.batch() + 1);
        while (above.peakBytes() <= budgetBytes) {
            at = above;
            above = probe(at.batch() + 1);
        }
        return new Fit(at, above);
    }

    /** Trains two steps at this batch on a fresh backend and returns the peak bytes it allocated. */
    public Probe probe(int batch) {
        try (Backend ops = Backends.create(device)) {
            Transformer model = new Transformer(config, ops);
            Init.initialize(model, ops, 1);
            AdamW optimizer = new AdamW(ops, model.params(), 0.9f, 0.95f, 1e-8f, 0.1f);
            Context ctx = Context.of(ops, policyForSteps.apply(2), 1);
            Random rng = new Random(batch);
            int rows = batch * seq;
            try (TrainStep step = new TrainStep(model, optimizer, ops, ctx, batch, seq, 1f, false)) {
                for (int s = 1; s <= 2; s++) {
                    ctx.stash().beginStep(s);
                    step.run(rng.ints(rows, 0, config.vocabSize()).toArray(), rng.ints(rows, 0, config.vocabSize()).toArray(), 3e-4f);
                }
            }
            ops.synchronize();
            return new Probe(batch, ops.peakMemory());
        }
    }
}
