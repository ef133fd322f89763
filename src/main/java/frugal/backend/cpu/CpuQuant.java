package frugal.backend.cpu;

import frugal.FrugalException;
import frugal.quant.QuantFormat;
import frugal.tensor.DType;
import frugal.tensor.Tensor;
import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.IntVector;
import jdk.incubator.vector.VectorOperators;
import jdk.incubator.vector.VectorSpecies;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;

import static frugal.backend.cpu.Vec.L;
import static frugal.backend.cpu.Vec.get;
import static frugal.backend.cpu.Vec.load;

/**
 * Block quantization to {@link QuantFormat}s and back, block by block over all cores. A block's values are packed
 * as two's-complement fields of {@code bits} bits, least significant first, so that a block of 32 values at 4 bits
 * fills exactly 16 bytes; its scale goes to {@code scales} (an exponent byte for BFP, an F32 for INT).
 */
final class CpuQuant {
    private static final VectorSpecies<Integer> I = IntVector.SPECIES_PREFERRED;
    private static final IntVector IOTA = IntVector.zero(I).addIndex(1);
    private CpuQuant() {
    }

    static void quantize(Tensor packed, Tensor scales, Tensor src, long n, QuantFormat f, long seed) {
        f.checkBuffers(packed, scales, n);
        checkF32("quantize", src, n);
        int seedBits = QuantFormat.seedBits(seed);
        Parallel.forRange(Math.toIntExact(f.blocks(n)), 64, (b0, b1) -> quantizeBlocks(packed, scales, src.data(), n, f, seedBits, b0, b1));
    }

    /** Blocks [b0, b1) of {@link #quantize}: the same bytes whichever blocks a call takes. */
    static void quantizeBlocks(Tensor packed, Tensor scales, MemorySegment x, long n, QuantFormat f, int seedBits, int b0, int b1) {
        MemorySegment p = packed.data(), sc = scales.data();
        int block = f.block(), bits = f.bits(), maxLevel = f.maxLevel();
        boolean stochastic = f.rounding() == QuantFormat.Rounding.STOCHASTIC;
        int[] q = new int[block];
        for (int b = b0; b < b1; b++) {
            long start = (long) b * block;
            int len = (int) Math.min(block, n - start);
            float maxAbs = maxAbs(x, start, len, b);
            float s = f.scale(maxAbs);
            if (f.scheme() == QuantFormat.Scheme.BFP) {
                if (maxAbs != 0 && f.exponent(maxAbs) > QuantFormat.MAX_EXPONENT) {
                    throw new FrugalException("quantize to " + f + ": block " + b + " holds " + maxAbs + ", beyond BFP's shared-exponent range");
                }
                sc.set(ValueLayout.JAVA_BYTE, b, maxAbs == 0 ? QuantFormat.ZERO_BLOCK : (byte) f.exponent(maxAbs));
            } else {
                sc.setAtIndex(ValueLayout.JAVA_FLOAT_UNALIGNED, b, s);
            }
            float inv = s == 0 ? 0 : 1f / s;
            int j = 0;
            FloatVector vinv = FloatVector.broadcast(Vec.S, inv), half = FloatVector.broadcast(Vec.S, 0.5f);
            for (; j <= len - L; j += L) {
                FloatVector v = load(x, start + j).mul(vinv);
                FloatVector offset = stochastic ? uniforms(seedBits, start + j) : half;
                IntVector m = ((IntVector) v.abs().add(offset).convert(VectorOperators.F2I, 0)).min(maxLevel);
                m.blend(m.neg(), v.lt(0f).cast(I)).intoArray(q, j);
            }
            for (; j < len; j++) {
                float v = get(x, start + j) * inv;
                float a = Math.abs(v) + (stochastic ? uniform(seedBits, start + j) : 0.5f);
                int m = Math.min(maxLevel, (int) a); // truncation of a non-negative value is its floor
                q[j] = v < 0 ? -m : m;
            }
            for (; j < block; j++) q[j] = 0;
            pack(q, bits, p, (long) b * block * bits / 8);
        }
    }

    static void dequantize(Tensor dst, Tensor packed, Tensor scales, long n, QuantFormat f) {
        f.checkBuffers(packed, scales, n);
        checkF32("dequantize", dst, n);
        Parallel.forRange(Math.toIntExact(f.blocks(n)), 64, (b0, b1) -> dequantizeBlocks(dst.data(), 0, packed, scales, n, f, b0, b1));
    }

    /** Blocks [b0, b1) of {@link #dequantize}, element i written at y[i - first] (y a scratch for a range of rows, or the tensor). */
    static void dequantizeBlocks(MemorySegment y, long first, Tensor packed, Tensor scales, long n, QuantFormat f, int b0, int b1) {
        MemorySegment p = packed.data(), sc = scales.data();
        int block = f.block(), bits = f.bits();
        int[] q = new int[block];
        float[] values = new float[block];
        for (int b = b0; b < b1; b++) {
            long start = (long) b * block;
            int len = (int) Math.min(block, n - start);
            float s;
            if (f.scheme() == QuantFormat.Scheme.BFP) {
                byte e = sc.get(ValueLayout.JAVA_BYTE, b);
                s = e == QuantFormat.ZERO_BLOCK ? 0 : e == QuantFormat.NAN_BLOCK ? Float.NaN : Math.scalb(1f, e);
            } else {
                s = sc.getAtIndex(ValueLayout.JAVA_FLOAT_UNALIGNED, b);
            }
            unpack(p, (long) b * block * bits / 8, bits, q);
            int j = 0;
            for (; j <= block - L; j += L) {
                ((FloatVector) IntVector.fromArray(I, q, j).convert(VectorOperators.I2F, 0)).mul(s).intoArray(values, j);
            }
            for (; j < block; j++) values[j] = q[j] * s;
            MemorySegment.copy(values, 0, y, ValueLayout.JAVA_FLOAT, (start - first) * 4, len);
        }
    }

    /** max|x| over the block; rejects NaN and ±Inf (x·0 is NaN exactly for those). */
    private static float maxAbs(MemorySegment x, long start, int len, int blockIndex) {
        int j = 0;
        float max = 0, poison = 0;
        if (len >= L) {
            FloatVector m = FloatVector.zero(Vec.S), z = FloatVector.zero(Vec.S);
            for (; j <= len - L; j += L) {
                FloatVector v = load(x, start + j);
                m = m.max(v.abs());
                z = z.add(v.mul(0f));
            }
            max = m.reduceLanes(VectorOperators.MAX);
            poison = z.reduceLanes(VectorOperators.ADD);
        }
        for (; j < len; j++) {
            float v = get(x, start + j);
            max = Math.max(max, Math.abs(v));
            poison += v * 0f;
        }
        if (Float.isNaN(poison) || Float.isNaN(max)) {
            throw new FrugalException("quantize: block " + blockIndex + " (elements " + start + ".." + (start + len - 1)
                    + ") holds NaN or Inf; only finite values can be quantized (a diverged step?)");
        }
        return max;
    }

    private static void pack(int[] q, int bits, MemorySegment p, long byteOffset) {
        int mask = (1 << bits) - 1;
        long acc = 0;
        int filled = 0;
        long o = byteOffset;
        for (int v : q) {
            acc |= (long) (v & mask) << filled;
            filled += bits;
            while (filled >= 8) {
                p.set(ValueLayout.JAVA_BYTE, o++, (byte) acc);
                acc >>>= 8;
                filled -= 8;
            }
        }
    }

    private static void unpack(MemorySegment p, long byteOffset, int bits, int[] q) {
        int shift = 32 - bits;
        long acc = 0;
        int filled = 0;
        long o = byteOffset;
        for (int j = 0; j < q.length; j++) {
            while (filled < bits) {
                acc |= (long) (p.get(ValueLayout.JAVA_BYTE, o++) & 0xff) << filled;
                filled += 8;
            }
            q[j] = ((int) acc << shift) >> shift; // sign-extend the low `bits` bits
            acc >>>= bits;
            filled -= bits;
        }
    }

    /**
     * A uniform float in [0, 1) from (seed, index) alone, so that results do not depend on threading or vector width:
     * a 32-bit integer hash (lowbias32) of the index mixed with the seed, whose top 24 bits make the fraction.
     */
    static float uniform(int seedBits, long index) {
        int z = (int) index ^ seedBits;
        z = (z ^ (z >>> 16)) * 0x7feb352d;
        z = (z ^ (z >>> 15)) * 0x846ca68b;
        z ^= z >>> 16;
        return (z >>> 8) * 0x1.0p-24f;
    }

    /** {@link #uniform(int, long)} for the L indices from {@code index} on. */
    private static FloatVector uniforms(int seedBits, long index) {
        IntVector z = IOTA.add((int) index).lanewise(VectorOperators.XOR, seedBits);
        z = z.lanewise(VectorOperators.XOR, z.lanewise(VectorOperators.LSHR, 16)).mul(0x7feb352d);
        z = z.lanewise(VectorOperators.XOR, z.lanewise(VectorOperators.LSHR, 15)).mul(0x846ca68b);
        z = z.lanewise(VectorOperators.XOR, z.lanewise(VectorOperators.LSHR, 16));
        return ((FloatVector) z.lanewise(VectorOperators.LSHR, 8).convert(VectorOperators.I2F, 0)).mul(0x1.0p-24f);
    }

    /** The CPU computes in F32 only (its activations are F32). */
    private static void checkF32(String op, Tensor t, long n) {
        if (t.dtype() != DType.F32 || t.size() < n) {
            throw new IllegalArgumentException(op + " on the CPU takes " + n + " F32 values, got " + t);
        }
    }
}
