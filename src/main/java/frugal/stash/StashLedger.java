package frugal.stash;

import java.util.EnumMap;
import java.util.Map;

/**
 * What the stash and the GEMMs cost in one step, the figures DSQ is judged by: bytes stashed and read back per kind
 * (and what a bf16 stash of the same tensors would take), peak stash memory, the bytes of GEMM operands fetched at
 * their precision, and arithmetic weighted by operand bits (Σ multiply-adds · bitsA · bitsB). Each figure has its
 * 16-bit baseline beside it, as the paper compares. Kept tensors count at their real size (F32 on the CPU) in the
 * byte figures and at 16 bits in the baselines' sense of "full precision".
 */
public final class StashLedger {
    /** Bytes per kind: written into the stash, read back, and what bf16 (F32 for statistics, I32 for ids) would take. */
    public static final class KindBytes {
        public long written;
        public long read;
        public long bf16Written;
    }

    private final Map<StashKind, KindBytes> kinds = new EnumMap<>(StashKind.class);
    private long held;
    private long peakHeld;
    private long peakHeldBf16;
    private long heldBf16;
    private long gradientBytes;
    private long gradientBytes16;
    private double macs;
    private double bitMacs;
    private long operandBytes;
    private long operandBytes16;
    private boolean resetPending;

    /**
     * Starts a new step: every figure goes back to zero once the step records its first entry. A step that records
     * nothing, a replayed CUDA graph doing again the work of the step it was captured from, leaves that step's figures.
     */
    public void reset() {
        resetPending = true;
    }

    private void startIfReset() {
        if (!resetPending) return;
        resetPending = false;
        kinds.clear();
        held = peakHeld = heldBf16 = peakHeldBf16 = 0;
        gradientBytes = gradientBytes16 = 0;
        macs = bitMacs = 0;
        operandBytes = operandBytes16 = 0;
    }

    void stashed(StashKind kind, long bytes, long bf16Bytes) {
        startIfReset();
        KindBytes k = kinds.computeIfAbsent(kind, x -> new KindBytes());
        k.written += bytes;
        k.bf16Written += bf16Bytes;
        held += bytes;
        heldBf16 += bf16Bytes;
        peakHeld = Math.max(peakHeld, held);
        peakHeldBf16 = Math.max(peakHeldBf16, heldBf16);
    }

    void readBack(StashKind kind, long bytes) {
        startIfReset();
        kinds.computeIfAbsent(kind, x -> new KindBytes()).read += bytes;
    }

    void released() {
        startIfReset();
        held = heldBf16 = 0;
    }

    /** A gradient between layers written to memory and read back (q2), at its precision and at 16 bits. */
    void gradient(long bytes, long elements) {
        startIfReset();
        gradientBytes += 2 * bytes;
        gradientBytes16 += 2 * 2 * elements;
    }

    /**
     * One GEMM of {@code m·n·k} multiply-adds whose operands hold {@code elementsA} and {@code elementsB} values at
     * {@code bitsA} and {@code bitsB} bits (16 for full precision).
     */
    public void gemm(double multiplyAdds, long elementsA, double bitsA, long elementsB, double bitsB) {
        startIfReset();
        macs += multiplyAdds;
        bitMacs += multiplyAdds * bitsA * bitsB;
        operandBytes += (long) Math.ceil(elementsA * bitsA / 8) + (long) Math.ceil(elementsB * bitsB / 8);
        operandBytes16 += 2 * (elementsA + elementsB);
    }

    public Map<StashKind, KindBytes> kinds() {
        return kinds;
    }

    public long bytesWritten() {
        return kinds.values().stream().mapToLong(k -> k.written).sum();
    }

    public long bytesRead() {
        return kinds.values().stream().mapToLong(k -> k.read).sum();
    }

    public long bf16BytesWritten() {
        return kinds.values().stream().mapToLong(k -> k.bf16Written).sum();
    }

    /** Most bytes the stash held at once in this step. */
    public long peakHeld() {
        return peakHeld;
    }

    /** Most bytes a bf16 stash of the same tensors would have held. */
    public long peakHeldBf16() {
        return peakHeldBf16;
    }

    /** Memory traffic of DSQ's points: stash writes and reads, gradients between layers, GEMM operand fetches. */
    public long trafficBytes() {
        return bytesWritten() + bytesRead() + gradientBytes + operandBytes;
    }

    /** The same traffic with every value at 16 bits (statistics and ids at their own size). */
    public long trafficBytes16() {
        long stash16 = 0;
        for (KindBytes k : kinds.values()) {
            stash16 += k.bf16Written + (k.written == 0 ? 0 : Math.round((double) k.read * k.bf16Written / k.written));
        }
        return stash16 + gradientBytes16 + operandBytes16;
    }

    public double multiplyAdds() {
        return macs;
    }

    /** Σ multiply-adds · bitsA · bitsB. */
    public double bitWeightedOps() {
        return bitMacs;
    }

    public double bitWeightedOps16() {
        return macs * 16 * 16;
    }
}
