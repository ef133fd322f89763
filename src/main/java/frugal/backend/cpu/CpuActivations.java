package frugal.backend.cpu;

import frugal.quant.QuantFormat;
import frugal.quant.Quantized;
import frugal.tensor.Tensor;
import jdk.incubator.vector.FloatVector;

import java.lang.foreign.MemorySegment;

import static frugal.backend.cpu.Vec.L;
import static frugal.backend.cpu.Vec.S;
import static frugal.backend.cpu.Vec.get;
import static frugal.backend.cpu.Vec.load;
import static frugal.backend.cpu.Vec.set;
import static frugal.backend.cpu.Vec.store;

/**
 * GELU (tanh form) and SwiGLU, forward and backward. Each goes in blocks: its exponentials are taken in one pass
 * over a small array ({@link VecMath#exp(float[], int)}) between a pass that computes their arguments and one that
 * combines the results.
 */
final class CpuActivations {
    private static final float GELU_SCALE = (float) Math.sqrt(2.0 / Math.PI);
    private static final float GELU_CUBE = 0.044715f;
    /**
     * GELU(v) = ½v(1 + tanh u) with u = GELU_SCALE·(v + GELU_CUBE·v³), which is v / (1 + e^a) for a = −2u
     * = v·(A + B·v²); its derivative is s·(1 + v·e^a·s·(C + D·v²)) with s = 1 / (1 + e^a) and C + D·v² = 2u'.
     */
    private static final float A = -2 * GELU_SCALE, B = -2 * GELU_SCALE * GELU_CUBE;
    private static final float C = 2 * GELU_SCALE, D = 6 * GELU_SCALE * GELU_CUBE;
    /** Values per block: the scratch array stays in L1. */
    private static final int BLOCK = 1024;

    private CpuActivations() {
    }

    /** Combines a block of [start, start + len) with e holding the exponentials its pass before computed. */
    @FunctionalInterface
    private interface Block {
        void combine(long start, int len, float[] e);
    }

    static void geluForward(Tensor out, Tensor x, long n) {
        MemorySegment o = out.data(), xs = x.data();
        geluBlocks(xs, n, geluInto(o, xs));
    }

    /**
     * For backward, GELU's output from the stash's quantized copy of its input: act = GELU of its dequantized values, and
     * those into pre where non-null (else act holds them first), a range of blocks at a time (dequantized, then GELU of
     * them while they are in cache).
     */
    static void geluRecompute(Tensor act, Tensor pre, Quantized preq, long n) {
        QuantFormat f = preq.format();
        MemorySegment o = act.data(), xs = pre != null ? pre.data() : o;
        Parallel.forRange(Math.toIntExact(f.blocks(n)), 64, (b0, b1) -> {
            CpuQuant.dequantizeBlocks(xs, 0, preq.packed(), preq.scales(), n, f, b0, b1);
            gelu(o, xs, (long) b0 * f.block(), Math.min(n, (long) b1 * f.block()), geluScratch());
        });
    }

    /** The scratch of {@link #gelu}: room for the exponentials of one block of values. */
    static float[] geluScratch() {
        return new float[BLOCK];
    }

    /**
     * act[from, to) = GELU(x[from, to)), the values geluForward writes; act may be x (in place). e: a
     * {@link #geluScratch}, which callers that go a short range at a time keep rather than allocate each time.
     */
    static void gelu(MemorySegment act, MemorySegment x, long from, long to, float[] e) {
        geluRange(x, from, to, geluInto(act, x), e);
    }

    /** The combining pass of geluForward: out = x / (1 + e) (each value read before it is written: o may be xs). */
    private static Block geluInto(MemorySegment o, MemorySegment xs) {
        return (start, len, e) -> {
            int j = 0;
            for (; j <= len - L; j += L) {
                FloatVector v = load(xs, start + j);
                store(v.div(FloatVector.fromArray(S, e, j).add(1f)), o, start + j);
            }
            for (; j < len; j++) set(o, start + j, get(xs, start + j) / (e[j] + 1f));
        };
    }

    static void geluBackward(Tensor dx, Tensor dout, Tensor x, long n) {
        MemorySegment d = dx.data(), dos = dout.data(), xs = x.data();
        geluBlocks(xs, n, (start, len, e) -> {
            int j = 0;
            for (; j <= len - L; j += L) {
                FloatVector v = load(xs, start + j), ev = FloatVector.fromArray(S, e, j);
                FloatVector s = FloatVector.broadcast(S, 1f).div(ev.add(1f));
                FloatVector q = ev.mul(s).mul(v).mul(v.mul(v).fma(D, C));
                store(q.add(1f).mul(s).mul(load(dos, start + j)), d, start + j);
            }
            for (; j < len; j++) {
                float v = get(xs, start + j), s = 1f / (e[j] + 1f);
                float q = e[j] * s * v * Math.fma(v * v, D, C);
                set(d, start + j, (q + 1f) * s * get(dos, start + j));
            }
        });
    }

    /** Runs {@code combine} over blocks of x[0, n) with e = e^a, a = v·(A + B·v²) for the block's values v. */
    private static void geluBlocks(MemorySegment xs, long n, Block combine) {
        Parallel.forElements(n, (from, to) -> geluRange(xs, from, to, combine, geluScratch()));
    }

    /** [from, to) of geluBlocks: the exponentials of a block of values into e (a geluScratch), then combine. */
    private static void geluRange(MemorySegment xs, long from, long to, Block combine, float[] e) {
        for (long start = from; start < to; start += BLOCK) {
            int len = (int) Math.min(BLOCK, to - start);
            int j = 0;
            for (; j <= len - L; j += L) {
                FloatVector v = load(xs, start + j);
                v.mul(v).fma(B, A).mul(v).intoArray(e, j);
            }
            for (; j < len; j++) {
                float v = get(xs, start + j);
                e[j] = Math.fma(v * v, B, A) * v;
            }
            VecMath.exp(e, len);
            combine.combine(start, len, e);
        }
    }

    static void swigluForward(Tensor out, Tensor gateUp, int rows, int hidden) {
        MemorySegment o = out.data(), gu = gateUp.data();
        swigluBlocks(gu, rows, hidden, (g, y, len, e) -> {
            long u = g + hidden;
            int j = 0;
            for (; j <= len - L; j += L) {
                FloatVector gv = load(gu, g + j), uv = load(gu, u + j);
                store(gv.div(FloatVector.fromArray(S, e, j).add(1f)).mul(uv), o, y + j);
            }
            for (; j < len; j++) set(o, y + j, get(gu, g + j) / (e[j] + 1f) * get(gu, u + j));
        });
    }

    static void swigluBackward(Tensor dGateUp, Tensor dout, Tensor gateUp, int rows, int hidden) {
        MemorySegment d = dGateUp.data(), dos = dout.data(), gu = gateUp.data();
        swigluBlocks(gu, rows, hidden, (g, y, len, e) -> {
            long u = g + hidden;
            int j = 0;
            for (; j <= len - L; j += L) {
                FloatVector gv = load(gu, g + j), uv = load(gu, u + j), dy = load(dos, y + j);
                FloatVector sig = FloatVector.broadcast(S, 1f).div(FloatVector.fromArray(S, e, j).add(1f));
                FloatVector dsilu = sig.mul(gv.mul(sig.neg().add(1f)).add(1f));
                store(dy.mul(uv).mul(dsilu), d, g + j);
                store(dy.mul(gv.mul(sig)), d, u + j);
            }
            for (; j < len; j++) {
                float gv = get(gu, g + j), uv = get(gu, u + j), dy = get(dos, y + j);
                float sig = 1f / (e[j] + 1f);
                set(d, g + j, dy * uv * (sig * (gv * (1f - sig) + 1f)));
                set(d, u + j, dy * (gv * sig));
            }
        });
    }

    /** Combines a block of len gates at gateUp[g] (up values at g + hidden) and outputs at [y], e holding e^−gate. */
    @FunctionalInterface
    private interface GateBlock {
        void combine(long g, long y, int len, float[] e);
    }

    /** Runs {@code combine} over the rows of gateUp in blocks (SiLU's sigmoid is 1 / (1 + e^−gate)). */
    private static void swigluBlocks(MemorySegment gu, int rows, int hidden, GateBlock combine) {
        Parallel.forRange(rows, 4, (r0, r1) -> {
            float[] e = new float[BLOCK];
            for (int r = r0; r < r1; r++) {
                for (int start = 0; start < hidden; start += BLOCK) {
                    int len = Math.min(BLOCK, hidden - start);
                    long g = 2L * r * hidden + start;
                    int j = 0;
                    for (; j <= len - L; j += L) load(gu, g + j).neg().intoArray(e, j);
                    for (; j < len; j++) e[j] = -get(gu, g + j);
                    VecMath.exp(e, len);
                    combine.combine(g, (long) r * hidden + start, len, e);
                }
            }
        });
    }
}
