package frugal.backend.cpu;

import frugal.FrugalException;
import frugal.quant.QuantFormat;
import frugal.quant.Quantized;
import frugal.tensor.DType;
import frugal.tensor.Tensor;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.Test;

import java.lang.foreign.MemorySegment;
import java.util.Random;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * The CPU's ops that quantize what the stash keeps as they write it (LayerNorm, attention), or read it back from its
 * quantized copy (LayerNorm, GELU, GELU's backward), against the same ops composed (the op, then quantize; dequantize, then the op): the
 * same bytes, scales and values, bit for bit, for every scheme, rounding and a range of bit widths and blocks, on fresh
 * random data.
 */
class CpuStashFusionTest {
    private static final long SEED = System.nanoTime();
    private static final CpuBackend ops = new CpuBackend();
    private static final String[] FORMATS = {"bfp4", "bfp3/32/sr", "int8/64", "bfp2/128", "int5/16/sr", "bfp8/8"};

    @AfterAll
    static void close() {
        ops.close();
    }

    private static Tensor random(Random rng, int n, double mean, double scale) {
        float[] h = new float[n];
        for (int i = 0; i < n; i++) h[i] = (float) (mean + rng.nextGaussian() * scale * Math.exp(rng.nextGaussian()));
        Tensor t = ops.allocate(DType.F32, n);
        ops.upload(t, MemorySegment.ofArray(h));
        return t;
    }

    private static Quantized target(QuantFormat f, long n, long seed) {
        return new Quantized(ops.allocate(DType.I8, Math.toIntExact(f.packedBytes(n))), ops.allocate(DType.I8, Math.toIntExact(f.scalesBytes(n))),
                f, seed);
    }

    private static byte[] bytes(Tensor t) {
        byte[] b = new byte[Math.toIntExact(t.byteSize())];
        ops.download(t, MemorySegment.ofArray(b));
        return b;
    }

    private static Tensor copy(Tensor t) {
        Tensor c = ops.allocate(t.dtype(), t.shape());
        ops.copy(c, t);
        return c;
    }

    @Test
    void layerNormQuantizesAndReadsBackAsTheComposedOpsDo() {
        Random rng = new Random(SEED);
        int rows = 67;
        for (int cols : new int[]{128, 384}) {
            for (String name : FORMATS) {
                for (boolean add : new boolean[]{false, true}) {
                    QuantFormat f = QuantFormat.parse(name);
                    String what = "cols " + cols + ", " + name + (add ? ", with the residual add" : "") + " (seed " + SEED + ")";
                    int n = rows * cols;
                    Tensor x = random(rng, n, 0, 2), r = add ? random(rng, n, 0, 1) : null;
                    Tensor w = random(rng, cols, 1, 0.2), b = random(rng, cols, 0, 0.2);
                    Tensor sumA = ops.allocate(DType.F32, n), outA = ops.allocate(DType.F32, n), sumB = ops.allocate(DType.F32, n),
                            outB = ops.allocate(DType.F32, n);
                    Tensor meanA = ops.allocate(DType.F32, rows), rstdA = ops.allocate(DType.F32, rows), meanB = ops.allocate(DType.F32, rows),
                            rstdB = ops.allocate(DType.F32, rows);
                    long seedX = rng.nextLong(), seedOut = rng.nextLong();
                    Quantized xqA = target(f, n, seedX), outqA = target(f, n, seedOut), xqB = target(f, n, seedX), outqB = target(f, n, seedOut);

                    // composed: what the Backend default does
                    Tensor in = add ? sumA : x;
                    if (add) ops.add(sumA, x, r, n);
                    ops.layerNormForward(outA, meanA, rstdA, in, w, b, rows, cols, 1e-5f);
                    ops.quantize(xqA.packed(), xqA.scales(), in, n, f, seedX);
                    ops.quantize(outqA.packed(), outqA.scales(), outA, n, f, seedOut);
                    ops.layerNormForwardQuantized(sumB, outB, meanB, rstdB, x, r, w, b, rows, cols, 1e-5f, xqB, outqB);

                    assertArrayEquals(bytes(outA), bytes(outB), "out, " + what);
                    assertArrayEquals(bytes(rstdA), bytes(rstdB), "rstd, " + what);
                    if (add) assertArrayEquals(bytes(sumA), bytes(sumB), "sum, " + what);
                    assertArrayEquals(bytes(xqA.packed()), bytes(xqB.packed()), "input's packed values, " + what);
                    assertArrayEquals(bytes(xqA.scales()), bytes(xqB.scales()), "input's scales, " + what);
                    assertArrayEquals(bytes(outqA.packed()), bytes(outqB.packed()), "output's packed values, " + what);
                    assertArrayEquals(bytes(outqA.scales()), bytes(outqB.scales()), "output's scales, " + what);

                    Tensor dout = random(rng, n, 0, 1), xd = ops.allocate(DType.F32, n);
                    Tensor dxA = random(rng, n, 0, 1), dxB = copy(dxA), dwA = random(rng, cols, 0, 1), dwB = copy(dwA);
                    Tensor dbA = random(rng, cols, 0, 1), dbB = copy(dbA);
                    ops.dequantize(xd, xqA.packed(), xqA.scales(), n, f);
                    ops.layerNormBackward(dxA, dwA, dbA, dout, xd, w, meanA, rstdA, rows, cols);
                    assertTrue(ops.layerNormBackward(dxB, dwB, dbB, dout, xqB, w, meanB, rstdB, rows, cols), "fused backward, " + what);
                    assertArrayEquals(bytes(dxA), bytes(dxB), "dx, " + what);
                    assertArrayEquals(bytes(dwA), bytes(dwB), "dweight, " + what);
                    assertArrayEquals(bytes(dbA), bytes(dbB), "dbias, " + what);
                }
            }
        }
    }

    @Test
    void rowsThatSplitABlockFallBackToTheComposedOps() {
        Random rng = new Random(SEED);
        int rows = 5, cols = 48, n = rows * cols;
        QuantFormat f = QuantFormat.parse("bfp4/32");
        Tensor x = random(rng, n, 0, 1), w = random(rng, cols, 1, 0.1), b = random(rng, cols, 0, 0.1);
        Tensor out = ops.allocate(DType.F32, n), mean = ops.allocate(DType.F32, rows), rstd = ops.allocate(DType.F32, rows);
        Quantized xq = target(f, n, 1), expected = target(f, n, 1);
        ops.layerNormForwardQuantized(null, out, mean, rstd, x, null, w, b, rows, cols, 1e-5f, xq, null);
        ops.quantize(expected.packed(), expected.scales(), x, n, f, 1);
        assertArrayEquals(bytes(expected.packed()), bytes(xq.packed()), "packed input, 48 columns in blocks of 32");
        Tensor dx = ops.allocate(DType.F32, n), dw = ops.allocate(DType.F32, cols), db = ops.allocate(DType.F32, cols);
        assertFalse(ops.layerNormBackward(dx, dw, db, random(rng, n, 0, 1), xq, w, mean, rstd, rows, cols),
                "48 columns in blocks of 32: the backward must dequantize first");

        Tensor a = random(rng, rows * 16, 0, 1), weight = random(rng, cols * 16, 0, 0.25);
        Tensor act = ops.allocate(DType.F32, n), pre = ops.allocate(DType.F32, n);
        Quantized productq = target(f, n, 1), preq = target(f, n, 1);
        ops.linearForwardQuantized(out, productq, a, weight, b, rows, cols, 16);
        ops.linearGeluForwardQuantized(act, pre, preq, a, weight, b, rows, cols, 16);
        ops.quantize(expected.packed(), expected.scales(), out, n, f, 1);
        assertArrayEquals(bytes(expected.packed()), bytes(productq.packed()), "packed product, 48 columns in blocks of 32");
        assertArrayEquals(bytes(expected.packed()), bytes(preq.packed()), "packed pre-activation, 48 columns in blocks of 32");
    }

    /** The output's copy fused or not, and with it (or alone) qkv's, composed: the bytes quantize writes of each. */
    @Test
    void attentionQuantizesItsOutputAsTheComposedOpsDo() {
        Random rng = new Random(SEED);
        // {batch, seq, nHead, nKvHead, headDim}: grouped and not; heads of 64 and 128 values (bfp2/128 fused only in the
        // latter, composed in the former) and of 24 (only blocks of 8 fused)
        int[][] configs = {{2, 37, 4, 2, 64}, {1, 70, 2, 2, 128}, {3, 9, 3, 1, 24}};
        for (int[] c : configs) {
            int batch = c[0], seq = c[1], nHead = c[2], nKv = c[3], hd = c[4];
            int rows = batch * seq, n = rows * nHead * hd;
            for (String name : FORMATS) {
                QuantFormat f = QuantFormat.parse(name);
                String what = String.format("B%d T%d H%d KV%d D%d, %s (seed %d)", batch, seq, nHead, nKv, hd, name, SEED);
                int qkvN = rows * (nHead + 2 * nKv) * hd;
                Tensor qkv = random(rng, qkvN, 0, 1);
                Tensor outA = ops.allocate(DType.F32, n), outB = ops.allocate(DType.F32, n), outC = ops.allocate(DType.F32, n);
                Tensor lseA = ops.allocate(DType.F32, batch * nHead * seq), lseB = ops.allocate(DType.F32, batch * nHead * seq);
                Tensor lseC = ops.allocate(DType.F32, batch * nHead * seq);
                long seed = rng.nextLong(), qkvSeed = rng.nextLong();
                Quantized composed = target(f, n, seed), fused = target(f, n, seed);
                Quantized qkvComposed = target(f, qkvN, qkvSeed), qkvB = target(f, qkvN, qkvSeed), qkvC = target(f, qkvN, qkvSeed);
                ops.attentionForward(outA, lseA, qkv, batch, seq, nHead, nKv, hd);
                ops.quantize(composed.packed(), composed.scales(), outA, n, f, seed);
                ops.quantize(qkvComposed.packed(), qkvComposed.scales(), qkv, qkvN, f, qkvSeed);
                ops.attentionForwardQuantized(outB, fused, lseB, qkv, qkvB, batch, seq, nHead, nKv, hd);
                ops.attentionForwardQuantized(outC, null, lseC, qkv, qkvC, batch, seq, nHead, nKv, hd);
                assertArrayEquals(bytes(outA), bytes(outB), "out, " + what);
                assertArrayEquals(bytes(lseA), bytes(lseB), "lse, " + what);
                assertArrayEquals(bytes(composed.packed()), bytes(fused.packed()), "packed values, " + what);
                assertArrayEquals(bytes(composed.scales()), bytes(fused.scales()), "scales, " + what);
                assertArrayEquals(bytes(outA), bytes(outC), "out, qkv's copy alone, " + what);
                assertArrayEquals(bytes(lseA), bytes(lseC), "lse, qkv's copy alone, " + what);
                for (Quantized q : new Quantized[]{qkvB, qkvC}) {
                    String which = (q == qkvB ? "with out's copy, " : "alone, ") + what;
                    assertArrayEquals(bytes(qkvComposed.packed()), bytes(q.packed()), "qkv's packed values, " + which);
                    assertArrayEquals(bytes(qkvComposed.scales()), bytes(q.scales()), "qkv's scales, " + which);
                }
            }
        }
    }

    @Test
    void geluRecomputeWritesWhatDequantizeAndGeluWould() {
        Random rng = new Random(SEED);
        for (String name : FORMATS) {
            QuantFormat f = QuantFormat.parse(name);
            int n = 1 + rng.nextInt(50000);
            String what = name + ", n " + n + " (seed " + SEED + ")";
            Tensor x = random(rng, n, 0, 3);
            Quantized q = target(f, n, rng.nextLong());
            ops.quantize(q.packed(), q.scales(), x, n, f, q.seed());
            Tensor preA = ops.allocate(DType.F32, n), actA = ops.allocate(DType.F32, n), preB = ops.allocate(DType.F32, n),
                    actB = ops.allocate(DType.F32, n);
            ops.dequantize(preA, q.packed(), q.scales(), n, f);
            ops.geluForward(actA, preA, n);
            ops.geluRecompute(actB, preB, q, n);
            assertArrayEquals(bytes(preA), bytes(preB), "pre, " + what);
            assertArrayEquals(bytes(actA), bytes(actB), "act, " + what);
            Tensor actC = ops.allocate(DType.F32, n);
            ops.geluRecompute(actC, null, q, n);
            assertArrayEquals(bytes(actA), bytes(actC), "act without pre, " + what);
        }
    }

    /** GELU's backward from the quantized input, with the bias gradient: dequantize, geluBackward, biasBackward. */
    @Test
    void geluBackwardQuantizedIsDequantizeGeluBackwardAndBiasBackward() {
        Random rng = new Random(SEED);
        for (String name : FORMATS) {
            QuantFormat f = QuantFormat.parse(name);
            int rows = 1 + rng.nextInt(60), cols = 8 * (1 + rng.nextInt(100));
            int n = rows * cols;
            String what = name + ", " + rows + "×" + cols + " (seed " + SEED + ")";
            Tensor x = random(rng, n, 0, 3), dact = random(rng, n, 0, 1), dbiasA = random(rng, cols, 0, 1), dbiasB = copy(dbiasA);
            Quantized q = target(f, n, rng.nextLong());
            ops.quantize(q.packed(), q.scales(), x, n, f, q.seed());
            Tensor pre = ops.allocate(DType.F32, n), dpreA = ops.allocate(DType.F32, n), dpreB = ops.allocate(DType.F32, n);
            ops.dequantize(pre, q.packed(), q.scales(), n, f);
            ops.geluBackward(dpreA, dact, pre, n);
            ops.biasBackward(dbiasA, dpreA, rows, cols);
            ops.geluBackwardQuantized(dpreB, dbiasB, dact, q, rows, cols);
            assertArrayEquals(bytes(dpreA), bytes(dpreB), "dpre, " + what);
            assertArrayEquals(bytes(dbiasA), bytes(dbiasB), "dbias, " + what);
            Tensor dpreC = ops.allocate(DType.F32, n);
            ops.geluBackwardQuantized(dpreC, null, dact, q, rows, cols);
            assertArrayEquals(bytes(dpreA), bytes(dpreC), "dpre without dbias, " + what);
        }
    }

    /** The formats of linear products' stashes: the widths and roundings DSQ uses, blocks of 16 to 128. */
    private static final String[] PRODUCT_FORMATS = {"bfp3/32/rn", "bfp3/32/sr", "bfp4/32/rn", "bfp4/16/sr", "int4/64/rn",
            "int4/32/sr", "int8/128/rn", "int8/32/sr"};

    /**
     * {rows, cols, k}: a product small enough for one thread; one that shares B (more rows than columns) and one that
     * shares A, whose tasks split the columns; rows never a multiple of the micro-kernel's 6, k over several K blocks.
     */
    private static final int[][] PRODUCT_SHAPES = {{67, 128, 64}, {509, 384, 192}, {131, 512, 300}};

    @Test
    void linearProductsQuantizeAsTheComposedOpsDo() {
        Random rng = new Random(SEED);
        for (int[] shape : PRODUCT_SHAPES) {
            for (String name : PRODUCT_FORMATS) {
                boolean bias = rng.nextInt(4) > 0;
                checkLinearProducts(rng, shape[0], shape[1], shape[2], bias, QuantFormat.parse(name));
            }
        }
    }

    /** A k beyond one K super-block of CpuMatmul (a shared operand of one panel holds SHARED_LIMIT floats): the epilogue waits for the last. */
    @Test
    void linearProductsOverSeveralSuperBlocksOfKQuantizeAsTheComposedOpsDo() {
        checkLinearProducts(new Random(SEED), 5, 32, CpuMatmul.SHARED_LIMIT / CpuMatmul.MR + CpuMatmul.KC, true,
                QuantFormat.parse("bfp4/32/sr"));
    }

    private static void checkLinearProducts(Random rng, int rows, int cols, int k, boolean withBias, QuantFormat f) {
        String what = rows + "x" + cols + "x" + k + (withBias ? " with bias" : "") + ", " + f + " (seed " + SEED + ")";
        int n = rows * cols;
        Tensor a = random(rng, rows * k, 0, 1), w = random(rng, cols * k, 0, 1 / Math.sqrt(k));
        Tensor bias = withBias ? random(rng, cols, 0, 0.5) : null;
        long seed = rng.nextLong();

        Tensor outA = ops.allocate(DType.F32, n), outB = ops.allocate(DType.F32, n);
        Quantized qA = target(f, n, seed), qB = target(f, n, seed);
        ops.linearForward(outA, a, w, bias, rows, cols, k);
        ops.quantize(qA.packed(), qA.scales(), outA, n, f, seed);
        ops.linearForwardQuantized(outB, qB, a, w, bias, rows, cols, k);
        assertArrayEquals(bytes(outA), bytes(outB), "out, " + what);
        assertArrayEquals(bytes(qA.packed()), bytes(qB.packed()), "packed values, " + what);
        assertArrayEquals(bytes(qA.scales()), bytes(qB.scales()), "scales, " + what);

        Tensor actA = ops.allocate(DType.F32, n), preA = ops.allocate(DType.F32, n), actB = ops.allocate(DType.F32, n),
                preB = ops.allocate(DType.F32, n);
        Quantized preqA = target(f, n, seed), preqB = target(f, n, seed);
        ops.linearGeluForward(actA, preA, a, w, bias, rows, cols, k);
        ops.quantize(preqA.packed(), preqA.scales(), preA, n, f, seed);
        ops.linearGeluForwardQuantized(actB, preB, preqB, a, w, bias, rows, cols, k);
        assertArrayEquals(bytes(actA), bytes(actB), "act, " + what);
        assertArrayEquals(bytes(preqA.packed()), bytes(preqB.packed()), "pre's packed values, " + what);
        assertArrayEquals(bytes(preqA.scales()), bytes(preqB.scales()), "pre's scales, " + what);
        assertArrayEquals(new byte[n * 4], bytes(preB), "pre untouched (no full-precision copy written), " + what);
    }

    @Test
    void aNonFiniteProductFailsAsQuantizeDoes() {
        Random rng = new Random(SEED);
        int rows = 131, cols = 512, k = 300, n = rows * cols;
        for (String name : new String[]{"bfp4/32/rn", "int8/32/sr"}) {
            QuantFormat f = QuantFormat.parse(name);
            // one product element is Inf − Inf = NaN: a[r,p]·w[c,p] overflows to +Inf, a[r,p+1]·w[c,p+1] to −Inf; the
            // others of row r and column c stay finite, so exactly one block fails whichever thread gets there first
            Tensor a = random(rng, rows * k, 0, 1), w = random(rng, cols * k, 0, 1 / Math.sqrt(k)), bias = random(rng, cols, 0, 0.5);
            int r = rng.nextInt(rows), c = rng.nextInt(cols), p = rng.nextInt(k - 1);
            a.set((long) r * k + p, 1e30f);
            a.set((long) r * k + p + 1, 1e30f);
            w.set((long) c * k + p, 1e30f);
            w.set((long) c * k + p + 1, -1e30f);
            String what = name + ", NaN at row " + r + ", column " + c + " (seed " + SEED + ")";

            Tensor out = ops.allocate(DType.F32, n), pre = ops.allocate(DType.F32, n);
            Quantized q = target(f, n, 7);
            ops.linearForward(out, a, w, bias, rows, cols, k);
            FrugalException expected = assertThrows(FrugalException.class, () -> ops.quantize(q.packed(), q.scales(), out, n, f, 7), what);
            FrugalException fused = assertThrows(FrugalException.class,
                    () -> ops.linearForwardQuantized(out, q, a, w, bias, rows, cols, k), "linearForwardQuantized, " + what);
            assertEquals(expected.getMessage(), fused.getMessage(), "linearForwardQuantized, " + what);
            FrugalException fusedGelu = assertThrows(FrugalException.class,
                    () -> ops.linearGeluForwardQuantized(out, pre, q, a, w, bias, rows, cols, k), "linearGeluForwardQuantized, " + what);
            assertEquals(expected.getMessage(), fusedGelu.getMessage(), "linearGeluForwardQuantized, " + what);
        }
    }
}
