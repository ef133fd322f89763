package frugal.tensor;

/** Element types a tensor can hold. */
public enum DType {
    F32(4), BF16(2), I32(4), I8(1);

    public final int bytes;

    DType(int bytes) {
        this.bytes = bytes;
    }
}
