package frugal.tensor;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.Arrays;

/**
 * A dense, row-major block of memory with a shape. The segment is host memory on the CPU backend and an
 * opaque device address (never dereferenced on the host) on the CUDA backend; the backend that allocated
 * a tensor owns its lifetime.
 */
public final class Tensor {
    private final MemorySegment data;
    private final DType dtype;
    private final int[] shape;
    private final long size;

    public Tensor(MemorySegment data, DType dtype, int... shape) {
        this.shape = shape.clone();
        this.dtype = dtype;
        this.size = count(shape);
        if (data.byteSize() < size * dtype.bytes) {
            throw new IllegalArgumentException("segment of " + data.byteSize() + " bytes is too small for "
                    + dtype + Arrays.toString(shape));
        }
        this.data = data;
    }

    public static long count(int... shape) {
        long n = 1;
        for (int d : shape) {
            if (d < 0) throw new IllegalArgumentException("negative dimension in " + Arrays.toString(shape));
            n *= d;
        }
        return n;
    }

    public MemorySegment data() {
        return data;
    }

    public DType dtype() {
        return dtype;
    }

    public int[] shape() {
        return shape.clone();
    }

    public int dim(int i) {
        return shape[i < 0 ? shape.length + i : i];
    }

    public int rank() {
        return shape.length;
    }

    /** Number of elements. */
    public long size() {
        return size;
    }

    public long byteSize() {
        return size * dtype.bytes;
    }

    /** The same memory seen with another shape of equal element count. */
    public Tensor view(int... newShape) {
        if (count(newShape) != size) {
            throw new IllegalArgumentException("cannot view " + Arrays.toString(shape) + " as " + Arrays.toString(newShape));
        }
        return new Tensor(data, dtype, newShape);
    }

    /** A contiguous sub-range of elements [offset, offset + count(newShape)) with a new shape. */
    public Tensor slice(long offset, int... newShape) {
        long n = count(newShape);
        if (offset < 0 || offset + n > size) {
            throw new IndexOutOfBoundsException("slice [" + offset + ", " + (offset + n) + ") of " + size + " elements");
        }
        return new Tensor(data.asSlice(offset * dtype.bytes, n * dtype.bytes), dtype, newShape);
    }

    // Host accessors: valid only for tensors in host memory (the CPU backend).

    public float get(long i) {
        return data.getAtIndex(ValueLayout.JAVA_FLOAT, i);
    }

    public void set(long i, float v) {
        data.setAtIndex(ValueLayout.JAVA_FLOAT, i, v);
    }

    public int getInt(long i) {
        return data.getAtIndex(ValueLayout.JAVA_INT, i);
    }

    public void setInt(long i, int v) {
        data.setAtIndex(ValueLayout.JAVA_INT, i, v);
    }

    public float[] toFloatArray() {
        return data.asSlice(0, size * 4).toArray(ValueLayout.JAVA_FLOAT);
    }

    public int[] toIntArray() {
        return data.asSlice(0, size * 4).toArray(ValueLayout.JAVA_INT);
    }

    @Override
    public String toString() {
        return "Tensor(" + dtype + Arrays.toString(shape) + ")";
    }
}
