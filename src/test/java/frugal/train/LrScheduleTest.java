package frugal.train;

import org.junit.jupiter.api.Test;

import java.util.Random;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** Linear warmup then cosine decay, against the closed form at the steps where its pieces meet. */
class LrScheduleTest {
    private final long seed = new Random().nextLong();
    private final Random random = new Random(seed);

    /** lr(s) = peak·s/w for s ≤ w, else min + ½(peak − min)(1 + cos(π·min(1, (s − w)/(total − w)))). */
    private static double closedForm(double peak, double min, int warmup, int total, int step) {
        if (step <= warmup) return peak * step / warmup;
        double progress = Math.min(1, (step - warmup) / (double) (total - warmup));
        return min + 0.5 * (peak - min) * (1 + Math.cos(Math.PI * progress));
    }

    @Test
    void warmupThenCosineToTheMinimum() {
        float peak = 1e-4f + random.nextFloat() * 1e-2f, min = peak * random.nextFloat() * 0.5f;
        int warmup = 2 + random.nextInt(50), total = warmup + 2 * (5 + random.nextInt(250)); // an even decay: it has a middle step
        LrSchedule schedule = new LrSchedule(peak, min, warmup, total);
        String where = "seed " + seed + ": peak " + peak + ", min " + min + ", warmup " + warmup + ", total " + total;
        int middle = warmup + (total - warmup) / 2;
        for (int step : new int[]{1, warmup / 2, warmup - 1, warmup, warmup + 1, middle, total - 1, total, total + 7}) {
            if (step < 1) continue;
            double want = closedForm(peak, min, warmup, total, step);
            assertEquals(want, schedule.at(step), 1e-6 * peak, where + ", step " + step);
        }
        assertEquals(peak / warmup, schedule.at(1), 1e-6 * peak, where + ": the first step takes 1/warmup of the peak");
        assertEquals(peak, schedule.at(warmup), 1e-6 * peak, where + ": the warmup ends at the peak");
        assertEquals((peak + min) / 2, schedule.at(middle), 1e-6 * peak, where + ": halfway through the decay, halfway down");
        assertEquals(min, schedule.at(total), 1e-6 * peak, where + ": the last step is at the minimum");
        assertEquals(min, schedule.at(total + 100), 1e-6 * peak, where + ": past the end it stays there");
        for (int step = warmup + 1; step <= total; step++) {
            assertTrue(schedule.at(step) <= schedule.at(step - 1), where + ": decays monotonically, step " + step);
        }
    }

    @Test
    void withoutWarmupTheDecayStartsAtOnce() {
        LrSchedule schedule = new LrSchedule(1e-3f, 1e-4f, 0, 100);
        assertEquals(closedForm(1e-3, 1e-4, 0, 100, 1), schedule.at(1), 1e-9);
        assertEquals(1e-4, schedule.at(100), 1e-9);
    }
}
