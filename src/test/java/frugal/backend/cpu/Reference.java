package frugal.backend.cpu;

/**
 * Straightforward float64 versions of the forward ops, written from their formulas (and, for RoPE, from Hugging
 * Face's Llama code) rather than from the kernels; the CPU op tests compare against them and differentiate them.
 */
final class Reference {
    private static final double GELU_SCALE = Math.sqrt(2 / Math.PI);

    private Reference() {
    }

    /** A normalized tensor [rows, cols] with its per-row statistics (mean is null for RMSNorm). */
    record Normalized(double[] out, double[] mean, double[] rstd) {
    }

    static Normalized layerNorm(double[] x, double[] weight, double[] bias, int rows, int cols, double eps) {
        double[] out = new double[rows * cols], mean = new double[rows], rstd = new double[rows];
        for (int r = 0; r < rows; r++) {
            double m = 0, var = 0;
            for (int c = 0; c < cols; c++) m += x[r * cols + c];
            m /= cols;
            for (int c = 0; c < cols; c++) var += (x[r * cols + c] - m) * (x[r * cols + c] - m);
            double s = 1 / Math.sqrt(var / cols + eps);
            for (int c = 0; c < cols; c++) out[r * cols + c] = (x[r * cols + c] - m) * s * weight[c] + bias[c];
            mean[r] = m;
            rstd[r] = s;
        }
        return new Normalized(out, mean, rstd);
    }

    static Normalized rmsNorm(double[] x, double[] weight, int rows, int cols, double eps) {
        double[] out = new double[rows * cols], rstd = new double[rows];
        for (int r = 0; r < rows; r++) {
            double ss = 0;
            for (int c = 0; c < cols; c++) ss += x[r * cols + c] * x[r * cols + c];
            double s = 1 / Math.sqrt(ss / cols + eps);
            for (int c = 0; c < cols; c++) out[r * cols + c] = x[r * cols + c] * s * weight[c];
            rstd[r] = s;
        }
        return new Normalized(out, null, rstd);
    }

    /**
     * GPT-2's gelu_new: 0.5·x·(1 + tanh(u)), u = sqrt(2/π)·(x + 0.044715·x³), with 1 + tanh(u) taken as the equal
     * 2 / (1 + e^(−2u)): 1 + tanh(u) itself cancels to 0 in float64 once x < −7, where the gradient is still ~1e-16.
     */
    static double gelu(double x) {
        return x / (1 + Math.exp(-2 * GELU_SCALE * (x + 0.044715 * x * x * x)));
    }

    static double silu(double x) {
        return x / (1 + Math.exp(-x));
    }

    /** out[r,j] = silu(gateUp[r,j]) · gateUp[r,hidden+j]. */
    static double[] swiglu(double[] gateUp, int rows, int hidden) {
        double[] out = new double[rows * hidden];
        for (int r = 0; r < rows; r++) {
            for (int j = 0; j < hidden; j++) {
                out[r * hidden + j] = silu(gateUp[2 * r * hidden + j]) * gateUp[2 * r * hidden + hidden + j];
            }
        }
        return out;
    }

    /**
     * Hugging Face Llama's apply_rotary_pos_emb on the q and k heads of a fused qkv row: x·cos + rotate_half(x)·sin with
     * rotate_half(x) = cat(−x2, x1), cos and sin of t·inv_freq repeated over both halves, inv_freq = theta^(−2i/d).
     */
    static double[] rope(double[] qkv, int batch, int seq, int nHead, int nKvHead, int headDim, double theta) {
        int half = headDim / 2, width = (nHead + 2 * nKvHead) * headDim;
        double[] out = qkv.clone();
        for (int r = 0; r < batch * seq; r++) {
            int t = r % seq;
            for (int h = 0; h < nHead + nKvHead; h++) {
                int base = r * width + h * headDim;
                for (int i = 0; i < headDim; i++) {
                    double angle = t / Math.pow(theta, 2.0 * (i % half) / headDim);
                    double rotated = i < half ? -qkv[base + i + half] : qkv[base + i - half];
                    out[base + i] = qkv[base + i] * Math.cos(angle) + rotated * Math.sin(angle);
                }
            }
        }
        return out;
    }

    /** Causal attention output [B*T, nHead*headDim] and the log-sum-exp of the scaled scores [B, nHead, T]. */
    record Attention(double[] out, double[] lse) {
    }

    static Attention attention(double[] qkv, int batch, int seq, int nHead, int nKvHead, int headDim) {
        int width = (nHead + 2 * nKvHead) * headDim, group = nHead / nKvHead;
        double scale = 1 / Math.sqrt(headDim);
        double[] out = new double[batch * seq * nHead * headDim], lse = new double[batch * nHead * seq], p = new double[seq];
        for (int b = 0; b < batch; b++) {
            for (int h = 0; h < nHead; h++) {
                int q = h * headDim, k = (nHead + h / group) * headDim, v = k + nKvHead * headDim;
                for (int t = 0; t < seq; t++) {
                    int qRow = (b * seq + t) * width;
                    double max = Double.NEGATIVE_INFINITY, sum = 0;
                    for (int j = 0; j <= t; j++) {
                        int kRow = (b * seq + j) * width;
                        double s = 0;
                        for (int i = 0; i < headDim; i++) s += qkv[qRow + q + i] * qkv[kRow + k + i];
                        p[j] = s * scale;
                        max = Math.max(max, p[j]);
                    }
                    for (int j = 0; j <= t; j++) sum += Math.exp(p[j] - max);
                    int oRow = (b * seq + t) * nHead * headDim + h * headDim;
                    for (int j = 0; j <= t; j++) {
                        double weight = Math.exp(p[j] - max) / sum;
                        int vRow = (b * seq + j) * width + v;
                        for (int i = 0; i < headDim; i++) out[oRow + i] += weight * qkv[vRow + i];
                    }
                    lse[(b * nHead + h) * seq + t] = max + Math.log(sum);
                }
            }
        }
        return new Attention(out, lse);
    }

    /** log softmax(logits[r,:])[target] negated, per row. */
    static double[] crossEntropy(double[] logits, int[] targets, int rows, int vocab) {
        double[] losses = new double[rows];
        for (int r = 0; r < rows; r++) losses[r] = logSumExp(logits, r * vocab, vocab) - logits[r * vocab + targets[r]];
        return losses;
    }

    /** (softmax(logits[r,:]) − onehot(targets[r]))·gradScale. */
    static double[] crossEntropyGradient(double[] logits, int[] targets, int rows, int vocab, double gradScale) {
        double[] grad = new double[rows * vocab];
        for (int r = 0; r < rows; r++) {
            double lse = logSumExp(logits, r * vocab, vocab);
            for (int j = 0; j < vocab; j++) {
                grad[r * vocab + j] = (Math.exp(logits[r * vocab + j] - lse) - (j == targets[r] ? 1 : 0)) * gradScale;
            }
        }
        return grad;
    }

    private static double logSumExp(double[] x, int from, int n) {
        double max = Double.NEGATIVE_INFINITY, sum = 0;
        for (int i = from; i < from + n; i++) max = Math.max(max, x[i]);
        for (int i = from; i < from + n; i++) sum += Math.exp(x[i] - max);
        return max + Math.log(sum);
    }
}
