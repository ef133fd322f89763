package frugal.nn;

import frugal.backend.Backend;
import frugal.tensor.DType;
import frugal.tensor.Tensor;

import java.util.HashMap;
import java.util.Map;

/**
 * Named activation and gradient buffers, allocated on first use and reused by every later step whose
 * shapes fit (so a training step allocates nothing once warm).
 */
public final class Workspace {
    private final Backend backend;
    private final Map<String, Tensor> buffers = new HashMap<>();

    public Workspace(Backend backend) {
        this.backend = backend;
    }

    /** A buffer of the backend's activation type (F32, or BF16 under mixed precision). */
    public Tensor get(String name, int... shape) {
        return get(name, backend.activationType(), shape);
    }

    public Tensor get(String name, DType dtype, int... shape) {
        long n = Tensor.count(shape);
        Tensor t = buffers.get(name);
        if (t == null || t.size() < n || t.dtype() != dtype) {
            t = backend.allocate(dtype, (int) n);
            buffers.put(name, t);
        }
        return t.slice(0, shape);
    }

    public long bytes() {
        return buffers.values().stream().mapToLong(Tensor::byteSize).sum();
    }
}
