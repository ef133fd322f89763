package frugal.backend.cpu;

import org.junit.jupiter.api.Test;

import java.util.Random;

import static frugal.backend.cpu.Vec.L;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** VecMath.exp: the array form (vector body, scalar tail) agrees with the scalar form bit for bit, and is accurate. */
class VecMathTest {
    private final long seed = new Random().nextLong();
    private final Random random = new Random(seed);

    private float[] uniform(int n, float lo, float hi) {
        float[] x = new float[n];
        for (int i = 0; i < n; i++) x[i] = lo + random.nextFloat() * (hi - lo);
        return x;
    }

    @Test
    void vectorAndScalarFormsGiveTheSameBits() {
        float[] x = uniform(64 * L + 5, -100f, 100f); // + 5: a scalar tail too
        float[] e = x.clone();
        VecMath.exp(e, e.length);
        for (int i = 0; i < x.length; i++) {
            assertEquals(Float.floatToIntBits(VecMath.exp(x[i])), Float.floatToIntBits(e[i]), "seed " + seed + ": exp(" + x[i] + ")");
        }
    }

    @Test
    void accurateToAFewUlps() {
        float[] x = uniform(20_000, -87f, 88f);
        float[] e = x.clone();
        VecMath.exp(e, e.length);
        for (int i = 0; i < x.length; i++) {
            double exact = Math.exp(x[i]);
            // 4e-7 is about 3 ulps of float.
            assertTrue(Math.abs(e[i] - exact) <= 4e-7 * exact, "seed " + seed + ": exp(" + x[i] + ") = " + e[i] + ", exact " + exact);
        }
    }

    @Test
    void edges() {
        assertEquals(1f, VecMath.exp(0f));
        assertEquals(0f, VecMath.exp(-88f));
        assertEquals(0f, VecMath.exp(Float.NEGATIVE_INFINITY));
        assertTrue(Float.isNaN(VecMath.exp(Float.NaN)));
        assertEquals((float) Math.exp(88), VecMath.exp(Float.POSITIVE_INFINITY), 1e32f, "saturates at e^88");
    }
}
