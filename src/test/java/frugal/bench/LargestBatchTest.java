package frugal.bench;

import frugal.backend.cpu.CpuBackend;
import frugal.model.ModelConfig;
import frugal.stash.StashPolicy;
import frugal.tensor.DType;
import org.junit.jupiter.api.Test;

import java.util.Random;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * The CPU backend counts what it allocates, so a batch can be fitted to a memory budget on the CPU as on CUDA: the
 * answer fits, the next batch does not, and a quantized stash fits more sequences than keeping it.
 */
class LargestBatchTest {
    /** Wide for its vocabulary, so that the stash, not the logits, is most of what grows with the batch. */
    private static final ModelConfig CONFIG = ModelConfig.gpt2(257, 64, 128, 3, 4);
    private static final int SEQ = 64;

    @Test
    void theCpuBackendCountsEveryByteItAllocates() {
        Random rng = new Random();
        long expected = 0;
        try (CpuBackend cpu = new CpuBackend()) {
            assertEquals(0, cpu.peakMemory());
            for (int i = 0; i < 20; i++) {
                DType type = rng.nextBoolean() ? DType.F32 : DType.BF16;
                int rows = 1 + rng.nextInt(50), cols = 1 + rng.nextInt(300);
                cpu.allocate(type, rows, cols);
                expected += (long) rows * cols * type.bytes;
                assertEquals(expected, cpu.peakMemory(), "after " + (i + 1) + " allocations");
            }
        }
    }

    @Test
    void theLargestBatchFitsAndTheNextDoesNotAndAQuantizedStashFitsMore() {
        LargestBatch keep = new LargestBatch("cpu", CONFIG, SEQ, steps -> StashPolicy.keep());
        long budget = keep.probe(6).peakBytes();
        LargestBatch.Fit keepFit = keep.within(budget);
        assertEquals(6, keepFit.fits().batch(), "keep's own peak at batch 6 fits batch 6, not more: " + keepFit);
        LargestBatch quantized = new LargestBatch("cpu", CONFIG, SEQ, steps -> StashPolicy.parse("""
                q1 = bfp4/32/rn
                attention_qkv = bfp8/32/rn
                """, steps));
        LargestBatch.Fit fit = quantized.within(budget);
        assertTrue(fit.fits().peakBytes() <= budget && fit.exceeds().peakBytes() > budget, fit + " within " + budget);
        assertEquals(fit.fits().batch() + 1, fit.exceeds().batch(), fit.toString());
        assertTrue(fit.fits().batch() > 6, "a 4-bit stash fits more than keep's 6 sequences: " + fit);
    }
}
