package frugal.backend.cuda;

import frugal.backend.cpu.CpuBackend;
import frugal.tensor.DType;
import frugal.tensor.Tensor;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.Assumptions;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Random;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * Every CUDA op against the CPU reference on fresh random inputs (the same inputs uploaded to both). Outputs that
 * an op overwrites are poisoned with NaN on the GPU first, so an element left unwritten fails the check. Skipped
 * where no GPU (or no CUDA library) is present. Errors: max |gpu - cpu| and ‖gpu - cpu‖ / ‖cpu‖, printed as a table.
 */
class CudaBackendTest {
    private static CudaBackend gpu;
    private static CpuBackend cpu;
    private static Random rng;
    private static long seed;
    private static final List<String> REPORT = new ArrayList<>();

    /** One tensor on each backend. */
    private record Pair(Tensor g, Tensor c) {
    }

    @BeforeAll
    static void setUp() {
        if (!CudaBackend.isAvailable()) return; // each test then reports itself skipped (see requireGpu)
        gpu = new CudaBackend(0, false);
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
            System.out.println("---- CUDA vs CPU (seed " + seed + ")");
            for (String line : REPORT) System.out.println(line);
            gpu.close();
        }
        if (cpu != null) cpu.close();
    }

    // ---- helpers

    private static float[] randn(long n, float scale) {
        float[] a = new float[(int) n];
        for (int i = 0; i < a.length; i++) a[i] = (float) rng.nextGaussian() * scale;
        return a;
    }

    private static Pair pair(float[] data, int... shape) {
        Tensor g = gpu.allocate(DType.F32, shape), c = cpu.allocate(DType.F32, shape);
        MemorySegment host = MemorySegment.ofArray(data);
        gpu.upload(g, host);
        cpu.upload(c, host);
        return new Pair(g, c);
    }

    private static Pair random(int... shape) {
        return pair(randn(Tensor.count(shape), 1f), shape);
    }

    private static Pair ints(int[] data) {
        Tensor g = gpu.allocate(DType.I32, data.length), c = cpu.allocate(DType.I32, data.length);
        MemorySegment host = MemorySegment.ofArray(data);
        gpu.upload(g, host);
        cpu.upload(c, host);
        return new Pair(g, c);
    }

    /** An output the op overwrites: NaN on the GPU, zero on the CPU. */
    private static Pair poisoned(int... shape) {
        float[] nan = new float[(int) Tensor.count(shape)];
        Arrays.fill(nan, Float.NaN);
        Tensor g = gpu.allocate(DType.F32, shape);
        gpu.upload(g, MemorySegment.ofArray(nan));
        return new Pair(g, cpu.allocate(DType.F32, shape));
    }

    private static float[] download(Tensor t) {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment host = arena.allocate(t.byteSize(), 64);
            gpu.download(t, host);
            return host.toArray(ValueLayout.JAVA_FLOAT);
        }
    }

    private static void check(String op, Pair p, double tolerance) {
        float[] g = download(p.g), c = p.c.toFloatArray();
        assertEquals(c.length, g.length);
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
        int b = bad;
        assertTrue(b < 0, () -> op + ": element " + b + " is " + g[b] + " (cpu " + c[b] + ")");
        assertTrue(rel <= tolerance, () -> op + ": relative error " + rel + " over " + tolerance);
    }

    // ---- memory

    @Test
    void memoryRoundTrip() {
        Tensor t = gpu.allocate(DType.F32, 1000);
        float[] zeros = download(t);
        for (float z : zeros) assertEquals(0f, z);
        float[] data = randn(1000, 1f);
        gpu.upload(t, MemorySegment.ofArray(data)); // heap segment: staged
        assertArrayEquals(data, download(t));
        Tensor u = gpu.allocate(DType.F32, 1000);
        gpu.copy(u, t);
        assertArrayEquals(data, download(u));
        gpu.copy(u.slice(10, 20), t.slice(500, 20));
        float[] got = download(u);
        for (int i = 0; i < 20; i++) assertEquals(data[500 + i], got[10 + i]);
        gpu.zero(u.slice(100, 50));
        got = download(u);
        for (int i = 100; i < 150; i++) assertEquals(0f, got[i]);
        assertEquals(data[99], got[99]);
        assertEquals(data[150], got[150]);
        gpu.release(t);
        gpu.release(u);
        REPORT.add("memory: allocate/upload/download/copy/zero/slice/release ok");
    }

    // ---- linear algebra

    @Test
    void matmul() {
        int[][] shapes = {{67, 45, 129}, {256, 384, 512}, {1, 50, 33}};
        for (int[] s : shapes) {
            int m = s[0], n = s[1], k = s[2];
            for (int variant = 0; variant < 8; variant++) {
                boolean transA = (variant & 1) != 0, transB = (variant & 2) != 0, accumulate = (variant & 4) != 0;
                Pair a = random(m * k), b = random(k * n);
                Pair out = accumulate ? random(m * n) : poisoned(m * n);
                gpu.matmul(out.g, a.g, b.g, m, n, k, transA, transB, accumulate);
                cpu.matmul(out.c, a.c, b.c, m, n, k, transA, transB, accumulate);
                check("matmul " + m + "x" + n + "x" + k + (transA ? " tA" : "") + (transB ? " tB" : "") + (accumulate ? " acc" : ""),
                        out, 2e-5);
            }
        }
        // operands at 4-byte (not 256-byte) aligned offsets
        int m = 33, n = 17, k = 65;
        Pair a = random(m * k + 1), b = random(k * n + 3), out = poisoned(m * n + 1);
        gpu.matmul(out.g.slice(1, m * n), a.g.slice(1, m * k), b.g.slice(3, k * n), m, n, k, false, true, false);
        cpu.matmul(out.c.slice(1, m * n), a.c.slice(1, m * k), b.c.slice(3, k * n), m, n, k, false, true, false);
        gpu.zero(out.g.slice(0, 1));
        check("matmul misaligned slices", out, 2e-5);
    }

    @Test
    void matmulTf32() {
        try (CudaBackend tf32 = new CudaBackend(0, true)) {
            int m = 300, n = 200, k = 1000;
            Pair a = random(m * k), b = random(k * n), out = poisoned(m * n);
            Tensor ag = tf32.allocate(DType.F32, m * k), bg = tf32.allocate(DType.F32, k * n), og = tf32.allocate(DType.F32, m * n);
            tf32.copy(ag, a.g);
            tf32.copy(bg, b.g);
            tf32.synchronize();
            tf32.matmul(og, ag, bg, m, n, k, false, true, false);
            tf32.synchronize();
            gpu.copy(out.g, og);
            gpu.synchronize(); // before tf32 frees og
            cpu.matmul(out.c, a.c, b.c, m, n, k, false, true, false);
            check("matmul TF32 300x200x1000 tB", out, 2e-3);
        }
    }

    @Test
    void bias() {
        int rows = 300, cols = 197;
        Pair out = random(rows * cols), bias = random(cols);
        gpu.addBias(out.g, bias.g, rows, cols);
        cpu.addBias(out.c, bias.c, rows, cols);
        check("addBias", out, 1e-6);
        Pair dout = random(rows * cols), dbias = random(cols);
        gpu.biasBackward(dbias.g, dout.g, rows, cols);
        cpu.biasBackward(dbias.c, dout.c, rows, cols);
        check("biasBackward (accumulates)", dbias, 1e-5);
    }

    @Test
    void linearEpilogues() {
        // fp32 operands: the bias epilogue and BGRADB where cuBLASLt has them (GELU and its gradient stay separate
        // kernels in fp32)
        int m = 300, n = 197, k = 136;
        Pair x = random(m * k), w = random(n * k), bias = random(n), y = poisoned(m * n), pre = poisoned(m * n);
        gpu.linearGeluForward(y.g, pre.g, x.g, w.g, bias.g, m, n, k);
        cpu.linearGeluForward(y.c, pre.c, x.c, w.c, bias.c, m, n, k);
        check("linearGeluForward act", y, 2e-5);
        check("linearGeluForward pre", pre, 2e-5);
        Pair dy = random(m * n), dw = random(n * k), db = random(n);
        gpu.linearWeightBackward(dw.g, db.g, dy.g, x.g, m, n, k);
        cpu.linearWeightBackward(dw.c, db.c, dy.c, x.c, m, n, k);
        check("linearWeightBackward dweight (accumulates)", dw, 2e-5);
        check("linearWeightBackward dbias (accumulates)", db, 1e-5);
        Pair xPre = random(m * k), dx = poisoned(m * k); // as if x were GELU(xPre)
        gpu.matmulGeluBackward(dx.g, dy.g, w.g, xPre.g, m, k, n);
        cpu.matmulGeluBackward(dx.c, dy.c, w.c, xPre.c, m, k, n);
        check("matmulGeluBackward", dx, 2e-5);
    }

    // ---- normalization

    @Test
    void layerNorm() {
        for (int cols : new int[]{768, 100, 2048}) {
            int rows = 129;
            Pair x = pair(randn(rows * cols, 2f), rows * cols), w = random(cols), b = random(cols);
            Pair out = poisoned(rows * cols), mean = poisoned(rows), rstd = poisoned(rows);
            gpu.layerNormForward(out.g, mean.g, rstd.g, x.g, w.g, b.g, rows, cols, 1e-5f);
            cpu.layerNormForward(out.c, mean.c, rstd.c, x.c, w.c, b.c, rows, cols, 1e-5f);
            check("layerNormForward out C=" + cols, out, 1e-5);
            check("layerNormForward mean C=" + cols, mean, 1e-5);
            check("layerNormForward rstd C=" + cols, rstd, 1e-5);
            Pair dout = random(rows * cols), dx = random(rows * cols), dw = random(cols), db = random(cols);
            gpu.layerNormBackward(dx.g, dw.g, db.g, dout.g, x.g, w.g, mean.g, rstd.g, rows, cols);
            cpu.layerNormBackward(dx.c, dw.c, db.c, dout.c, x.c, w.c, mean.c, rstd.c, rows, cols);
            check("layerNormBackward dx C=" + cols, dx, 1e-5);
            check("layerNormBackward dweight C=" + cols, dw, 1e-5);
            check("layerNormBackward dbias C=" + cols, db, 1e-5);
        }
    }

    @Test
    void rmsNorm() {
        for (int cols : new int[]{512, 77, 4096}) {
            int rows = 65;
            Pair x = random(rows * cols), w = random(cols);
            Pair out = poisoned(rows * cols), rstd = poisoned(rows);
            gpu.rmsNormForward(out.g, rstd.g, x.g, w.g, rows, cols, 1e-6f);
            cpu.rmsNormForward(out.c, rstd.c, x.c, w.c, rows, cols, 1e-6f);
            check("rmsNormForward out C=" + cols, out, 1e-5);
            check("rmsNormForward rstd C=" + cols, rstd, 1e-5);
            Pair dout = random(rows * cols), dx = random(rows * cols), dw = random(cols);
            gpu.rmsNormBackward(dx.g, dw.g, dout.g, x.g, w.g, rstd.g, rows, cols);
            cpu.rmsNormBackward(dx.c, dw.c, dout.c, x.c, w.c, rstd.c, rows, cols);
            check("rmsNormBackward dx C=" + cols, dx, 1e-5);
            check("rmsNormBackward dweight C=" + cols, dw, 1e-5);
        }
    }

    // ---- activations

    @Test
    void gelu() {
        int n = 100_003;
        Pair x = pair(randn(n, 3f), n), out = poisoned(n);
        gpu.geluForward(out.g, x.g, n);
        cpu.geluForward(out.c, x.c, n);
        check("geluForward", out, 1e-6);
        Pair dout = random(n), dx = poisoned(n);
        gpu.geluBackward(dx.g, dout.g, x.g, n);
        cpu.geluBackward(dx.c, dout.c, x.c, n);
        check("geluBackward", dx, 1e-6);
        gpu.geluBackward(dout.g, dout.g, x.g, n);
        cpu.geluBackward(dout.c, dout.c, x.c, n);
        check("geluBackward in place (dx = dout)", dout, 1e-6);
    }

    @Test
    void swiglu() {
        int rows = 77, hidden = 345;
        Pair gu = pair(randn(2L * rows * hidden, 3f), 2 * rows * hidden), out = poisoned(rows * hidden);
        gpu.swigluForward(out.g, gu.g, rows, hidden);
        cpu.swigluForward(out.c, gu.c, rows, hidden);
        check("swigluForward", out, 1e-6);
        Pair dout = random(rows * hidden), dgu = poisoned(2 * rows * hidden);
        gpu.swigluBackward(dgu.g, dout.g, gu.g, rows, hidden);
        cpu.swigluBackward(dgu.c, dout.c, gu.c, rows, hidden);
        check("swigluBackward", dgu, 1e-6);
    }

    // ---- attention

    @Test
    void rope() {
        int batch = 2, seq = 300, nHead = 4, nKvHead = 2, headDim = 64;
        int n = batch * seq * (nHead + 2 * nKvHead) * headDim;
        Pair qkv = random(n);
        gpu.rope(qkv.g, batch, seq, nHead, nKvHead, headDim, 10000f, false);
        cpu.rope(qkv.c, batch, seq, nHead, nKvHead, headDim, 10000f, false);
        check("rope", qkv, 1e-6);
        gpu.rope(qkv.g, batch, seq, nHead, nKvHead, headDim, 500000f, true);
        cpu.rope(qkv.c, batch, seq, nHead, nKvHead, headDim, 500000f, true);
        check("rope inverse (theta 5e5)", qkv, 1e-6);
    }

    @Test
    void attention() {
        int[][] configs = {
                // batch, seq, nHead, nKvHead, headDim
                {2, 77, 4, 2, 64},
                {1, 130, 3, 3, 32},
                {2, 64, 4, 1, 128},
                {1, 41, 2, 2, 80},
        };
        for (int[] cfg : configs) {
            int batch = cfg[0], seq = cfg[1], nHead = cfg[2], nKvHead = cfg[3], headDim = cfg[4];
            String name = "B" + batch + " T" + seq + " H" + nHead + "/" + nKvHead + " D" + headDim;
            int width = (nHead + 2 * nKvHead) * headDim;
            Pair qkv = random(batch * seq * width);
            Pair out = poisoned(batch * seq * nHead * headDim), lse = poisoned(batch * nHead * seq);
            gpu.attentionForward(out.g, lse.g, qkv.g, batch, seq, nHead, nKvHead, headDim);
            cpu.attentionForward(out.c, lse.c, qkv.c, batch, seq, nHead, nKvHead, headDim);
            check("attentionForward out " + name, out, 1e-5);
            check("attentionForward lse " + name, lse, 1e-5);
            Pair dout = random(batch * seq * nHead * headDim), dqkv = poisoned(batch * seq * width);
            gpu.attentionBackward(dqkv.g, dout.g, out.g, lse.g, qkv.g, batch, seq, nHead, nKvHead, headDim);
            cpu.attentionBackward(dqkv.c, dout.c, out.c, lse.c, qkv.c, batch, seq, nHead, nKvHead, headDim);
            check("attentionBackward dqkv " + name, dqkv, 1e-5);
        }
    }

    // ---- embedding, residual, loss

    @Test
    void embedding() {
        int vocab = 500, rows = 1000, cols = 96;
        int[] idData = new int[rows];
        for (int i = 0; i < rows; i++) idData[i] = rng.nextInt(vocab / 10); // many repeats
        Pair ids = ints(idData), table = random(vocab * cols), out = poisoned(rows * cols);
        gpu.embeddingForward(out.g, table.g, ids.g, rows, cols, false);
        cpu.embeddingForward(out.c, table.c, ids.c, rows, cols, false);
        check("embeddingForward", out, 0);
        Pair pos = random(rows * cols);
        gpu.embeddingForward(out.g, pos.g, ids.g, rows, cols, true);
        cpu.embeddingForward(out.c, pos.c, ids.c, rows, cols, true);
        check("embeddingForward accumulate", out, 1e-7);
        Pair dtable = random(vocab * cols), dout = random(rows * cols);
        gpu.embeddingBackward(dtable.g, dout.g, ids.g, rows, cols);
        cpu.embeddingBackward(dtable.c, dout.c, ids.c, rows, cols);
        check("embeddingBackward (repeated ids)", dtable, 1e-6);
    }

    @Test
    void add() {
        int n = 123_457;
        Pair a = random(n), b = random(n), out = poisoned(n);
        gpu.add(out.g, a.g, b.g, n);
        cpu.add(out.c, a.c, b.c, n);
        check("add", out, 0);
        gpu.add(a.g, a.g, b.g, n);
        cpu.add(a.c, a.c, b.c, n);
        check("add in place (out = a)", a, 0);
    }

    @Test
    void crossEntropy() {
        for (int vocab : new int[]{1000, 50257}) {
            int rows = 37;
            int[] t = new int[rows];
            for (int i = 0; i < rows; i++) t[i] = rng.nextInt(vocab);
            Pair targets = ints(t), logits = pair(randn((long) rows * vocab, 4f), rows * vocab);
            Pair losses = poisoned(rows), dlogits = poisoned(rows * vocab);
            gpu.crossEntropy(losses.g, dlogits.g, logits.g, targets.g, rows, vocab, 1f / rows);
            cpu.crossEntropy(losses.c, dlogits.c, logits.c, targets.c, rows, vocab, 1f / rows);
            check("crossEntropy losses V=" + vocab, losses, 1e-5);
            check("crossEntropy dlogits V=" + vocab, dlogits, 1e-5);
            Pair lossOnly = poisoned(rows);
            gpu.crossEntropy(lossOnly.g, null, logits.g, targets.g, rows, vocab, 1f);
            cpu.crossEntropy(lossOnly.c, null, logits.c, targets.c, rows, vocab, 1f);
            check("crossEntropy losses, no dlogits V=" + vocab, lossOnly, 1e-5);
            gpu.crossEntropy(losses.g, logits.g, logits.g, targets.g, rows, vocab, 0.5f);
            cpu.crossEntropy(losses.c, logits.c, logits.c, targets.c, rows, vocab, 0.5f);
            check("crossEntropy dlogits in place V=" + vocab, logits, 1e-5);
        }
    }

    // ---- optimizer

    @Test
    void sumOfSquares() {
        int n = 1_000_003;
        Pair x = random(n), out = poisoned(1);
        gpu.sumOfSquares(out.g, x.g, n, false);
        cpu.sumOfSquares(out.c, x.c, n, false);
        check("sumOfSquares", out, 1e-6);
        Pair y = random(777);
        gpu.sumOfSquares(out.g, y.g, 777, true);
        cpu.sumOfSquares(out.c, y.c, 777, true);
        check("sumOfSquares accumulate", out, 1e-6);
    }

    @Test
    void adamw() {
        int n = 200_001;
        for (boolean clip : new boolean[]{false, true}) {
            Pair param = random(n), grad = random(n), m = pair(randn(n, 0.1f), n);
            float[] vData = randn(n, 0.1f);
            for (int i = 0; i < n; i++) vData[i] = vData[i] * vData[i];
            Pair v = pair(vData, n);
            Pair norm = null;
            if (clip) {
                norm = poisoned(1);
                gpu.sumOfSquares(norm.g, grad.g, n, false);
                cpu.sumOfSquares(norm.c, grad.c, n, false);
            }
            gpu.adamw(param.g, grad.g, m.g, v.g, n, 1e-3f, 0.9f, 0.95f, 1e-8f, 0.1f, 7, clip ? norm.g : null, 1f);
            cpu.adamw(param.c, grad.c, m.c, v.c, n, 1e-3f, 0.9f, 0.95f, 1e-8f, 0.1f, 7, clip ? norm.c : null, 1f);
            String tag = clip ? " (clipped by norm)" : "";
            check("adamw param" + tag, param, 1e-6);
            check("adamw m" + tag, m, 1e-6);
            check("adamw v" + tag, v, 1e-6);
        }
    }
}
