package frugal.backend.cpu;

import frugal.quant.QuantFormat;
import frugal.quant.Quantized;
import frugal.tensor.Tensor;
import jdk.incubator.vector.FloatVector;

import java.lang.foreign.MemorySegment;
import java.util.Arrays;

import static frugal.backend.cpu.Vec.L;
import static frugal.backend.cpu.Vec.S;
import static frugal.backend.cpu.Vec.dot;
import static frugal.backend.cpu.Vec.get;
import static frugal.backend.cpu.Vec.set;
import static java.lang.foreign.ValueLayout.JAVA_FLOAT;

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

    /**
     * Writes out and lse; where outq is non-null, also out's quantized copy, each row of a head quantized right after it
     * is written: the bytes of {@link CpuQuant#quantize} (headDim a multiple of outq's block).
     */
    static void forward(Tensor out, Quantized outq, Tensor lse, Tensor qkv, int batch, int seq, int nHead, int nKvHead, int headDim) {
        int rowWidth = (nHead + 2 * nKvHead) * headDim, group = nHead / nKvHead, outWidth = nHead * headDim;
        float scale = (float) (1.0 / Math.sqrt(headDim));
        MemorySegment x = qkv.data(), o = out.data(), l = lse.data();
        long size = (long) batch * seq * outWidth;
        QuantFormat f = outq == null ? null : outq.format();
        int seedBits = outq == null ? 0 : QuantFormat.seedBits(outq.seed());
        Parallel.forRange(batch * nHead, (p0, p1) -> {
            HeadScratch w = new HeadScratch(seq, headDim);
            for (int p = p0; p < p1; p++) {
                int b = p / nHead, h = p % nHead, kvh = h / group;
                long qOff = (long) h * headDim, kOff = (long) (nHead + kvh) * headDim, vOff = kOff + (long) nKvHead * headDim;
                long rows = (long) b * seq * rowWidth;
                w.loadTransposed(w.kT, x, rows + kOff, rowWidth);
                w.loadRows(w.v, x, rows + vOff, rowWidth);
                for (int t = 0; t < seq; t++) {
                    int n = t + 1;
                    w.loadRow(w.q, x, rows + (long) t * rowWidth + qOff, scale);
                    w.scores(w.s, w.q, w.kT, n);
                    float max = Float.NEGATIVE_INFINITY;
                    for (int j = 0; j < n; j++) max = Math.max(max, w.s[j]);
                    double sum = 0;
                    for (int j = 0; j < n; j++) {
                        w.s[j] = (float) Math.exp(w.s[j] - max);
                        sum += w.s[j];
                    }
                    float inv = (float) (1.0 / sum);
                    Arrays.fill(w.acc, 0f);
                    for (int j = 0; j < n; j++) axpy(w.s[j] * inv, w.v, j * headDim, w.acc, 0, headDim);
                    long at = ((long) b * seq + t) * outWidth + qOff;
                    MemorySegment.copy(w.acc, 0, o, JAVA_FLOAT, 4 * at, headDim);
                    if (outq != null) {
                        int first = Math.toIntExact(at / f.block());
                        CpuQuant.quantizeBlocks(outq.packed(), outq.scales(), o, size, f, seedBits, first, first + headDim / f.block());
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
            HeadScratch w = new HeadScratch(seq, headDim);
            float[] dk = new float[seq * headDim], dv = new float[seq * headDim];
            for (int p = p0; p < p1; p++) {
                int b = p / nKvHead, kvh = p % nKvHead;
                long kOff = (long) (nHead + kvh) * headDim, vOff = kOff + (long) nKvHead * headDim;
                long rows = (long) b * seq * rowWidth, outRows = (long) b * seq * outWidth;
                w.loadTransposed(w.kT, x, rows + kOff, rowWidth);
                w.loadTransposed(w.vT, x, rows + vOff, rowWidth);
                w.loadRows(w.k, x, rows + kOff, rowWidth);
                Arrays.fill(dk, 0f);
                Arrays.fill(dv, 0f);
                for (int h = kvh * group; h < (kvh + 1) * group; h++) {
                    long qOff = (long) h * headDim;
                    for (int t = 0; t < seq; t++) {
                        int n = t + 1;
                        long oRow = outRows + (long) t * outWidth + qOff;
                        float rowLse = get(l, ((long) b * nHead + h) * seq + t);
                        float delta = dot(dos, oRow, o, oRow, headDim);
                        w.loadRow(w.q, x, rows + (long) t * rowWidth + qOff, 1f);
                        w.loadRow(w.dout, dos, oRow, 1f);
                        w.scores(w.s, w.q, w.kT, n);
                        w.scores(w.dp, w.dout, w.vT, n);
                        Arrays.fill(w.acc, 0f);
                        for (int j = 0; j < n; j++) {
                            float prob = (float) Math.exp(w.s[j] * scale - rowLse);
                            float dscore = prob * (w.dp[j] - delta) * scale;
                            axpy(dscore, w.k, j * headDim, w.acc, 0, headDim);
                            axpy(dscore, w.q, 0, dk, j * headDim, headDim);
                            axpy(prob, w.dout, 0, dv, j * headDim, headDim);
                        }
                        MemorySegment.copy(w.acc, 0, dx, JAVA_FLOAT, 4 * (rows + (long) t * rowWidth + qOff), headDim);
                    }
                }
                for (int t = 0; t < seq; t++) {
                    long row = rows + (long) t * rowWidth;
                    MemorySegment.copy(dk, t * headDim, dx, JAVA_FLOAT, 4 * (row + kOff), headDim);
                    MemorySegment.copy(dv, t * headDim, dx, JAVA_FLOAT, 4 * (row + vOff), headDim);
                }
            }
        });
    }

    /**
     * One thread's copies of a head's keys and values in heap arrays. Keys (and values, in backward) are also held
     * transposed, [headDim][seq rounded up to the vector length], so that a query's scores against all keys are
     * vector FMAs along the key axis rather than one horizontal reduction per key.
     */
    private static final class HeadScratch {
        final int seq, seqPadded, headDim;
        final float[] kT, vT, k, v, q, dout, s, dp, acc;

        HeadScratch(int seq, int headDim) {
            this.seq = seq;
            this.headDim = headDim;
            this.seqPadded = (seq + 4 * L - 1) / (4 * L) * (4 * L);
            kT = new float[headDim * seqPadded];
            vT = new float[headDim * seqPadded];
            k = new float[seq * headDim];
            v = new float[seq * headDim];
            q = new float[headDim];
            dout = new float[headDim];
            s = new float[seqPadded];
            dp = new float[seqPadded];
            acc = new float[headDim];
        }

        /** dst[d * seqPadded + j] = src[first + j * stride + d]. */
        void loadTransposed(float[] dst, MemorySegment src, long first, int stride) {
            for (int j = 0; j < seq; j++) {
                long base = first + (long) j * stride;
                for (int d = 0; d < headDim; d++) dst[d * seqPadded + j] = get(src, base + d);
            }
        }

        /** dst[j * headDim + d] = src[first + j * stride + d]. */
        void loadRows(float[] dst, MemorySegment src, long first, int stride) {
            for (int j = 0; j < seq; j++) {
                MemorySegment.copy(src, JAVA_FLOAT, 4 * (first + (long) j * stride), dst, j * headDim, headDim);
            }
        }

        void loadRow(float[] dst, MemorySegment src, long first, float scale) {
            MemorySegment.copy(src, JAVA_FLOAT, 4 * first, dst, 0, headDim);
            if (scale != 1f) for (int d = 0; d < headDim; d++) dst[d] *= scale;
        }

        /** out[j] = Σ_d row[d]·colsT[d][j] for j < n (and a few past n, up to the next multiple of 4 vectors). */
        void scores(float[] out, float[] row, float[] colsT, int n) {
            int end = (n + 4 * L - 1) / (4 * L) * (4 * L);
            for (int j = 0; j < end; j += 4 * L) {
                FloatVector a0 = FloatVector.zero(S), a1 = a0, a2 = a0, a3 = a0;
                for (int d = 0; d < headDim; d++) {
                    FloatVector r = FloatVector.broadcast(S, row[d]);
                    int c = d * seqPadded + j;
                    a0 = FloatVector.fromArray(S, colsT, c).fma(r, a0);
                    a1 = FloatVector.fromArray(S, colsT, c + L).fma(r, a1);
                    a2 = FloatVector.fromArray(S, colsT, c + 2 * L).fma(r, a2);
                    a3 = FloatVector.fromArray(S, colsT, c + 3 * L).fma(r, a3);
                }
                a0.intoArray(out, j);
                a1.intoArray(out, j + L);
                a2.intoArray(out, j + 2 * L);
                a3.intoArray(out, j + 3 * L);
            }
        }
    }

    /** y[yi+j] += alpha·x[xi+j] for j < n, on heap arrays. */
    private static void axpy(float alpha, float[] x, int xi, float[] y, int yi, int n) {
        int j = 0;
        FloatVector va = FloatVector.broadcast(S, alpha);
        for (; j <= n - L; j += L) {
            FloatVector.fromArray(S, x, xi + j).fma(va, FloatVector.fromArray(S, y, yi + j)).intoArray(y, yi + j);
        }
        for (; j < n; j++) y[yi + j] += alpha * x[xi + j];
    }
}
