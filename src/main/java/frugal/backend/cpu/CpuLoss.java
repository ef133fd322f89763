package frugal.backend.cpu;

import frugal.tensor.Tensor;
import jdk.incubator.vector.FloatVector;

import java.lang.foreign.MemorySegment;

import static frugal.backend.cpu.Vec.L;
import static frugal.backend.cpu.Vec.S;
import static frugal.backend.cpu.Vec.get;
import static frugal.backend.cpu.Vec.load;
import static frugal.backend.cpu.Vec.max;
import static frugal.backend.cpu.Vec.set;
import static frugal.backend.cpu.Vec.store;
import static java.lang.foreign.ValueLayout.JAVA_FLOAT;

/** Fused softmax cross-entropy: the loss, and optionally dlogits in place, without storing probabilities. */
final class CpuLoss {
    /** Values per block of exponentials (see {@link VecMath#exp(float[], int)}): the scratch array stays in L1. */
    private static final int BLOCK = 1024;

    private CpuLoss() {
    }

    static void crossEntropy(Tensor losses, Tensor dlogits, Tensor logits, Tensor targets, int rows, int vocab, float gradScale) {
        MemorySegment lg = logits.data(), dl = dlogits == null ? null : dlogits.data();
        Parallel.forRange(rows, (r0, r1) -> {
            float[] e = new float[BLOCK];
            for (int r = r0; r < r1; r++) {
                long base = (long) r * vocab;
                int target = targets.getInt(r);
                if (target < 0 || target >= vocab) {
                    throw new IllegalArgumentException("target " + target + " at row " + r + " is outside the vocabulary of " + vocab);
                }
                float max = max(lg, base, vocab);
                float targetLogit = get(lg, base + target); // read before dl, which may be the logits, is written
                double sum = sumExp(e, lg, dl, base, vocab, max);
                losses.set(r, (float) (max + Math.log(sum) - targetLogit));
                if (dl != null) {
                    scale(dl, base, vocab, (float) (gradScale / sum));
                    set(dl, base + target, get(dl, base + target) - gradScale);
                }
            }
        });
    }

    /**
     * Σ exp(logits[j] − max) over a row, block by block through scratch e (BLOCK values); with dl, also leaves each
     * exp(logits[j] − max) in dl[j], so that the softmax needs no second exponential.
     */
    private static double sumExp(float[] e, MemorySegment lg, MemorySegment dl, long base, int vocab, float max) {
        FloatVector vm = FloatVector.broadcast(S, max), acc = FloatVector.zero(S);
        double tail = 0;
        for (int start = 0; start < vocab; start += BLOCK) {
            int len = Math.min(BLOCK, vocab - start);
            long at = base + start;
            int j = 0;
            for (; j <= len - L; j += L) load(lg, at + j).sub(vm).intoArray(e, j);
            for (; j < len; j++) e[j] = get(lg, at + j) - max;
            VecMath.exp(e, len);
            j = 0;
            for (; j <= len - L; j += L) acc = acc.add(FloatVector.fromArray(S, e, j));
            for (; j < len; j++) tail += e[j];
            if (dl != null) MemorySegment.copy(e, 0, dl, JAVA_FLOAT, 4 * at, len);
        }
        return Vec.sumLanes(acc) + tail;
    }

    /** x[base + j] *= factor for j < n. */
    private static void scale(MemorySegment x, long base, int n, float factor) {
        int j = 0;
        for (; j <= n - L; j += L) store(load(x, base + j).mul(factor), x, base + j);
        for (; j < n; j++) set(x, base + j, get(x, base + j) * factor);
    }
}
