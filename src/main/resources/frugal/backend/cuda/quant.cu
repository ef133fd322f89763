// Block quantization to frugal.quant.QuantFormat and back, bit for bit as CpuQuant does it: the same packed bytes and
// scales for the same values. Templated on the activation type T (float or bf16, suffix _f32 or _bf16); math in float,
// every rounding step explicit (__fmul_rn, __fadd_rn, __fdiv_rn) so that NVRTC's default FMA contraction cannot fuse
// what Java rounds twice.
//
// Layout: block b's values are fields of `bits` bits, least significant first, from byte b*block*bits/8. 8 values fill
// exactly `bits` bytes, so a "group" of 8 values is the unit of work: group t of the tensor is bytes [t*bits, (t+1)*bits).
// Scales: one exponent byte per block (BFP) or one float per block (INT), written and read byte by byte because the
// scales often follow the packed bytes in one buffer at an offset that is no multiple of 4.
//
// A block holding NaN or ±Inf (or, in BFP, a magnitude beyond the largest shared exponent) cannot stop the kernel as
// the CPU stops: it is stored as NaN (exponent byte BFP_NAN_BLOCK, or a NaN INT scale, values 0), so that it reads back
// as NaN, and its reason is OR-ed into *error, which the host reads at its next wait on the stream.

#define BFP_ZERO_BLOCK (-128) // QuantFormat.ZERO_BLOCK
#define BFP_NAN_BLOCK (-127)  // QuantFormat.NAN_BLOCK
#define BFP_MAX_EXPONENT 127  // QuantFormat.MAX_EXPONENT
#define QUANT_NON_FINITE 1u   // error bits, as CudaBackend names them
#define QUANT_BEYOND_BFP 2u
#define QUANT_NAN __int_as_float(0x7fc00000)

// 2^e for e in F32's normal exponent range [-126, 127]: Java's Math.scalb(1f, e) there.
__device__ __forceinline__ float pow2(int e) {
    return __uint_as_float((unsigned) (e + 127) << 23);
}

// QuantFormat.exponent: the smallest e with maxAbs <= maxLevel * 2^e (from Math.getExponent of the ratio), at least
// -126; 128 when maxAbs/maxLevel exceeds 2^127 (beyond BFP).
__device__ __forceinline__ int bfp_exponent(float maxAbs, int maxLevel) {
    float ratio = __fdiv_rn(maxAbs, (float) maxLevel);
    int e = (int) ((__float_as_uint(ratio) >> 23) & 0xff) - 127; // Math.getExponent: -127 for subnormals
    if (e < -126 || pow2(e) < ratio) e++;
    return e;
}

// CpuQuant.uniform: a float in [0, 1) from the lowbias32 hash of the element's index mixed with the seed.
__device__ __forceinline__ float uniform01(unsigned seedBits, i64 index) {
    unsigned z = (unsigned) index ^ seedBits;
    z = (z ^ (z >> 16)) * 0x7feb352du;
    z = (z ^ (z >> 15)) * 0x846ca68bu;
    z ^= z >> 16;
    return __fmul_rn((float) (z >> 8), __int_as_float(0x33800000)); // × 2^-24
}

// The level of v = x/s: min(maxLevel, (int) (|v| + offset)) with v's sign. As in Java, (int) NaN is 0 (v is NaN when a
// zero meets the infinite 1/s of an INT scale that underflowed) and +Inf is clamped to maxLevel.
__device__ __forceinline__ int level(float v, float offset, int maxLevel) {
    float a = __fadd_rn(fabsf(v), offset);
    int m = a < (float) maxLevel ? (int) a : a >= (float) maxLevel ? maxLevel : 0;
    return v < 0.f ? -m : m;
}

// Values [8g, 8g+8) of the block starting at element `start` that holds `len` elements; zeros past len (the padding of
// the last block). vec: x is 16-byte aligned, so a full group is one or two 16-byte loads.
template <typename T>
__device__ __forceinline__ void load_group(float* v, const T* x, i64 start, int g, int len, int vec) {
    int j0 = 8 * g;
    if (vec && j0 + 8 <= len) {
#pragma unroll
        for (int k = 0; k < 8; k += Pack<T>::N) Pack<T>::load(v + k, x, start + j0 + k);
    } else {
#pragma unroll
        for (int k = 0; k < 8; k++) v[k] = j0 + k < len ? ld(x, start + j0 + k) : 0.f;
    }
}

// `lanes` consecutive lanes of a warp (a power of two, at most block/8) quantize one block, so a warp takes 32/lanes
// blocks at a time; each lane takes groups sub, sub+lanes, ... Every lane runs every shuffle (dead blocks hold zeros).
template <typename T>
__device__ void quantize_k(unsigned char* packed, unsigned char* scales, const T* x, i64 n, int block, int bits,
                           int isInt, int stochastic, unsigned seedBits, int lanes, int vec, unsigned* error) {
    const int groups = block >> 3, perWarp = 32 / lanes;
    const int lane = threadIdx.x & 31, sub = lane & (lanes - 1);
    const int maxLevel = (1 << (bits - 1)) - 1;
    const unsigned mask = (1u << bits) - 1;
    const i64 blocks = (n + block - 1) / block;
    const i64 warp = ((i64) blockIdx.x * blockDim.x + threadIdx.x) >> 5, warps = ((i64) gridDim.x * blockDim.x) >> 5;
    for (i64 first = warp * perWarp; first < blocks; first += warps * perWarp) {
        const i64 b = first + lane / lanes, start = b * block;
        const bool live = b < blocks;
        const int len = !live ? 0 : n - start < block ? (int) (n - start) : block;

        float maxAbs = 0.f; // +Inf stands for NaN or ±Inf anywhere in the block
        for (int g = sub; g < groups; g += lanes) {
            float v[8];
            load_group(v, x, start, g, len, vec);
#pragma unroll
            for (int k = 0; k < 8; k++) {
                float a = fabsf(v[k]);
                maxAbs = fmaxf(maxAbs, a < FRUGAL_INF ? a : FRUGAL_INF);
            }
        }
        for (int o = lanes >> 1; o > 0; o >>= 1) maxAbs = fmaxf(maxAbs, __shfl_xor_sync(FULL_MASK, maxAbs, o));

        unsigned flags = 0;
        int e = 0;
        float s = 0.f; // QuantFormat.scale
        if (maxAbs == FRUGAL_INF) {
            flags = QUANT_NON_FINITE;
        } else if (isInt) {
            s = __fdiv_rn(maxAbs, (float) maxLevel);
        } else if (maxAbs != 0.f) {
            e = bfp_exponent(maxAbs, maxLevel);
            if (e > BFP_MAX_EXPONENT) flags = QUANT_BEYOND_BFP;
            else s = pow2(e);
        }
        const float inv = s == 0.f ? 0.f : __fdiv_rn(1.f, s);

        for (int g = sub; g < groups; g += lanes) {
            float v[8];
            load_group(v, x, start, g, len, vec);
            unsigned long long acc = 0;
#pragma unroll
            for (int k = 0; k < 8; k++) {
                int j = 8 * g + k, q = 0;
                if (flags == 0 && j < len) {
                    float offset = stochastic ? uniform01(seedBits, start + j) : 0.5f;
                    q = level(__fmul_rn(v[k], inv), offset, maxLevel);
                }
                acc |= (unsigned long long) ((unsigned) q & mask) << (k * bits);
            }
            if (live) {
                unsigned char* p = packed + (b * groups + g) * bits;
                for (int i = 0; i < bits; i++) p[i] = (unsigned char) (acc >> (8 * i));
            }
        }

        if (live && sub == 0) {
            if (isInt) {
                unsigned u = __float_as_uint(flags ? QUANT_NAN : s);
#pragma unroll
                for (int i = 0; i < 4; i++) scales[4 * b + i] = (unsigned char) (u >> (8 * i));
            } else {
                scales[b] = (unsigned char) (flags ? BFP_NAN_BLOCK : maxAbs == 0.f ? BFP_ZERO_BLOCK : e);
            }
            if (flags) atomicOr(error, flags);
        }
    }
}
#define QUANTIZE(T, S)                                                                                                  \
    extern "C" __global__ void quantize_##S(unsigned char* packed, unsigned char* scales, const T* x, i64 n, int block, \
                                            int bits, int isInt, int stochastic, unsigned seedBits, int lanes, int vec,  \
                                            unsigned* error) {                                                          \
        quantize_k<T>(packed, scales, x, n, block, bits, isInt, stochastic, seedBits, lanes, vec, error);              \
    }
QUANTIZE(float, f32)
QUANTIZE(bf16, bf16)

// The scale of block b: CpuQuant.dequantize's.
__device__ __forceinline__ float block_scale(const unsigned char* scales, i64 b, int isInt) {
    if (isInt) {
        unsigned u = 0;
#pragma unroll
        for (int i = 0; i < 4; i++) u |= (unsigned) scales[4 * b + i] << (8 * i);
        return __uint_as_float(u);
    }
    int e = (signed char) scales[b];
    return e == BFP_ZERO_BLOCK ? 0.f : e == BFP_NAN_BLOCK ? QUANT_NAN : pow2(e);
}

// One thread per group of 8 values: y = q·s, written as T (bf16: rounded to nearest even). vec: y is 16-byte aligned.
template <typename T>
__device__ void dequantize_k(T* y, const unsigned char* packed, const unsigned char* scales, i64 n, int block, int bits,
                             int isInt, int vec) {
    const int groups = block >> 3, shift = 32 - bits;
    const i64 total = (n + block - 1) / block * groups;
    GRID_STRIDE(t, total) {
        const i64 b = t / groups, j0 = b * block + (t - b * groups) * 8;
        const float s = block_scale(scales, b, isInt);
        const unsigned char* p = packed + t * bits;
        unsigned long long acc = 0;
        for (int i = 0; i < bits; i++) acc |= (unsigned long long) p[i] << (8 * i);
        float v[8];
#pragma unroll
        for (int k = 0; k < 8; k++) {
            int q = (int) ((unsigned) (acc >> (k * bits)) << shift) >> shift; // sign-extend the low `bits` bits
            v[k] = __fmul_rn((float) q, s);
        }
        if (vec && j0 + 8 <= n) {
#pragma unroll
            for (int k = 0; k < 8; k += Pack<T>::N) Pack<T>::store(y, j0 + k, v + k);
        } else {
#pragma unroll
            for (int k = 0; k < 8; k++) if (j0 + k < n) st(y, j0 + k, v[k]);
        }
    }
}
#define DEQUANTIZE(T, S)                                                                                             \
    extern "C" __global__ void dequantize_##S(T* y, const unsigned char* packed, const unsigned char* scales, i64 n, \
                                              int block, int bits, int isInt, int vec) {                             \
        dequantize_k<T>(y, packed, scales, n, block, bits, isInt, vec);                                              \
    }
DEQUANTIZE(float, f32)
DEQUANTIZE(bf16, bf16)
