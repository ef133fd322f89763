package frugal.bench;

import frugal.backend.cpu.CpuMatmul;
import frugal.backend.cpu.Parallel;
import frugal.tensor.DType;
import frugal.tensor.Tensor;

import java.io.PrintStream;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Random;

import static java.lang.foreign.ValueLayout.JAVA_FLOAT;

/**
 * Times {@link CpuMatmul} on the matmuls of a GPT-2 124M training step at batch 4 × seq 64 (256 rows):
 * for each linear layer W[out, in] the forward y = x·Wᵀ, the input gradient dx = dy·W and the weight
 * gradient dW += dyᵀ·x. Each shape is warmed up, then timed several times; the median is reported as
 * GFLOP/s (2·m·n·k / time), and the overall figure is total FLOPs over the sum of the medians (FLOP-weighted).
 * bench/blas_baseline.py measures numpy/OpenBLAS the same way.
 *
 * <p>Run: {@code java --add-modules jdk.incubator.vector --enable-native-access=ALL-UNNAMED -XX:-UseProfiledLoopPredicate -cp target/classes frugal.bench.MatmulBench}
 */
public final class MatmulBench {
    static final int ROWS = 256;
    static final int[][] LAYERS = {{768, 2304}, {768, 768}, {768, 3072}, {3072, 768}, {768, 50257}};

    record Shape(String name, int m, int n, int k, boolean transA, boolean transB, boolean accumulate) {
        double flops() {
            return 2.0 * m * n * k;
        }
    }

    private MatmulBench() {
    }

    static List<Shape> shapes() {
        List<Shape> s = new ArrayList<>();
        for (int[] l : LAYERS) {
            int in = l[0], out = l[1];
            s.add(new Shape("fwd  y=x.Wt    in=" + in + " out=" + out, ROWS, out, in, false, true, false));
            s.add(new Shape("bwd  dx=dy.W   in=" + in + " out=" + out, ROWS, in, out, false, false, false));
            s.add(new Shape("bwd  dW+=dyt.x in=" + in + " out=" + out, out, in, ROWS, true, false, true));
        }
        return s;
    }

    public static void main(String[] args) {
        run(System.out);
    }

    public static void run(PrintStream out) {
        out.printf("CpuMatmul on %d threads, %s%n", Parallel.THREADS, System.getProperty("java.vm.version"));
        Random rnd = new Random();
        double totalFlops = 0, totalTime = 0;
        try (Arena arena = Arena.ofShared()) {
            List<Shape> shapes = shapes();
            Tensor[][] ts = new Tensor[shapes.size()][];
            for (int s = 0; s < shapes.size(); s++) {
                Shape sh = shapes.get(s);
                ts[s] = new Tensor[]{
                        random(arena, rnd, sh.m, sh.n),
                        random(arena, rnd, sh.transA ? sh.k : sh.m, sh.transA ? sh.m : sh.k),
                        random(arena, rnd, sh.transB ? sh.n : sh.k, sh.transB ? sh.k : sh.n)};
            }
            // JIT warm-up over every shape (all code paths), then per-shape warm-up and timing
            for (int rep = 0; rep < 2; rep++) {
                for (int s = 0; s < shapes.size(); s++) once(shapes.get(s), ts[s]);
            }
            for (int s = 0; s < shapes.size(); s++) {
                Shape sh = shapes.get(s);
                int reps = (int) Math.max(3, Math.min(50, 2e10 / sh.flops()));
                for (int r = 0; r < Math.max(3, reps / 2); r++) once(sh, ts[s]);
                double[] times = new double[reps];
                for (int r = 0; r < reps; r++) {
                    long t0 = System.nanoTime();
                    once(sh, ts[s]);
                    times[r] = (System.nanoTime() - t0) * 1e-9;
                }
                Arrays.sort(times);
                double med = reps % 2 == 1 ? times[reps / 2] : 0.5 * (times[reps / 2 - 1] + times[reps / 2]);
                totalFlops += sh.flops();
                totalTime += med;
                out.printf("%-36s m=%6d n=%6d k=%5d  %8.3f ms  %7.1f GFLOP/s%n",
                        sh.name, sh.m, sh.n, sh.k, med * 1e3, sh.flops() / med / 1e9);
            }
        }
        out.printf("overall (FLOP-weighted) %.1f GFLOP/s%n", totalFlops / totalTime / 1e9);
    }

    private static void once(Shape s, Tensor[] t) {
        CpuMatmul.matmul(t[0], t[1], t[2], s.m, s.n, s.k, s.transA, s.transB, s.accumulate);
    }

    private static Tensor random(Arena arena, Random rnd, int rows, int cols) {
        long n = (long) rows * cols;
        MemorySegment seg = arena.allocate(n * 4, 64);
        float[] chunk = new float[1 << 16];
        for (long i = 0; i < n; i += chunk.length) {
            int len = (int) Math.min(chunk.length, n - i);
            for (int j = 0; j < len; j++) chunk[j] = rnd.nextFloat() - 0.5f;
            MemorySegment.copy(chunk, 0, seg, JAVA_FLOAT, i * 4, len);
        }
        return new Tensor(seg, DType.F32, rows, cols);
    }
}
