package frugal.quant;

import frugal.tensor.Tensor;

/**
 * A tensor's quantized copy, or where one is to be written: its packed values and block scales in {@code format}, and
 * the seed of its stochastic rounding ({@link frugal.backend.Backend#quantize}'s).
 */
public record Quantized(Tensor packed, Tensor scales, QuantFormat format, long seed) {
}
