package frugal.backend.cpu;

import frugal.quant.QuantFormat;
import frugal.quant.Quantized;
import frugal.tensor.Tensor;

import java.lang.foreign.MemorySegment;

/**
 * Linear layers' forwards that write the stash's quantized copy of the product in the GEMM's epilogue: each GEMM task
 * adds the bias to the part of the product it finished and quantizes it (and, with GELU, replaces it by its GELU) a row
 * at a time while the part is in its cache, instead of three more passes over the whole product. The bits of the
 * composed ops (matmul, addBias, geluForward, quantize): an element's sum over k runs in the same order whatever the
 * tiling, and quantize's blocks do not depend on which call takes them. The product's columns must be a multiple of
 * the quantization block, so that every block lies in one task's part (see {@link CpuMatmul#linearForward}).
 */
final class CpuLinear {
    private CpuLinear() {
    }

    /** out[m,n] = a[m,k]·b[n,k]ᵀ (+ bias[n] where non-null), and its quantized copy outq. */
    static void forwardQuantized(Tensor out, Quantized outq, Tensor a, Tensor b, Tensor bias, int m, int n, int k) {
        forwardQuantized(out, outq, a, b, bias, m, n, k, false);
    }

    /**
     * act = GELU(pre), pre[m,n] = a[m,k]·b[n,k]ᵀ (+ bias[n] where non-null), and pre's quantized copy preq. pre is never
     * written: act holds each element's sum until the epilogue quantizes it and puts its GELU in its place.
     */
    static void geluForwardQuantized(Tensor act, Quantized preq, Tensor a, Tensor b, Tensor bias, int m, int n, int k) {
        forwardQuantized(act, preq, a, b, bias, m, n, k, true);
    }

    private static void forwardQuantized(Tensor out, Quantized q, Tensor a, Tensor b, Tensor bias, int m, int n, int k, boolean gelu) {
        MemorySegment o = out.data(), bs = bias == null ? null : bias.data();
        QuantFormat f = q.format();
        int block = f.block(), seedBits = QuantFormat.seedBits(q.seed());
        long size = (long) m * n;
        CpuMatmul.linearForward(out, a, b, m, n, k, block, (r0, r1, c0, c1) -> {
            float[] e = gelu ? CpuActivations.geluScratch() : null;
            for (int r = r0; r < r1; r++) {
                long from = (long) r * n + c0, to = (long) r * n + c1;
                if (bs != null) Vec.axpy(1f, bs, c0, o, from, c1 - c0); // as CpuBackend.addBias
                CpuQuant.quantizeBlocks(q.packed(), q.scales(), o, size, f, seedBits, Math.toIntExact(from / block),
                        Math.toIntExact(to / block));
                if (gelu) CpuActivations.gelu(o, o, from, to, e);
            }
        });
    }
}
