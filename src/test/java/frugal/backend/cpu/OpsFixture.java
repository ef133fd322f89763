package frugal.backend.cpu;

import frugal.tensor.DType;
import frugal.tensor.Tensor;

import java.util.Arrays;
import java.util.SplittableRandom;
import java.util.function.DoubleUnaryOperator;
import java.util.function.ToDoubleFunction;
import java.util.stream.IntStream;

import static org.junit.jupiter.api.Assertions.fail;

/**
 * Fresh random inputs on a {@link CpuBackend}, float64 views of them, finite differences and error checks shared by
 * the CPU op tests. The seed is in every failure message, so a failing draw can be replayed.
 */
final class OpsFixture implements AutoCloseable {
    /** Central-difference step: truncation error ~h² and rounding error ~1e-16·|L|/h both stay below 1e-8. */
    private static final double STEP = 1e-5;
    /** Coordinates at the end of a tensor that a sampled gradient check always includes: scalar tails of the last row. */
    private static final int TAIL = 24;

    /** Enough elements for element-wise ops to run on two threads (2·16 blocks of 4096), not a multiple of any vector length. */
    static final int ELEMENTS = 3 * 65536 + 5;

    final long seed;
    /** SplittableRandom: its nextGaussian (ziggurat) is several times faster than java.util.Random's. */
    final SplittableRandom rnd;
    final CpuBackend cpu = new CpuBackend();

    OpsFixture(long seed) {
        this.seed = seed;
        this.rnd = new SplittableRandom(seed);
    }

    /** Fresh inputs every run. */
    OpsFixture() {
        this(System.nanoTime());
    }

    /** Values drawn from a normal distribution of the given mean and standard deviation. */
    Tensor normal(double mean, double std, int... shape) {
        Tensor t = cpu.allocate(DType.F32, shape);
        for (long i = 0; i < t.size(); i++) t.set(i, (float) (mean + std * rnd.nextGaussian()));
        return t;
    }

    /** Standard normal values. */
    Tensor randn(int... shape) {
        return normal(0, 1, shape);
    }

    /** n ids drawn from [0, bound). */
    Tensor ids(int bound, int n) {
        Tensor t = cpu.allocate(DType.I32, n);
        for (int i = 0; i < n; i++) t.setInt(i, rnd.nextInt(bound));
        return t;
    }

    Tensor copyOf(Tensor src) {
        Tensor t = cpu.allocate(src.dtype(), src.shape());
        cpu.copy(t, src);
        return t;
    }

    static double[] doubles(Tensor t) {
        return doubles(t.toFloatArray());
    }

    static double[] doubles(float[] values) {
        double[] d = new double[values.length];
        for (int i = 0; i < d.length; i++) d[i] = values[i];
        return d;
    }

    static double dot(double[] a, double[] b) {
        double s = 0;
        for (int i = 0; i < a.length; i++) s += a[i] * b[i];
        return s;
    }

    static double[] minus(float[] a, float[] b) {
        double[] d = new double[a.length];
        for (int i = 0; i < d.length; i++) d[i] = (double) a[i] - b[i];
        return d;
    }

    /** All of [0, n) when n ≤ samples; otherwise that many random indices plus the last {@value #TAIL}. */
    int[] coordinates(int n, int samples) {
        if (n <= samples) return IntStream.range(0, n).toArray();
        int[] c = new int[samples + TAIL];
        for (int i = 0; i < samples; i++) c[i] = rnd.nextInt(n);
        for (int i = 0; i < TAIL; i++) c[samples + i] = n - TAIL + i;
        return c;
    }

    /** dL/dx[i] for i in coords, by float64 central differences of loss (x is restored afterwards). */
    static double[] centralDifferences(double[] x, int[] coords, ToDoubleFunction<double[]> loss) {
        double[] grad = new double[coords.length];
        for (int k = 0; k < coords.length; k++) {
            int i = coords[k];
            double saved = x[i];
            grad[k] = derivative(v -> {
                x[i] = v;
                return loss.applyAsDouble(x);
            }, saved);
            x[i] = saved;
        }
        return grad;
    }

    /** fn'(x) by a float64 central difference. */
    static double derivative(DoubleUnaryOperator fn, double x) {
        return (fn.applyAsDouble(x + STEP) - fn.applyAsDouble(x - STEP)) / (2 * STEP);
    }

    /** Checks got[coords[k]] against want[k] (a sampled gradient), relative to the gradient's magnitude. */
    void assertGradient(String what, double[] got, int[] coords, double[] want, double tolerance) {
        double[] picked = new double[coords.length];
        for (int k = 0; k < coords.length; k++) picked[k] = got[coords[k]];
        assertClose(what, picked, want, tolerance);
    }

    void assertClose(String what, float[] got, double[] want, double tolerance) {
        assertClose(what, doubles(got), want, tolerance);
    }

    /**
     * |got − want| ≤ tolerance · max(|want[i]|, rms(want)) for every i: relative per element, with the tensor's
     * typical magnitude as the floor, so that elements near zero (cancellations) ask no more than float32 can give.
     */
    void assertClose(String what, double[] got, double[] want, double tolerance) {
        double floor = rms(want);
        double[] allowed = new double[want.length];
        for (int i = 0; i < want.length; i++) allowed[i] = tolerance * Math.max(Math.abs(want[i]), floor);
        assertWithin(what, got, want, allowed);
    }

    /** |got[i] − want[i]| ≤ allowed[i] for every i. */
    void assertWithin(String what, double[] got, double[] want, double[] allowed) {
        if (got.length != want.length) fail(what + ": " + got.length + " values, want " + want.length);
        for (int i = 0; i < want.length; i++) {
            double err = Math.abs(got[i] - want[i]);
            if (!(err <= allowed[i])) {
                fail(String.format("%s at %d of %d: got %.9g want %.9g (error %.3g, allowed %.3g; seed %d)",
                        what, i, want.length, got[i], want[i], err, allowed[i], seed));
            }
        }
    }

    static double rms(double[] v) {
        return v.length == 0 ? 0 : Math.sqrt(dot(v, v) / v.length);
    }

    String seeded(String what) {
        return what + " (seed " + seed + ")";
    }

    static String shape(int... dims) {
        return Arrays.toString(dims);
    }

    @Override
    public void close() {
        cpu.close();
    }
}
