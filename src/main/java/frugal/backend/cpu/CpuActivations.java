package frugal.backend.cpu;

import frugal.tensor.Tensor;
import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.VectorOperators;

import java.lang.foreign.MemorySegment;

import static frugal.backend.cpu.Vec.L;
import static frugal.backend.cpu.Vec.S;
import static frugal.backend.cpu.Vec.get;
import static frugal.backend.cpu.Vec.load;
import static frugal.backend.cpu.Vec.set;
import static frugal.backend.cpu.Vec.store;

/** GELU (tanh form) and SwiGLU, forward and backward. */
final class CpuActivations {
    private static final float GELU_SCALE = (float) Math.sqrt(2.0 / Math.PI);
    private static final float GELU_CUBE = 0.044715f;

    private CpuActivations() {
    }

    static void geluForward(Tensor out, Tensor x, long n) {
        MemorySegment o = out.data(), xs = x.data();
        Parallel.forElements(n, (from, to) -> {
            long i = from;
            for (; i <= to - L; i += L) {
                FloatVector v = load(xs, i);
                FloatVector inner = v.mul(v).mul(v).mul(GELU_CUBE).add(v).mul(GELU_SCALE);
                store(v.mul(0.5f).mul(inner.lanewise(VectorOperators.TANH).add(1f)), o, i);
            }
            for (; i < to; i++) {
                float v = get(xs, i);
                set(o, i, 0.5f * v * (1f + (float) Math.tanh(GELU_SCALE * (v + GELU_CUBE * v * v * v))));
            }
        });
    }

    static void geluBackward(Tensor dx, Tensor dout, Tensor x, long n) {
        MemorySegment d = dx.data(), dos = dout.data(), xs = x.data();
        Parallel.forElements(n, (from, to) -> {
            long i = from;
            for (; i <= to - L; i += L) {
                FloatVector v = load(xs, i);
                FloatVector v2 = v.mul(v);
                FloatVector t = v2.mul(v).mul(GELU_CUBE).add(v).mul(GELU_SCALE).lanewise(VectorOperators.TANH);
                FloatVector sech2 = t.mul(t).neg().add(1f);
                FloatVector dinner = v2.mul(3f * GELU_CUBE).add(1f).mul(GELU_SCALE);
                FloatVector grad = t.add(1f).mul(0.5f).add(v.mul(0.5f).mul(sech2).mul(dinner));
                store(grad.mul(load(dos, i)), d, i);
            }
            for (; i < to; i++) {
                float v = get(xs, i);
                float t = (float) Math.tanh(GELU_SCALE * (v + GELU_CUBE * v * v * v));
                float grad = 0.5f * (1f + t) + 0.5f * v * (1f - t * t) * GELU_SCALE * (1f + 3f * GELU_CUBE * v * v);
                set(d, i, grad * get(dos, i));
            }
        });
    }

    static void swigluForward(Tensor out, Tensor gateUp, int rows, int hidden) {
        MemorySegment o = out.data(), gu = gateUp.data();
        Parallel.forRange(rows, 4, (r0, r1) -> {
            for (int r = r0; r < r1; r++) {
                long g = 2L * r * hidden, u = g + hidden, y = (long) r * hidden;
                int j = 0;
                for (; j <= hidden - L; j += L) {
                    FloatVector gv = load(gu, g + j);
                    FloatVector silu = gv.div(gv.neg().lanewise(VectorOperators.EXP).add(1f));
                    store(silu.mul(load(gu, u + j)), o, y + j);
                }
                for (; j < hidden; j++) {
                    float gv = get(gu, g + j);
                    set(o, y + j, gv / (1f + (float) Math.exp(-gv)) * get(gu, u + j));
                }
            }
        });
    }

    static void swigluBackward(Tensor dGateUp, Tensor dout, Tensor gateUp, int rows, int hidden) {
        MemorySegment d = dGateUp.data(), dos = dout.data(), gu = gateUp.data();
        Parallel.forRange(rows, 4, (r0, r1) -> {
            for (int r = r0; r < r1; r++) {
                long g = 2L * r * hidden, u = g + hidden, y = (long) r * hidden;
                int j = 0;
                for (; j <= hidden - L; j += L) {
                    FloatVector gv = load(gu, g + j), uv = load(gu, u + j), dy = load(dos, y + j);
                    FloatVector sig = FloatVector.broadcast(S, 1f).div(gv.neg().lanewise(VectorOperators.EXP).add(1f));
                    FloatVector silu = gv.mul(sig);
                    FloatVector dsilu = sig.mul(gv.mul(sig.neg().add(1f)).add(1f));
                    store(dy.mul(uv).mul(dsilu), d, g + j);
                    store(dy.mul(silu), d, u + j);
                }
                for (; j < hidden; j++) {
                    float gv = get(gu, g + j), uv = get(gu, u + j), dy = get(dos, y + j);
                    float sig = 1f / (1f + (float) Math.exp(-gv));
                    set(d, g + j, dy * uv * sig * (1f + gv * (1f - sig)));
                    set(d, u + j, dy * gv * sig);
                }
            }
        });
    }
}
