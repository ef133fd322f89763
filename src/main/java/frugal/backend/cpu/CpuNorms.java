package frugal.backend.cpu;

import frugal.quant.QuantFormat;
import frugal.quant.Quantized;
import frugal.tensor.Tensor;
import jdk.incubator.vector.FloatVector;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;

import static frugal.backend.cpu.Vec.L;
import static frugal.backend.cpu.Vec.S;
import static frugal.backend.cpu.Vec.get;
import static frugal.backend.cpu.Vec.load;
import static frugal.backend.cpu.Vec.set;
import static frugal.backend.cpu.Vec.store;

/** LayerNorm and RMSNorm, forward and backward; statistics in float64 for exactness. */
final class CpuNorms {
    private CpuNorms() {
    }

    static void layerNormForward(Tensor out, Tensor mean, Tensor rstd, Tensor x, Tensor weight, Tensor bias,
                                 int rows, int cols, float eps) {
        MemorySegment o = out.data(), xs = x.data(), w = weight.data(), b = bias.data();
        Parallel.forRange(rows, 8, (r0, r1) -> {
            for (int r = r0; r < r1; r++) layerNormRow(o, mean, rstd, xs, w, b, r, cols, eps);
        });
    }

    /**
     * One row of {@link #layerNormForward}. A method of its own so that C2 compiles it as a whole after a few hundred
     * calls: as an on-stack replacement of the loops inside the range lambda, it was at times left in slower tiers
     * (layernorm at 40× its usual time for a whole run).
     */
    private static void layerNormRow(MemorySegment o, Tensor mean, Tensor rstd, MemorySegment xs, MemorySegment w,
                                     MemorySegment b, int r, int cols, float eps) {
        long base = (long) r * cols;
        double m = 0;
        for (int c = 0; c < cols; c++) m += get(xs, base + c);
        m /= cols;
        double var = 0;
        for (int c = 0; c < cols; c++) {
            double d = get(xs, base + c) - m;
            var += d * d;
        }
        float s = (float) (1.0 / Math.sqrt(var / cols + eps));
        float mf = (float) m;
        int c = 0;
        FloatVector vm = FloatVector.broadcast(S, mf), vs = FloatVector.broadcast(S, s);
        for (; c <= cols - L; c += L) {
            store(load(xs, base + c).sub(vm).mul(vs).fma(load(w, c), load(b, c)), o, base + c);
        }
        for (; c < cols; c++) set(o, base + c, (get(xs, base + c) - mf) * s * get(w, c) + get(b, c));
        mean.set(r, mf);
        rstd.set(r, s);
    }

    /**
     * layerNormForward of x, or of sum = x + r where r is non-null (written to sum), that quantizes for the stash the
     * normalized rows into xq and the output into outq, each where non-null, a range of rows right after it is computed
     * (while it is in cache): the bytes of {@link CpuQuant#quantize}. cols a multiple of their blocks.
     */
    static void layerNormForwardQuantized(Tensor sum, Tensor out, Tensor mean, Tensor rstd, Tensor x, Tensor r, Tensor weight,
                                          Tensor bias, int rows, int cols, float eps, Quantized xq, Quantized outq) {
        MemorySegment o = out.data(), xs = x.data(), w = weight.data(), b = bias.data();
        MemorySegment in = r == null ? xs : sum.data(), rs = r == null ? null : r.data();
        long n = (long) rows * cols;
        Parallel.forRange(rows, 8, (r0, r1) -> {
            if (rs != null) Vec.add(in, xs, rs, (long) r0 * cols, (long) r1 * cols); // as CpuBackend.add
            for (int row = r0; row < r1; row++) layerNormRow(o, mean, rstd, in, w, b, row, cols, eps);
            if (xq != null) quantizeRows(xq, in, n, r0, r1, cols);
            if (outq != null) quantizeRows(outq, o, n, r0, r1, cols);
        });
    }

    private static void quantizeRows(Quantized q, MemorySegment x, long n, int r0, int r1, int cols) {
        int block = q.format().block();
        CpuQuant.quantizeBlocks(q.packed(), q.scales(), x, n, q.format(), QuantFormat.seedBits(q.seed()),
                Math.toIntExact((long) r0 * cols / block), Math.toIntExact((long) r1 * cols / block));
    }

    static void layerNormBackward(Tensor dx, Tensor dweight, Tensor dbias, Tensor dout, Tensor x, Tensor weight,
                                  Tensor mean, Tensor rstd, int rows, int cols) {
        layerNormBackward(dx, dweight, dbias, dout, x, null, weight, mean, rstd, rows, cols);
    }

    /** layerNormBackward reading x from its quantized copy, a range of rows dequantized at a time (cols a multiple of its blocks). */
    static void layerNormBackward(Tensor dx, Tensor dweight, Tensor dbias, Tensor dout, Quantized xq, Tensor weight,
                                  Tensor mean, Tensor rstd, int rows, int cols) {
        layerNormBackward(dx, dweight, dbias, dout, null, xq, weight, mean, rstd, rows, cols);
    }

    private static void layerNormBackward(Tensor dx, Tensor dweight, Tensor dbias, Tensor dout, Tensor x, Quantized xq,
                                          Tensor weight, Tensor mean, Tensor rstd, int rows, int cols) {
        MemorySegment dxs = dx.data(), dos = dout.data(), w = weight.data();
        ColumnSums sums = new ColumnSums(2, cols);
        Parallel.forRange(rows, 8, (r0, r1) -> {
            float[] part = sums.part(r0);
            try (Arena arena = xq == null ? null : Arena.ofConfined()) {
                MemorySegment xs = x == null ? null : x.data();
                long first = 0; // x's element i is xs[i - first]
                if (xq != null) {
                    int block = xq.format().block();
                    first = (long) r0 * cols;
                    xs = arena.allocate((long) (r1 - r0) * cols * 4, 64);
                    CpuQuant.dequantizeBlocks(xs, first, xq.packed(), xq.scales(), (long) rows * cols, xq.format(),
                            Math.toIntExact(first / block), Math.toIntExact((long) r1 * cols / block));
                }
                for (int r = r0; r < r1; r++) {
                    long base = (long) r * cols, xb = base - first;
                    float m = mean.get(r), s = rstd.get(r);
                    double dnormMean = 0, dnormNormMean = 0;
                    for (int c = 0; c < cols; c++) {
                        float norm = (get(xs, xb + c) - m) * s;
                        float dnorm = get(dos, base + c) * get(w, c);
                        dnormMean += dnorm;
                        dnormNormMean += dnorm * norm;
                    }
                    float a = (float) (dnormMean / cols), bn = (float) (dnormNormMean / cols);
                    for (int c = 0; c < cols; c++) {
                        float d = get(dos, base + c);
                        float norm = (get(xs, xb + c) - m) * s;
                        part[c] += d;
                        part[cols + c] += norm * d;
                        float dnorm = d * get(w, c);
                        set(dxs, base + c, get(dxs, base + c) + (dnorm - a - norm * bn) * s);
                    }
                }
            }
        });
        sums.addInto(0, dbias);
        sums.addInto(1, dweight);
    }

    static void rmsNormForward(Tensor out, Tensor rstd, Tensor x, Tensor weight, int rows, int cols, float eps) {
        MemorySegment o = out.data(), xs = x.data(), w = weight.data();
        Parallel.forRange(rows, 8, (r0, r1) -> {
            for (int r = r0; r < r1; r++) {
                long base = (long) r * cols;
                double ss = 0;
                for (int c = 0; c < cols; c++) {
                    double v = get(xs, base + c);
                    ss += v * v;
                }
                float s = (float) (1.0 / Math.sqrt(ss / cols + eps));
                int c = 0;
                FloatVector vs = FloatVector.broadcast(S, s);
                for (; c <= cols - L; c += L) store(load(xs, base + c).mul(vs).mul(load(w, c)), o, base + c);
                for (; c < cols; c++) set(o, base + c, get(xs, base + c) * s * get(w, c));
                rstd.set(r, s);
            }
        });
    }

    static void rmsNormBackward(Tensor dx, Tensor dweight, Tensor dout, Tensor x, Tensor weight, Tensor rstd,
                                int rows, int cols) {
        MemorySegment dxs = dx.data(), dos = dout.data(), xs = x.data(), w = weight.data();
        ColumnSums sums = new ColumnSums(1, cols);
        Parallel.forRange(rows, 8, (r0, r1) -> {
            float[] part = sums.part(r0);
            for (int r = r0; r < r1; r++) {
                long base = (long) r * cols;
                float s = rstd.get(r);
                double dnormNormMean = 0;
                for (int c = 0; c < cols; c++) {
                    dnormNormMean += get(dos, base + c) * get(w, c) * get(xs, base + c) * s;
                }
                float bn = (float) (dnormNormMean / cols);
                for (int c = 0; c < cols; c++) {
                    float d = get(dos, base + c);
                    float norm = get(xs, base + c) * s;
                    part[c] += norm * d;
                    set(dxs, base + c, get(dxs, base + c) + (d * get(w, c) - norm * bn) * s);
                }
            }
        });
        sums.addInto(0, dweight);
    }

    /** Per-thread partial column sums (keyed by the chunk's first row), added into gradients at the end. */
    private static final class ColumnSums {
        private final int cols;
        private final int count;
        private final java.util.concurrent.ConcurrentHashMap<Integer, float[]> parts = new java.util.concurrent.ConcurrentHashMap<>();

        ColumnSums(int count, int cols) {
            this.count = count;
            this.cols = cols;
        }

        float[] part(int chunkStart) {
            return parts.computeIfAbsent(chunkStart, k -> new float[count * cols]);
        }

        void addInto(int which, Tensor grad) {
            // In row order, not the map's (which follows the threads' timing): float sums depend on the order of their terms.
            for (float[] p : new java.util.TreeMap<>(parts).values()) {
                for (int c = 0; c < cols; c++) grad.set(c, grad.get(c) + p[which * cols + c]);
            }
        }
    }
}
