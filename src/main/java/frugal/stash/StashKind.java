package frugal.stash;

import frugal.FrugalException;

import java.util.Arrays;
import java.util.Locale;

/** What a saved-for-backward tensor is: the stash policy chooses keep or a number format per kind. */
public enum StashKind {
    /** The input x of a linear layer, read back by dW = dyᵀ·x (DSQ's q1). */
    LINEAR_INPUT,
    /** The (rotated) fused q/k/v projection that attention backward reads. */
    ATTENTION_QKV,
    /** Attention's output, from which backward rebuilds the softmax with the log-sum-exp. */
    ATTENTION_OUTPUT,
    /** The per-row softmax log-sum-exp. */
    SOFTMAX_STATS,
    /** The input of a LayerNorm or RMSNorm. */
    NORM_INPUT,
    /** A norm's per-row mean and reciprocal standard deviation. */
    NORM_STATS,
    /** The input of GELU or SwiGLU. */
    ACTIVATION_INPUT,
    /** The token ids (I32, never quantized). */
    TOKEN_IDS;

    /** The name used in config files and metrics: {@code linear_input}. */
    public String key() {
        return name().toLowerCase(Locale.ROOT);
    }

    public static StashKind byKey(String key) {
        for (StashKind k : values()) if (k.key().equals(key)) return k;
        throw new FrugalException("unknown stash kind \"" + key + "\" (known: "
                + String.join(", ", Arrays.stream(values()).map(StashKind::key).toList()) + ")");
    }
}
