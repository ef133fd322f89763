package frugal.backend.cuda;

import frugal.FrugalException;
import frugal.backend.cpu.CpuBackend;
import frugal.model.Init;
import frugal.model.Transformer;
import frugal.nn.Context;
import frugal.nn.Param;
import frugal.quant.QuantFormat;
import frugal.stash.StashPolicy;
import frugal.tensor.DType;
import frugal.tensor.Tensor;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;

import java.io.IOException;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Random;

import static frugal.backend.cuda.CudaBf16OpsTest.fromBf16;
import static frugal.backend.cuda.CudaBf16OpsTest.toBf16;
import static frugal.stash.QuantizedStashGradientTest.assertGradientsWithinTheFormat;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertDoesNotThrow;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

/**
 * quant.cu against CpuQuant: the same packed bytes and scales, bit for bit, for every scheme, bit width, rounding and a
 * range of block sizes, from F32 and BF16 sources, aligned (the fast kernels, where the block is a power of two up to
 * 256) and not (the general ones); the same dequantized values (F32 exactly, BF16 as their rounding); NaN/Inf flagged
 * and stored as NaN; and a GPT-2 trained on the GPU through a quantized stash. Skipped (per test) without a GPU.
 */
class CudaQuantTest {
    private static CudaBackend gpu;
    private static CpuBackend cpu;
    private static final long SEED = System.nanoTime();

    @BeforeAll
    static void setUp() {
        if (!CudaBackend.isAvailable()) return;
        gpu = new CudaBackend(0, false, DType.BF16);
        cpu = new CpuBackend();
        System.out.println("CUDA backend: " + gpu.name() + ", seed " + SEED);
    }

    @BeforeEach
    void requireGpu() {
        assumeTrue(CudaBackend.isAvailable(), () -> "no CUDA: " + CudaBackend.unavailableReason());
    }

    @AfterAll
    static void tearDown() {
        if (gpu != null) gpu.close();
        if (cpu != null) cpu.close();
    }

    /**
     * Gaussian values over many magnitudes, outliers (×1000), exact zeros, and (given three blocks) an all-zero block, a
     * block of tiny values (scales in F32's subnormal range) and one of subnormals (INT scales whose reciprocal is
     * infinite).
     */
    private static float[] awkwardData(Random rng, int n, int block) {
        float[] x = new float[n];
        for (int i = 0; i < n; i++) x[i] = (float) (rng.nextGaussian() * Math.exp(rng.nextGaussian() * 3));
        for (int i = 0; i < n / 50; i++) x[rng.nextInt(n)] *= 1000;
        int blocks = n / block;
        if (blocks >= 3) {
            int zeroBlock = rng.nextInt(blocks), tinyBlock = (zeroBlock + 1) % blocks, subnormalBlock = (zeroBlock + 2) % blocks;
            for (int i = 0; i < block; i++) {
                x[zeroBlock * block + i] = 0;
                x[tinyBlock * block + i] = (float) (rng.nextGaussian() * 1e-36);
                x[subnormalBlock * block + i] = (float) (rng.nextGaussian() * 1e-40);
            }
        }
        for (int i = 0; i < n / 20; i++) x[rng.nextInt(n)] = 0;
        return x;
    }

    /** The source on the GPU (F32, or x rounded to BF16 beforehand), at element offset `offset` of its allocation. */
    private static Tensor gpuSource(float[] x, DType type, int offset) {
        Tensor t = gpu.allocate(type, x.length + offset).slice(offset, x.length);
        if (type == DType.BF16) {
            short[] h = new short[x.length];
            for (int i = 0; i < x.length; i++) h[i] = toBf16(x[i]);
            gpu.upload(t, MemorySegment.ofArray(h));
        } else {
            gpu.upload(t, MemorySegment.ofArray(x));
        }
        return t;
    }

    private static float[] widened(float[] x, DType type) {
        if (type == DType.F32) return x;
        float[] r = new float[x.length];
        for (int i = 0; i < x.length; i++) r[i] = fromBf16(toBf16(x[i]));
        return r;
    }

    private static byte[] bytes(Tensor t) {
        byte[] b = new byte[(int) t.byteSize()];
        gpu.download(t, MemorySegment.ofArray(b));
        return b;
    }

    /** Packed values and scales of x in f on the CPU (the reference), as bytes. */
    private record Quantized(byte[] packed, byte[] scales) {
        static Quantized cpu(float[] x, QuantFormat f, long seed) {
            Tensor src = cpu.allocate(DType.F32, x.length);
            cpu.upload(src, MemorySegment.ofArray(x));
            Tensor p = cpu.allocate(DType.I8, (int) f.packedBytes(x.length)), s = cpu.allocate(DType.I8, (int) f.scalesBytes(x.length));
            cpu.quantize(p, s, src, x.length, f, seed);
            return new Quantized(p.data().toArray(ValueLayout.JAVA_BYTE), s.data().toArray(ValueLayout.JAVA_BYTE));
        }
    }

    /**
     * Packed bytes then scales in one I8 buffer, as the stash lays them out (the scales at any byte offset), with `pad`
     * bytes between them (an odd pad: INT scales that are no aligned words).
     */
    private static Tensor[] gpuBuffers(QuantFormat f, long n, int pad) {
        Tensor buffer = gpu.allocate(DType.I8, (int) (f.bytes(n) + pad));
        return new Tensor[]{buffer.slice(0, (int) f.packedBytes(n)), buffer.slice(f.packedBytes(n) + pad, (int) f.scalesBytes(n))};
    }

    private static void assertSameBytes(byte[] expected, byte[] actual, String what, QuantFormat f, int perBlock) {
        for (int i = 0; i < expected.length; i++) {
            if (expected[i] != actual[i]) {
                throw new AssertionError(what + " of " + f + " (seed " + SEED + ") differ first at byte " + i + " (block "
                        + i / perBlock + "): cpu " + (expected[i] & 0xff) + ", cuda " + (actual[i] & 0xff));
            }
        }
    }

    /**
     * Every format of the grid from both sources, each twice: aligned (the fast kernels where they apply: every bit
     * width's, on every block from 8 to 256, with INT scales aligned or not) and at an odd element offset (the general
     * kernels); n with a ragged last block, whole blocks, whole groups of 8, or a few blocks (less than a warp's chunk).
     */
    @Test
    void quantizesAndDequantizesBitForBitAsTheCpu() {
        Random rng = new Random(SEED);
        int[] blocks = {8, 16, 24, 32, 64, 128, 256, 512};
        int runs = 0;
        for (QuantFormat.Scheme scheme : QuantFormat.Scheme.values()) {
            for (int bits = 2; bits <= 8; bits++) {
                for (int b = 0; b < blocks.length; b++) {
                    int block = blocks[b];
                    for (QuantFormat.Rounding rounding : QuantFormat.Rounding.values()) {
                        QuantFormat f = new QuantFormat(scheme, bits, block, rounding);
                        for (DType type : new DType[]{DType.F32, DType.BF16}) {
                            int n = switch (runs / 2 % 4) {
                                case 0 -> block * (20 + rng.nextInt(20)) + 1 + rng.nextInt(block - 1);
                                case 1 -> block * (20 + rng.nextInt(20));
                                case 2 -> block * (20 + rng.nextInt(20)) + 8 * (1 + rng.nextInt(block / 8));
                                default -> 1 + rng.nextInt(3 * block);
                            };
                            float[] x = widened(awkwardData(rng, n, block), type);
                            checkOne(f, type, x, rng.nextLong(), 0, (b + bits) & 1);
                            checkOne(f, type, x, rng.nextLong(), 1 + rng.nextInt(7), 0);
                            runs += 2;
                        }
                    }
                }
            }
        }
        System.out.println("quant.cu matches CpuQuant bit for bit on " + runs + " format × source × alignment combinations");
    }

    private static void checkOne(QuantFormat f, DType type, float[] x, long seed, int offset, int scalesPad) {
        int n = x.length;
        String what = f + " of " + n + " from " + type + (offset == 0 ? "" : " at offset " + offset)
                + (scalesPad == 0 ? "" : ", scales after a pad of " + scalesPad);
        Quantized expected = Quantized.cpu(x, f, seed);
        Tensor[] buffers = gpuBuffers(f, n, scalesPad);
        gpu.quantize(buffers[0], buffers[1], gpuSource(x, type, offset), n, f, seed);
        assertSameBytes(expected.packed, bytes(buffers[0]), "packed values, " + what + ",", f, f.block() * f.bits() / 8);
        assertSameBytes(expected.scales, bytes(buffers[1]), "scales, " + what + ",", f, f.scaleBytes());

        Tensor cpuOut = cpu.allocate(DType.F32, n), cpuPacked = cpu.allocate(DType.I8, expected.packed.length),
                cpuScales = cpu.allocate(DType.I8, expected.scales.length);
        cpu.upload(cpuPacked, MemorySegment.ofArray(expected.packed));
        cpu.upload(cpuScales, MemorySegment.ofArray(expected.scales));
        cpu.dequantize(cpuOut, cpuPacked, cpuScales, n, f);
        float[] reference = cpuOut.toFloatArray();
        Tensor f32 = gpu.allocate(DType.F32, n + offset).slice(offset, n), bf16 = gpu.allocate(DType.BF16, n + offset).slice(offset, n);
        gpu.dequantize(f32, buffers[0], buffers[1], n, f);
        gpu.dequantize(bf16, buffers[0], buffers[1], n, f);
        float[] g32 = CudaBf16OpsTest.download(gpu, f32);
        short[] g16 = new short[n];
        gpu.download(bf16, MemorySegment.ofArray(g16));
        for (int i = 0; i < n; i++) {
            if (Float.floatToRawIntBits(g32[i]) != Float.floatToRawIntBits(reference[i]) || g16[i] != toBf16(reference[i])) {
                throw new AssertionError("dequantized " + what + " (seed " + SEED + ") element " + i + ": cpu " + reference[i]
                        + ", cuda f32 " + g32[i] + ", cuda bf16 " + fromBf16(g16[i]));
            }
        }
    }

    /** The same seed gives the same stochastic rounding as the CPU's, and another seed another one. */
    @Test
    void stochasticRoundingFollowsTheSeedAsOnTheCpu() {
        QuantFormat f = QuantFormat.parse("bfp3/32/sr");
        float[] x = awkwardData(new Random(SEED), 32 * 1000 + 5, 32);
        long[] seeds = {0, 1, -1, 0x9E3779B97F4A7C15L, SEED};
        byte[] previous = null;
        for (long seed : seeds) {
            checkOne(f, DType.F32, x, seed, 0, 0);
            Tensor[] buffers = gpuBuffers(f, x.length, 0);
            gpu.quantize(buffers[0], buffers[1], gpuSource(x, DType.F32, 0), x.length, f, seed);
            byte[] packed = bytes(buffers[0]);
            if (previous != null) assertFalse(Arrays.equals(previous, packed), "seed " + seed + " rounds as the one before");
            previous = packed;
        }
    }

    @Test
    void nonFiniteBlocksAreStoredAsNanAndReportedAtTheNextWait() {
        for (String format : new String[]{"bfp4/32/rn", "int4/32/sr", "bfp8/64/rn"}) {
            QuantFormat f = QuantFormat.parse(format);
            int n = f.block() * 12 + 7;
            float[] x = awkwardData(new Random(SEED), n, f.block());
            int[] bad = {3, 7, 12}; // the last is the partial block
            x[3 * f.block() + 5] = Float.NaN;
            x[7 * f.block()] = Float.POSITIVE_INFINITY;
            x[n - 1] = Float.NEGATIVE_INFINITY;
            Tensor[] buffers = gpuBuffers(f, n, 0);
            gpu.quantize(buffers[0], buffers[1], gpuSource(x, DType.BF16, 0), n, f, 5);
            FrugalException e = assertThrows(FrugalException.class, gpu::synchronize);
            assertTrue(e.getMessage().contains("NaN or Inf"), e.getMessage());
            assertDoesNotThrow(gpu::synchronize, "the error is reported once");

            float[] clean = widened(x.clone(), DType.BF16);
            for (int b : bad) for (int i = b * f.block(); i < Math.min(n, (b + 1) * f.block()); i++) clean[i] = 0;
            Quantized expected = Quantized.cpu(clean, f, 5);
            byte[] packed = bytes(buffers[0]), scales = bytes(buffers[1]);
            int perBlock = f.block() * f.bits() / 8;
            for (int b = 0; b < f.blocks(n); b++) {
                boolean isBad = b == bad[0] || b == bad[1] || b == bad[2];
                for (int i = b * perBlock; i < (b + 1) * perBlock; i++) {
                    assertEquals(isBad ? 0 : expected.packed[i], packed[i], format + " block " + b + " packed byte " + i);
                }
                if (f.scheme() == QuantFormat.Scheme.BFP) {
                    assertEquals(isBad ? QuantFormat.NAN_BLOCK : expected.scales[b], scales[b], format + " block " + b + " exponent");
                } else {
                    MemorySegment got = MemorySegment.ofArray(scales), want = MemorySegment.ofArray(expected.scales);
                    float scale = got.getAtIndex(ValueLayout.JAVA_FLOAT_UNALIGNED, b);
                    if (isBad) assertTrue(Float.isNaN(scale), format + " block " + b + " scale " + scale);
                    else assertEquals(want.getAtIndex(ValueLayout.JAVA_FLOAT_UNALIGNED, b), scale, format + " block " + b + " scale");
                }
            }
            Tensor out = gpu.allocate(DType.BF16, n);
            gpu.dequantize(out, buffers[0], buffers[1], n, f);
            float[] y = CudaBf16OpsTest.download(gpu, out);
            for (int i = 0; i < n; i++) {
                int b = i / f.block();
                boolean isBad = b == bad[0] || b == bad[1] || b == bad[2];
                assertEquals(isBad, Float.isNaN(y[i]), format + " element " + i + " (block " + b + ") read back as " + y[i]);
            }
        }
    }

    @Test
    void magnitudesBeyondBfpExponentsAreReported() {
        QuantFormat f = QuantFormat.parse("bfp2/16/rn"); // maxLevel 1: 3e38 needs 2^128
        float[] x = new float[64];
        x[20] = 3e38f;
        Tensor[] buffers = gpuBuffers(f, x.length, 0);
        gpu.quantize(buffers[0], buffers[1], gpuSource(x, DType.F32, 0), x.length, f, 0);
        FrugalException e = assertThrows(FrugalException.class, gpu::synchronize);
        assertTrue(e.getMessage().contains("beyond BFP"), e.getMessage());
        byte[] scales = bytes(buffers[1]);
        assertArrayEquals(new byte[]{QuantFormat.ZERO_BLOCK, QuantFormat.NAN_BLOCK, QuantFormat.ZERO_BLOCK, QuantFormat.ZERO_BLOCK}, scales);
    }

    /**
     * A tiny GPT-2 in bf16 mixed precision: gradients through a quantized stash (BF16 activations packed and read back
     * as BF16) agree with those of the kept stash within what the format allows, as on the CPU (there, for this model
     * and five seeds: int8 ≤ 0.006, int4 ≥ 0.05, bfp8 at all four points ≤ 0.13; see QuantizedStashGradientTest).
     */
    @Test
    void quantizedStashGradientsAgreeWithTheKeptStash() throws IOException {
        Transformer model = new Transformer(CudaModelTest.TINY, gpu);
        Init.initialize(model, gpu, 7);
        int[] tokens = CudaModelTest.corpus();
        int batch = 4, seq = 64, rows = batch * seq;
        int[] in = new int[rows], tg = new int[rows];
        Random data = new Random(SEED);
        for (int b = 0; b < batch; b++) {
            int start = data.nextInt(tokens.length - seq - 1);
            System.arraycopy(tokens, start, in, b * seq, seq);
            System.arraycopy(tokens, start + 1, tg, b * seq, seq);
        }
        Tensor ids = gpu.allocate(DType.I32, rows), targets = gpu.allocate(DType.I32, rows), losses = gpu.allocate(DType.F32, rows);
        gpu.upload(ids, MemorySegment.ofArray(in));
        gpu.upload(targets, MemorySegment.ofArray(tg));
        assertGradientsWithinTheFormat(gpu, ctx -> gradients(model, ctx, ids, targets, losses, batch, seq),
                "gpt2 tiny bf16 on CUDA (seed " + SEED + ")", 0.3);
    }

    private static List<float[]> gradients(Transformer model, Context ctx, Tensor ids, Tensor targets, Tensor losses, int batch, int seq) {
        model.params().zeroGrad();
        ctx.stash().beginStep(1);
        model.forward(ctx, ids, targets, losses, batch, seq, 1f / (batch * seq));
        model.backward(ctx, batch, seq);
        for (float l : CudaModelTest.read(gpu, losses)) assertTrue(Float.isFinite(l), "loss " + l);
        List<float[]> grads = new ArrayList<>();
        for (Param p : model.params().all()) grads.add(CudaModelTest.read(gpu, p.grad()));
        return grads;
    }

    /**
     * 40 steps of the tiny GPT-2 in bf16 with DSQ's two-stage policy (the stage changes at step 20; the steps run op by
     * op) track the same run with the kept stash (replayed as a CUDA graph).
     */
    @Test
    void trainsThroughTheDsqStash() throws IOException {
        int[] tokens = CudaModelTest.corpus();
        int steps = 40;
        double[] keep = CudaModelTest.train(gpu, tokens, steps, true);
        double[] dsq = CudaModelTest.train(gpu, tokens, steps, true, StashPolicy.named("dsq", steps));
        double diff = CudaModelTest.meanAbsDiffLast(keep, dsq, 10);
        System.out.printf("gpt2 tiny bf16, %d steps: loss keep %.4f → %.4f, dsq %.4f → %.4f; mean |difference| over the last 10 %.4f%n",
                steps, keep[0], keep[steps - 1], dsq[0], dsq[steps - 1], diff);
        for (double l : dsq) assertTrue(Double.isFinite(l), "dsq loss " + l);
        assertTrue(dsq[steps - 1] < dsq[0] - 0.5, "the dsq run learns");
        assertTrue(diff < 0.2, "dsq tracks keep: " + diff);
    }
}
