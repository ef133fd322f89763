package frugal.backend.cpu;

import frugal.tensor.DType;
import frugal.tensor.Tensor;
import org.junit.jupiter.api.Test;

import java.lang.foreign.Arena;
import java.util.Random;

import static org.junit.jupiter.api.Assertions.assertTrue;

/** CpuMatmul against a float64 reference, for every transpose case, ragged edges and accumulation. */
class CpuMatmulTest {
    private final Random rnd = new Random();

    private static Tensor randomTensor(Arena arena, Random rnd, long n) {
        Tensor t = new Tensor(arena.allocate(Math.max(1, n) * 4, 64), DType.F32, (int) n);
        for (long i = 0; i < n; i++) t.set(i, (float) rnd.nextGaussian());
        return t;
    }

    /** Checks out (+)= op(a)·op(b) elementwise against float64, relative to the scale of the sum of |products|. */
    private void check(int m, int n, int k, boolean transA, boolean transB, boolean accumulate) {
        try (Arena arena = Arena.ofShared()) {
            Tensor a = randomTensor(arena, rnd, (long) m * k);
            Tensor b = randomTensor(arena, rnd, (long) k * n);
            Tensor c = randomTensor(arena, rnd, (long) m * n);
            float[] before = c.toFloatArray();
            CpuMatmul.matmul(c, a, b, m, n, k, transA, transB, accumulate);
            for (int i = 0; i < m; i++) {
                for (int j = 0; j < n; j++) {
                    double sum = accumulate ? before[i * n + j] : 0, mag = Math.abs(sum);
                    for (int p = 0; p < k; p++) {
                        double x = a.get(transA ? (long) p * m + i : (long) i * k + p);
                        double y = b.get(transB ? (long) j * k + p : (long) p * n + j);
                        sum += x * y;
                        mag += Math.abs(x * y);
                    }
                    double got = c.get((long) i * n + j);
                    double err = Math.abs(got - sum) / (mag + 1e-30);
                    String where = String.format("m=%d n=%d k=%d tA=%b tB=%b acc=%b at (%d,%d): got %g want %g",
                            m, n, k, transA, transB, accumulate, i, j, got, sum);
                    assertTrue(err <= 1e-5, where);
                }
            }
        }
    }

    @Test
    void allTransposesOnRaggedShapes() {
        int[][] sizes = {{1, 1, 1}, {7, 5, 3}, {6, 48, 256}, {13, 67, 300}, {37, 29, 517}};
        for (int[] s : sizes) {
            for (int t = 0; t < 8; t++) check(s[0], s[1], s[2], (t & 1) != 0, (t & 2) != 0, (t & 4) != 0);
        }
    }

    @Test
    void largeParallelProductsSpanSeveralBlocks() {
        // big enough to run on all threads, with K past one super-block and both operands shared in turn
        check(130, 1100, 70, false, true, false);
        check(1100, 90, 600, true, false, true);
        check(64, 200, 3000, false, false, false);
    }

    @Test
    void randomShapes() {
        for (int trial = 0; trial < 12; trial++) {
            check(1 + rnd.nextInt(80), 1 + rnd.nextInt(120), 1 + rnd.nextInt(400),
                    rnd.nextBoolean(), rnd.nextBoolean(), rnd.nextBoolean());
        }
    }

    @Test
    void emptyInnerDimensionZeroesOrKeepsOutput() {
        try (Arena arena = Arena.ofShared()) {
            Tensor a = randomTensor(arena, rnd, 1), b = randomTensor(arena, rnd, 1);
            Tensor c = randomTensor(arena, rnd, 12);
            float[] before = c.toFloatArray();
            CpuMatmul.matmul(c, a, b, 3, 4, 0, false, false, true);
            for (int i = 0; i < 12; i++) assertTrue(c.get(i) == before[i], "accumulate with k=0 must keep output");
            CpuMatmul.matmul(c, a, b, 3, 4, 0, false, false, false);
            for (int i = 0; i < 12; i++) assertTrue(c.get(i) == 0f, "k=0 without accumulate must zero output");
        }
    }
}
