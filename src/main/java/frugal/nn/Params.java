package frugal.nn;

import frugal.backend.Backend;
import frugal.tensor.DType;
import frugal.tensor.Tensor;

import java.util.ArrayList;
import java.util.Collections;
import java.util.List;

/** The ordered set of a model's parameters, each allocated with its gradient on one backend. */
public final class Params {
    private final Backend backend;
    private final List<Param> all = new ArrayList<>();
    private final List<Tensor> grads = new ArrayList<>();
    private boolean computeStale = true;

    public Params(Backend backend) {
        this.backend = backend;
    }

    /** A parameter stored in Hugging Face files under its own name, as-is; decayed when 2-D or more. */
    public Param add(String hfName, int... shape) {
        return add(hfName, List.of(new Param.HfPart(hfName, shape[0])), false, shape.length >= 2, shape);
    }

    /** A parameter stored as GPT-2's Conv1D: transposed, [in, out]. */
    public Param addTransposed(String hfName, int... shape) {
        return add(hfName, List.of(new Param.HfPart(hfName, shape[0])), true, shape.length >= 2, shape);
    }

    /** A parameter fused from several Hugging Face tensors stacked along rows. */
    public Param addFused(String name, List<Param.HfPart> parts, int... shape) {
        return add(name, parts, false, shape.length >= 2, shape);
    }

    /**
     * A linear layer's bias [n]: with a compute copy like the weights, since the product's epilogue adds the bias in
     * the output's type (kept by the optimizer as it updates the bias, instead of rounded at every forward).
     */
    public Param addBias(String hfName, int n) {
        return add(hfName, List.of(new Param.HfPart(hfName, n)), false, true, n);
    }

    private Param add(String name, List<Param.HfPart> parts, boolean hfTransposed, boolean computeCopy, int... shape) {
        Tensor value = backend.allocate(DType.F32, shape);
        Tensor grad = backend.allocate(DType.F32, shape);
        DType computeType = backend.activationType();
        Tensor compute = computeCopy && computeType != DType.F32 ? backend.allocate(computeType, shape) : value;
        Param p = new Param(name, value, grad, shape.length >= 2, List.copyOf(parts), hfTransposed, compute);
        all.add(p);
        grads.add(grad);
        return p;
    }

    public List<Param> all() {
        return Collections.unmodifiableList(all);
    }

    public long count() {
        return all.stream().mapToLong(p -> p.value().size()).sum();
    }

    /**
     * Says that parameter values were written other than by the optimizer (loading, initialization), so that the
     * next {@link #refreshComputeIfStale()} converts them into the compute copies. New parameters start stale.
     */
    public void markChanged() {
        computeStale = true;
    }

    /** Converts every value into its compute copy (nothing where they are the same tensor). */
    public void refreshCompute() {
        for (Param p : all) {
            if (p.compute() != p.value()) backend.convert(p.compute(), p.value(), p.value().size());
        }
        computeStale = false;
    }

    /** {@link #refreshCompute()} when values changed since the last refresh; called at the start of a forward pass. */
    public void refreshComputeIfStale() {
        if (computeStale) refreshCompute();
    }

    /** Bytes of the compute copies that are separate tensors. */
    public long computeBytes() {
        return all.stream().filter(p -> p.compute() != p.value()).mapToLong(p -> p.compute().byteSize()).sum();
    }

    /** Every parameter's gradient, in parameter order. */
    public List<Tensor> grads() {
        return List.copyOf(grads);
    }

    /** Zeroes every gradient (one multi-tensor op where the backend has one). */
    public void zeroGrad() {
        backend.zero(grads);
    }
}
