package frugal.data;

import frugal.FrugalException;
import org.junit.jupiter.api.Test;

import java.util.Arrays;
import java.util.HashSet;
import java.util.Set;
import java.util.stream.IntStream;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

class BatchesTest {
    private static final int B = 4, T = 8;

    /** Tokens 0..n-1: every token says where it came from. */
    private static Tokens counting(int n) {
        return Tokens.of(IntStream.range(0, n).toArray());
    }

    private static int[][] take(Batches batches, int count) {
        int[][] out = new int[count * 2][];
        for (int i = 0; i < count; i++) {
            int[] in = new int[B * T], tg = new int[B * T];
            batches.nextTrain(in, tg);
            out[2 * i] = in;
            out[2 * i + 1] = tg;
        }
        return out;
    }

    @Test
    void targetsAreInputsShiftedByOne() {
        Batches batches = new Batches(counting(1000), B, T, 0.1, 1);
        int[] in = new int[B * T], tg = new int[B * T];
        batches.nextTrain(in, tg);
        for (int row = 0; row < B; row++) {
            assertEquals(0, in[row * T] % (T + 1), "windows start on multiples of T+1");
            for (int t = 0; t < T; t++) {
                assertEquals(in[row * T] + t, in[row * T + t]);
                assertEquals(in[row * T + t] + 1, tg[row * T + t]);
            }
        }
    }

    @Test
    void sameSeedSameBatchesOtherSeedOtherBatches() {
        Tokens tokens = counting(5000);
        int[][] a = take(new Batches(tokens, B, T, 0.1, 42), 300); // > 1 epoch: 4500/9 = 500 windows
        int[][] b = take(new Batches(tokens, B, T, 0.1, 42), 300);
        int[][] c = take(new Batches(tokens, B, T, 0.1, 43), 300);
        assertTrue(Arrays.deepEquals(a, b));
        assertFalse(Arrays.deepEquals(a, c));
        assertFalse(Arrays.equals(a[0], c[0]), "different seeds should differ from the first batch");
    }

    @Test
    void eachEpochVisitsEveryTrainingWindowOnceInANewOrder() {
        Batches batches = new Batches(counting(9 * 100 + 5), B, T, 0.1, 7);
        int windows = batches.trainWindows();
        assertEquals((9 * 100 + 5 - 91) / 9, windows);
        int[] firstEpoch = new int[windows], secondEpoch = new int[windows];
        int[] in = new int[B * T], tg = new int[B * T];
        int seen = 0;
        while (seen < 2 * windows) {
            batches.nextTrain(in, tg);
            for (int row = 0; row < B && seen < 2 * windows; row++, seen++) {
                int w = in[row * T] / (T + 1);
                if (seen < windows) firstEpoch[seen] = w;
                else secondEpoch[seen - windows] = w;
            }
        }
        int[] all = IntStream.range(0, windows).toArray();
        assertArrayEquals(all, IntStream.of(firstEpoch).sorted().toArray());
        assertArrayEquals(all, IntStream.of(secondEpoch).sorted().toArray());
        assertFalse(Arrays.equals(firstEpoch, secondEpoch), "epochs are reshuffled");
        assertFalse(Arrays.equals(all, firstEpoch), "windows are shuffled");
    }

    @Test
    void restoringAStateInAFreshLoaderContinuesIdentically() {
        Tokens tokens = counting(3000); // 2700/9 = 300 windows: the run below crosses epochs
        for (int k : new int[]{0, 1, 37, 74, 75, 160}) {
            Batches original = new Batches(tokens, B, T, 0.1, 99);
            take(original, k);
            String saved = original.state();
            Batches.State state = original.position();
            int[][] expected = take(original, 120);

            Batches resumed = new Batches(tokens, B, T, 0.1, 12345); // the seed comes from the state
            resumed.restore(saved);
            assertTrue(Arrays.deepEquals(expected, take(resumed, 120)), "after " + k + " batches");

            Batches viaRecord = new Batches(tokens, B, T, 0.1, 0);
            viaRecord.restore(state);
            assertEquals(state, Batches.State.parse(saved));
            assertTrue(Arrays.deepEquals(expected, take(viaRecord, 120)), "after " + k + " batches");
        }
    }

    @Test
    void restoringOntoDifferentDataOrGarbageIsAnError() {
        Batches a = new Batches(counting(3000), B, T, 0.1, 1);
        Batches b = new Batches(counting(4000), B, T, 0.1, 1);
        FrugalException e = assertThrows(FrugalException.class, () -> b.restore(a.state()));
        assertTrue(e.getMessage().contains("300") && e.getMessage().contains("400"), e.getMessage());
        assertThrows(FrugalException.class, () -> a.restore("epoch=1"));
        assertThrows(FrugalException.class, () -> a.restore(new Batches.State(1, 0, 301, 300)));
    }

    @Test
    void validationIsTheTailInOrderAndDisjointFromTraining() {
        int n = 2000;
        Batches batches = new Batches(counting(n), B, T, 0.25, 5);
        assertEquals(1500, batches.trainTokens());
        assertEquals(500, batches.valTokens());
        assertArrayEquals(IntStream.range(1500, 2000).toArray(), batches.validation());

        Set<Integer> train = new HashSet<>();
        int[] in = new int[B * T], tg = new int[B * T];
        for (int i = 0; i < batches.trainWindows() / B * 2; i++) {
            batches.nextTrain(in, tg);
            for (int j = 0; j < B * T; j++) {
                train.add(in[j]);
                train.add(tg[j]);
            }
        }
        Set<Integer> val = new HashSet<>();
        int rows = 0;
        for (int i = 0; i < batches.valBatches(); i++) {
            int r = batches.valBatch(i, in, tg);
            for (int row = 0; row < r; row++) {
                assertEquals(1500 + (rows + row) * (T + 1), in[row * T], "validation windows come in order");
            }
            rows += r;
            for (int j = 0; j < r * T; j++) {
                val.add(in[j]);
                val.add(tg[j]);
            }
        }
        assertEquals(500 / (T + 1), rows, "every validation window once, the last batch partial");
        assertTrue(train.stream().allMatch(t -> t < 1500), "training never reads the validation tail");
        assertTrue(val.stream().allMatch(t -> t >= 1500));
        assertEquals(1500 / (T + 1) * (T + 1), train.size(), "training reads all of its windows");
    }

    @Test
    void tooSmallCorpusSaysHowManyTokensThereAreAndAreNeeded() {
        long needed = Batches.needed(B, T, 0.1);
        new Batches(counting((int) needed), B, T, 0.1, 1); // exactly enough
        FrugalException e = assertThrows(FrugalException.class, () -> new Batches(counting((int) needed - 1), B, T, 0.1, 1));
        assertTrue(e.getMessage().contains(String.format("%,d tokens", needed - 1))
                && e.getMessage().contains(String.format("at least %,d tokens", needed)), e.getMessage());
        // Validation needs one window of 9 = ceil(10% of n), so n ≥ 81; training then has 72 ≥ 4 windows of 9.
        assertEquals(81, needed);
        assertEquals(B * (T + 1), Batches.needed(B, T, 0));
    }

    @Test
    void badArgumentsAreErrors() {
        assertThrows(FrugalException.class, () -> new Batches(counting(100), 0, T, 0.1, 1));
        assertThrows(FrugalException.class, () -> new Batches(counting(100), B, T, 1.0, 1));
        Batches batches = new Batches(counting(1000), B, T, 0.1, 1);
        assertThrows(IllegalArgumentException.class, () -> batches.nextTrain(new int[B * T - 1], new int[B * T]));
    }
}
