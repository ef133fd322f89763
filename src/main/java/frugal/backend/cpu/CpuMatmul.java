package frugal.backend.cpu;

import frugal.tensor.DType;
import frugal.tensor.Tensor;
import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.VectorSpecies;

import java.lang.foreign.MemorySegment;
import java.nio.ByteOrder;
import java.util.concurrent.atomic.AtomicInteger;

import static java.lang.foreign.ValueLayout.JAVA_FLOAT_UNALIGNED;

/**
 * Single-precision GEMM on host memory: out[m,n] (+)= op(a)·op(b), the contract of
 * {@link frugal.backend.Backend#matmul}.
 *
 * <p>Goto/BLIS-style: the operand with the smaller outer dimension ("shared") is packed once per K
 * super-block by all threads together; the other ("own") operand is packed per task and per K block
 * ({@value #KC}) into per-thread buffers. Packed A panels hold {@value #MR} rows interleaved along k,
 * packed B panels hold NR = {@value #NV} vectors of columns along k, so all four transpose cases reduce
 * to one register-blocked micro-kernel (MR × NR accumulators, broadcast-A × vector-B FMAs). Edges are
 * zero-padded in the packed panels; every tile goes through a small heap buffer on its way to C. Tasks are handed out
 * dynamically to the {@link Parallel} threads. A task of the last K super-block may hand the part of C it finished to
 * an {@link Epilogue}, on its own thread while the part is in cache.
 */
public final class CpuMatmul {
    static final VectorSpecies<Float> S = FloatVector.SPECIES_PREFERRED;
    static final int L = S.length();
    static final long VB = 4L * L;
    static final int MR = 6, NV = 3, NR = NV * L;
    /** K block: one B micro-panel (KC × NR floats) stays in L1 while A panels stream past it. */
    static final int KC = 256;
    /** Most floats of the shared operand packed at once (a K super-block). */
    static final int SHARED_LIMIT = 1 << 21;
    /** Most rows (or columns) of the shared operand one task covers. */
    static final int SHARED_BLOCK = 1024;
    /** Preferred extent of one task along the own dimension. */
    static final int OWN_BLOCK = 384;
    /** Below this many FLOPs the product runs on the calling thread. */
    static final double PARALLEL_FLOPS = 4e6;
    private static final ByteOrder NATIVE = ByteOrder.nativeOrder();

    private CpuMatmul() {
    }

    private static final class Work {
        float[] own = new float[0];
        final float[] tile = new float[MR * NR];

        float[] own(int size) {
            if (own.length < size) own = new float[size];
            return own;
        }
    }

    private static final ThreadLocal<Work> WORK = ThreadLocal.withInitial(Work::new);
    private static final ThreadLocal<float[][]> SHARED = ThreadLocal.withInitial(() -> new float[1][0]);

    /** Work on a finished part of a product, rows [r0, r1) × columns [c0, c1) of out, which hold their final values. */
    @FunctionalInterface
    interface Epilogue {
        void finish(int r0, int r1, int c0, int c1);
    }

    public static void matmul(Tensor out, Tensor a, Tensor b, int m, int n, int k,
                              boolean transA, boolean transB, boolean accumulate) {
        matmul(out, a, b, m, n, k, transA, transB, accumulate, 1, null);
    }

    /**
     * The product of a linear layer's forward, out[m,n] = a[m,k]·b[n,k]ᵀ (overwriting), that hands every part of out to
     * epilogue once the part is finished, on the thread that computed it. The parts tile out; each one's columns start
     * at a multiple of columnAlign, and end at one or at n.
     */
    static void linearForward(Tensor out, Tensor a, Tensor b, int m, int n, int k, int columnAlign, Epilogue epilogue) {
        matmul(out, a, b, m, n, k, false, true, false, columnAlign, epilogue);
    }

    private static void matmul(Tensor out, Tensor a, Tensor b, int m, int n, int k, boolean transA, boolean transB,
                               boolean accumulate, int columnAlign, Epilogue epilogue) {
        if (m < 0 || n < 0 || k < 0) throw new IllegalArgumentException("negative matmul size " + m + "x" + n + "x" + k);
        check(out, (long) m * n, "out");
        check(a, (long) m * k, "a");
        check(b, (long) k * n, "b");
        if (m == 0 || n == 0) return;
        MemorySegment c = out.data();
        if (k == 0) {
            if (!accumulate) c.asSlice(0, (long) m * n * 4).fill((byte) 0);
            if (epilogue != null) epilogue.finish(0, m, 0, n);
            return;
        }
        new Gemm(c, a.data(), b.data(), m, n, k, transA, transB, accumulate, columnAlign, epilogue).run();
    }

    private static void check(Tensor t, long elements, String name) {
        if (t.dtype() != DType.F32) throw new IllegalArgumentException("matmul " + name + " must be F32, got " + t);
        if (t.size() < elements) {
            throw new IllegalArgumentException("matmul " + name + " " + t + " holds fewer than " + elements + " elements");
        }
    }

    private static final class Gemm {
        final MemorySegment c, a, b;
        final int m, n, k;
        final boolean transA, transB, accumulate, shareA, parallel;
        final int aPanels, bPanels;
        // shared operand: panels [0, sharedPanels), grouped into blocks of sharedBlock panels
        final int sharedPanels, sharedBlock, sharedBlocks;
        // own operand: panels [0, ownPanels), grouped into tasks of ownBlock panels
        final int ownPanels, ownBlock, ownBlocks;
        final int superK;
        final Epilogue epilogue;
        float[] shared;
        int ks, ksz;

        Gemm(MemorySegment c, MemorySegment a, MemorySegment b, int m, int n, int k,
             boolean transA, boolean transB, boolean accumulate, int columnAlign, Epilogue epilogue) {
            this.c = c;
            this.a = a;
            this.b = b;
            this.m = m;
            this.n = n;
            this.k = k;
            this.transA = transA;
            this.transB = transB;
            this.accumulate = accumulate;
            this.epilogue = epilogue;
            this.aPanels = (m + MR - 1) / MR;
            this.bPanels = (n + NR - 1) / NR;
            this.shareA = (long) aPanels * MR <= (long) bPanels * NR;
            this.parallel = Parallel.THREADS > 1 && 2.0 * m * n * k >= PARALLEL_FLOPS;
            int sharedWidth = shareA ? MR : NR, ownWidth = shareA ? NR : MR;
            this.sharedPanels = shareA ? aPanels : bPanels;
            this.ownPanels = shareA ? bPanels : aPanels;
            // tasks take a multiple of the fewest B panels spanning whole runs of columnAlign columns, so that no run
            // an epilogue works on (a quantization block) straddles two tasks
            int columnPanels = 1;
            while ((long) columnPanels * NR % columnAlign != 0) columnPanels++;
            this.sharedBlock = roundUp(Math.max(1, SHARED_BLOCK / sharedWidth), shareA ? 1 : columnPanels);
            this.sharedBlocks = (sharedPanels + sharedBlock - 1) / sharedBlock;
            int ob = Math.max(1, OWN_BLOCK / ownWidth);
            if (parallel) {
                // enough tasks for the threads to balance, but not so small that packing dominates
                int want = 4 * Parallel.THREADS;
                int per = (ownPanels * sharedBlocks + want - 1) / want;
                ob = Math.max(1, Math.min(ob, per));
            }
            this.ownBlock = roundUp(ob, shareA ? columnPanels : 1);
            this.ownBlocks = (ownPanels + ownBlock - 1) / ownBlock;
            long sharedRows = (long) sharedPanels * sharedWidth;
            int sk = (int) Math.max(KC, Math.min(k, SHARED_LIMIT / sharedRows / KC * KC));
            this.superK = Math.min(k, sk);
        }

        void run() {
            float[][] holder = SHARED.get();
            int sharedWidth = shareA ? MR : NR;
            int need = sharedPanels * sharedWidth * superK;
            if (holder[0].length < need) holder[0] = new float[need];
            shared = holder[0];
            for (ks = 0; ks < k; ks += superK) {
                ksz = Math.min(superK, k - ks);
                forTasks(sharedPanels, this::packShared);
                forTasks(sharedBlocks * ownBlocks, this::task);
            }
        }

        private void forTasks(int tasks, java.util.function.IntConsumer body) {
            if (!parallel || tasks <= 1) {
                for (int t = 0; t < tasks; t++) body.accept(t);
                return;
            }
            AtomicInteger next = new AtomicInteger();
            Parallel.forRange(Math.min(Parallel.THREADS, tasks), 1, (t0, t1) -> {
                for (int t; (t = next.getAndIncrement()) < tasks; ) body.accept(t);
            });
        }

        private void packShared(int panel) {
            if (shareA) packA(a, m, k, transA, panel * MR, ks, ksz, shared, panel * MR * ksz);
            else packB(b, k, n, transB, panel * NR, ks, ksz, shared, panel * NR * ksz);
        }

        private void task(int t) {
            int sb = t % sharedBlocks, ob = t / sharedBlocks;
            int s0 = sb * sharedBlock, s1 = Math.min(sharedPanels, s0 + sharedBlock);
            int o0 = ob * ownBlock, o1 = Math.min(ownPanels, o0 + ownBlock);
            Work w = WORK.get();
            int ownWidth = shareA ? NR : MR;
            float[] own = w.own((o1 - o0) * ownWidth * Math.min(KC, ksz));
            for (int pc = 0; pc < ksz; pc += KC) {
                int kc = Math.min(KC, ksz - pc), kg = ks + pc;
                boolean load = accumulate || kg > 0;
                if (shareA) {
                    for (int q = o0; q < o1; q++) packB(b, k, n, transB, q * NR, kg, kc, own, (q - o0) * NR * kc);
                    for (int q = o0; q < o1; q++) {
                        int bo = (q - o0) * NR * kc;
                        for (int p = s0; p < s1; p++) tile(w, shared, p * MR * ksz + pc * MR, own, bo, kc, p, q, load);
                    }
                } else {
                    for (int p = o0; p < o1; p++) packA(a, m, k, transA, p * MR, kg, kc, own, (p - o0) * MR * kc);
                    for (int q = s0; q < s1; q++) {
                        int bo = q * NR * ksz + pc * NR;
                        for (int p = o0; p < o1; p++) tile(w, own, (p - o0) * MR * kc, shared, bo, kc, p, q, load);
                    }
                }
            }
            if (epilogue != null && ks + ksz == k) {
                int p0 = shareA ? s0 : o0, p1 = shareA ? s1 : o1, q0 = shareA ? o0 : s0, q1 = shareA ? o1 : s1;
                epilogue.finish(p0 * MR, Math.min(m, p1 * MR), q0 * NR, Math.min(n, q1 * NR));
            }
        }

        private void tile(Work w, float[] ap, int ao, float[] bp, int bo, int kc, int p, int q, boolean load) {
            int i = p * MR, j = q * NR;
            int rows = Math.min(MR, m - i), cols = Math.min(NR, n - j);
            float[] tile = w.tile;
            kernel(ap, ao, bp, bo, kc, tile);
            if (cols == NR) {
                for (int r = 0; r < rows; r++) {
                    long co = 4L * ((long) (i + r) * n + j);
                    for (int v = 0; v < NV; v++) {
                        FloatVector x = FloatVector.fromArray(S, tile, r * NR + v * L);
                        if (load) x = x.add(FloatVector.fromMemorySegment(S, c, co + v * VB, NATIVE));
                        x.intoMemorySegment(c, co + v * VB, NATIVE);
                    }
                }
                return;
            }
            for (int r = 0; r < rows; r++) {
                long co = (long) (i + r) * n + j;
                for (int x = 0; x < cols; x++) {
                    float v = tile[r * NR + x];
                    if (load) v += c.getAtIndex(JAVA_FLOAT_UNALIGNED, co + x);
                    c.setAtIndex(JAVA_FLOAT_UNALIGNED, co + x, v);
                }
            }
        }
    }

    private static int roundUp(int x, int multiple) {
        return (x + multiple - 1) / multiple * multiple;
    }

    /**
     * Packs rows [i0, i0+MR) × k range [k0, k0+kc) of op(a) (op(a) is [m, k]) into dst[off + kk*MR + r],
     * zero-padding rows past m.
     */
    static void packA(MemorySegment a, int m, int k, boolean transA, int i0, int k0, int kc, float[] dst, int off) {
        int rows = Math.min(MR, m - i0);
        if (transA) {
            // a is [k, m]: MR consecutive floats per k
            for (int kk = 0; kk < kc; kk++) {
                long base = (long) (k0 + kk) * m + i0;
                int d = off + kk * MR;
                int r = 0;
                for (; r < rows; r++) dst[d + r] = a.getAtIndex(JAVA_FLOAT_UNALIGNED, base + r);
                for (; r < MR; r++) dst[d + r] = 0f;
            }
        } else {
            // a is [m, k]: each row is contiguous along k
            for (int r = 0; r < MR; r++) {
                if (r < rows) {
                    long base = (long) (i0 + r) * k + k0;
                    for (int kk = 0; kk < kc; kk++) dst[off + kk * MR + r] = a.getAtIndex(JAVA_FLOAT_UNALIGNED, base + kk);
                } else {
                    for (int kk = 0; kk < kc; kk++) dst[off + kk * MR + r] = 0f;
                }
            }
        }
    }

    /**
     * Packs k range [k0, k0+kc) × columns [j0, j0+NR) of op(b) (op(b) is [k, n]) into dst[off + kk*NR + x],
     * zero-padding columns past n.
     */
    static void packB(MemorySegment b, int k, int n, boolean transB, int j0, int k0, int kc, float[] dst, int off) {
        int cols = Math.min(NR, n - j0);
        if (transB) {
            // b is [n, k]: each column of op(b) is a contiguous row of b
            for (int x = 0; x < NR; x++) {
                if (x < cols) {
                    long base = (long) (j0 + x) * k + k0;
                    for (int kk = 0; kk < kc; kk++) dst[off + kk * NR + x] = b.getAtIndex(JAVA_FLOAT_UNALIGNED, base + kk);
                } else {
                    for (int kk = 0; kk < kc; kk++) dst[off + kk * NR + x] = 0f;
                }
            }
        } else if (cols == NR) {
            for (int kk = 0; kk < kc; kk++) {
                long base = 4L * ((long) (k0 + kk) * n + j0);
                int d = off + kk * NR;
                for (int v = 0; v < NV; v++) {
                    FloatVector.fromMemorySegment(S, b, base + v * VB, NATIVE).intoArray(dst, d + v * L);
                }
            }
        } else {
            for (int kk = 0; kk < kc; kk++) {
                long base = (long) (k0 + kk) * n + j0;
                int d = off + kk * NR;
                int x = 0;
                for (; x < cols; x++) dst[d + x] = b.getAtIndex(JAVA_FLOAT_UNALIGNED, base + x);
                for (; x < NR; x++) dst[d + x] = 0f;
            }
        }
    }

    /**
     * tile[6 × 3L] = Apanel[kc × 6] · Bpanel[kc × 3L]. The 18 accumulators live in registers; the result goes to
     * a heap tile rather than straight to C because a kernel that also loads and stores C through memory
     * segments is too big for C1's tier-3 compile and, in C2, for inlining, either of which leaves the Vector
     * API unintrinsified (boxed vectors, ~100× slower).
     */
    static void kernel(float[] ap, int ao, float[] bp, int bo, int kc, float[] tile) {
        FloatVector z = FloatVector.zero(S);
        FloatVector c00 = z, c01 = z, c02 = z;
        FloatVector c10 = z, c11 = z, c12 = z;
        FloatVector c20 = z, c21 = z, c22 = z;
        FloatVector c30 = z, c31 = z, c32 = z;
        FloatVector c40 = z, c41 = z, c42 = z;
        FloatVector c50 = z, c51 = z, c52 = z;
        for (int p = 0; p < kc; p++) {
            int bi = bo + p * NR, ai = ao + p * MR;
            FloatVector b0 = FloatVector.fromArray(S, bp, bi + 0 * L);
            FloatVector b1 = FloatVector.fromArray(S, bp, bi + 1 * L);
            FloatVector b2 = FloatVector.fromArray(S, bp, bi + 2 * L);
            FloatVector a0 = FloatVector.broadcast(S, ap[ai + 0]);
            c00 = a0.fma(b0, c00); c01 = a0.fma(b1, c01); c02 = a0.fma(b2, c02);
            FloatVector a1 = FloatVector.broadcast(S, ap[ai + 1]);
            c10 = a1.fma(b0, c10); c11 = a1.fma(b1, c11); c12 = a1.fma(b2, c12);
            FloatVector a2 = FloatVector.broadcast(S, ap[ai + 2]);
            c20 = a2.fma(b0, c20); c21 = a2.fma(b1, c21); c22 = a2.fma(b2, c22);
            FloatVector a3 = FloatVector.broadcast(S, ap[ai + 3]);
            c30 = a3.fma(b0, c30); c31 = a3.fma(b1, c31); c32 = a3.fma(b2, c32);
            FloatVector a4 = FloatVector.broadcast(S, ap[ai + 4]);
            c40 = a4.fma(b0, c40); c41 = a4.fma(b1, c41); c42 = a4.fma(b2, c42);
            FloatVector a5 = FloatVector.broadcast(S, ap[ai + 5]);
            c50 = a5.fma(b0, c50); c51 = a5.fma(b1, c51); c52 = a5.fma(b2, c52);
        }
        c00.intoArray(tile, 0 * NR); c01.intoArray(tile, 0 * NR + L); c02.intoArray(tile, 0 * NR + 2 * L);
        c10.intoArray(tile, 1 * NR); c11.intoArray(tile, 1 * NR + L); c12.intoArray(tile, 1 * NR + 2 * L);
        c20.intoArray(tile, 2 * NR); c21.intoArray(tile, 2 * NR + L); c22.intoArray(tile, 2 * NR + 2 * L);
        c30.intoArray(tile, 3 * NR); c31.intoArray(tile, 3 * NR + L); c32.intoArray(tile, 3 * NR + 2 * L);
        c40.intoArray(tile, 4 * NR); c41.intoArray(tile, 4 * NR + L); c42.intoArray(tile, 4 * NR + 2 * L);
        c50.intoArray(tile, 5 * NR); c51.intoArray(tile, 5 * NR + L); c52.intoArray(tile, 5 * NR + 2 * L);
    }
}
