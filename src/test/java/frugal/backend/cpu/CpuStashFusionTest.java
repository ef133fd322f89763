package frugal.backend.cpu;

import frugal.quant.QuantFormat;
import frugal.quant.Quantized;
import frugal.tensor.DType;
import frugal.tensor.Tensor;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.Test;

import java.lang.foreign.MemorySegment;
import java.util.Random;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * The CPU's ops that quantize what the stash keeps as they write it (LayerNorm, attention), or read it back from its
 * quantized copy (LayerNorm, GELU), against the same ops composed (the op, then quantize; dequantize, then the op): the
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
    }

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
                Tensor qkv = random(rng, rows * (nHead + 2 * nKv) * hd, 0, 1);
                Tensor outA = ops.allocate(DType.F32, n), outB = ops.allocate(DType.F32, n);
                Tensor lseA = ops.allocate(DType.F32, batch * nHead * seq), lseB = ops.allocate(DType.F32, batch * nHead * seq);
                long seed = rng.nextLong();
                Quantized composed = target(f, n, seed), fused = target(f, n, seed);
                ops.attentionForward(outA, lseA, qkv, batch, seq, nHead, nKv, hd);
                ops.quantize(composed.packed(), composed.scales(), outA, n, f, seed);
                ops.attentionForwardQuantized(outB, fused, lseB, qkv, batch, seq, nHead, nKv, hd);
                assertArrayEquals(bytes(outA), bytes(outB), "out, " + what);
                assertArrayEquals(bytes(lseA), bytes(lseB), "lse, " + what);
                assertArrayEquals(bytes(composed.packed()), bytes(fused.packed()), "packed values, " + what);
                assertArrayEquals(bytes(composed.scales()), bytes(fused.scales()), "scales, " + what);
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
        }
    }
}
