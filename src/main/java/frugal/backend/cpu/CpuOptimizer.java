package frugal.backend.cpu;

import frugal.tensor.Tensor;
import jdk.incubator.vector.FloatVector;

import java.lang.foreign.MemorySegment;

import static frugal.backend.cpu.Vec.L;
import static frugal.backend.cpu.Vec.get;
import static frugal.backend.cpu.Vec.load;
import static frugal.backend.cpu.Vec.set;
import static frugal.backend.cpu.Vec.store;

/** Global gradient norm and AdamW (as torch.optim.AdamW: decoupled decay, bias correction). */
final class CpuOptimizer {
    private CpuOptimizer() {
    }

    static void sumOfSquares(Tensor out, Tensor x, long n, boolean accumulate) {
        MemorySegment xs = x.data();
        // One partial sum per 4096-element block, added in block order: the bits depend neither on the thread count nor
        // on the JIT. Within a block the squares add up in one vector (float), across blocks in double.
        double[] partial = new double[(int) ((n + 4095) / 4096)];
        Parallel.forElements(n, (from, to) -> {
            for (long block = from; block < to; block += 4096) {
                long end = Math.min(to, block + 4096), i = block;
                FloatVector acc = FloatVector.zero(Vec.S);
                for (; i <= end - L; i += L) {
                    FloatVector v = load(xs, i);
                    acc = v.fma(v, acc);
                }
                double s = Vec.sumLanes(acc);
                for (; i < end; i++) s += (double) get(xs, i) * get(xs, i);
                partial[(int) (block / 4096)] = s;
            }
        });
        double total = 0;
        for (double s : partial) total += s;
        out.set(0, (float) ((accumulate ? out.get(0) : 0) + total));
    }

    static void adamw(Tensor param, Tensor grad, Tensor m, Tensor v, long n, float lr, float beta1, float beta2,
                      float eps, float weightDecay, int step, Tensor normSquared, float maxNorm) {
        float clip = 1f;
        if (normSquared != null) {
            double norm = Math.sqrt(normSquared.get(0));
            clip = (float) Math.min(1.0, maxNorm / (norm + 1e-6));
        }
        float gradScale = clip;
        float decay = 1f - lr * weightDecay;
        float stepSize = (float) (lr / (1 - Math.pow(beta1, step)));
        float correction2Sqrt = (float) Math.sqrt(1 - Math.pow(beta2, step));
        MemorySegment p = param.data(), g = grad.data(), ms = m.data(), vs = v.data();
        Parallel.forElements(n, (from, to) -> {
            long i = from;
            for (; i <= to - L; i += L) {
                FloatVector gi = load(g, i).mul(gradScale);
                FloatVector mi = load(ms, i).mul(beta1).add(gi.mul(1f - beta1));
                FloatVector vi = load(vs, i).mul(beta2).add(gi.mul(gi).mul(1f - beta2));
                FloatVector denom = vi.sqrt().div(correction2Sqrt).add(eps);
                store(mi, ms, i);
                store(vi, vs, i);
                store(load(p, i).mul(decay).sub(mi.div(denom).mul(stepSize)), p, i);
            }
            for (; i < to; i++) {
                float gi = get(g, i) * gradScale;
                float mi = get(ms, i) * beta1 + gi * (1f - beta1);
                float vi = get(vs, i) * beta2 + gi * gi * (1f - beta2);
                set(ms, i, mi);
                set(vs, i, vi);
                set(p, i, get(p, i) * decay - stepSize * mi / ((float) Math.sqrt(vi) / correction2Sqrt + eps));
            }
        });
    }
}
