package frugal.quant;

import frugal.FrugalException;
import frugal.backend.cpu.CpuBackend;
import frugal.tensor.DType;
import frugal.tensor.Tensor;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.Random;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** Quantize/dequantize through the CPU backend on fresh random data: error bounds, packing, rejection, unbiasedness. */
class QuantizeRoundTripTest {
    private static final CpuBackend CPU = new CpuBackend();
    private static final long SEED = System.nanoTime();

    @AfterAll
    static void close() {
        CPU.close();
    }

    /** Gaussian values with outliers (×1000), an all-zero block and a partial last block. */
    private static float[] awkwardData(Random rng, int n, int block) {
        float[] x = new float[n];
        for (int i = 0; i < n; i++) x[i] = (float) (rng.nextGaussian() * Math.exp(rng.nextGaussian() * 3));
        for (int i = 0; i < n / 50; i++) x[rng.nextInt(n)] *= 1000;
        int zeroBlock = rng.nextInt(n / block - 1);
        for (int i = 0; i < block; i++) x[zeroBlock * block + i] = 0;
        x[rng.nextInt(n)] = 0;
        return x;
    }

    private static float[] roundTrip(float[] x, QuantFormat f, long seed) {
        Tensor src = tensor(x);
        Tensor packed = CPU.allocate(DType.I8, (int) f.packedBytes(x.length));
        Tensor scales = CPU.allocate(DType.I8, (int) f.scalesBytes(x.length));
        Tensor out = CPU.allocate(DType.F32, x.length);
        CPU.quantize(packed, scales, src, x.length, f, seed);
        CPU.dequantize(out, packed, scales, x.length, f);
        return out.toFloatArray();
    }

    private static Tensor tensor(float[] x) {
        Tensor t = CPU.allocate(DType.F32, x.length);
        CPU.upload(t, MemorySegment.ofArray(x));
        return t;
    }

    @ParameterizedTest
    @ValueSource(strings = {"bfp", "int"})
    void everyBitWidthAndRoundingStaysWithinItsBound(String scheme) {
        Random rng = new Random(SEED);
        for (int bits = 2; bits <= 8; bits++) {
            for (String rounding : new String[]{"rn", "sr"}) {
                for (int block : new int[]{16, 32, 64}) {
                    QuantFormat f = QuantFormat.parse(scheme + bits + "/" + block + "/" + rounding);
                    int n = block * (20 + rng.nextInt(20)) + 1 + rng.nextInt(block - 1);
                    float[] x = awkwardData(rng, n, block);
                    float[] y = roundTrip(x, f, rng.nextLong());
                    for (int b = 0; b * block < n; b++) {
                        float maxAbs = 0;
                        for (int i = b * block; i < Math.min(n, (b + 1) * block); i++) maxAbs = Math.max(maxAbs, Math.abs(x[i]));
                        double bound = f.maxError(maxAbs) * (1 + 1e-6);
                        for (int i = b * block; i < Math.min(n, (b + 1) * block); i++) {
                            double err = Math.abs(x[i] - y[i]);
                            if (!(err <= bound)) {
                                throw new AssertionError(f + " seed " + SEED + ": element " + i + " = " + x[i] + " came back as "
                                        + y[i] + ", error " + err + " > bound " + bound + " (block max " + maxAbs + ")");
                            }
                            if (x[i] == 0) assertEquals(0f, y[i], f + ": zero must stay zero");
                        }
                    }
                }
            }
        }
    }

    @Test
    void moreBitsGiveSmallerErrors() {
        Random rng = new Random(SEED);
        float[] x = awkwardData(rng, 32 * 64, 32);
        double previous = Double.POSITIVE_INFINITY;
        for (int bits = 2; bits <= 8; bits++) {
            float[] y = roundTrip(x, QuantFormat.parse("bfp" + bits), 0);
            double sq = 0;
            for (int i = 0; i < x.length; i++) sq += (x[i] - y[i]) * (x[i] - y[i]);
            assertTrue(sq < previous, "bfp" + bits + " error " + sq + " not below bfp" + (bits - 1) + "'s " + previous + " (seed " + SEED + ")");
            previous = sq;
        }
    }

    @Test
    void packsTightly() {
        QuantFormat bfp4 = QuantFormat.parse("bfp4/32"), int3 = QuantFormat.parse("int3/32");
        assertEquals(16 * 1000, bfp4.packedBytes(32 * 1000), "4 bits = half a byte per value");
        assertEquals(1000, bfp4.scalesBytes(32 * 1000), "one exponent byte per block");
        assertEquals(12 * 1000, int3.packedBytes(32 * 1000), "3 bits: 32 values in 12 bytes");
        assertEquals(4 * 1000, int3.scalesBytes(32 * 1000), "one F32 scale per block");
        assertEquals(4.25, bfp4.bitsPerValue(), 1e-12);
    }

    @Test
    void rejectsNanAndInfinityNamingTheBlock() {
        for (float bad : new float[]{Float.NaN, Float.POSITIVE_INFINITY, Float.NEGATIVE_INFINITY}) {
            float[] x = awkwardData(new Random(SEED), 32 * 10, 32);
            x[32 * 7 + 5] = bad;
            FrugalException e = assertThrows(FrugalException.class, () -> roundTrip(x, QuantFormat.parse("bfp4"), 0));
            assertTrue(e.getMessage().contains("NaN or Inf") && e.getMessage().contains("block 7"), e.getMessage());
        }
    }

    /** The markers a GPU writes for a block that held NaN or ±Inf read back as NaN on the CPU too. */
    @Test
    void nanBlocksReadBackAsNan() {
        for (String format : new String[]{"bfp4/32", "int4/32"}) {
            QuantFormat f = QuantFormat.parse(format);
            int n = 32 * 3;
            Tensor packed = CPU.allocate(DType.I8, (int) f.packedBytes(n)), scales = CPU.allocate(DType.I8, (int) f.scalesBytes(n));
            for (int b = 0; b < 3; b++) {
                if (f.scheme() == QuantFormat.Scheme.BFP) scales.data().set(ValueLayout.JAVA_BYTE, b, b == 1 ? QuantFormat.NAN_BLOCK : QuantFormat.ZERO_BLOCK);
                else scales.data().setAtIndex(ValueLayout.JAVA_FLOAT, b, b == 1 ? Float.NaN : 0f);
            }
            Tensor out = CPU.allocate(DType.F32, n);
            CPU.dequantize(out, packed, scales, n, f);
            float[] y = out.toFloatArray();
            for (int i = 0; i < n; i++) assertEquals(i / 32 == 1, Float.isNaN(y[i]), format + " element " + i + ": " + y[i]);
        }
    }

    /** Subnormal and zero ratios take the smallest normal exponent, so BFP never writes the NAN_BLOCK byte itself. */
    @Test
    void bfpExponentsStayInTheNormalRange() {
        for (int bits = 2; bits <= 8; bits++) {
            QuantFormat f = QuantFormat.parse("bfp" + bits);
            for (float maxAbs : new float[]{Float.MIN_VALUE, 1e-40f, Float.MIN_NORMAL, 1e-30f, 1f, 1e30f}) {
                int e = f.exponent(maxAbs);
                assertTrue(e >= QuantFormat.MIN_EXPONENT && e <= QuantFormat.MAX_EXPONENT, f + " exponent of " + maxAbs + ": " + e);
                assertTrue(maxAbs <= f.maxLevel() * (double) Math.scalb(1f, e) || e == QuantFormat.MIN_EXPONENT, f + " clips " + maxAbs);
            }
        }
    }

    @Test
    void theCpuQuantizesF32Only() {
        Tensor bf16 = CPU.allocate(DType.BF16, 64);
        QuantFormat f = QuantFormat.parse("bfp4");
        Tensor packed = CPU.allocate(DType.I8, (int) f.packedBytes(64)), scales = CPU.allocate(DType.I8, (int) f.scalesBytes(64));
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> CPU.quantize(packed, scales, bf16, 64, f, 0));
        assertTrue(e.getMessage().contains("F32"), e.getMessage());
    }

    @Test
    void rejectsBadFormats() {
        assertThrows(FrugalException.class, () -> QuantFormat.parse("bfp9"));
        assertThrows(FrugalException.class, () -> QuantFormat.parse("int1"));
        assertThrows(FrugalException.class, () -> QuantFormat.parse("fp4"));
        assertThrows(FrugalException.class, () -> QuantFormat.parse("int4/12"));
        assertEquals(QuantFormat.parse("bfp3/64/sr"), new QuantFormat(QuantFormat.Scheme.BFP, 3, 64, QuantFormat.Rounding.STOCHASTIC));
    }

    /**
     * Stochastic rounding is unbiased: averaged over K independent seeds, each value's reconstruction converges to
     * the value (standard error ≤ step/(2√K)), while round-to-nearest keeps a fixed bias.
     */
    @ParameterizedTest
    @ValueSource(strings = {"bfp3/32/sr", "int2/32/sr"})
    void stochasticRoundingIsUnbiased(String format) {
        QuantFormat f = QuantFormat.parse(format);
        Random rng = new Random(SEED);
        int n = 32 * 8, trials = 4000;
        float[] x = new float[n];
        for (int i = 0; i < n; i++) x[i] = (float) rng.nextGaussian();
        double[] mean = new double[n];
        for (int t = 0; t < trials; t++) {
            float[] y = roundTrip(x, f, rng.nextLong());
            for (int i = 0; i < n; i++) mean[i] += y[i] / (double) trials;
        }
        float[] nearest = roundTrip(x, f.withRounding(QuantFormat.Rounding.NEAREST), 0);
        double worstZ = 0, nearestBias = 0, srBias = 0;
        for (int b = 0; b < n / 32; b++) {
            float maxAbs = 0;
            for (int i = b * 32; i < b * 32 + 32; i++) maxAbs = Math.max(maxAbs, Math.abs(x[i]));
            double step = f.scale(maxAbs), standardError = step / (2 * Math.sqrt(trials));
            for (int i = b * 32; i < b * 32 + 32; i++) {
                worstZ = Math.max(worstZ, Math.abs(mean[i] - x[i]) / standardError);
                srBias += Math.abs(mean[i] - x[i]);
                nearestBias += Math.abs(nearest[i] - x[i]);
            }
        }
        assertTrue(worstZ < 5.5, format + ": a value's mean over " + trials + " seeds is " + worstZ + " standard errors off (seed " + SEED + ")");
        assertTrue(srBias < nearestBias / 10, format + ": mean |bias| " + srBias / n + " is not far below round-to-nearest's " + nearestBias / n);
    }
}
