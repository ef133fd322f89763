package frugal.backend.cpu;

import frugal.tensor.Tensor;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;

import java.util.function.DoubleUnaryOperator;
import java.util.function.ToDoubleFunction;

import static frugal.backend.cpu.OpsFixture.ELEMENTS;
import static frugal.backend.cpu.OpsFixture.centralDifferences;
import static frugal.backend.cpu.OpsFixture.dot;
import static frugal.backend.cpu.OpsFixture.doubles;
import static frugal.backend.cpu.OpsFixture.minus;

/**
 * Every backward op of the CPU backend against the gradient of the scalar loss L = Σ out·w (w random, passed as dout)
 * taken by float64 central differences of the {@link Reference} forward, at every coordinate of small shapes and at
 * a random sample plus the last coordinates of large ones (which run on several threads). Gradients that ops
 * accumulate start from random values, so that overwriting instead of adding fails.
 *
 * <p>Tolerance: {@value #GRADIENT} relative to the gradient's magnitude (see {@link OpsFixture#assertClose}). The
 * differences themselves are good to ~1e-8 in float64; the float32 backward carries ~6e-8 per operation over sums
 * of up to ~10³ terms, a few 1e-6 at worst in practice; a wrong term in a formula is O(1).
 */
class CpuOpsGradientTest {
    private static final double GRADIENT = 1e-4;
    /** Coordinates checked by differences in a large tensor (each costs two float64 forwards). */
    private static final int SAMPLES = 300;

    private final OpsFixture f = new OpsFixture();

    @AfterEach
    void close() {
        f.close();
    }

    @Test
    void biasBackwardAddsColumnSums() {
        // cols ≥ 2·64 splits the columns over two threads
        for (int[] s : new int[][]{{1, 1}, {7, 19}, {200, 1027}}) {
            int rows = s[0], cols = s[1];
            Tensor dout = f.randn(rows, cols), dbias = f.randn(cols);
            float[] before = dbias.toFloatArray(), d = dout.toFloatArray();
            double[] want = new double[cols];
            for (int r = 0; r < rows; r++) for (int c = 0; c < cols; c++) want[c] += d[r * cols + c];
            f.cpu.biasBackward(dbias, dout, rows, cols);
            f.assertClose("biasBackward " + OpsFixture.shape(s), minus(dbias.toFloatArray(), before), want, GRADIENT);
        }
    }

    /**
     * {rows, cols}: rows ≥ 2·8 runs on two threads. Not two columns: LayerNorm of two values is ±1 whatever they are,
     * so its exact dx is ~eps-sized, a cancellation of O(1) terms that float32 cannot resolve.
     */
    private static final int[][] NORM_SHAPES = {{1, 3}, {3, 7}, {20, 67}, {33, 259}};

    @Test
    void layerNormBackwardMatchesFiniteDifferences() {
        for (int[] s : NORM_SHAPES) {
            int rows = s[0], cols = s[1];
            float eps = 1e-5f;
            Tensor x = f.normal(3, 2, rows, cols), w = f.normal(1, 1, cols), b = f.randn(cols), dout = f.randn(rows, cols);
            Tensor out = f.randn(rows, cols), mean = f.randn(rows), rstd = f.randn(rows);
            Tensor dx = f.randn(rows, cols), dw = f.randn(cols), db = f.randn(cols);
            float[] dx0 = dx.toFloatArray(), dw0 = dw.toFloatArray(), db0 = db.toFloatArray();
            f.cpu.layerNormForward(out, mean, rstd, x, w, b, rows, cols, eps);
            f.cpu.layerNormBackward(dx, dw, db, dout, x, w, mean, rstd, rows, cols);

            double[] xd = doubles(x), wd = doubles(w), bd = doubles(b), weights = doubles(dout);
            String where = "layerNorm " + OpsFixture.shape(s);
            checkGradient(where + " dx", minus(dx.toFloatArray(), dx0), xd,
                    v -> dot(Reference.layerNorm(v, wd, bd, rows, cols, eps).out(), weights));
            checkGradient(where + " dweight", minus(dw.toFloatArray(), dw0), wd,
                    v -> dot(Reference.layerNorm(xd, v, bd, rows, cols, eps).out(), weights));
            checkGradient(where + " dbias", minus(db.toFloatArray(), db0), bd,
                    v -> dot(Reference.layerNorm(xd, wd, v, rows, cols, eps).out(), weights));
        }
    }

    @Test
    void rmsNormBackwardMatchesFiniteDifferences() {
        for (int[] s : NORM_SHAPES) {
            int rows = s[0], cols = s[1];
            float eps = 1e-6f;
            Tensor x = f.normal(0.5, 2, rows, cols), w = f.normal(1, 1, cols), dout = f.randn(rows, cols);
            Tensor out = f.randn(rows, cols), rstd = f.randn(rows), dx = f.randn(rows, cols), dw = f.randn(cols);
            float[] dx0 = dx.toFloatArray(), dw0 = dw.toFloatArray();
            f.cpu.rmsNormForward(out, rstd, x, w, rows, cols, eps);
            f.cpu.rmsNormBackward(dx, dw, dout, x, w, rstd, rows, cols);

            double[] xd = doubles(x), wd = doubles(w), weights = doubles(dout);
            String where = "rmsNorm " + OpsFixture.shape(s);
            checkGradient(where + " dx", minus(dx.toFloatArray(), dx0), xd,
                    v -> dot(Reference.rmsNorm(v, wd, rows, cols, eps).out(), weights));
            checkGradient(where + " dweight", minus(dw.toFloatArray(), dw0), wd,
                    v -> dot(Reference.rmsNorm(xd, v, rows, cols, eps).out(), weights));
        }
    }

    @Test
    void geluBackwardMatchesFiniteDifferencesAlsoInPlace() {
        for (int n : new int[]{5, 19, ELEMENTS}) {
            Tensor x = f.normal(0, 4, n), dout = f.randn(n), dx = f.randn(n);
            f.cpu.geluBackward(dx, dout, x, n);
            double[] want = elementwiseGradient(Reference::gelu, doubles(x), doubles(dout));
            f.assertClose("gelu n=" + n, dx.toFloatArray(), want, GRADIENT);
            f.cpu.geluBackward(dout, dout, x, n); // as GeluMlp calls it
            f.assertClose("gelu in place n=" + n, dout.toFloatArray(), want, GRADIENT);
        }
    }

    @Test
    void swigluBackwardMatchesFiniteDifferences() {
        // rows ≥ 2·4 runs on two threads
        for (int[] s : new int[][]{{1, 1}, {3, 19}, {9, 67}, {40, 1027}}) {
            int rows = s[0], hidden = s[1];
            Tensor gateUp = f.normal(0, 3, rows, 2 * hidden), dout = f.randn(rows, hidden), dGateUp = f.randn(rows, 2 * hidden);
            f.cpu.swigluBackward(dGateUp, dout, gateUp, rows, hidden);
            double[] weights = doubles(dout);
            checkGradient("swiglu " + OpsFixture.shape(s), doubles(dGateUp), doubles(gateUp),
                    v -> dot(Reference.swiglu(v, rows, hidden), weights));
        }
    }

    @Test
    void ropeInverseIsTheGradientOfRope() {
        // the model back-propagates through rope by applying its inverse to dqkv: right only if inverse = transpose;
        // batch·seq ≥ 2·8 runs on two threads
        for (int[] s : new int[][]{{1, 3, 1, 1, 2}, {2, 7, 3, 1, 20}, {2, 9, 2, 1, 64}}) {
            int batch = s[0], seq = s[1], nHead = s[2], nKv = s[3], headDim = s[4];
            float theta = 10000f;
            Tensor qkv = f.randn(batch * seq, (nHead + 2 * nKv) * headDim), grad = f.randn(batch * seq, (nHead + 2 * nKv) * headDim);
            double[] weights = doubles(grad);
            f.cpu.rope(grad, batch, seq, nHead, nKv, headDim, theta, true);
            checkGradient("rope " + OpsFixture.shape(s), doubles(grad), doubles(qkv),
                    v -> dot(Reference.rope(v, batch, seq, nHead, nKv, headDim, theta), weights));
        }
    }

    @Test
    void attentionBackwardMatchesFiniteDifferences() {
        for (int[] s : CpuOpsForwardTest.ATTENTION_SHAPES) {
            int batch = s[0], seq = s[1], nHead = s[2], nKv = s[3], headDim = s[4], width = (nHead + 2 * nKv) * headDim;
            Tensor qkv = f.randn(batch * seq, width), dout = f.randn(batch * seq, nHead * headDim);
            Tensor out = f.randn(batch * seq, nHead * headDim), lse = f.randn(batch, nHead, seq), dqkv = f.randn(batch * seq, width);
            f.cpu.attentionForward(out, lse, qkv, batch, seq, nHead, nKv, headDim);
            f.cpu.attentionBackward(dqkv, dout, out, lse, qkv, batch, seq, nHead, nKv, headDim);
            double[] weights = doubles(dout);
            checkGradient("attention " + OpsFixture.shape(s), doubles(dqkv), doubles(qkv),
                    v -> dot(Reference.attention(v, batch, seq, nHead, nKv, headDim).out(), weights));
        }
    }

    @Test
    void embeddingBackwardAddsRepeatedIdsTogether() {
        // 100 rows over a table of 13 repeat ids; cols ≥ 2·16 splits the columns over two threads
        for (int[] s : new int[][]{{1, 1, 1}, {7, 5, 19}, {100, 13, 67}}) {
            int rows = s[0], tableRows = s[1], cols = s[2];
            Tensor dout = f.randn(rows, cols), ids = f.ids(tableRows, rows), dtable = f.randn(tableRows, cols);
            float[] before = dtable.toFloatArray(), d = dout.toFloatArray();
            double[] want = new double[tableRows * cols];
            for (int r = 0; r < rows; r++) for (int c = 0; c < cols; c++) want[ids.getInt(r) * cols + c] += d[r * cols + c];
            f.cpu.embeddingBackward(dtable, dout, ids, rows, cols);
            f.assertClose("embeddingBackward " + OpsFixture.shape(s), minus(dtable.toFloatArray(), before), want, GRADIENT);
        }
    }

    /** Checks an op's gradient against central differences of loss at (a sample of) the coordinates of x. */
    private void checkGradient(String what, double[] got, double[] x, ToDoubleFunction<double[]> loss) {
        int[] coords = f.coordinates(x.length, SAMPLES);
        f.assertGradient(what, got, coords, centralDifferences(x, coords, loss), GRADIENT);
    }

    /** d/dx of Σ fn(x[i])·w[i], one element at a time (the op is element-wise). */
    private static double[] elementwiseGradient(DoubleUnaryOperator fn, double[] x, double[] w) {
        double[] g = new double[x.length];
        for (int i = 0; i < x.length; i++) g[i] = OpsFixture.derivative(fn, x[i]) * w[i];
        return g;
    }
}
