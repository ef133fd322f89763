package frugal.backend.cpu;

import jdk.incubator.vector.FloatVector;

import static frugal.backend.cpu.Vec.L;
import static frugal.backend.cpu.Vec.S;

/**
 * exp built from correctly rounded operations only (add, multiply, fused multiply-add, min/max, integer arithmetic
 * on the bits), as Cephes' expf: relative error about 2e-7.
 * <p>
 * Why not {@code lanewise(VectorOperators.EXP)} (or TANH): once C2 compiles a loop that runs Intel SVML, while the
 * interpreter and C1 run {@code Math.exp} lane by lane, and the two differ in the last bit. A kernel's result would
 * then depend on how warm the JIT is, and a resumed training run would not repeat the uninterrupted one. This gives
 * the same bits in every tier; the scalar form repeats the vector form operation for operation, so the tail of an
 * array agrees with its body.
 */
final class VecMath {
    /**
     * exp's inputs are clamped to [EXP_LO, EXP_HI]. At the top 2^n stays finite (e^88 ≈ 1.7e38); near the bottom n
     * reaches −127, whose exponent bits are those of 0, so exp flushes to 0 below about −87.7 (where e^x is subnormal).
     */
    private static final float EXP_HI = 88f, EXP_LO = -88f;
    private static final float LOG2E = 1.44269504088896341f;
    /** ln 2 split in two so that n·LN2_HI is exact (Cody–Waite). */
    private static final float LN2_HI = 0.693359375f, LN2_LO = -2.12194440e-4f;
    /**
     * 1.5·2^23: adding it to a float of magnitude below 2^22 rounds that to the nearest integer n, and leaves n in the
     * low bits of the sum's pattern, from which the bits of 2^n follow by integer arithmetic.
     */
    private static final float ROUNDER = 12582912f;
    private static final int ROUNDER_BITS_LESS_BIAS = Float.floatToRawIntBits(ROUNDER) - 127;
    private static final float E0 = 1.9875691500e-4f, E1 = 1.3981999507e-3f, E2 = 8.3334519073e-3f,
            E3 = 4.1665795894e-2f, E4 = 1.6666665459e-1f, E5 = 5.0000001201e-1f;

    private VecMath() {
    }

    /**
     * a[i] = e^a[i] for i < n. Kernels go through this, on a block of their own values, rather than call the vector
     * form inside their loops: C2 stops inlining once a method's graph is large, and a vector that crosses a call
     * boundary is boxed on the heap, which makes the loop several times slower. This loop is small enough to compile
     * whole; the arrays crossing the call cost nothing.
     */
    static void exp(float[] a, int n) {
        int i = 0;
        for (; i <= n - L; i += L) exp(FloatVector.fromArray(S, a, i)).intoArray(a, i);
        for (; i < n; i++) a[i] = exp(a[i]);
    }

    static FloatVector exp(FloatVector x) {
        FloatVector c = x.min(EXP_HI).max(EXP_LO);
        FloatVector shifted = c.mul(LOG2E).add(ROUNDER);
        FloatVector n = shifted.sub(ROUNDER);
        FloatVector r = n.fma(splat(-LN2_HI), c);
        r = n.fma(splat(-LN2_LO), r);
        FloatVector p = r.fma(E0, E1).fma(r, splat(E2)).fma(r, splat(E3)).fma(r, splat(E4)).fma(r, splat(E5));
        FloatVector y = p.fma(r.mul(r), r).add(1f);
        FloatVector twoToN = shifted.reinterpretAsInts().sub(ROUNDER_BITS_LESS_BIAS).mul(1 << 23).reinterpretAsFloats();
        return y.mul(twoToN);
    }

    static float exp(float x) {
        float c = Math.max(Math.min(x, EXP_HI), EXP_LO);
        float shifted = c * LOG2E + ROUNDER;
        float n = shifted - ROUNDER;
        float r = Math.fma(n, -LN2_HI, c);
        r = Math.fma(n, -LN2_LO, r);
        float p = Math.fma(Math.fma(Math.fma(Math.fma(Math.fma(r, E0, E1), r, E2), r, E3), r, E4), r, E5);
        float y = Math.fma(p, r * r, r) + 1f;
        float twoToN = Float.intBitsToFloat((Float.floatToRawIntBits(shifted) - ROUNDER_BITS_LESS_BIAS) * (1 << 23));
        return y * twoToN;
    }

    private static FloatVector splat(float value) {
        return FloatVector.broadcast(S, value);
    }
}
