package frugal.quant;

import frugal.FrugalException;
import frugal.tensor.Tensor;

import java.util.Locale;

/**
 * A low-bit number format for a tensor cut into blocks of {@code block} consecutive values. Each value is stored as a
 * signed integer q of {@code bits} bits (sign included; symmetric, |q| ≤ 2^(bits−1) − 1), packed tightly, and read
 * back as q·s with one scale s per block:
 * <ul>
 *   <li>{@link Scheme#BFP} block floating point (DSQ's format): s = 2^e is the smallest power of two with
 *       max|x| ≤ (2^(bits−1) − 1)·s, stored as one shared exponent byte per block (so nothing is clipped, and
 *       stochastic rounding stays unbiased at the top of the range);</li>
 *   <li>{@link Scheme#INT} per-block integer: s = max|x| / (2^(bits−1) − 1), stored as an F32 per block (NaN for a
 *       block that held NaN or ±Inf, as the GPU writes it: see {@link #NAN_BLOCK}).</li>
 * </ul>
 * Written as {@code bfp4}, {@code int8}, optionally with the block and stochastic rounding: {@code bfp4/32/sr}.
 */
public record QuantFormat(Scheme scheme, int bits, int block, Rounding rounding) {
    public static final int DEFAULT_BLOCK = 32;

    public enum Scheme { BFP, INT }

    /** Round to nearest (ties away from zero), or stochastic: up with probability equal to the fraction (unbiased). */
    public enum Rounding { NEAREST, STOCHASTIC }

    public QuantFormat {
        if (bits < 2 || bits > 8) throw new FrugalException("quantization bits must be 2..8, got " + bits);
        if (block < 8 || block % 8 != 0 || block > 4096) {
            throw new FrugalException("quantization block must be a multiple of 8 in 8..4096 (so that a packed block fills whole bytes), got " + block);
        }
    }

    /** Parses {@code bfp4}, {@code int8/64}, {@code bfp3/32/sr} (sr: stochastic rounding, rn: round to nearest). */
    public static QuantFormat parse(String text) {
        String[] parts = text.trim().toLowerCase(Locale.ROOT).split("/");
        Scheme scheme;
        String head = parts[0];
        if (head.startsWith("bfp")) scheme = Scheme.BFP;
        else if (head.startsWith("int")) scheme = Scheme.INT;
        else throw new FrugalException("unknown number format \"" + text + "\" (expected bfpN or intN, N = 2..8, e.g. bfp4/32/sr)");
        try {
            int bits = Integer.parseInt(head.substring(3));
            int block = parts.length > 1 ? Integer.parseInt(parts[1]) : DEFAULT_BLOCK;
            Rounding rounding = Rounding.NEAREST;
            if (parts.length > 2) {
                rounding = switch (parts[2]) {
                    case "sr" -> Rounding.STOCHASTIC;
                    case "rn" -> Rounding.NEAREST;
                    default -> throw new FrugalException("unknown rounding \"" + parts[2] + "\" in \"" + text + "\" (sr or rn)");
                };
            }
            if (parts.length > 3) throw new FrugalException("too many parts in number format \"" + text + "\"");
            return new QuantFormat(scheme, bits, block, rounding);
        } catch (NumberFormatException e) {
            throw new FrugalException("bad number format \"" + text + "\" (expected bfpN[/block[/sr|rn]] or intN[/block[/sr|rn]])");
        }
    }

    /** The same format at another bit width. */
    public QuantFormat withBits(int newBits) {
        return new QuantFormat(scheme, newBits, block, rounding);
    }

    /** The same format with another rounding. */
    public QuantFormat withRounding(Rounding newRounding) {
        return new QuantFormat(scheme, bits, block, newRounding);
    }

    /** Largest |q|. */
    public int maxLevel() {
        return (1 << (bits - 1)) - 1;
    }

    public long blocks(long n) {
        return (n + block - 1) / block;
    }

    /** Bytes of the packed values of n elements (the last block padded). */
    public long packedBytes(long n) {
        return blocks(n) * block * bits / 8;
    }

    /** Bytes of one block's scale: an exponent byte (BFP) or an F32 (INT). */
    public int scaleBytes() {
        return scheme == Scheme.BFP ? 1 : 4;
    }

    /** Bytes of all scales of n elements. */
    public long scalesBytes(long n) {
        return blocks(n) * scaleBytes();
    }

    /** Throws unless packed and scales are large enough for n values (what quantize and dequantize write and read). */
    public void checkBuffers(Tensor packed, Tensor scales, long n) {
        if (packed.byteSize() < packedBytes(n) || scales.byteSize() < scalesBytes(n)) {
            throw new IllegalArgumentException(this + " of " + n + " values needs " + packedBytes(n) + " packed bytes and "
                    + scalesBytes(n) + " scale bytes; got " + packed + " and " + scales);
        }
    }

    /**
     * The 32 bits of a stochastic-rounding seed that every backend mixes into its per-element hash, so that the same
     * seed rounds the same way on each.
     */
    public static int seedBits(long seed) {
        return (int) (seed ^ (seed >>> 32)) * 0x9E3779B9;
    }

    /** Total bytes of n quantized elements. */
    public long bytes(long n) {
        return packedBytes(n) + scalesBytes(n);
    }

    /** Average bits per value, scales included. */
    public double bitsPerValue() {
        return bits + 8.0 * scaleBytes() / block;
    }

    /**
     * Smallest and largest shared exponent a BFP block stores (the scales 2^e of F32's normal range). Two bytes outside
     * that range are markers: {@link #ZERO_BLOCK} for an all-zero block, {@link #NAN_BLOCK} for a block that held NaN
     * or ±Inf (or a magnitude beyond 2^MAX_EXPONENT·maxLevel), which reads back as NaN. The CPU rejects such a block
     * instead; the GPU, which cannot stop a kernel, writes the marker (see {@code CudaBackend#quantize}).
     */
    public static final int MIN_EXPONENT = Float.MIN_EXPONENT, MAX_EXPONENT = 127;
    public static final byte ZERO_BLOCK = -128, NAN_BLOCK = -127;

    /**
     * BFP's shared exponent e of a non-zero block: the smallest e with maxAbs ≤ maxLevel·2^e, or MIN_EXPONENT when
     * maxAbs/maxLevel is below F32's normal range.
     */
    public int exponent(float maxAbs) {
        float ratio = maxAbs / maxLevel();
        int e = Math.getExponent(ratio);
        if (e < MIN_EXPONENT || Math.scalb(1f, e) < ratio) e++;
        return e;
    }

    /** The scale of a block whose largest magnitude is maxAbs (0 for a zero block). */
    public float scale(float maxAbs) {
        if (maxAbs == 0) return 0;
        return scheme == Scheme.BFP ? Math.scalb(1f, exponent(maxAbs)) : maxAbs / maxLevel();
    }

    /**
     * Largest |x − dequantize(quantize(x))| for a value of a block whose largest magnitude is maxAbs: half a step
     * when rounding to nearest, under a step stochastically (the scale is chosen so that nothing is clipped).
     */
    public double maxError(float maxAbs) {
        double step = scale(maxAbs);
        return rounding == Rounding.NEAREST ? step / 2 : step;
    }

    @Override
    public String toString() {
        return scheme.name().toLowerCase(Locale.ROOT) + bits + "/" + block + "/" + (rounding == Rounding.STOCHASTIC ? "sr" : "rn");
    }
}
