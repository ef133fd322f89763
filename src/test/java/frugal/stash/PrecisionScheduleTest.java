package frugal.stash;

import frugal.FrugalException;
import frugal.quant.QuantFormat;
import org.junit.jupiter.api.Test;

import java.util.ArrayList;
import java.util.List;
import java.util.Random;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

class PrecisionScheduleTest {

    @Test
    void milestonesSwitchExactlyWhereConfigured() {
        int total = 200 + new Random().nextInt(800);
        StashPolicy p = StashPolicy.parse("""
                q1 = bfp2/32/sr, bfp3/32/sr, bfp4/32/sr   # stash
                q0 = int8
                stages = 0, 25%, 60%
                """, total);
        int second = (int) Math.round(0.25 * total), third = (int) Math.round(0.60 * total);
        for (int step = 1; step <= total; step++) {
            p.beginStep(step);
            int expected = step < second ? 0 : step < third ? 1 : 2;
            assertEquals(expected, p.stage(), "step " + step + " of " + total);
            assertEquals(2 + expected, p.format(QuantPoint.Q1).bits());
            assertEquals(2 + expected, p.format(StashKind.LINEAR_INPUT).bits(), "activations follow q1");
            assertEquals(QuantFormat.parse("int8"), p.format(QuantPoint.Q0));
            assertNull(p.format(QuantPoint.Q2), "points not mentioned are kept");
            assertNull(p.format(StashKind.NORM_STATS), "statistics are kept by default");
        }
    }

    @Test
    void kindsCanHaveTheirOwnFormats() {
        StashPolicy p = StashPolicy.parse("q1 = bfp4\nattention_qkv = keep\nnorm_stats = int8\nactivation_input = q0\nq0 = bfp6", 10);
        p.beginStep(1);
        assertNull(p.format(StashKind.ATTENTION_QKV));
        assertEquals(8, p.format(StashKind.NORM_STATS).bits());
        assertEquals(6, p.format(StashKind.ACTIVATION_INPUT).bits());
        assertEquals(4, p.format(StashKind.NORM_INPUT).bits());
    }

    @Test
    void softmaxStatisticsAreRecomputedByDefaultBelowEightBitsOrAsConfiguredPerStage() {
        StashPolicy byBits = StashPolicy.parse("q1 = bfp3, bfp4\nattention_qkv = bfp4, bfp8\nstages = 0, 5", 10);
        byBits.beginStep(1);
        assertTrue(byBits.recomputesSoftmax(), "4-bit q, k, v: rerun the forward");
        byBits.beginStep(5);
        assertTrue(!byBits.recomputesSoftmax(), "8-bit q, k, v: the forward's lse");
        StashPolicy configured = StashPolicy.parse("q1 = bfp3, bfp4\nsoftmax_stats = keep, recompute\nstages = 0, 5", 10);
        configured.beginStep(4);
        assertTrue(!configured.recomputesSoftmax());
        configured.beginStep(6);
        assertTrue(configured.recomputesSoftmax());
        StashPolicy kept = StashPolicy.keep();
        kept.beginStep(1);
        assertTrue(!kept.recomputesSoftmax(), "nothing quantized, nothing recomputed");
        FrugalException e = assertThrows(FrugalException.class, () -> StashPolicy.parse("softmax_stats = bfp8", 10));
        assertTrue(e.getMessage().contains("keep or recompute"), e.getMessage());
    }

    @Test
    void rejectsInconsistentPolicies() {
        assertThrows(FrugalException.class, () -> StashPolicy.parse("q1 = bfp2, bfp4", 10), "two stages without starts");
        assertThrows(FrugalException.class, () -> StashPolicy.parse("q1 = bfp2, bfp4\nq2 = bfp2, bfp3, bfp4\nstages = 0, 5", 10));
        assertThrows(FrugalException.class, () -> StashPolicy.parse("q1 = bfp2, bfp4\nstages = 0, 5, 7", 10));
        assertThrows(FrugalException.class, () -> StashPolicy.parse("q1 = bfp2, bfp4\nstages = 5, 3", 10));
        assertThrows(FrugalException.class, () -> StashPolicy.parse("token_ids = int8", 10));
        assertThrows(FrugalException.class, () -> StashPolicy.parse("q5 = int8", 10));
        FrugalException e = assertThrows(FrugalException.class, () -> StashPolicy.parse("q0 = int8\nlinear_input bfp4", 10));
        assertTrue(e.getMessage().contains("line 2"), e.getMessage());
    }

    /** A loss that falls, then flattens: the plateau trigger raises the stage once per flat stretch of 2·window. */
    @Test
    void plateauTriggerRisesWhenTheLossStopsFalling() {
        PrecisionSchedule s = PrecisionSchedule.plateau(3, 5, 0.01);
        List<Integer> stages = new ArrayList<>();
        for (int step = 1; step <= 60; step++) {
            stages.add(s.stageAt(step));
            double loss = step <= 20 ? 10 - 0.2 * step : 6;
            s.observe(step, loss);
        }
        // Falling fast (≥ 1% per window) until step 20; flat after: the trigger needs two windows of observations.
        int firstRise = stages.indexOf(1) + 1, secondRise = stages.indexOf(2) + 1;
        assertTrue(firstRise > 20 && firstRise <= 31, "first rise at step " + firstRise + ": " + stages);
        assertEquals(firstRise + 10, secondRise, "the second rise needs two fresh windows: " + stages);
        assertEquals(2, stages.get(59));
    }

    /** A schedule saved mid-window and restored continues exactly as one that never stopped. */
    @Test
    void restoredPlateauScheduleContinuesTheSameWay() {
        Random rng = new Random();
        double[] losses = new double[80];
        for (int i = 0; i < losses.length; i++) losses[i] = 5 + 3 * Math.exp(-i / 15.0) + 0.05 * rng.nextGaussian();
        PrecisionSchedule straight = PrecisionSchedule.plateau(4, 6, 0.02);
        int[] expected = new int[losses.length];
        for (int i = 0; i < losses.length; i++) {
            expected[i] = straight.stageAt(i + 1);
            straight.observe(i + 1, losses[i]);
        }
        int cut = 10 + rng.nextInt(60);
        PrecisionSchedule first = PrecisionSchedule.plateau(4, 6, 0.02);
        for (int i = 0; i < cut; i++) {
            first.stageAt(i + 1);
            first.observe(i + 1, losses[i]);
        }
        PrecisionSchedule resumed = PrecisionSchedule.plateau(4, 6, 0.02);
        resumed.restore(first.state());
        for (int i = cut; i < losses.length; i++) {
            assertEquals(expected[i], resumed.stageAt(i + 1), "step " + (i + 1) + " after a cut at " + cut);
            resumed.observe(i + 1, losses[i]);
        }
    }
}
