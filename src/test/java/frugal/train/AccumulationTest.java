package frugal.train;

import frugal.backend.Backend;
import frugal.backend.cpu.CpuBackend;
import frugal.model.Init;
import frugal.model.Transformer;
import frugal.nn.Context;
import frugal.nn.Param;
import frugal.tensor.Tensor;
import org.junit.jupiter.api.Test;

import java.lang.foreign.MemorySegment;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.Random;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * Accumulating two micro-batches of B sequences is one batch of 2B: the loss is a mean over all rows either way,
 * so the loss, every gradient and the update agree to float rounding.
 */
class AccumulationTest {
    private static final int B = 4, SEQ = 16;
    private static final double TOLERANCE = 1e-5;
    private final long seed = new Random().nextLong();

    /** One step's loss, and by parameter name its gradients, the update it applied and the values it left. */
    private record StepResult(double loss, Map<String, float[]> grads, Map<String, float[]> updates,
                              Map<String, float[]> values) {
    }

    private StepResult step(int batch, int accumulation, int[] ids, int[] targets) {
        try (Backend ops = new CpuBackend()) {
            Transformer model = new Transformer(TrainFixtures.TINY, ops);
            Init.initialize(model, ops, seed);
            // eps 1e-3 (not 1e-8) keeps the first Adam update g / (|g| + eps) a smooth function of the gradient,
            // so that rounding in a gradient near 0 cannot flip the sign of its update.
            AdamW optimizer = new AdamW(ops, model.params(), 0.9f, 0.95f, 1e-3f, 0.1f);
            Map<String, float[]> before = new LinkedHashMap<>();
            for (Param p : model.params().all()) before.put(p.name(), read(ops, p.value()));
            try (TrainStep step = new TrainStep(model, optimizer, ops, Context.of(ops), batch, SEQ, accumulation, 1f, false)) {
                double loss = step.run(ids, targets, 1e-3f);
                Map<String, float[]> grads = new LinkedHashMap<>(), updates = new LinkedHashMap<>();
                Map<String, float[]> values = new LinkedHashMap<>();
                for (Param p : model.params().all()) {
                    grads.put(p.name(), read(ops, p.grad()));
                    float[] after = read(ops, p.value()), update = before.get(p.name());
                    for (int i = 0; i < after.length; i++) update[i] = after[i] - update[i];
                    updates.put(p.name(), update);
                    values.put(p.name(), after);
                }
                return new StepResult(loss, grads, updates, values);
            }
        }
    }

    private static float[] read(Backend ops, Tensor t) {
        float[] values = new float[(int) t.size()];
        ops.download(t, MemorySegment.ofArray(values));
        return values;
    }

    /**
     * max |a − b| / max |a|, where, when values is non-null, each difference first loses one ulp of values[i]: an
     * update is read back as after − before in float, so a one-ulp difference in a new weight near 1 (a norm's gain)
     * is already 1e-4 of a 1e-3-sized update.
     */
    private static double relativeError(float[] a, float[] b, float[] values) {
        double diff = 0, scale = 0;
        for (int i = 0; i < a.length; i++) {
            double slack = values == null ? 0 : Math.ulp(values[i]);
            diff = Math.max(diff, Math.max(0, Math.abs(a[i] - b[i]) - slack));
            scale = Math.max(scale, Math.abs(a[i]));
        }
        return scale == 0 ? diff : diff / scale;
    }

    @Test
    void twoMicroBatchesOfBAreOneBatchOf2B() {
        Random random = new Random(seed);
        int vocab = TrainFixtures.TINY.vocabSize();
        int[] ids = random.ints(2 * B * SEQ, 0, vocab).toArray(), targets = random.ints(2 * B * SEQ, 0, vocab).toArray();
        StepResult whole = step(2 * B, 1, ids, targets), accumulated = step(B, 2, ids, targets);
        assertEquals(whole.loss(), accumulated.loss(), 1e-6 * whole.loss(), "seed " + seed + ": loss");
        for (String name : whole.grads().keySet()) {
            double gradError = relativeError(whole.grads().get(name), accumulated.grads().get(name), null);
            assertTrue(gradError <= TOLERANCE, "seed " + seed + ": gradient of " + name + " differs by " + gradError);
            double updateError = relativeError(whole.updates().get(name), accumulated.updates().get(name),
                    whole.values().get(name));
            assertTrue(updateError <= TOLERANCE, "seed " + seed + ": update of " + name + " differs by " + updateError);
        }
    }
}
