package frugal.backend.cpu;

import frugal.tensor.Tensor;

import java.lang.foreign.MemorySegment;

import static frugal.backend.cpu.Vec.axpy;
import static frugal.backend.cpu.Vec.dot;
import static frugal.backend.cpu.Vec.get;
import static frugal.backend.cpu.Vec.set;

/**
 * RoPE and causal grouped-query attention. Forward keeps only the row log-sum-exp; backward rebuilds the
 * probabilities from q, k and lse, the same contract as the flash-attention kernels on the GPU.
 */
final class CpuAttention {
    private CpuAttention() {
    }

    static void rope(Tensor qkv, int batch, int seq, int nHead, int nKvHead, int headDim, float theta, boolean inverse) {
        int half = headDim / 2, rowWidth = (nHead + 2 * nKvHead) * headDim, rotated = nHead + nKvHead;
        float[] cos = new float[seq * half], sin = new float[seq * half];
        for (int t = 0; t < seq; t++) {
            for (int i = 0; i < half; i++) {
                double angle = t * Math.pow(theta, -2.0 * i / headDim);
                cos[t * half + i] = (float) Math.cos(angle);
                sin[t * half + i] = (float) (inverse ? -Math.sin(angle) : Math.sin(angle));
            }
        }
        MemorySegment x = qkv.data();
        Parallel.forRange(batch * seq, 8, (r0, r1) -> {
            for (int r = r0; r < r1; r++) {
                int t = r % seq;
                for (int h = 0; h < rotated; h++) {
                    long base = (long) r * rowWidth + (long) h * headDim;
                    for (int i = 0; i < half; i++) {
                        float x1 = get(x, base + i), x2 = get(x, base + half + i);
                        float c = cos[t * half + i], s = sin[t * half + i];
                        set(x, base + i, x1 * c - x2 * s);
                        set(x, base + half + i, x2 * c + x1 * s);
                    }
                }
            }
        });
    }

    static void forward(Tensor out, Tensor lse, Tensor qkv, int batch, int seq, int nHead, int nKvHead, int headDim) {
        int rowWidth = (nHead + 2 * nKvHead) * headDim, group = nHead / nKvHead, outWidth = nHead * headDim;
        float scale = (float) (1.0 / Math.sqrt(headDim));
        MemorySegment x = qkv.data(), o = out.data(), l = lse.data();
        Parallel.forRange(batch * nHead, (p0, p1) -> {
            float[] scores = new float[seq];
            for (int p = p0; p < p1; p++) {
                int b = p / nHead, h = p % nHead, kvh = h / group;
                long qOff = (long) h * headDim, kOff = (long) (nHead + kvh) * headDim, vOff = kOff + (long) nKvHead * headDim;
                for (int t = 0; t < seq; t++) {
                    long qRow = ((long) b * seq + t) * rowWidth;
                    float max = Float.NEGATIVE_INFINITY;
                    for (int j = 0; j <= t; j++) {
                        long kRow = ((long) b * seq + j) * rowWidth;
                        scores[j] = dot(x, qRow + qOff, x, kRow + kOff, headDim) * scale;
                        max = Math.max(max, scores[j]);
                    }
                    double sum = 0;
                    for (int j = 0; j <= t; j++) {
                        scores[j] = (float) Math.exp(scores[j] - max);
                        sum += scores[j];
                    }
                    long oRow = ((long) b * seq + t) * outWidth + qOff;
                    for (int i = 0; i < headDim; i++) set(o, oRow + i, 0f);
                    float inv = (float) (1.0 / sum);
                    for (int j = 0; j <= t; j++) {
                        long vRow = ((long) b * seq + j) * rowWidth + vOff;
                        axpy(scores[j] * inv, x, vRow, o, oRow, headDim);
                    }
                    set(l, ((long) b * nHead + h) * seq + t, max + (float) Math.log(sum));
                }
            }
        });
    }

    static void backward(Tensor dqkv, Tensor dout, Tensor out, Tensor lse, Tensor qkv,
                         int batch, int seq, int nHead, int nKvHead, int headDim) {
        int rowWidth = (nHead + 2 * nKvHead) * headDim, group = nHead / nKvHead, outWidth = nHead * headDim;
        float scale = (float) (1.0 / Math.sqrt(headDim));
        MemorySegment x = qkv.data(), dx = dqkv.data(), dos = dout.data(), o = out.data(), l = lse.data();
        // Work is split by (batch, kv head) so that the k/v gradients shared by a head group have one writer.
        Parallel.forRange(batch * nKvHead, (p0, p1) -> {
            for (int p = p0; p < p1; p++) {
                int b = p / nKvHead, kvh = p % nKvHead;
                long kOff = (long) (nHead + kvh) * headDim, vOff = kOff + (long) nKvHead * headDim;
                for (int t = 0; t < seq; t++) {
                    long row = ((long) b * seq + t) * rowWidth;
                    for (int i = 0; i < headDim; i++) {
                        set(dx, row + kOff + i, 0f);
                        set(dx, row + vOff + i, 0f);
                    }
                    for (int h = kvh * group; h < (kvh + 1) * group; h++) {
                        for (int i = 0; i < headDim; i++) set(dx, row + (long) h * headDim + i, 0f);
                    }
                }
                for (int h = kvh * group; h < (kvh + 1) * group; h++) {
                    long qOff = (long) h * headDim;
                    for (int t = 0; t < seq; t++) {
                        long qRow = ((long) b * seq + t) * rowWidth, oRow = ((long) b * seq + t) * outWidth + qOff;
                        float rowLse = get(l, ((long) b * nHead + h) * seq + t);
                        float delta = dot(dos, oRow, o, oRow, headDim);
                        for (int j = 0; j <= t; j++) {
                            long kRow = ((long) b * seq + j) * rowWidth;
                            float prob = (float) Math.exp(dot(x, qRow + qOff, x, kRow + kOff, headDim) * scale - rowLse);
                            float dprob = dot(dos, oRow, x, kRow + vOff, headDim);
                            float dscore = prob * (dprob - delta) * scale;
                            axpy(dscore, x, kRow + kOff, dx, qRow + qOff, headDim);
                            axpy(dscore, x, qRow + qOff, dx, kRow + kOff, headDim);
                            axpy(prob, dos, oRow, dx, kRow + vOff, headDim);
                        }
                    }
                }
            }
        });
    }
}
