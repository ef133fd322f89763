package frugal.train;

import frugal.backend.Backend;
import frugal.nn.Param;
import frugal.nn.Params;
import frugal.tensor.DType;
import frugal.tensor.Tensor;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.ArrayList;
import java.util.List;

/**
 * AdamW with decoupled weight decay (applied to parameters of 2+ dimensions) and global gradient-norm
 * clipping computed on the backend. Master weights and both moments are F32; the update also refreshes each
 * parameter's compute copy (bf16 under mixed precision). The learning rate and step count travel in a small device
 * tensor, so that {@link #update} can be captured once and replayed (see {@link TrainStep}).
 */
public final class AdamW {
    private final Backend ops;
    private final List<Tensor> firstMoments = new ArrayList<>();
    private final List<Tensor> secondMoments = new ArrayList<>();
    /** Every parameter's tensors, for the one multi-tensor update. */
    private final List<Backend.AdamWTensors> slots = new ArrayList<>();
    /** The gradients, for the one global norm. */
    private final List<Tensor> grads;
    private final Tensor normSquared;
    private final Tensor hyper;
    private final float beta1;
    private final float beta2;
    private final float eps;
    private final float weightDecay;
    private int step;

    public AdamW(Backend ops, Params params, float beta1, float beta2, float eps, float weightDecay) {
        this.ops = ops;
        this.beta1 = beta1;
        this.beta2 = beta2;
        this.eps = eps;
        this.weightDecay = weightDecay;
        for (Param p : params.all()) {
            Tensor m = ops.allocate(DType.F32, p.value().shape()), v = ops.allocate(DType.F32, p.value().shape());
            firstMoments.add(m);
            secondMoments.add(v);
            slots.add(new Backend.AdamWTensors(p.value(), p.grad(), m, v, p.compute(), p.weightDecay() ? weightDecay : 0f));
        }
        grads = params.grads();
        normSquared = ops.allocate(DType.F32, 1);
        hyper = ops.allocate(DType.F32, 2);
    }

    /** Applies one update at the given rate; clips to maxNorm when positive. Returns the pre-clip gradient norm. */
    public float step(float lr, float maxNorm) {
        prepare(lr);
        update(maxNorm);
        return gradNorm();
    }

    /** Advances the step count and puts lr and the count on the backend for the next {@link #update}. */
    public void prepare(float lr) {
        step++;
        try (Arena a = Arena.ofConfined()) {
            MemorySegment host = a.allocate(ValueLayout.JAVA_FLOAT, 2);
            host.setAtIndex(ValueLayout.JAVA_FLOAT, 0, lr);
            host.setAtIndex(ValueLayout.JAVA_FLOAT, 1, step);
            ops.upload(hyper, host);
        }
    }

    /**
     * The device half of a step: the global gradient norm, then AdamW on every parameter, each as one multi-tensor op.
     * Queues ops only (capturable).
     */
    public void update(float maxNorm) {
        ops.sumOfSquares(normSquared, grads);
        ops.adamw(slots, hyper, beta1, beta2, eps, maxNorm > 0 ? normSquared : null, maxNorm);
    }

    /** The pre-clip global gradient norm of the last update (waits for it). */
    public float gradNorm() {
        try (Arena a = Arena.ofConfined()) {
            MemorySegment host = a.allocate(ValueLayout.JAVA_FLOAT);
            ops.download(normSquared, host);
            return (float) Math.sqrt(host.get(ValueLayout.JAVA_FLOAT, 0));
        }
    }

    public int stepCount() {
        return step;
    }

    public void setStepCount(int step) {
        this.step = step;
    }

    public List<Tensor> firstMoments() {
        return firstMoments;
    }

    public List<Tensor> secondMoments() {
        return secondMoments;
    }
}
