package frugal.backend.cpu;

import frugal.tensor.DType;
import frugal.tensor.Tensor;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;

import static frugal.backend.cpu.OpsFixture.ELEMENTS;
import static frugal.backend.cpu.OpsFixture.doubles;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

/**
 * Every forward op of the CPU backend against {@link Reference} in float64, on fresh random inputs. Shapes are odd
 * (not multiples of any vector length, so the scalar tails run) and some are large enough that {@link Parallel}
 * splits the work: rows ≥ 2·grain for row-parallel ops, ≥ 2·16 blocks of 4096 for element-wise ops.
 *
 * <p>Tolerance: {@value #FLOAT32} relative to the magnitude (see {@link OpsFixture#assertClose}): float32 carries
 * ~6e-8 relative error per operation and these ops chain at most a few dozen with float64 statistics; any error in
 * a formula is O(1). Ops that round once (additions, copies) must match the float32-rounded float64 result exactly.
 */
class CpuOpsForwardTest {
    private static final double FLOAT32 = 1e-5;

    private final OpsFixture f = new OpsFixture();

    @AfterEach
    void close() {
        f.close();
    }

    @Test
    void addBiasAddsToEveryRoundedOnce() {
        for (int[] s : new int[][]{{1, 1}, {5, 7}, {67, 131}}) {
            int rows = s[0], cols = s[1];
            Tensor out = f.randn(rows, cols), bias = f.randn(cols);
            float[] before = out.toFloatArray(), b = bias.toFloatArray();
            f.cpu.addBias(out, bias, rows, cols);
            float[] want = new float[rows * cols];
            for (int i = 0; i < want.length; i++) want[i] = (float) ((double) before[i] + b[i % cols]);
            assertArrayEquals(want, out.toFloatArray(), f.seeded("addBias " + OpsFixture.shape(s)));
        }
    }

    @Test
    void addIsExactAndMayAliasItsInputs() {
        for (int n : new int[]{1, 19, ELEMENTS}) {
            Tensor a = f.randn(n), b = f.randn(n), out = f.randn(n);
            float[] av = a.toFloatArray(), bv = b.toFloatArray(), want = new float[n];
            for (int i = 0; i < n; i++) want[i] = (float) ((double) av[i] + bv[i]);
            f.cpu.add(out, a, b, n);
            assertArrayEquals(want, out.toFloatArray(), f.seeded("add n=" + n));
            f.cpu.add(a, a, b, n);
            assertArrayEquals(want, a.toFloatArray(), f.seeded("add into a, n=" + n));
        }
    }

    @Test
    void layerNormMatchesFloat64() {
        // an offset mean, as real activations have, checks that the variance is taken about the mean
        for (int[] s : new int[][]{{1, 2}, {3, 7}, {20, 67}, {41, 1027}}) {
            int rows = s[0], cols = s[1];
            Tensor x = f.normal(3, 2, rows, cols), w = f.normal(1, 1, cols), b = f.randn(cols);
            Tensor out = f.randn(rows, cols), mean = f.randn(rows), rstd = f.randn(rows);
            f.cpu.layerNormForward(out, mean, rstd, x, w, b, rows, cols, 1e-5f);
            Reference.Normalized want = Reference.layerNorm(doubles(x), doubles(w), doubles(b), rows, cols, 1e-5);
            String where = "layerNorm " + OpsFixture.shape(s);
            f.assertClose(where + " out", out.toFloatArray(), want.out(), FLOAT32);
            f.assertClose(where + " mean", mean.toFloatArray(), want.mean(), FLOAT32);
            f.assertClose(where + " rstd", rstd.toFloatArray(), want.rstd(), FLOAT32);
        }
    }

    @Test
    void rmsNormMatchesFloat64() {
        for (int[] s : new int[][]{{1, 2}, {3, 7}, {20, 67}, {41, 1027}}) {
            int rows = s[0], cols = s[1];
            Tensor x = f.normal(0.5, 2, rows, cols), w = f.normal(1, 1, cols);
            Tensor out = f.randn(rows, cols), rstd = f.randn(rows);
            f.cpu.rmsNormForward(out, rstd, x, w, rows, cols, 1e-6f);
            Reference.Normalized want = Reference.rmsNorm(doubles(x), doubles(w), rows, cols, 1e-6);
            String where = "rmsNorm " + OpsFixture.shape(s);
            f.assertClose(where + " out", out.toFloatArray(), want.out(), FLOAT32);
            f.assertClose(where + " rstd", rstd.toFloatArray(), want.rstd(), FLOAT32);
        }
    }

    @Test
    void geluIsTheTanhApproximation() {
        for (int n : new int[]{5, 19, ELEMENTS}) {
            Tensor x = f.normal(0, 4, n), out = f.randn(n);
            // saturated tails, gelu(x) → x and → 0 without overflow, and a tiny x
            x.set(0, 40f);
            x.set(1, -40f);
            x.set(2, 1e-4f);
            f.cpu.geluForward(out, x, n);
            double[] want = doubles(x);
            for (int i = 0; i < n; i++) want[i] = Reference.gelu(want[i]);
            f.assertClose("gelu n=" + n, out.toFloatArray(), want, FLOAT32);
        }
    }

    @Test
    void swigluGatesTheSecondHalfWithSiluOfTheFirst() {
        for (int[] s : new int[][]{{1, 1}, {3, 19}, {9, 67}, {40, 1027}}) {
            int rows = s[0], hidden = s[1];
            Tensor gateUp = f.normal(0, 3, rows, 2 * hidden), out = f.randn(rows, hidden);
            f.cpu.swigluForward(out, gateUp, rows, hidden);
            f.assertClose("swiglu " + OpsFixture.shape(s), out.toFloatArray(),
                    Reference.swiglu(doubles(gateUp), rows, hidden), FLOAT32);
        }
    }

    /** {batch, seq, nHead, nKvHead, headDim}; the last is large enough for two threads (batch·seq ≥ 16). */
    private static final int[][] ROPE_SHAPES = {{1, 1, 1, 1, 2}, {1, 5, 2, 1, 8}, {2, 7, 3, 3, 20}, {2, 33, 4, 2, 64}};

    @Test
    void ropeRotatesQueriesAndKeysAsHuggingFaceLlama() {
        for (int[] s : ROPE_SHAPES) {
            for (float theta : new float[]{10000f, 500000f}) {
                int batch = s[0], seq = s[1], nHead = s[2], nKv = s[3], headDim = s[4];
                int width = (nHead + 2 * nKv) * headDim, qk = (nHead + nKv) * headDim;
                Tensor qkv = f.randn(batch * seq, width);
                float[] before = qkv.toFloatArray();
                f.cpu.rope(qkv, batch, seq, nHead, nKv, headDim, theta, false);
                String where = "rope " + OpsFixture.shape(s) + " theta " + theta;
                f.assertClose(where, qkv.toFloatArray(),
                        Reference.rope(doubles(before), batch, seq, nHead, nKv, headDim, theta), FLOAT32);
                float[] after = qkv.toFloatArray();
                for (int r = 0; r < batch * seq; r++) {
                    for (int i = qk; i < width; i++) {
                        if (after[r * width + i] != before[r * width + i]) fail(f.seeded(where + " changed v"));
                    }
                }
                f.cpu.rope(qkv, batch, seq, nHead, nKv, headDim, theta, true);
                f.assertClose(where + " then inverse", qkv.toFloatArray(), doubles(before), FLOAT32);
            }
        }
    }

    /** {batch, seq, nHead, nKvHead, headDim}: one token, grouped (2 and 3 per kv head), multi-head, multi-query. */
    static final int[][] ATTENTION_SHAPES = {{1, 1, 1, 1, 4}, {2, 7, 4, 2, 8}, {2, 13, 3, 3, 13}, {2, 9, 4, 1, 12},
            {3, 24, 6, 2, 36}};

    @Test
    void attentionMatchesFloat64SoftmaxWithGroupedKvHeads() {
        for (int[] s : ATTENTION_SHAPES) {
            int batch = s[0], seq = s[1], nHead = s[2], nKv = s[3], headDim = s[4];
            Tensor qkv = f.randn(batch * seq, (nHead + 2 * nKv) * headDim);
            Tensor out = f.randn(batch * seq, nHead * headDim), lse = f.randn(batch, nHead, seq);
            f.cpu.attentionForward(out, lse, qkv, batch, seq, nHead, nKv, headDim);
            Reference.Attention want = Reference.attention(doubles(qkv), batch, seq, nHead, nKv, headDim);
            String where = "attention " + OpsFixture.shape(s);
            f.assertClose(where + " out", out.toFloatArray(), want.out(), FLOAT32);
            f.assertClose(where + " lse", lse.toFloatArray(), want.lse(), FLOAT32);
        }
    }

    @Test
    void attentionIgnoresFutureTokens() {
        int batch = 2, seq = 16, nHead = 4, nKv = 2, headDim = 24, width = (nHead + 2 * nKv) * headDim;
        Tensor qkv = f.randn(batch * seq, width);
        Tensor out = f.randn(batch * seq, nHead * headDim), lse = f.randn(batch, nHead, seq);
        f.cpu.attentionForward(out, lse, qkv, batch, seq, nHead, nKv, headDim);
        float[] out0 = out.toFloatArray(), lse0 = lse.toFloatArray();
        int cut = 1 + f.rnd.nextInt(seq - 1);
        for (int b = 0; b < batch; b++) {
            for (int t = cut; t < seq; t++) {
                for (int i = 0; i < width; i++) qkv.set((long) (b * seq + t) * width + i, (float) f.rnd.nextGaussian());
            }
        }
        f.cpu.attentionForward(out, lse, qkv, batch, seq, nHead, nKv, headDim);
        float[] out1 = out.toFloatArray(), lse1 = lse.toFloatArray();
        boolean laterChanged = false;
        for (int b = 0; b < batch; b++) {
            for (int t = 0; t < seq; t++) {
                for (int i = 0; i < nHead * headDim; i++) {
                    int at = (b * seq + t) * nHead * headDim + i;
                    if (t < cut && out0[at] != out1[at]) {
                        fail(f.seeded("output at t=" + t + " moved when tokens from " + cut + " changed"));
                    }
                    laterChanged |= t >= cut && out0[at] != out1[at];
                }
                for (int h = 0; h < nHead; h++) {
                    int at = (b * nHead + h) * seq + t;
                    if (t < cut && lse0[at] != lse1[at]) fail(f.seeded("lse at t=" + t + " moved"));
                }
            }
        }
        assertTrue(laterChanged, f.seeded("changing tokens from " + cut + " on changed none of their outputs"));
    }

    @Test
    void crossEntropyMatchesFloat64LogSoftmaxAndItsGradient() {
        // {rows, vocab, logit scale}: a vocabulary of one, odd sizes, GPT-2's vocabulary, peaked softmax
        for (int[] s : new int[][]{{1, 1, 1}, {5, 67, 2}, {8, 1003, 3}, {3, 50257, 2}, {6, 131, 40}}) {
            int rows = s[0], vocab = s[1];
            Tensor logits = f.normal(0, s[2], rows, vocab), targets = f.ids(vocab, rows);
            float gradScale = (float) (0.5 + f.rnd.nextDouble()) / rows;
            float[] logits0 = logits.toFloatArray();
            double[] x = doubles(logits0);
            int[] t = targets.toIntArray();
            double[] wantLoss = Reference.crossEntropy(x, t, rows, vocab);
            double[] wantGrad = Reference.crossEntropyGradient(x, t, rows, vocab, gradScale);
            String where = "crossEntropy " + OpsFixture.shape(s);
            Tensor losses = f.randn(rows), dlogits = f.randn(rows, vocab);
            f.cpu.crossEntropy(losses, null, logits, targets, rows, vocab, gradScale);
            f.assertClose(where + " loss only", losses.toFloatArray(), wantLoss, FLOAT32);
            assertArrayEquals(logits0, logits.toFloatArray(), f.seeded(where + ": loss only wrote logits"));

            f.cpu.crossEntropy(losses, dlogits, logits, targets, rows, vocab, gradScale);
            f.assertClose(where + " loss", losses.toFloatArray(), wantLoss, FLOAT32);
            assertDlogits(where + " dlogits", dlogits, wantGrad, gradScale);

            f.cpu.crossEntropy(losses, logits, logits, targets, rows, vocab, gradScale);
            f.assertClose(where + " loss, dlogits in place", losses.toFloatArray(), wantLoss, FLOAT32);
            assertDlogits(where + " dlogits in place", logits, wantGrad, gradScale);
        }
    }

    @Test
    void crossEntropyGradientStaysPreciseForConfidentTargetsAtGpt2LogitScale() {
        // GPT-2's logits sit near −100; a well-trained model gives its target p ≈ 0.93 here, and the target's
        // gradient (p − 1)·gradScale must keep float32 precision relative to 1 − p, not to the logits' magnitude
        int rows = 16, vocab = 131;
        Tensor logits = f.normal(-100, 1, rows, vocab), targets = f.ids(vocab, rows), losses = f.randn(rows);
        for (int r = 0; r < rows; r++) {
            long at = (long) r * vocab + targets.getInt(r);
            logits.set(at, logits.get(at) + 8);
        }
        double[] want = Reference.crossEntropyGradient(doubles(logits), targets.toIntArray(), rows, vocab, 1.0 / rows);
        f.cpu.crossEntropy(losses, logits, logits, targets, rows, vocab, 1f / rows);
        assertDlogits("crossEntropy dlogits of confident targets", logits, want, 1f / rows);
    }

    /**
     * dlogits = (softmax − onehot)·gradScale to {@value #FLOAT32} relative, and at least to 1e-6·gradScale: float32
     * gets p to ~2 ulps and then subtracts 1, so a target's entry (p − 1)·gradScale is good to a few ulps of gradScale
     * (~1e-7·gradScale each) however small it is.
     */
    private void assertDlogits(String what, Tensor got, double[] want, float gradScale) {
        double[] allowed = new double[want.length];
        for (int i = 0; i < want.length; i++) allowed[i] = FLOAT32 * Math.abs(want[i]) + 1e-6 * gradScale;
        f.assertWithin(what, doubles(got), want, allowed);
    }

    @Test
    void crossEntropyRejectsTargetsOutsideTheVocabulary() {
        int rows = 3, vocab = 11;
        Tensor logits = f.randn(rows, vocab), losses = f.randn(rows);
        for (int bad : new int[]{-1, vocab}) {
            Tensor targets = f.ids(vocab, rows);
            targets.setInt(rows - 1, bad);
            assertThrows(IllegalArgumentException.class,
                    () -> f.cpu.crossEntropy(losses, null, logits, targets, rows, vocab, 1f), "target " + bad);
        }
    }

    @Test
    void embeddingCopiesOrAddsTableRows() {
        // 100 rows over a table of 13: ids repeat; 100 ≥ 2·16 rows runs on two threads
        for (int[] s : new int[][]{{1, 1, 1}, {7, 5, 19}, {100, 13, 67}}) {
            int rows = s[0], tableRows = s[1], cols = s[2];
            Tensor table = f.randn(tableRows, cols), ids = f.ids(tableRows, rows), out = f.randn(rows, cols);
            float[] before = out.toFloatArray(), tb = table.toFloatArray(), copied = new float[rows * cols], added = new float[rows * cols];
            for (int r = 0; r < rows; r++) {
                for (int c = 0; c < cols; c++) {
                    copied[r * cols + c] = tb[ids.getInt(r) * cols + c];
                    added[r * cols + c] = (float) ((double) before[r * cols + c] + copied[r * cols + c]);
                }
            }
            f.cpu.embeddingForward(out, table, ids, rows, cols, true);
            assertArrayEquals(added, out.toFloatArray(), f.seeded("embedding accumulate " + OpsFixture.shape(s)));
            f.cpu.embeddingForward(out, table, ids, rows, cols, false);
            assertArrayEquals(copied, out.toFloatArray(), f.seeded("embedding " + OpsFixture.shape(s)));
        }
    }

    @Test
    void embeddingRejectsIdsOutsideTheTable() {
        Tensor table = f.randn(5, 3), out = f.randn(2, 3);
        for (int bad : new int[]{-1, 5}) {
            Tensor ids = f.cpu.allocate(DType.I32, 2);
            ids.setInt(1, bad);
            assertThrows(IllegalArgumentException.class, () -> f.cpu.embeddingForward(out, table, ids, 2, 3, false), "id " + bad);
        }
    }
}
