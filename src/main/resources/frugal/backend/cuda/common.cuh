// Shared helpers, prepended to every kernel source by Kernels.java (NVRTC compiles each file alone, no includes).
#define FRUGAL_INF __int_as_float(0x7f800000)
#define FULL_MASK 0xffffffffu

typedef long long i64;

__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(FULL_MASK, v, o);
    return v;
}

__device__ __forceinline__ float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(FULL_MASK, v, o));
    return v;
}

__device__ __forceinline__ double warp_sum_d(double v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(FULL_MASK, v, o);
    return v;
}

// Sum over the block; every thread gets the result. blockDim.x must be a multiple of 32; shared holds 32 floats.
// Begins with a barrier so that the shared buffer may be reused by consecutive calls.
__device__ __forceinline__ float block_sum(float v, float* shared) {
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    v = warp_sum(v);
    __syncthreads();
    if (lane == 0) shared[warp] = v;
    __syncthreads();
    v = lane < warps ? shared[lane] : 0.f;
    return warp_sum(v);
}

__device__ __forceinline__ double block_sum_d(double v, double* shared) {
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    v = warp_sum_d(v);
    __syncthreads();
    if (lane == 0) shared[warp] = v;
    __syncthreads();
    v = lane < warps ? shared[lane] : 0.0;
    return warp_sum_d(v);
}

#define GRID_STRIDE(i, n) for (i64 i = (i64) blockIdx.x * blockDim.x + threadIdx.x; i < (n); i += (i64) gridDim.x * blockDim.x)

// bf16 as raw 16-bit storage (no cuda_bf16.h: NVRTC compiles without include paths). Conversions round to nearest
// even (cvt.rn, sm_80+). ld/st read and write either float or bf16 storage as float, so that one templated kernel
// serves both element types.
typedef unsigned short bf16;

__device__ __forceinline__ float bf2f(bf16 h) {
    return __uint_as_float(((unsigned) h) << 16);
}

__device__ __forceinline__ bf16 f2bf(float f) {
    unsigned short r;
    asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(r) : "f"(f));
    return r;
}

// Two floats into one register of two bf16 (lo in the low half), as mma.sync takes them.
__device__ __forceinline__ unsigned pack_bf16(float lo, float hi) {
    unsigned r;
    asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
    return r;
}

__device__ __forceinline__ float ld(const float* p, i64 i) { return p[i]; }
__device__ __forceinline__ float ld(const bf16* p, i64 i) { return bf2f(p[i]); }
__device__ __forceinline__ void st(float* p, i64 i, float v) { p[i] = v; }
__device__ __forceinline__ void st(bf16* p, i64 i, float v) { p[i] = f2bf(v); }

// 16-byte packs: 4 floats or 8 bf16, converted to and from float registers.
template <typename T> struct Pack;
template <> struct Pack<float> {
    static constexpr int N = 4;
    __device__ __forceinline__ static void load(float* v, const float* p, i64 i) {
        float4 x = *reinterpret_cast<const float4*>(p + i);
        v[0] = x.x; v[1] = x.y; v[2] = x.z; v[3] = x.w;
    }
    __device__ __forceinline__ static void store(float* p, i64 i, const float* v) {
        *reinterpret_cast<float4*>(p + i) = make_float4(v[0], v[1], v[2], v[3]);
    }
};
template <> struct Pack<bf16> {
    static constexpr int N = 8;
    __device__ __forceinline__ static void load(float* v, const bf16* p, i64 i) {
        uint4 x = *reinterpret_cast<const uint4*>(p + i);
        unsigned w[4] = {x.x, x.y, x.z, x.w};
#pragma unroll
        for (int k = 0; k < 4; k++) {
            v[2 * k] = __uint_as_float(w[k] << 16);
            v[2 * k + 1] = __uint_as_float(w[k] & 0xffff0000u);
        }
    }
    __device__ __forceinline__ static void store(bf16* p, i64 i, const float* v) {
        uint4 x;
        x.x = pack_bf16(v[0], v[1]); x.y = pack_bf16(v[2], v[3]); x.z = pack_bf16(v[4], v[5]); x.w = pack_bf16(v[6], v[7]);
        *reinterpret_cast<uint4*>(p + i) = x;
    }
};

// A 16-byte pack as raw registers: 4 floats or 8 bf16.
template <typename T> struct Raw;
template <> struct Raw<float> { typedef float4 type; };
template <> struct Raw<bf16> { typedef uint4 type; };

// N floats (a multiple of 4) from a 16-byte aligned address, in 16-byte loads.
template <int N>
__device__ __forceinline__ void load_floats(float* v, const float* p) {
#pragma unroll
    for (int q = 0; q < N; q += 4) Pack<float>::load(v + q, p, q);
}
