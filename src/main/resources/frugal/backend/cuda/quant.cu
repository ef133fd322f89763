// Block quantization kernels: the general ones (any block and width) and the fast paths (see quant.cuh).
#include "quant.cuh"

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

        const BlockScale sc = block_scale(maxAbs, isInt, maxLevel);
        const unsigned flags = sc.flags;
        const float inv = sc.inv;

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

        if (live && sub == 0) store_scale(scales, b, isInt, 0, sc, error);
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

// One thread per group of 8 values: y = q·s, written as T (bf16: rounded to nearest even). vec: y is 16-byte aligned.
template <typename T>
__device__ void dequantize_k(T* y, const unsigned char* packed, const unsigned char* scales, i64 n, int block, int bits,
                             int isInt, int vec) {
    const int groups = block >> 3, shift = 32 - bits;
    const i64 total = (n + block - 1) / block * groups;
    GRID_STRIDE(t, total) {
        const i64 b = t / groups, j0 = b * block + (t - b * groups) * 8;
        const float s = stored_scale(scales, b, isInt, 0);
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

// groups: those of all blocks, the last block's padding included (it packs as zeros); logLanes: log2(block / 8), the
// lanes of a block; scalesAligned: as for store_scale.
template <typename T, int BITS>
__device__ void quantize_fast_k(unsigned char* packed, unsigned char* scales, const T* x, i64 n, i64 groups,
                                int logLanes, int isInt, int stochastic, unsigned seedBits, int scalesAligned,
                                unsigned* error) {
    for_each_quantized_group<BITS>(packed, scales, x, n, groups, logLanes, isInt, stochastic, seedBits, scalesAligned, error,
                                   [](i64, const float*) {});
}
#define QUANTIZE_FAST(T, S, BITS)                                                                                      \
    extern "C" __global__ void __launch_bounds__(FAST_THREADS)                                                         \
        quantize_##S##_q##BITS(unsigned char* packed, unsigned char* scales, const T* x, i64 n, i64 groups,            \
                               int logLanes, int isInt, int stochastic, unsigned seedBits, int scalesAligned,         \
                               unsigned* error) {                                                                      \
        quantize_fast_k<T, BITS>(packed, scales, x, n, groups, logLanes, isInt, stochastic, seedBits, scalesAligned, \
                                 error);                                                                               \
    }

template <typename T, int BITS>
__device__ void dequantize_fast_k(T* y, const unsigned char* packed, const unsigned char* scales, i64 n, i64 groups,
                                  int logLanes, int isInt, int scalesAligned) {
    for_each_dequantized_group<BITS>(packed, scales, n, groups, logLanes, isInt, scalesAligned, [&](i64 j0, const float* v) {
        if (j0 + 8 <= n) {
#pragma unroll
            for (int k = 0; k < 8; k += Pack<T>::N) Pack<T>::store(y, j0 + k, v + k);
        } else {
            for (int k = 0; j0 + k < n; k++) st(y, j0 + k, v[k]);
        }
    });
}
#define DEQUANTIZE_FAST(T, S, BITS)                                                                                 \
    extern "C" __global__ void __launch_bounds__(FAST_THREADS)                                                      \
        dequantize_##S##_q##BITS(T* y, const unsigned char* packed, const unsigned char* scales, i64 n, i64 groups, \
                                 int logLanes, int isInt, int scalesAligned) {                                      \
        dequantize_fast_k<T, BITS>(y, packed, scales, n, groups, logLanes, isInt, scalesAligned);                   \
    }

#define FAST_KERNELS(BITS)              \
    QUANTIZE_FAST(float, f32, BITS)     \
    QUANTIZE_FAST(bf16, bf16, BITS)     \
    DEQUANTIZE_FAST(float, f32, BITS)   \
    DEQUANTIZE_FAST(bf16, bf16, BITS)
FAST_KERNELS(2)
FAST_KERNELS(3)
FAST_KERNELS(4)
FAST_KERNELS(5)
FAST_KERNELS(6)
FAST_KERNELS(7)
FAST_KERNELS(8)
