package frugal.backend.cpu;

import frugal.tensor.DType;
import frugal.tensor.Tensor;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;

import java.lang.foreign.MemorySegment;

import static frugal.backend.cpu.OpsFixture.ELEMENTS;
import static frugal.backend.cpu.OpsFixture.doubles;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;

/**
 * sumOfSquares and AdamW against float64, as torch.optim.AdamW computes a step: decoupled weight decay
 * p·(1 − lr·wd), bias-corrected moments, and gradients scaled by min(1, maxNorm / (‖g‖ + 1e-6)) when clipping.
 * Sizes run on two threads and end in a scalar tail.
 *
 * <p>Tolerances: moments and sums round a handful of times in float32, so 1e-6 relative; a parameter p' = p + step
 * is checked to 1e-6 of |p'| (a few float32 ulps) plus 1e-5 of |step| (the step's own float32 arithmetic). Missing
 * bias correction, decay or clipping moves parameters by O(lr) and moments by O(1) relative.
 */
class CpuOptimizerOpsTest {
    private static final float BETA1 = 0.9f, BETA2 = 0.95f, EPS = 1e-8f;

    private final OpsFixture f = new OpsFixture();

    @AfterEach
    void close() {
        f.close();
    }

    @Test
    void sumOfSquaresMatchesFloat64AndAccumulates() {
        for (int n : new int[]{1, 19, ELEMENTS}) {
            Tensor x = f.randn(n), out = f.cpu.allocate(DType.F32, 1);
            double want = 0;
            for (float v : x.toFloatArray()) want += (double) v * v;
            f.cpu.sumOfSquares(out, x, n, false);
            assertEquals(want, out.get(0), 1e-6 * want, f.seeded("sumOfSquares n=" + n));
            f.cpu.sumOfSquares(out, x, n, true);
            assertEquals(2 * want, out.get(0), 1e-6 * want, f.seeded("sumOfSquares accumulated n=" + n));
        }
    }

    /** One parameter tensor with its gradient and moments, and their float64 values before the step. */
    private final class State {
        final int n;
        final Tensor param, grad, m, v;
        final double[] param0, grad0, m0, v0;

        State(int n, boolean freshMoments) {
            this.n = n;
            param = f.randn(n);
            grad = f.normal(0, 0.01, n);
            m = freshMoments ? f.cpu.allocate(DType.F32, n) : f.normal(0, 0.01, n);
            v = f.cpu.allocate(DType.F32, n);
            if (!freshMoments) {
                for (int i = 0; i < n; i++) v.set(i, (float) Math.pow(0.01 * f.rnd.nextGaussian(), 2));
            }
            param0 = doubles(param);
            grad0 = doubles(grad);
            m0 = doubles(m);
            v0 = doubles(v);
        }

        double gradSquares() {
            return OpsFixture.dot(grad0, grad0);
        }

        /** Checks the step against float64, the gradient scaled by clip. */
        void assertStepped(String what, float lr, float weightDecay, int step, double clip) {
            double[] wantParam = new double[n], wantM = new double[n], wantV = new double[n];
            double correction1 = 1 - Math.pow(BETA1, step), correction2 = 1 - Math.pow(BETA2, step);
            for (int i = 0; i < n; i++) {
                double g = grad0[i] * clip;
                wantM[i] = BETA1 * m0[i] + (1 - BETA1) * g;
                wantV[i] = BETA2 * v0[i] + (1 - BETA2) * g * g;
                double update = (wantM[i] / correction1) / (Math.sqrt(wantV[i] / correction2) + EPS);
                wantParam[i] = param0[i] * (1 - lr * weightDecay) - lr * update;
            }
            f.assertClose(what + " m", m.toFloatArray(), wantM, 1e-6);
            f.assertClose(what + " v", v.toFloatArray(), wantV, 1e-6);
            double[] allowed = new double[n];
            for (int i = 0; i < n; i++) allowed[i] = 1e-6 * Math.abs(wantParam[i]) + 1e-5 * Math.abs(wantParam[i] - param0[i]);
            f.assertWithin(what + " param", doubles(param), wantParam, allowed);
        }
    }

    @Test
    void firstStepWithWeightDecay() {
        for (int n : new int[]{1, 19, ELEMENTS}) {
            State s = new State(n, true);
            f.cpu.adamw(s.param, s.grad, s.m, s.v, n, 0.05f, BETA1, BETA2, EPS, 0.1f, 1, null, 0f);
            s.assertStepped("adamw step 1 n=" + n, 0.05f, 0.1f, 1, 1);
        }
    }

    @Test
    void laterStepCorrectsBiasOfRunningMoments() {
        State s = new State(ELEMENTS, false);
        f.cpu.adamw(s.param, s.grad, s.m, s.v, ELEMENTS, 0.02f, BETA1, BETA2, EPS, 0f, 7, null, 0f);
        s.assertStepped("adamw step 7", 0.02f, 0f, 7, 1);
    }

    @Test
    void clipsByTheGlobalNormOfAllGradients() {
        // two tensors share one norm, accumulated as AdamW.update does; the moments show the scaled gradient
        State a = new State(ELEMENTS, false), b = new State(777, false);
        Tensor normSquared = f.cpu.allocate(DType.F32, 1);
        f.cpu.sumOfSquares(normSquared, a.grad, a.n, false);
        f.cpu.sumOfSquares(normSquared, b.grad, b.n, true);
        double norm = Math.sqrt(a.gradSquares() + b.gradSquares());
        float maxNorm = (float) (0.3 * norm);
        double clip = maxNorm / (norm + 1e-6);
        for (State s : new State[]{a, b}) {
            f.cpu.adamw(s.param, s.grad, s.m, s.v, s.n, 0.02f, BETA1, BETA2, EPS, 0.1f, 3, normSquared, maxNorm);
            s.assertStepped("adamw clipped n=" + s.n, 0.02f, 0.1f, 3, clip);
        }
    }

    @Test
    void leavesGradientsBelowTheLimitUnscaled() {
        State s = new State(ELEMENTS, false);
        Tensor normSquared = f.cpu.allocate(DType.F32, 1);
        f.cpu.sumOfSquares(normSquared, s.grad, s.n, false);
        f.cpu.adamw(s.param, s.grad, s.m, s.v, s.n, 0.02f, BETA1, BETA2, EPS, 0.1f, 3, normSquared,
                (float) (2 * Math.sqrt(s.gradSquares())));
        s.assertStepped("adamw under the limit", 0.02f, 0.1f, 3, 1);
    }

    @Test
    void hyperTensorStepEqualsTheExplicitOne() {
        // the capturable form reads lr and the step count from the backend; it must take the very same step
        State s = new State(1027, false);
        Tensor param = f.copyOf(s.param), m = f.copyOf(s.m), v = f.copyOf(s.v), hyper = f.cpu.allocate(DType.F32, 2);
        f.cpu.upload(hyper, MemorySegment.ofArray(new float[]{0.03f, 5}));
        f.cpu.adamw(s.param, s.grad, s.m, s.v, s.n, 0.03f, BETA1, BETA2, EPS, 0.1f, 5, null, 0f);
        f.cpu.adamw(param, s.grad, m, v, null, s.n, hyper, BETA1, BETA2, EPS, 0.1f, null, 0f);
        assertArrayEquals(s.param.toFloatArray(), param.toFloatArray(), f.seeded("param"));
        assertArrayEquals(s.m.toFloatArray(), m.toFloatArray(), f.seeded("m"));
        assertArrayEquals(s.v.toFloatArray(), v.toFloatArray(), f.seeded("v"));
        s.assertStepped("adamw step 5", 0.03f, 0.1f, 5, 1);
    }
}
