package frugal.backend.cuda;

import frugal.model.Init;
import frugal.model.ModelConfig;
import frugal.model.Transformer;
import frugal.nn.Context;
import frugal.nn.Param;
import frugal.quant.QuantFormat;
import frugal.quant.Quantized;
import frugal.stash.StashPolicy;
import frugal.tensor.DType;
import frugal.tensor.Tensor;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;

import java.lang.foreign.MemorySegment;
import java.util.ArrayList;
import java.util.List;
import java.util.Random;

import static frugal.backend.cuda.CudaBf16OpsTest.toBf16;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

/**
 * Kernels that quantize what the stash keeps as they write it, and dequantize it as they read it (stash_norms.cu,
 * stash_gelu.cu forward and backward, the attention forward's epilogues in flash.cu), against the same ops unfused on the same GPU: the op,
 * then quant.cu's kernels, which write CpuQuant's bytes. The fused forms must write the same bytes, scales and
 * activations, bit for bit; their backward the same dx. Skipped without a GPU.
 */
class CudaStashFusionTest {
    private static final long SEED = System.nanoTime();
    private static CudaBackend gpu;

    @BeforeAll
    static void setUp() {
        if (!CudaBackend.isAvailable()) return;
        gpu = new CudaBackend(0, false, DType.BF16);
        System.out.println("CUDA backend: " + gpu.name() + ", seed " + SEED);
    }

    @BeforeEach
    void requireGpu() {
        assumeTrue(CudaBackend.isAvailable(), () -> "no CUDA: " + CudaBackend.unavailableReason());
    }

    @AfterAll
    static void tearDown() {
        if (gpu != null) gpu.close();
    }

    private static Tensor bf16(Random rng, int n, double scale) {
        short[] h = new short[n];
        for (int i = 0; i < n; i++) h[i] = toBf16((float) (rng.nextGaussian() * scale));
        Tensor t = gpu.allocate(DType.BF16, n);
        gpu.upload(t, MemorySegment.ofArray(h));
        return t;
    }

    private static Tensor f32(Random rng, int n, double mean, double scale) {
        float[] h = new float[n];
        for (int i = 0; i < n; i++) h[i] = (float) (mean + rng.nextGaussian() * scale);
        Tensor t = gpu.allocate(DType.F32, n);
        gpu.upload(t, MemorySegment.ofArray(h));
        return t;
    }

    static byte[] bytes(Tensor t) {
        byte[] b = new byte[Math.toIntExact(t.byteSize())];
        gpu.download(t, MemorySegment.ofArray(b));
        return b;
    }

    private static Quantized target(QuantFormat f, long n, long seed) {
        return new Quantized(gpu.allocate(DType.I8, Math.toIntExact(f.packedBytes(n))),
                gpu.allocate(DType.I8, Math.toIntExact(f.scalesBytes(n))), f, seed);
    }

    private static final String[] FORMATS = {"bfp4", "bfp3/32/sr", "int8/64", "bfp4/256", "int4/8/sr", "bfp8/16"};

    @Test
    void layerNormWritesAndReadsTheBytesQuantizeWould() {
        Random rng = new Random(SEED);
        int rows = 301;
        for (int cols : new int[]{256, 512, 768, 1024}) {
            for (String name : FORMATS) {
                for (boolean add : new boolean[]{false, true}) {
                    QuantFormat f = QuantFormat.parse(name);
                    String what = "cols " + cols + ", " + name + (add ? ", with the residual add" : "") + " (seed " + SEED + ")";
                    long n = (long) rows * cols;
                    Tensor x = bf16(rng, (int) n, 2), r = add ? bf16(rng, (int) n, 1) : null;
                    Tensor w = f32(rng, cols, 1, 0.2), b = f32(rng, cols, 0, 0.2);
                    Tensor sumA = gpu.allocate(DType.BF16, (int) n), outA = gpu.allocate(DType.BF16, (int) n);
                    Tensor sumB = gpu.allocate(DType.BF16, (int) n), outB = gpu.allocate(DType.BF16, (int) n);
                    Tensor meanA = gpu.allocate(DType.F32, rows), rstdA = gpu.allocate(DType.F32, rows);
                    Tensor meanB = gpu.allocate(DType.F32, rows), rstdB = gpu.allocate(DType.F32, rows);
                    long seedX = rng.nextLong(), seedOut = rng.nextLong();
                    Quantized xqA = target(f, n, seedX), outqA = target(f, n, seedOut);
                    Quantized xqB = target(f, n, seedX), outqB = target(f, n, seedOut);
                    assertTrue(gpu.stashNormFused(f, outB, outqB, cols), "no fused kernel for " + what);

                    gpu.fuseStashQuantization(false);
                    gpu.layerNormForwardQuantized(sumA, outA, meanA, rstdA, x, r, w, b, rows, cols, 1e-5f, xqA, outqA);
                    gpu.fuseStashQuantization(true);
                    gpu.layerNormForwardQuantized(sumB, outB, meanB, rstdB, x, r, w, b, rows, cols, 1e-5f, xqB, outqB);

                    assertArrayEquals(bytes(outA), bytes(outB), "out, " + what);
                    assertArrayEquals(bytes(rstdA), bytes(rstdB), "rstd, " + what);
                    if (add) assertArrayEquals(bytes(sumA), bytes(sumB), "sum, " + what);
                    assertArrayEquals(bytes(xqA.packed()), bytes(xqB.packed()), "input's packed values, " + what);
                    assertArrayEquals(bytes(xqA.scales()), bytes(xqB.scales()), "input's scales, " + what);
                    assertArrayEquals(bytes(outqA.packed()), bytes(outqB.packed()), "output's packed values, " + what);
                    assertArrayEquals(bytes(outqA.scales()), bytes(outqB.scales()), "output's scales, " + what);

                    // Backward from the quantized input: as from the input dequantized first.
                    Tensor dout = bf16(rng, (int) n, 1), xd = gpu.allocate(DType.BF16, (int) n);
                    Tensor dxA = bf16(rng, (int) n, 1), dxB = gpu.allocate(DType.BF16, (int) n);
                    gpu.copy(dxB, dxA);
                    Tensor dwA = f32(rng, cols, 0, 1), dbA = f32(rng, cols, 0, 1), dwB = gpu.allocate(DType.F32, cols), dbB = gpu.allocate(DType.F32, cols);
                    gpu.copy(dwB, dwA);
                    gpu.copy(dbB, dbA);
                    gpu.dequantize(xd, xqA.packed(), xqA.scales(), n, f);
                    gpu.layerNormBackward(dxA, dwA, dbA, dout, xd, w, meanA, rstdA, rows, cols);
                    assertTrue(gpu.layerNormBackward(dxB, dwB, dbB, dout, xqB, w, meanB, rstdB, rows, cols), "no fused backward for " + what);
                    assertArrayEquals(bytes(dxA), bytes(dxB), "backward dx, " + what);
                    assertRelative("backward dweight, " + what, CudaModelTest.read(gpu, dwA), CudaModelTest.read(gpu, dwB), 1e-5);
                    assertRelative("backward dbias, " + what, CudaModelTest.read(gpu, dbA), CudaModelTest.read(gpu, dbB), 1e-5);
                    for (Tensor t : new Tensor[]{dout, xd, dxA, dxB, dwA, dbA, dwB, dbB}) gpu.release(t);
                    for (Tensor t : new Tensor[]{x, w, b, sumA, outA, sumB, outB, meanA, rstdA, meanB, rstdB, xqA.packed(), xqA.scales(),
                            outqA.packed(), outqA.scales(), xqB.packed(), xqB.scales(), outqB.packed(), outqB.scales()}) {
                        gpu.release(t);
                    }
                    if (r != null) gpu.release(r);
                }
            }
        }
    }

    @Test
    void geluRecomputeWritesWhatDequantizeAndGeluWould() {
        Random rng = new Random(SEED);
        for (String name : new String[]{"bfp4", "bfp3/32/sr", "int8/64", "bfp2/256", "int5/16", "bfp4/8"}) {
            QuantFormat f = QuantFormat.parse(name);
            int n = 8 * (1 + rng.nextInt(40000)); // whole groups, most often not whole blocks
            String what = name + ", n " + n + " (seed " + SEED + ")";
            Tensor x = bf16(rng, n, 3);
            Quantized q = target(f, n, rng.nextLong());
            gpu.quantize(q.packed(), q.scales(), x, n, f, q.seed());
            Tensor preA = gpu.allocate(DType.BF16, n), actA = gpu.allocate(DType.BF16, n);
            Tensor preB = gpu.allocate(DType.BF16, n), actB = gpu.allocate(DType.BF16, n);
            gpu.fuseStashQuantization(false);
            gpu.geluRecompute(actA, preA, q, n);
            gpu.fuseStashQuantization(true);
            gpu.geluRecompute(actB, preB, q, n);
            assertArrayEquals(bytes(preA), bytes(preB), "pre, " + what);
            assertArrayEquals(bytes(actA), bytes(actB), "act, " + what);
            Tensor actC = gpu.allocate(DType.BF16, n);
            gpu.geluRecompute(actC, null, q, n);
            assertArrayEquals(bytes(actA), bytes(actC), "act without pre, " + what);
            for (Tensor t : new Tensor[]{x, q.packed(), q.scales(), preA, actA, preB, actB, actC}) gpu.release(t);
        }
    }

    /** Bit widths 2..8, both schemes and roundings, blocks of 8..256. */
    private static final String[] GELU_FORMATS = {"bfp4", "bfp3/32/sr", "int8/64", "bfp2/256", "int5/16/sr", "bfp4/8", "int6/128",
            "bfp7/32/sr", "int3/32", "int4/256/sr"};

    /** stash_gelu.cu's gelu_quantize against geluForward then quantize: the same act, packed values and scales. */
    @Test
    void geluQuantizeWritesWhatGeluForwardAndQuantizeWould() {
        Random rng = new Random(SEED);
        for (String name : GELU_FORMATS) {
            QuantFormat f = QuantFormat.parse(name);
            int n = 8 * (1 + rng.nextInt(40000)); // whole groups, most often not whole blocks
            String what = name + ", n " + n + " (seed " + SEED + ")";
            Tensor pre = bf16(rng, n, 3), actA = gpu.allocate(DType.BF16, n), actB = gpu.allocate(DType.BF16, n);
            long seed = rng.nextLong();
            Quantized qA = target(f, n, seed), qB = target(f, n, seed);
            assertTrue(gpu.geluQuantizeTakes(actB, pre, qB, n), "no fused kernel for " + what);
            gpu.geluForward(actA, pre, n);
            gpu.quantize(qA.packed(), qA.scales(), pre, n, f, seed);
            gpu.geluQuantize(actB, pre, qB, n);
            assertArrayEquals(bytes(actA), bytes(actB), "act, " + what);
            assertArrayEquals(bytes(qA.packed()), bytes(qB.packed()), "packed values, " + what);
            assertArrayEquals(bytes(qA.scales()), bytes(qB.scales()), "scales, " + what);
            for (Tensor t : new Tensor[]{pre, actA, actB, qA.packed(), qA.scales(), qB.packed(), qB.scales()}) gpu.release(t);
        }
    }

    /**
     * The forward of fc and GELU where the stash keeps GELU's input quantized (FRUGAL_CUDA_GELU_SPLIT): the bias
     * product, then gelu_quantize, against the same product then geluForward and quantize.
     */
    @Test
    void linearGeluForwardQuantizedIsTheProductThenGeluAndQuantize() {
        assumeTrue(CudaBackend.GELU_SPLIT, "FRUGAL_CUDA_GELU_SPLIT=0");
        Random rng = new Random(SEED);
        int[][] shapes = {{512, 3072, 768}, {301, 1024, 256}, {77, 520, 64}};
        for (int i = 0; i < shapes.length; i++) {
            int m = shapes[i][0], n = shapes[i][1], k = shapes[i][2];
            QuantFormat f = QuantFormat.parse(GELU_FORMATS[i]);
            String what = m + "×" + n + "×" + k + ", " + f + " (seed " + SEED + ")";
            int mn = m * n;
            Tensor a = bf16(rng, m * k, 1), w = bf16(rng, n * k, 1 / Math.sqrt(k)), bias = bf16(rng, n, 0.5);
            Tensor preA = gpu.allocate(DType.BF16, mn), actA = gpu.allocate(DType.BF16, mn);
            Tensor preB = gpu.allocate(DType.BF16, mn), actB = gpu.allocate(DType.BF16, mn);
            long seed = rng.nextLong();
            Quantized qA = target(f, mn, seed), qB = target(f, mn, seed);
            gpu.linearForward(preA, a, w, bias, m, n, k);
            gpu.geluForward(actA, preA, mn);
            gpu.quantize(qA.packed(), qA.scales(), preA, mn, f, seed);
            gpu.linearGeluForwardQuantized(actB, preB, qB, a, w, bias, m, n, k);
            assertArrayEquals(bytes(preA), bytes(preB), "pre, " + what);
            assertArrayEquals(bytes(actA), bytes(actB), "act, " + what);
            assertArrayEquals(bytes(qA.packed()), bytes(qB.packed()), "packed values, " + what);
            assertArrayEquals(bytes(qA.scales()), bytes(qB.scales()), "scales, " + what);
            for (Tensor t : new Tensor[]{a, w, bias, preA, actA, preB, actB, qA.packed(), qA.scales(), qB.packed(), qB.scales()}) {
                gpu.release(t);
            }
        }
    }

    /**
     * stash_gelu.cu's gelu_backward against dequantize, geluBackward and biasBackward: the same dpre, bit for bit; the
     * bias gradient up to the order in which bias_backward's atomic adds meet (its row chunks' sums are the same).
     */
    @Test
    void geluBackwardQuantizedMatchesTheComposedOps() {
        Random rng = new Random(SEED);
        int[] widths = {256, 768, 3072, 1024};
        for (int i = 0; i < GELU_FORMATS.length; i++) {
            QuantFormat f = QuantFormat.parse(GELU_FORMATS[i]);
            int cols = widths[i % widths.length], rows = 1 + rng.nextInt(i % 3 == 0 ? 40 : 1200);
            int n = rows * cols;
            String what = rows + "×" + cols + ", " + f + " (seed " + SEED + ")";
            Tensor x = bf16(rng, n, 3), dact = bf16(rng, n, 1), pre = gpu.allocate(DType.BF16, n);
            Quantized q = target(f, n, rng.nextLong());
            gpu.quantize(q.packed(), q.scales(), x, n, f, q.seed());
            Tensor dpreA = gpu.allocate(DType.BF16, n), dpreB = gpu.allocate(DType.BF16, n), dpreC = gpu.allocate(DType.BF16, n);
            Tensor dbA = f32(rng, cols, 0, 1), dbB = gpu.allocate(DType.F32, cols);
            gpu.copy(dbB, dbA);
            assertTrue(gpu.geluBackwardTakes(dpreB, dact, q, rows, cols), "no fused kernel for " + what);
            gpu.dequantize(pre, q.packed(), q.scales(), n, f);
            gpu.geluBackward(dpreA, dact, pre, n);
            gpu.biasBackward(dbA, dpreA, rows, cols);
            gpu.geluBackwardQuantized(dpreB, dbB, dact, q, rows, cols);
            gpu.geluBackwardQuantized(dpreC, null, dact, q, rows, cols);
            assertArrayEquals(bytes(dpreA), bytes(dpreB), "dpre, " + what);
            assertArrayEquals(bytes(dpreA), bytes(dpreC), "dpre without the bias gradient, " + what);
            assertRelative("dbias, " + what, CudaModelTest.read(gpu, dbA), CudaModelTest.read(gpu, dbB), 1e-6);
            for (Tensor t : new Tensor[]{x, dact, pre, q.packed(), q.scales(), dpreA, dpreB, dpreC, dbA, dbB}) gpu.release(t);
        }
    }

    /**
     * stash_gemm.cu's products against cuBLASLt's followed by quant.cu's kernels: the product within bf16 rounding
     * (another order of fp32 sums), its quantized copy exactly what quantize makes of the product it wrote, and the GELU
     * form's copy the same bytes as the plain form's, with GELU of the product as gelu_forward computes it.
     */
    @Test
    void stashGemmWritesTheProductAndTheBytesQuantizeWould() {
        Random rng = new Random(SEED);
        int[][] shapes = {{512, 768, 768}, {301, 256, 64}, {128, 3072, 768}, {200, 512, 192}};
        String[] formats = {"bfp4", "bfp3/32/sr", "int8/64", "bfp4/256", "int4/8/sr", "bfp8/16"};
        for (int i = 0; i < formats.length; i++) {
            int[] shape = shapes[i % shapes.length];
            int m = shape[0], n = shape[1], k = shape[2];
            QuantFormat f = QuantFormat.parse(formats[i]);
            boolean withBias = i % 3 != 1;
            String what = m + "×" + n + "×" + k + ", " + formats[i] + (withBias ? ", bias" : "") + " (seed " + SEED + ")";
            long mn = (long) m * n;
            Tensor a = bf16(rng, m * k, 1), w = bf16(rng, n * k, 1 / Math.sqrt(k)), bias = withBias ? bf16(rng, n, 0.5) : null;
            Tensor outA = gpu.allocate(DType.BF16, (int) mn), outB = gpu.allocate(DType.BF16, (int) mn);
            Tensor act = gpu.allocate(DType.BF16, (int) mn), pre = gpu.allocate(DType.BF16, (int) mn), gelu = gpu.allocate(DType.BF16, (int) mn);
            long seed = rng.nextLong();
            Quantized qA = target(f, mn, seed), qB = target(f, mn, seed), qG = target(f, mn, seed), qC = target(f, mn, seed);
            gpu.linearForwardQuantized(outA, qA, a, w, bias, m, n, k);
            gpu.useStashGemm(true);
            assertTrue(gpu.stashGemmTakes(outB, qB, a, w, bias, m, n, k), "stash_gemm.cu does not take " + what);
            gpu.linearForwardQuantized(outB, qB, a, w, bias, m, n, k);
            gpu.linearGeluForwardQuantized(act, pre, qG, a, w, bias, m, n, k);
            gpu.useStashGemm(false);

            assertRelative("product, " + what, CudaModelTest.read(gpu, outA), CudaModelTest.read(gpu, outB), 4e-3);
            gpu.quantize(qC.packed(), qC.scales(), outB, mn, f, seed);
            assertArrayEquals(bytes(qC.packed()), bytes(qB.packed()), "packed values, " + what);
            assertArrayEquals(bytes(qC.scales()), bytes(qB.scales()), "scales, " + what);
            assertArrayEquals(bytes(qB.packed()), bytes(qG.packed()), "GELU form's packed values, " + what);
            assertArrayEquals(bytes(qB.scales()), bytes(qG.scales()), "GELU form's scales, " + what);
            gpu.geluForward(gelu, outB, mn);
            assertArrayEquals(bytes(gelu), bytes(act), "GELU, " + what);
            for (Tensor t : new Tensor[]{a, w, outA, outB, act, pre, gelu}) gpu.release(t);
            if (bias != null) gpu.release(bias);
            for (Quantized q : new Quantized[]{qA, qB, qG, qC}) {
                gpu.release(q.packed());
                gpu.release(q.scales());
            }
        }
    }

    /**
     * {batch, seq, nHead, nKvHead} of the attention tests, head dimension 64 (the two-warpgroup kernels' on Hopper): T a
     * multiple of 128, of 64 only, of neither (the last block's second warpgroup partly or wholly past T); grouped queries.
     */
    private static final int[][] ATTENTION = {{2, 256, 4, 4}, {1, 192, 6, 2}, {2, 200, 4, 1}, {1, 50, 2, 1}, {3, 77, 3, 3}};

    @Test
    void attentionForwardWritesTheBytesQuantizeWould() {
        Random rng = new Random(SEED);
        int hd = 64;
        System.out.println("attentionForwardQuantized fused: " + gpu.fusesAttentionStash(hd));
        // kernels for 3, 4 and 8 bits with blocks within a head's 64 values; bfp4/128 and int5/32 take the composed ops
        for (String name : new String[]{"bfp4", "bfp3/32/sr", "int8/64", "int4/8/sr", "bfp8/16", "int3/16", "bfp4/128", "int5/32"}) {
            for (int[] c : ATTENTION) {
                int batch = c[0], seq = c[1], nHead = c[2], nKv = c[3], rows = batch * seq, n = rows * nHead * hd;
                QuantFormat f = QuantFormat.parse(name);
                String what = String.format("B%d T%d H%d KV%d, %s (seed %d)", batch, seq, nHead, nKv, name, SEED);
                Tensor qkv = bf16(rng, rows * (nHead + 2 * nKv) * hd, 1);
                Tensor outA = gpu.allocate(DType.BF16, n), outB = gpu.allocate(DType.BF16, n);
                Tensor lseA = gpu.allocate(DType.F32, batch * nHead * seq), lseB = gpu.allocate(DType.F32, batch * nHead * seq);
                long seed = rng.nextLong();
                Quantized composed = target(f, n, seed), fused = target(f, n, seed);
                gpu.fuseStashQuantization(false);
                gpu.attentionForwardQuantized(outA, composed, lseA, qkv, null, batch, seq, nHead, nKv, hd);
                gpu.fuseStashQuantization(true);
                gpu.attentionForwardQuantized(outB, fused, lseB, qkv, null, batch, seq, nHead, nKv, hd);
                assertArrayEquals(bytes(outA), bytes(outB), "out, " + what);
                assertArrayEquals(bytes(lseA), bytes(lseB), "lse, " + what);
                assertArrayEquals(bytes(composed.packed()), bytes(fused.packed()), "packed values, " + what);
                assertArrayEquals(bytes(composed.scales()), bytes(fused.scales()), "scales, " + what);
                for (Tensor t : new Tensor[]{qkv, outA, outB, lseA, lseB, composed.packed(), composed.scales(), fused.packed(),
                        fused.scales()}) {
                    gpu.release(t);
                }
            }
        }
    }

    /**
     * The forward that also quantizes qkv (from the tiles of q, k, v it reads), alone and with out's copy, against the
     * composed ops: attentionForward, then quantize of out and of the whole qkv. Out, lse and both copies bit for bit;
     * out's copy in another bit width than qkv's takes one kernel where qkv's is 8 bits (flash_forward_q<bits>_qkv8_64),
     * else the out-quantizing kernel and a separate quantize of qkv.
     */
    @Test
    void attentionForwardWritesTheQkvBytesQuantizeWould() {
        Random rng = new Random(SEED);
        int hd = 64;
        boolean hopper = gpu.fusesAttentionStash(hd);
        System.out.println("attentionForwardQuantized fused: " + hopper);
        // {qkv's format, out's}: 3, 4 and 8 bits with blocks within a head's 64 values fuse, bfp4/128 and int5/32 do not
        String[][] formats = {{"bfp8/32", "bfp8/32"}, {"bfp4/32", "bfp4/32"}, {"bfp3/32", "bfp3/32"}, {"int8/64", "bfp8/16"},
                {"bfp3/32/sr", "int3/16/sr"}, {"int4/8/sr", "bfp4"}, {"bfp8/8", "bfp4/32"}, {"bfp8/32/rn", "bfp3/32/rn"}, {"int3/16", "bfp8/32"}, {"bfp4/128", "bfp4/32"},
                {"int5/32", "bfp8/32"}};
        for (String[] pair : formats) {
            for (int[] c : ATTENTION) {
                int batch = c[0], seq = c[1], nHead = c[2], nKv = c[3], rows = batch * seq, n = rows * nHead * hd;
                int qkvN = rows * (nHead + 2 * nKv) * hd;
                QuantFormat fq = QuantFormat.parse(pair[0]), fo = QuantFormat.parse(pair[1]);
                String what = String.format("B%d T%d H%d KV%d, qkv %s, out %s (seed %d)", batch, seq, nHead, nKv, pair[0], pair[1], SEED);
                Tensor qkv = bf16(rng, qkvN, 1.5);
                Tensor[] outs = new Tensor[3], lses = new Tensor[3];
                Quantized[] qkvqs = new Quantized[3], outqs = new Quantized[3];
                long qkvSeed = rng.nextLong(), outSeed = rng.nextLong();
                for (int i = 0; i < 3; i++) {
                    outs[i] = gpu.allocate(DType.BF16, n);
                    lses[i] = gpu.allocate(DType.F32, batch * nHead * seq);
                    qkvqs[i] = target(fq, qkvN, qkvSeed);
                    outqs[i] = i == 1 ? null : target(fo, n, outSeed);
                }
                // 0: composed; 1: qkv's copy alone, fused; 2: both copies, fused
                gpu.fuseStashQuantization(false);
                gpu.attentionForwardQuantized(outs[0], outqs[0], lses[0], qkv, qkvqs[0], batch, seq, nHead, nKv, hd);
                gpu.fuseStashQuantization(true);
                if (hopper) {
                    boolean fuses = fq.block() <= hd && fq.bits() != 5;
                    assertEquals(fuses, gpu.fusesAttentionCopy(qkv, qkvqs[1], outs[1], qkv, hd), "whether qkv's copy fuses, " + what);
                }
                gpu.attentionForwardQuantized(outs[1], null, lses[1], qkv, qkvqs[1], batch, seq, nHead, nKv, hd);
                gpu.attentionForwardQuantized(outs[2], outqs[2], lses[2], qkv, qkvqs[2], batch, seq, nHead, nKv, hd);
                for (int i = 1; i < 3; i++) {
                    String which = (i == 1 ? "qkv's copy alone, " : "both copies, ") + what;
                    assertArrayEquals(bytes(outs[0]), bytes(outs[i]), "out, " + which);
                    assertArrayEquals(bytes(lses[0]), bytes(lses[i]), "lse, " + which);
                    assertArrayEquals(bytes(qkvqs[0].packed()), bytes(qkvqs[i].packed()), "qkv's packed values, " + which);
                    assertArrayEquals(bytes(qkvqs[0].scales()), bytes(qkvqs[i].scales()), "qkv's scales, " + which);
                }
                assertArrayEquals(bytes(outqs[0].packed()), bytes(outqs[2].packed()), "out's packed values, " + what);
                assertArrayEquals(bytes(outqs[0].scales()), bytes(outqs[2].scales()), "out's scales, " + what);
                // the composed copy is quantize's of the whole qkv
                Quantized direct = target(fq, qkvN, qkvSeed);
                gpu.quantize(direct.packed(), direct.scales(), qkv, qkvN, fq, qkvSeed);
                assertArrayEquals(bytes(direct.packed()), bytes(qkvqs[1].packed()), "qkv's packed values against quantize, " + what);
                assertArrayEquals(bytes(direct.scales()), bytes(qkvqs[1].scales()), "qkv's scales against quantize, " + what);
                gpu.release(qkv);
                for (Quantized q : new Quantized[]{direct, qkvqs[0], qkvqs[1], qkvqs[2], outqs[0], outqs[2]}) {
                    gpu.release(q.packed());
                    gpu.release(q.scales());
                }
                for (int i = 0; i < 3; i++) {
                    gpu.release(outs[i]);
                    gpu.release(lses[i]);
                }
            }
        }
    }

    /**
     * The backward that recomputes the forward, fused (the forward writes lse, delta and the zeroed dq accumulator
     * instead of out) against forward then backward: lse and dk, dv bit for bit (delta is summed in flash_delta_zero's
     * order from the same bf16 out); dq up to the order of its fp32 atomic adds, which differs from run to run anyway.
     */
    @Test
    void attentionBackwardRecomputingMatchesTheComposedOps() {
        Random rng = new Random(SEED);
        int hd = 64;
        System.out.println("attentionBackwardRecomputing fused: " + gpu.fusesAttentionStash(hd));
        for (int[] c : ATTENTION) {
            int batch = c[0], seq = c[1], nHead = c[2], nKv = c[3], rows = batch * seq, width = (nHead + 2 * nKv) * hd;
            String what = String.format("B%d T%d H%d KV%d (seed %d)", batch, seq, nHead, nKv, SEED);
            Tensor qkv = bf16(rng, rows * width, 1), dout = bf16(rng, rows * nHead * hd, 1);
            Tensor out = gpu.allocate(DType.BF16, rows * nHead * hd);
            Tensor lseA = gpu.allocate(DType.F32, batch * nHead * seq), lseB = gpu.allocate(DType.F32, batch * nHead * seq);
            Tensor dqkvA = gpu.allocate(DType.BF16, rows * width), dqkvB = gpu.allocate(DType.BF16, rows * width);
            gpu.fuseStashQuantization(false);
            gpu.attentionBackwardRecomputing(dqkvA, dout, out, lseA, qkv, batch, seq, nHead, nKv, hd);
            gpu.fuseStashQuantization(true);
            gpu.attentionBackwardRecomputing(dqkvB, dout, out, lseB, qkv, batch, seq, nHead, nKv, hd);
            assertArrayEquals(bytes(lseA), bytes(lseB), "lse, " + what);
            float[] a = CudaModelTest.read(gpu, dqkvA), b = CudaModelTest.read(gpu, dqkvB);
            int qWidth = nHead * hd, kvWidth = width - qWidth;
            float[] dqA = new float[rows * qWidth], dqB = new float[rows * qWidth];
            float[] dkvA = new float[rows * kvWidth], dkvB = new float[rows * kvWidth];
            for (int r = 0; r < rows; r++) {
                System.arraycopy(a, r * width, dqA, r * qWidth, qWidth);
                System.arraycopy(b, r * width, dqB, r * qWidth, qWidth);
                System.arraycopy(a, r * width + qWidth, dkvA, r * kvWidth, kvWidth);
                System.arraycopy(b, r * width + qWidth, dkvB, r * kvWidth, kvWidth);
            }
            assertArrayEquals(dkvA, dkvB, "dk, dv, " + what);
            assertRelative("dq, " + what, dqA, dqB, 1e-3);
            for (Tensor t : new Tensor[]{qkv, dout, out, lseA, lseB, dqkvA, dqkvB}) gpu.release(t);
        }
    }

    /**
     * A GPT-2 of width 256 (so that the fused kernels run) through a 4-bit stash: the same loss and gradients with the
     * stash's quantization fused into its producers and consumers as without (up to the order of atomic adds); with the
     * products of stash_gemm.cu, nearer to it than to the same step without quantization.
     */
    @Test
    void aModelThroughTheFusedStashMatchesTheUnfusedOne() {
        ModelConfig config = ModelConfig.gpt2(256, 128, 256, 2, 4);
        Transformer model = new Transformer(config, gpu);
        Init.initialize(model, gpu, 11);
        int batch = 4, seq = 128, rows = batch * seq;
        Random rng = new Random(SEED);
        int[] in = new int[rows], tg = new int[rows];
        for (int i = 0; i < rows; i++) {
            in[i] = rng.nextInt(256);
            tg[i] = rng.nextInt(256);
        }
        Tensor ids = gpu.allocate(DType.I32, rows), targets = gpu.allocate(DType.I32, rows), losses = gpu.allocate(DType.F32, rows);
        gpu.upload(ids, MemorySegment.ofArray(in));
        gpu.upload(targets, MemorySegment.ofArray(tg));
        List<List<float[]>> runs = new ArrayList<>();
        // unfused; fused with cuBLASLt's products; fused with stash_gemm.cu's, whose sums run in another order; no
        // quantization, whose distance is the yardstick for the third
        String[] policies = {"q1 = bfp4\n", "q1 = bfp4\n", "q1 = bfp4\n", "q1 = keep\n"};
        for (int run = 0; run < policies.length; run++) {
            gpu.fuseStashQuantization(run > 0);
            gpu.useStashGemm(run == 2);
            Context ctx = Context.of(gpu, StashPolicy.parse(policies[run], 100), 5);
            model.params().zeroGrad();
            ctx.stash().beginStep(1);
            model.forward(ctx, ids, targets, losses, batch, seq, 1f / rows);
            model.backward(ctx, batch, seq);
            List<float[]> grads = new ArrayList<>();
            grads.add(CudaModelTest.read(gpu, losses));
            for (Param p : model.params().all()) grads.add(CudaModelTest.read(gpu, p.grad()));
            runs.add(grads);
        }
        gpu.fuseStashQuantization(true);
        gpu.useStashGemm(false);
        assertArrayEquals(runs.get(0).get(0), runs.get(1).get(0), "losses (seed " + SEED + ")");
        assertRelative("losses with stash_gemm.cu (seed " + SEED + ")", runs.get(1).get(0), runs.get(2).get(0), 2e-3);
        for (int i = 1; i < runs.get(0).size(); i++) {
            String name = "gradient " + model.params().all().get(i - 1).name() + " (seed " + SEED + ")";
            assertRelative(name, runs.get(0).get(i), runs.get(1).get(i), 1e-3);
            // a product rounded the other way now and then moves a value across a quantization level: the gradients
            // move, but by less than the quantization itself moves them
            // (or by 1% where the stash does not reach it: a gradient taken before backward reads anything stashed)
            double products = distance(runs.get(1).get(i), runs.get(2).get(i)), quantization = distance(runs.get(3).get(i), runs.get(1).get(i));
            double bound = Math.max(quantization, 0.01 * distance(runs.get(1).get(i), new float[runs.get(1).get(i).length]));
            assertTrue(products <= bound, name + ": stash_gemm.cu's products move it by " + products
                    + ", more than the 4-bit stash does (" + quantization + ")");
        }
        assertEquals(runs.get(0).size(), model.params().all().size() + 1);
    }

    /** ‖b − a‖. */
    private static double distance(float[] a, float[] b) {
        double sum = 0;
        for (int j = 0; j < a.length; j++) sum += (a[j] - b[j]) * (double) (a[j] - b[j]);
        return Math.sqrt(sum);
    }

    /** ‖b − a‖ ≤ tolerance·‖a‖. */
    private static void assertRelative(String what, float[] a, float[] b, double tolerance) {
        double diff = 0, norm = 0;
        for (int j = 0; j < a.length; j++) {
            diff += (a[j] - b[j]) * (double) (a[j] - b[j]);
            norm += a[j] * (double) a[j];
        }
        assertTrue(Math.sqrt(diff) <= tolerance * Math.sqrt(norm), what + ": relative difference " + Math.sqrt(diff / Math.max(norm, 1e-30)));
    }
}
