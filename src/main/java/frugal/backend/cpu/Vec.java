package frugal.backend.cpu;

import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.VectorOperators;
import jdk.incubator.vector.VectorSpecies;

import java.lang.foreign.MemorySegment;
import java.nio.ByteOrder;

import static java.lang.foreign.ValueLayout.JAVA_FLOAT;

/** Small vectorized building blocks over float32 host segments, indexed in elements. */
final class Vec {
    static final VectorSpecies<Float> S = FloatVector.SPECIES_PREFERRED;
    static final int L = S.length();
    private static final ByteOrder NATIVE = ByteOrder.nativeOrder();

    private Vec() {
    }

    static FloatVector load(MemorySegment m, long i) {
        return FloatVector.fromMemorySegment(S, m, i * 4, NATIVE);
    }

    static void store(FloatVector v, MemorySegment m, long i) {
        v.intoMemorySegment(m, i * 4, NATIVE);
    }

    static float get(MemorySegment m, long i) {
        return m.getAtIndex(JAVA_FLOAT, i);
    }

    static void set(MemorySegment m, long i, float v) {
        m.setAtIndex(JAVA_FLOAT, i, v);
    }

    /** Σ a[ai+j]·b[bi+j] for j < n. */
    static float dot(MemorySegment a, long ai, MemorySegment b, long bi, int n) {
        int j = 0;
        FloatVector acc = FloatVector.zero(S);
        for (; j <= n - L; j += L) acc = load(a, ai + j).fma(load(b, bi + j), acc);
        float s = sumLanes(acc);
        for (; j < n; j++) s += get(a, ai + j) * get(b, bi + j);
        return s;
    }

    /** y[yi+j] += alpha·x[xi+j] for j < n. */
    static void axpy(float alpha, MemorySegment x, long xi, MemorySegment y, long yi, int n) {
        int j = 0;
        FloatVector va = FloatVector.broadcast(S, alpha);
        for (; j <= n - L; j += L) store(load(x, xi + j).fma(va, load(y, yi + j)), y, yi + j);
        for (; j < n; j++) set(y, yi + j, get(y, yi + j) + alpha * get(x, xi + j));
    }

    /** Σ x[xi+j] for j < n. */
    /** out[i] = a[i] + b[i] for i in [from, to). */
    static void add(MemorySegment out, MemorySegment a, MemorySegment b, long from, long to) {
        long i = from;
        for (; i <= to - L; i += L) store(load(a, i).add(load(b, i)), out, i);
        for (; i < to; i++) set(out, i, get(a, i) + get(b, i));
    }

    static float sum(MemorySegment x, long xi, int n) {
        int j = 0;
        FloatVector acc = FloatVector.zero(S);
        for (; j <= n - L; j += L) acc = acc.add(load(x, xi + j));
        float s = sumLanes(acc);
        for (; j < n; j++) s += get(x, xi + j);
        return s;
    }

    /**
     * The lanes of v added in lane order. Not {@code reduceLanes(ADD)}: that may add in any order (a tree once C2
     * compiles it, a loop in the interpreter), so its bits would depend on how warm the JIT is.
     */
    static float sumLanes(FloatVector v) {
        // Through an array: lane(i) with a non-constant i is not intrinsified and made every row reduction ~50x slower.
        float[] lanes = new float[L];
        v.intoArray(lanes, 0);
        float s = 0;
        for (float x : lanes) s += x;
        return s;
    }

    /** max of x[xi+j] for j < n (any order gives the same max). */
    static float max(MemorySegment x, long xi, int n) {
        int j = 0;
        float m = Float.NEGATIVE_INFINITY;
        if (n >= L) {
            FloatVector acc = load(x, xi);
            for (j = L; j <= n - L; j += L) acc = acc.max(load(x, xi + j));
            m = acc.reduceLanes(VectorOperators.MAX);
        }
        for (; j < n; j++) m = Math.max(m, get(x, xi + j));
        return m;
    }
}
