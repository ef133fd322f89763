package frugal.stash;

import frugal.FrugalException;

import java.util.Locale;

/**
 * DSQ's four quantization points of a linear layer y = x·Wᵀ, written [q0, q1, q2, q3] in the paper's configurations.
 * All three GEMM inputs pass through one of them; q1 and q2 are what goes to memory and comes back (the stash),
 * so they get the fewest bits.
 */
public enum QuantPoint {
    /** The forward GEMM's operands x and W. */
    Q0,
    /** The stashed layer input x, read back by dW = dyᵀ·x (and, by default, every other stashed activation). */
    Q1,
    /** The gradient dy passed between layers in backward, read by both backward GEMMs. */
    Q2,
    /** The weight W as the dx = dy·W GEMM reads it. */
    Q3;

    public String key() {
        return name().toLowerCase(Locale.ROOT);
    }

    public static QuantPoint byKey(String key) {
        for (QuantPoint p : values()) if (p.key().equals(key)) return p;
        throw new FrugalException("unknown quantization point \"" + key + "\" (q0, q1, q2 or q3)");
    }
}
