package frugal.backend.cpu;

import frugal.tensor.Tensor;
import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.VectorOperators;

import java.lang.foreign.MemorySegment;

import static frugal.backend.cpu.Vec.L;
import static frugal.backend.cpu.Vec.S;
import static frugal.backend.cpu.Vec.get;
import static frugal.backend.cpu.Vec.load;
import static frugal.backend.cpu.Vec.max;
import static frugal.backend.cpu.Vec.set;
import static frugal.backend.cpu.Vec.store;

/** Fused softmax cross-entropy: the loss, and optionally dlogits in place, without storing probabilities. */
final class CpuLoss {
    private CpuLoss() {
    }

    static void crossEntropy(Tensor losses, Tensor dlogits, Tensor logits, Tensor targets, int rows, int vocab, float gradScale) {
        MemorySegment lg = logits.data(), dl = dlogits == null ? null : dlogits.data();
        Parallel.forRange(rows, (r0, r1) -> {
            for (int r = r0; r < r1; r++) {
                long base = (long) r * vocab;
                int target = targets.getInt(r);
                if (target < 0 || target >= vocab) {
                    throw new IllegalArgumentException("target " + target + " at row " + r + " is outside the vocabulary of " + vocab);
                }
                float m = max(lg, base, vocab);
                FloatVector vm = FloatVector.broadcast(S, m), acc = FloatVector.zero(S);
                int j = 0;
                for (; j <= vocab - L; j += L) acc = acc.add(load(lg, base + j).sub(vm).lanewise(VectorOperators.EXP));
                double sum = acc.reduceLanes(VectorOperators.ADD);
                for (; j < vocab; j++) sum += Math.exp(get(lg, base + j) - m);
                double logSumExp = m + Math.log(sum);
                float targetLogit = get(lg, base + target);
                losses.set(r, (float) (logSumExp - targetLogit));
                if (dl != null) {
                    float lse = (float) logSumExp;
                    FloatVector vl = FloatVector.broadcast(S, lse);
                    j = 0;
                    for (; j <= vocab - L; j += L) {
                        store(load(lg, base + j).sub(vl).lanewise(VectorOperators.EXP).mul(gradScale), dl, base + j);
                    }
                    for (; j < vocab; j++) set(dl, base + j, (float) Math.exp(get(lg, base + j) - logSumExp) * gradScale);
                    set(dl, base + target, get(dl, base + target) - gradScale);
                }
            }
        });
    }
}
