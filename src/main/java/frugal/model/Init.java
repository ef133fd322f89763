package frugal.model;

import frugal.backend.Backend;
import frugal.nn.Param;

import java.lang.foreign.MemorySegment;
import java.util.SplittableRandom;

/**
 * GPT-2's initialization, used for both families: weights ~ N(0, 0.02), residual output projections scaled
 * by 1/sqrt(2·layers), biases 0, norm weights 1. Deterministic in the seed.
 */
public final class Init {
    private Init() {
    }

    public static void initialize(Transformer model, Backend backend, long seed) {
        SplittableRandom root = new SplittableRandom(seed);
        double residualStd = 0.02 / Math.sqrt(2.0 * model.config().layers());
        for (Param p : model.params().all()) {
            SplittableRandom rng = root.split();
            float[] values = new float[(int) p.value().size()];
            String n = p.name();
            if (p.value().rank() == 1) {
                boolean isNormWeight = n.endsWith("norm.weight") || n.matches(".*ln_[12f]\\.weight");
                java.util.Arrays.fill(values, isNormWeight ? 1f : 0f);
            } else {
                boolean residual = n.endsWith("c_proj.weight") || n.endsWith("o_proj.weight") || n.endsWith("down_proj.weight");
                double std = residual ? residualStd : 0.02;
                for (int i = 0; i < values.length; i++) values[i] = (float) (rng.nextGaussian() * std);
            }
            backend.upload(p.value(), MemorySegment.ofArray(values));
        }
    }
}
