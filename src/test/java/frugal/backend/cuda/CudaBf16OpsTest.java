package frugal.backend.cuda;

import frugal.backend.Backend;
import frugal.backend.cpu.CpuBackend;
import frugal.tensor.DType;
import frugal.tensor.Tensor;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.Assumptions;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;

import java.lang.foreign.MemorySegment;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Random;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * The bf16 ops of the CUDA backend (mixed precision) against the float32 CPU reference. Inputs are rounded to bf16
 * on the host first, so both backends see the same values; the GPU keeps activations in bf16 and computes in fp32.
 * Error: ‖gpu − cpu‖ / ‖cpu‖ per output, bounded by bf16 tolerances (outputs are rounded to 8 significant bits,
 * ~2e-3 relative each). Skipped (reported per test) where no GPU is present.
 */
class CudaBf16OpsTest {
    private static CudaBackend gpu;
    private static CpuBackend cpu;
    private static Random rng;
    private static long seed;
    private static final List<String> REPORT = new ArrayList<>();

    private record Pair(Tensor g, Tensor c) {
    }

    @BeforeAll
    static void setUp() {
        if (!CudaBackend.isAvailable()) return;
        gpu = new CudaBackend(0, false, DType.BF16);
        cpu = new CpuBackend();
        seed = System.nanoTime();
        rng = new Random(seed);
        System.out.println("CUDA backend: " + gpu.name() + ", seed " + seed);
    }

    @BeforeEach
    void requireGpu() {
        Assumptions.assumeTrue(CudaBackend.isAvailable(), () -> "no CUDA: " + CudaBackend.unavailableReason());
    }

    @AfterAll
    static void tearDown() {
        if (gpu != null) {
            System.out.println("---- CUDA bf16 vs CPU fp32 (seed " + seed + ")");
            for (String line : REPORT) System.out.println(line);
            gpu.close();
        }
        if (cpu != null) cpu.close();
    }

    static short toBf16(float f) {
        int u = Float.floatToRawIntBits(f);
        if (Float.isNaN(f)) return (short) 0x7fc0;
        u += 0x7fff + ((u >>> 16) & 1);
        return (short) (u >>> 16);
    }

    static float fromBf16(short h) {
        return Float.intBitsToFloat((h & 0xffff) << 16);
    }

    static float[] roundBf16(float[] a) {
        float[] r = new float[a.length];
        for (int i = 0; i < a.length; i++) r[i] = fromBf16(toBf16(a[i]));
        return r;
    }

    private static float[] randn(long n, float scale) {
        float[] a = new float[(int) n];
        for (int i = 0; i < a.length; i++) a[i] = (float) rng.nextGaussian() * scale;
        return a;
    }

    /** A bf16 activation on the GPU and the same (rounded) values in F32 on the CPU. */
    private static Pair act(float[] data, int... shape) {
        float[] r = roundBf16(data);
        short[] h = new short[r.length];
        for (int i = 0; i < r.length; i++) h[i] = toBf16(r[i]);
        Tensor g = gpu.allocate(DType.BF16, shape), c = cpu.allocate(DType.F32, shape);
        gpu.upload(g, MemorySegment.ofArray(h));
        cpu.upload(c, MemorySegment.ofArray(r));
        return new Pair(g, c);
    }

    private static Pair act(int... shape) {
        return act(randn(Tensor.count(shape), 1f), shape);
    }

    /** An F32 tensor (parameter, gradient, statistics) on both. */
    private static Pair f32(float[] data, int... shape) {
        Tensor g = gpu.allocate(DType.F32, shape), c = cpu.allocate(DType.F32, shape);
        gpu.upload(g, MemorySegment.ofArray(data));
        cpu.upload(c, MemorySegment.ofArray(data));
        return new Pair(g, c);
    }

    private static Pair f32(int... shape) {
        return f32(randn(Tensor.count(shape), 1f), shape);
    }

    private static Pair ints(int[] data) {
        Tensor g = gpu.allocate(DType.I32, data.length), c = cpu.allocate(DType.I32, data.length);
        gpu.upload(g, MemorySegment.ofArray(data));
        cpu.upload(c, MemorySegment.ofArray(data));
        return new Pair(g, c);
    }

    static float[] download(CudaBackend gpu, Tensor t) {
        if (t.dtype() == DType.BF16) {
            short[] h = new short[(int) t.size()];
            gpu.download(t, MemorySegment.ofArray(h));
            float[] r = new float[h.length];
            for (int i = 0; i < h.length; i++) r[i] = fromBf16(h[i]);
            return r;
        }
        float[] r = new float[(int) t.size()];
        gpu.download(t, MemorySegment.ofArray(r));
        return r;
    }

    private static void check(String op, Pair p, double tolerance) {
        float[] g = download(gpu, p.g), c = p.c.toFloatArray();
        double maxAbs = 0, num = 0, den = 0;
        int bad = -1;
        for (int i = 0; i < c.length; i++) {
            if (!Float.isFinite(g[i]) && bad < 0) bad = i;
            double d = (double) g[i] - c[i];
            maxAbs = Math.max(maxAbs, Math.abs(d));
            num += d * d;
            den += (double) c[i] * c[i];
        }
        double rel = Math.sqrt(num) / Math.max(Math.sqrt(den), 1e-30);
        String line = String.format("%-44s n=%9d  max|err|=%.2e  rel=%.2e  (tol %.0e)%s", op, c.length, maxAbs, rel, tolerance,
                bad >= 0 || !(rel <= tolerance) ? "  FAIL" : "");
        REPORT.add(line);
        System.out.println(line);
        assertTrue(bad < 0, op + ": non-finite value at " + bad);
        assertTrue(rel <= tolerance, op + ": relative error " + rel + " > " + tolerance);
    }

    private static final double TOL = 1e-2;

    @Test
    void matmul() {
        int[][] shapes = {{128, 96, 64}, {300, 200, 136}, {64, 50, 128}};
        for (int[] s : shapes) {
            int m = s[0], n = s[1], k = s[2];
            for (int variant = 0; variant < 3; variant++) {
                boolean transA = variant == 2, transB = variant == 0;
                Pair a = act(transA ? new int[]{k, m} : new int[]{m, k});
                Pair b = act(transB ? new int[]{n, k} : new int[]{k, n});
                Pair out = act(m, n);
                gpu.matmul(out.g, a.g, b.g, m, n, k, transA, transB, false);
                cpu.matmul(out.c, a.c, b.c, m, n, k, transA, transB, false);
                check("matmul bf16→bf16 " + m + "x" + n + "x" + k + (transA ? " TN" : transB ? " NT" : " NN"), out, TOL);
                Pair acc = f32(m, n);
                gpu.matmul(acc.g, a.g, b.g, m, n, k, transA, transB, true);
                cpu.matmul(acc.c, a.c, b.c, m, n, k, transA, transB, true);
                check("matmul bf16→f32 accumulate " + m + "x" + n + "x" + k, acc, 1e-4);
            }
        }
    }

    @Test
    void linearForwardWithBiasEpilogue() {
        int m = 300, n = 200, k = 136;
        Pair x = act(m, k), w = act(n, k), bias = f32(n), y = act(m, n), yf = f32(m, n);
        gpu.linearForward(y.g, x.g, w.g, bias.g, m, n, k);
        cpu.linearForward(y.c, x.c, w.c, bias.c, m, n, k);
        check("linearForward bf16 (bias epilogue)", y, TOL);
        gpu.linearForward(yf.g, x.g, w.g, bias.g, m, n, k);
        cpu.linearForward(yf.c, x.c, w.c, bias.c, m, n, k);
        check("linearForward bf16→f32 (bias epilogue)", yf, 1e-4);
        // a bias given as its bf16 compute copy: what the epilogue added after rounding the F32 bias, exactly
        Tensor bias16 = gpu.allocate(DType.BF16, n);
        gpu.convert(bias16, bias.g, n);
        Pair y16 = act(m, n);
        gpu.linearForward(y16.g, x.g, w.g, bias16, m, n, k);
        assertArrayEquals(download(gpu, y.g), download(gpu, y16.g), "linearForward with the bias's bf16 compute copy");
    }

    /**
     * Runs op and asserts, when fused is true, that cuBLASLt had an algorithm with the epilogue it asked for (the op
     * ran as one product rather than as its fallback). Each shape expected fused appears in one test only, so that its
     * plan is made here.
     */
    private static void expectFused(boolean fused, String what, Runnable op) {
        int before = gpu.unfusedEpilogues().size();
        op.run();
        List<String> after = gpu.unfusedEpilogues();
        if (fused) assertTrue(after.size() == before, what + " ran unfused: " + after.subList(before, after.size()));
    }

    @Test
    void linearGeluEpilogue() {
        // {m, n, k, fused}: GPT-2's fc (n = 3072, k = 768) on fewer rows; a small shape; n = 100, not a multiple of 8
        // (aux's leading dimension must be one): the composition
        int[][] shapes = {{512, 3072, 768, 1}, {300, 200, 136, 0}, {64, 100, 64, 0}};
        for (int[] s : shapes) {
            int m = s[0], n = s[1], k = s[2];
            String name = "linearGeluForward " + m + "x" + n + "x" + k;
            Pair x = act(m, k), w = act(n, k), bias = f32(n), y = act(m, n), pre = act(m, n);
            expectFused(s[3] == 1, name, () -> gpu.linearGeluForward(y.g, pre.g, x.g, w.g, bias.g, m, n, k));
            cpu.linearGeluForward(y.c, pre.c, x.c, w.c, bias.c, m, n, k);
            check(name + " act", y, TOL);
            check(name + " pre", pre, TOL);
        }
    }

    @Test
    void linearWeightBackwardEpilogue() {
        gpu.useBgradEpilogue(true); // off by default (slower on the H100), kept working
        try {
            linearWeightBackwardShapes();
        } finally {
            gpu.useBgradEpilogue(false);
        }
        linearWeightBackwardShapes();
    }

    private static void linearWeightBackwardShapes() {
        // {m (rows), n (out), k (in), fused}: GPT-2's fc and proj dW on fewer rows; a small and an odd shape
        int[][] shapes = {{512, 3072, 768, 1}, {512, 768, 3072, 1}, {300, 200, 136, 0}, {70, 100, 36, 0}};
        for (int[] s : shapes) {
            int m = s[0], n = s[1], k = s[2];
            String name = "linearWeightBackward " + m + "x" + n + "x" + k;
            Pair dy = act(m, n), x = act(m, k);
            // into zeroed gradients, twice (two micro-batches), and into gradients that hold values already
            Pair dw = f32(new float[n * k], n, k), db = f32(new float[n], n);
            for (int step = 0; step < 2; step++) {
                expectFused(s[3] == 1, name, () -> gpu.linearWeightBackward(dw.g, db.g, dy.g, x.g, m, n, k));
                cpu.linearWeightBackward(dw.c, db.c, dy.c, x.c, m, n, k);
            }
            check(name + " dweight, 2 micro-batches", dw, 1e-4);
            check(name + " dbias, 2 micro-batches", db, 1e-4);
            Pair dw2 = f32(n, k), db2 = f32(n);
            gpu.linearWeightBackward(dw2.g, db2.g, dy.g, x.g, m, n, k);
            cpu.linearWeightBackward(dw2.c, db2.c, dy.c, x.c, m, n, k);
            check(name + " dweight, accumulated", dw2, 1e-4);
            check(name + " dbias, accumulated", db2, 1e-4);
        }
    }

    @Test
    void matmulGeluBackwardEpilogue() {
        // {m (rows), n (hidden), k (model width), fused}: GPT-2's proj backward (n = 3072, k = 768) at 512 and 2048 rows;
        // a small shape; n = 100, not a multiple of 8 (aux's leading dimension must be one): the composition
        int[][] shapes = {{512, 3072, 768, 1}, {2048, 3072, 768, 1}, {300, 200, 136, 0}, {64, 100, 64, 0}};
        for (int[] s : shapes) {
            int m = s[0], n = s[1], k = s[2];
            String name = "matmulGeluBackward " + m + "x" + n + "x" + k;
            Pair dy = act(m, k), w = act(k, n), pre = act(m, n), dpre = act(m, n);
            expectFused(s[3] == 1, name, () -> gpu.matmulGeluBackward(dpre.g, dy.g, w.g, pre.g, m, n, k));
            cpu.matmulGeluBackward(dpre.c, dy.c, w.c, pre.c, m, n, k);
            check(name, dpre, TOL);
        }
        // pre one element past an allocation (2-byte aligned): a plan of its own, fused or turned down, right either way
        int m = 512, n = 3072, k = 768;
        Pair dy = act(m, k), w = act(k, n), pre = act(m * n + 1), dpre = act(m, n);
        Tensor preG = pre.g.slice(1, m * n), preC = pre.c.slice(1, m * n);
        gpu.matmulGeluBackward(dpre.g, dy.g, w.g, preG, m, n, k);
        cpu.matmulGeluBackward(dpre.c, dy.c, w.c, preC, m, n, k);
        check("matmulGeluBackward, pre 2-byte aligned", dpre, TOL);
    }

    /**
     * Which GELU the DGELU epilogue differentiates (cuBLAS's docs define only the forward's, as the tanh approximation).
     * With dy·w = 1 exactly, dpre = gelu'(pre) rounded to bf16, on pre in [-2.5, -1.5]: there erf GELU's derivative is
     * larger than the tanh approximation's by 2.4e-4 to 8.7e-4, 6.5e-4 on average, which bf16 rounding (half an ulp,
     * up to 4.9e-4 here; -1.8e-5 on average) hides per element but not on average. The mean difference from the CPU's
     * tanh derivative must be under half of that: nearer the tanh derivative than erf's.
     */
    @Test
    void geluEpilogueDifferentiatesTanhGelu() {
        int m = 1024, n = 3072, k = 768; // GPT-2's proj backward on 1024 rows, expected fused
        float[] ones = new float[m * k], row = new float[k * n], band = new float[m * n];
        for (int r = 0; r < m; r++) ones[r * k] = 1;
        Arrays.fill(row, 0, n, 1);
        for (int i = 0; i < band.length; i++) band[i] = -2.5f + (i % 1024) / 1024f;
        Pair dy = act(ones, m, k), w = act(row, k, n), pre = act(band, m, n), dpre = act(m, n);
        expectFused(true, "matmulGeluBackward (tanh check)", () -> gpu.matmulGeluBackward(dpre.g, dy.g, w.g, pre.g, m, n, k));
        cpu.matmulGeluBackward(dpre.c, dy.c, w.c, pre.c, m, n, k);
        check("matmulGeluBackward, dy·w = 1", dpre, TOL);
        float[] g = download(gpu, dpre.g), c = dpre.c.toFloatArray();
        double sum = 0;
        for (int i = 0; i < g.length; i++) sum += (double) g[i] - c[i];
        double mean = sum / g.length;
        String line = String.format("%-44s mean(gpu − cpu tanh) = %.2e  (erf GELU: 6.5e-4; bound 3.3e-4)", "DGELU's GELU", mean);
        REPORT.add(line);
        System.out.println(line);
        assertTrue(Math.abs(mean) < 3.3e-4, "DGELU's derivative is off the tanh GELU's by " + mean + " on average");
    }

    @Test
    void biasAndActivations() {
        int rows = 70, cols = 200;
        Pair out = act(rows, cols), bias = f32(cols);
        gpu.addBias(out.g, bias.g, rows, cols);
        cpu.addBias(out.c, bias.c, rows, cols);
        check("addBias", out, TOL);
        Pair dout = act(rows, cols);
        // 16-byte packs (cols % 8 == 0: 200, 2304) and the column-per-thread kernel (100)
        for (int[] shape : new int[][]{{rows, cols}, {300, 2304}, {70, 100}}) {
            Pair db = f32(shape[1]), dy = act(shape[0], shape[1]);
            gpu.biasBackward(db.g, dy.g, shape[0], shape[1]);
            cpu.biasBackward(db.c, dy.c, shape[0], shape[1]);
            check("biasBackward " + shape[0] + "x" + shape[1], db, 1e-5);
        }
        long n = (long) rows * cols;
        Pair x = act(rows, cols), y = act(rows, cols);
        gpu.geluForward(y.g, x.g, n);
        cpu.geluForward(y.c, x.c, n);
        check("geluForward", y, TOL);
        Pair dx = act(rows, cols);
        gpu.geluBackward(dx.g, dout.g, x.g, n);
        cpu.geluBackward(dx.c, dout.c, x.c, n);
        check("geluBackward", dx, TOL);
        Pair sum = act(rows, cols);
        gpu.add(sum.g, x.g, dout.g, n);
        cpu.add(sum.c, x.c, dout.c, n);
        check("add", sum, TOL);
        int hidden = 100;
        Pair gu = act(rows, 2 * hidden), sw = act(rows, hidden), dsw = act(rows, hidden), dgu = act(rows, 2 * hidden);
        gpu.swigluForward(sw.g, gu.g, rows, hidden);
        cpu.swigluForward(sw.c, gu.c, rows, hidden);
        check("swigluForward", sw, TOL);
        gpu.swigluBackward(dgu.g, dsw.g, gu.g, rows, hidden);
        cpu.swigluBackward(dgu.c, dsw.c, gu.c, rows, hidden);
        check("swigluBackward", dgu, TOL);
    }

    @Test
    void norms() {
        for (int cols : new int[]{64, 100, 768, 1024}) { // packed LayerNorm backward with 1, 3, 4 packs per lane; 100: unpacked
            int rows = 257;
            Pair x = act(rows, cols), out = act(rows, cols), w = f32(cols), b = f32(cols);
            Pair mean = f32(rows), rstd = f32(rows);
            gpu.layerNormForward(out.g, mean.g, rstd.g, x.g, w.g, b.g, rows, cols, 1e-5f);
            cpu.layerNormForward(out.c, mean.c, rstd.c, x.c, w.c, b.c, rows, cols, 1e-5f);
            check("layerNormForward C=" + cols, out, TOL);
            check("layerNormForward rstd", rstd, 1e-5);
            Pair r = act(rows, cols), sum = act(rows, cols), addOut = act(rows, cols);
            gpu.addLayerNormForward(sum.g, addOut.g, mean.g, rstd.g, x.g, r.g, w.g, b.g, rows, cols, 1e-5f);
            cpu.addLayerNormForward(sum.c, addOut.c, mean.c, rstd.c, x.c, r.c, w.c, b.c, rows, cols, 1e-5f);
            check("addLayerNormForward sum C=" + cols, sum, TOL);
            check("addLayerNormForward out C=" + cols, addOut, TOL);
            check("addLayerNormForward rstd", rstd, 2e-3); // the GPU normalizes the sum as rounded to bf16, the CPU as F32
            gpu.layerNormForward(out.g, mean.g, rstd.g, x.g, w.g, b.g, rows, cols, 1e-5f);
            cpu.layerNormForward(out.c, mean.c, rstd.c, x.c, w.c, b.c, rows, cols, 1e-5f);
            Pair dx = act(rows, cols), dw = f32(cols), db = f32(cols), dout = act(rows, cols);
            gpu.layerNormBackward(dx.g, dw.g, db.g, dout.g, x.g, w.g, mean.g, rstd.g, rows, cols);
            cpu.layerNormBackward(dx.c, dw.c, db.c, dout.c, x.c, w.c, mean.c, rstd.c, rows, cols);
            check("layerNormBackward dx", dx, TOL);
            check("layerNormBackward dweight", dw, 1e-4);
            check("layerNormBackward dbias", db, 1e-4);
            Pair rout = act(rows, cols), rr = f32(rows);
            gpu.rmsNormForward(rout.g, rr.g, x.g, w.g, rows, cols, 1e-5f);
            cpu.rmsNormForward(rout.c, rr.c, x.c, w.c, rows, cols, 1e-5f);
            check("rmsNormForward", rout, TOL);
            Pair rdx = act(rows, cols), rdw = f32(cols);
            gpu.rmsNormBackward(rdx.g, rdw.g, dout.g, x.g, w.g, rr.g, rows, cols);
            cpu.rmsNormBackward(rdx.c, rdw.c, dout.c, x.c, w.c, rr.c, rows, cols);
            check("rmsNormBackward dx", rdx, TOL);
            check("rmsNormBackward dweight", rdw, 1e-4);
        }
    }

    @Test
    void attention() {
        // {batch, seq, nHead, nKvHead, headDim}: flash kernels (D = 32, 64, 128, MHA and GQA) and the fallback (D = 16);
        // D = 64 also with GQA and MQA, and T such that the last 128-row block's second warpgroup of 64 rows lies wholly
        // (T = 300, 50) or partly (T = 100) past T
        int[][] configs = {{2, 200, 4, 4, 64}, {1, 130, 4, 2, 128}, {2, 64, 2, 1, 32}, {2, 77, 4, 2, 16}, {1, 1024, 2, 2, 64},
                {1, 300, 6, 2, 64}, {2, 100, 4, 1, 64}, {1, 50, 2, 1, 64}};
        for (int[] c : configs) {
            int batch = c[0], seq = c[1], nHead = c[2], nKv = c[3], hd = c[4];
            int width = (nHead + 2 * nKv) * hd, rows = batch * seq;
            String name = String.format("attention B%d T%d H%d KV%d D%d", batch, seq, nHead, nKv, hd);
            Pair qkv = act(randn((long) rows * width, 1f), rows, width);
            Pair out = act(rows, nHead * hd), lse = f32(batch, nHead, seq);
            gpu.attentionForward(out.g, lse.g, qkv.g, batch, seq, nHead, nKv, hd);
            cpu.attentionForward(out.c, lse.c, qkv.c, batch, seq, nHead, nKv, hd);
            check(name + " out", out, TOL);
            check(name + " lse", lse, 1e-3);
            Pair dout = act(rows, nHead * hd), dqkv = act(rows, width);
            // backward from the GPU's own forward on both sides (the CPU gets the bf16 out)
            float[] gOut = download(gpu, out.g);
            cpu.upload(out.c, MemorySegment.ofArray(gOut));
            gpu.attentionBackward(dqkv.g, dout.g, out.g, lse.g, qkv.g, batch, seq, nHead, nKv, hd);
            cpu.attentionBackward(dqkv.c, dout.c, out.c, lse.c, qkv.c, batch, seq, nHead, nKv, hd);
            check(name + " dqkv", dqkv, 2e-2);
        }
    }

    @Test
    void ropeEmbeddingLoss() {
        int batch = 2, seq = 33, nHead = 4, nKv = 2, hd = 16, rows = batch * seq, width = (nHead + 2 * nKv) * hd;
        Pair qkv = act(rows, width);
        gpu.rope(qkv.g, batch, seq, nHead, nKv, hd, 10000f, false);
        cpu.rope(qkv.c, batch, seq, nHead, nKv, hd, 10000f, false);
        check("rope", qkv, TOL);
        int vocab = 1000, cols = 96;
        int[] ids = rng.ints(rows, 0, vocab).toArray();
        ids[3] = ids[5];
        Pair id = ints(ids), table = f32(vocab, cols), out = act(rows, cols);
        gpu.embeddingForward(out.g, table.g, id.g, rows, cols, false);
        cpu.embeddingForward(out.c, table.c, id.c, rows, cols, false);
        check("embeddingForward", out, TOL);
        Pair dtable = f32(vocab, cols), dout = act(rows, cols);
        gpu.embeddingBackward(dtable.g, dout.g, id.g, rows, cols);
        cpu.embeddingBackward(dtable.c, dout.c, id.c, rows, cols);
        check("embeddingBackward", dtable, 1e-5);
        for (int v : new int[]{1000, 16000, 50257, 50304}) { // packed kernels with 1, 4, 8 packs per thread; 50257: unpacked
            Pair logits = act(randn((long) rows * v, 2f), rows, v), losses = f32(rows);
            Pair targets = ints(rng.ints(rows, 0, v).toArray());
            gpu.crossEntropy(losses.g, logits.g, logits.g, targets.g, rows, v, 1f / rows);
            cpu.crossEntropy(losses.c, logits.c, logits.c, targets.c, rows, v, 1f / rows);
            check("crossEntropy V=" + v + " losses", losses, 1e-5);
            check("crossEntropy V=" + v + " dlogits (in place)", logits, TOL);
            Pair logits2 = act(randn((long) rows * v, 2f), rows, v), lossOnly = f32(rows);
            gpu.crossEntropy(lossOnly.g, null, logits2.g, targets.g, rows, v, 0f);
            cpu.crossEntropy(lossOnly.c, null, logits2.c, targets.c, rows, v, 0f);
            check("crossEntropy V=" + v + " losses (no dlogits)", lossOnly, 1e-5);
        }
    }

    @Test
    void adamwWithComputeCopy() {
        int n = 10_000;
        Pair p = f32(n), g = f32(n), m = f32(n), v = f32(randn(n, 0.1f), n);
        float[] vAbs = download(gpu, v.g);
        for (int i = 0; i < n; i++) vAbs[i] = Math.abs(vAbs[i]);
        gpu.upload(v.g, MemorySegment.ofArray(vAbs));
        cpu.upload(v.c, MemorySegment.ofArray(vAbs));
        Pair norm = f32(new float[]{4f}, 1), hyper = f32(new float[]{3e-4f, 7f}, 2);
        Tensor copy = gpu.allocate(DType.BF16, n);
        gpu.adamw(p.g, g.g, m.g, v.g, copy, n, hyper.g, 0.9f, 0.95f, 1e-8f, 0.1f, norm.g, 1f);
        cpu.adamw(p.c, g.c, m.c, v.c, n, 3e-4f, 0.9f, 0.95f, 1e-8f, 0.1f, 7, norm.c, 1f);
        check("adamw (hyper on device) param", p, 1e-6);
        check("adamw m", m, 1e-6);
        check("adamw v", v, 1e-6);
        float[] c = download(gpu, copy), pv = download(gpu, p.g);
        for (int i = 0; i < n; i++) {
            assertTrue(fromBf16(toBf16(pv[i])) == c[i], "compute copy at " + i + ": " + c[i] + " vs " + pv[i]);
        }
        REPORT.add("adamw compute copy == bf16(param): exact");
        Tensor back = gpu.allocate(DType.F32, n);
        gpu.convert(back, copy, n);
        assertTrue(Arrays.equals(download(gpu, back), c), "convert bf16 → f32");
    }

    @Test
    void multiTensorOptimizer() {
        // sizes across chunk boundaries (65536 elements), odd tails, tiny tensors; 2-D ones with a bf16 compute copy
        int[] sizes = {70_000, 768, 131_073, 5, 200_000, 65_536};
        List<Pair> params = new ArrayList<>(), grads = new ArrayList<>(), ms = new ArrayList<>(), vs = new ArrayList<>();
        List<Tensor> computes = new ArrayList<>();
        List<Backend.AdamWTensors> slots = new ArrayList<>();
        for (int i = 0; i < sizes.length; i++) {
            int n = sizes[i];
            Pair p = f32(n), g = f32(randn(n, 0.3f), n), m = f32(randn(n, 0.01f), n), v = f32(randn(n, 0.01f), n);
            float[] vAbs = download(gpu, v.g);
            for (int j = 0; j < n; j++) vAbs[j] = Math.abs(vAbs[j]);
            gpu.upload(v.g, MemorySegment.ofArray(vAbs));
            cpu.upload(v.c, MemorySegment.ofArray(vAbs));
            Tensor copy = i % 2 == 0 ? gpu.allocate(DType.BF16, n) : p.g;
            params.add(p);
            grads.add(g);
            ms.add(m);
            vs.add(v);
            computes.add(copy);
            slots.add(new Backend.AdamWTensors(p.g, g.g, m.g, v.g, copy, i % 2 == 0 ? 0.1f : 0f));
        }
        Pair norm = f32(1);
        gpu.sumOfSquares(norm.g, grads.stream().map(Pair::g).toList());
        cpu.sumOfSquares(norm.c, grads.stream().map(Pair::c).toList());
        check("sumOfSquares over " + sizes.length + " tensors", norm, 1e-6);
        Pair hyper = f32(new float[]{3e-4f, 7f}, 2);
        gpu.adamw(slots, hyper.g, 0.9f, 0.95f, 1e-8f, norm.g, 0.5f);
        for (int i = 0; i < sizes.length; i++) {
            cpu.adamw(params.get(i).c, grads.get(i).c, ms.get(i).c, vs.get(i).c, sizes[i], 3e-4f, 0.9f, 0.95f, 1e-8f,
                    i % 2 == 0 ? 0.1f : 0f, 7, norm.c, 0.5f);
        }
        for (int i = 0; i < sizes.length; i++) {
            check("multi-tensor adamw param " + sizes[i], params.get(i), 1e-6);
            check("multi-tensor adamw m " + sizes[i], ms.get(i), 1e-6);
            check("multi-tensor adamw v " + sizes[i], vs.get(i), 1e-6);
            if (computes.get(i) != params.get(i).g) {
                float[] c = download(gpu, computes.get(i)), pv = download(gpu, params.get(i).g);
                for (int j = 0; j < c.length; j++) {
                    assertTrue(fromBf16(toBf16(pv[j])) == c[j], "compute copy " + i + " at " + j + ": " + c[j] + " vs " + pv[j]);
                }
            }
        }
        REPORT.add("multi-tensor adamw compute copies == bf16(param): exact");
        gpu.zero(grads.stream().map(Pair::g).toList());
        for (Pair g : grads) {
            for (float x : download(gpu, g.g)) assertTrue(x == 0f, "multi-tensor zero left " + x);
        }
        REPORT.add("multi-tensor zero: every element 0");
    }
}
