// LayerNorm and RMSNorm, templated on the activation type T (x, out, dx, dout); weights, their gradients, mean and
// rstd are float. Forward: one block per row. Backward: a grid of blocks over rows, each keeping its partial
// dweight/dbias column sums in shared memory (dynamic: 2*cols floats + 32), added into the gradients once at the end.

#include "quant.cuh"
#include "norms.cuh"

#define FOR_TYPES(X) X(float, f32) X(bf16, bf16)

template <typename T>
__device__ void layernorm_forward_k(T* out, float* mean, float* rstd, const T* x, const float* w, const float* b,
                                    int rows, int cols, float eps) {
    __shared__ float red[32];
    int row = blockIdx.x;
    const T* xr = x + (i64) row * cols;
    T* o = out + (i64) row * cols;
    float s = 0.f;
    for (int c = threadIdx.x; c < cols; c += blockDim.x) s += ld(xr, c);
    float m = block_sum(s, red) / cols;
    float v = 0.f;
    for (int c = threadIdx.x; c < cols; c += blockDim.x) {
        float d = ld(xr, c) - m;
        v += d * d;
    }
    float var = block_sum(v, red) / cols;
    float rs = 1.f / sqrtf(var + eps);
    for (int c = threadIdx.x; c < cols; c += blockDim.x) st(o, c, (ld(xr, c) - m) * rs * w[c] + b[c]);
    if (threadIdx.x == 0) {
        mean[row] = m;
        rstd[row] = rs;
    }
}
#define LN_F(T, S) extern "C" __global__ void layernorm_forward_##S(T* out, float* mean, float* rstd, const T* x, \
        const float* w, const float* b, int rows, int cols, float eps) { layernorm_forward_k<T>(out, mean, rstd, x, w, b, rows, cols, eps); }
FOR_TYPES(LN_F)

template <typename T>
__device__ void layernorm_backward_k(T* dx, float* dw, float* db, const T* dout, const T* x, const float* w,
                                     const float* mean, const float* rstd, int rows, int cols) {
    extern __shared__ float sh[];
    float* dwPart = sh;
    float* dbPart = sh + cols;
    float* red = sh + 2 * cols;
    for (int c = threadIdx.x; c < cols; c += blockDim.x) {
        dwPart[c] = 0.f;
        dbPart[c] = 0.f;
    }
    for (int row = blockIdx.x; row < rows; row += gridDim.x) {
        i64 base = (i64) row * cols;
        float m = mean[row], s = rstd[row];
        float a = 0.f, bn = 0.f;
        for (int c = threadIdx.x; c < cols; c += blockDim.x) {
            float norm = (ld(x, base + c) - m) * s;
            float dn = ld(dout, base + c) * w[c];
            a += dn;
            bn += dn * norm;
        }
        a = block_sum(a, red) / cols;
        bn = block_sum(bn, red) / cols;
        for (int c = threadIdx.x; c < cols; c += blockDim.x) {
            float d = ld(dout, base + c);
            float norm = (ld(x, base + c) - m) * s;
            dbPart[c] += d;
            dwPart[c] += norm * d;
            st(dx, base + c, ld(dx, base + c) + (d * w[c] - a - norm * bn) * s);
        }
    }
    __syncthreads();
    for (int c = threadIdx.x; c < cols; c += blockDim.x) {
        atomicAdd(&dw[c], dwPart[c]);
        atomicAdd(&db[c], dbPart[c]);
    }
}
#define LN_B(T, S) extern "C" __global__ void layernorm_backward_##S(T* dx, float* dw, float* db, const T* dout, const T* x, \
        const float* w, const float* mean, const float* rstd, int rows, int cols) { \
    layernorm_backward_k<T>(dx, dw, db, dout, x, w, mean, rstd, rows, cols); }
FOR_TYPES(LN_B)

template <typename T>
__device__ void rmsnorm_forward_k(T* out, float* rstd, const T* x, const float* w, int rows, int cols, float eps) {
    __shared__ float red[32];
    int row = blockIdx.x;
    const T* xr = x + (i64) row * cols;
    T* o = out + (i64) row * cols;
    float ss = 0.f;
    for (int c = threadIdx.x; c < cols; c += blockDim.x) {
        float v = ld(xr, c);
        ss += v * v;
    }
    float rs = 1.f / sqrtf(block_sum(ss, red) / cols + eps);
    for (int c = threadIdx.x; c < cols; c += blockDim.x) st(o, c, ld(xr, c) * rs * w[c]);
    if (threadIdx.x == 0) rstd[row] = rs;
}
#define RMS_F(T, S) extern "C" __global__ void rmsnorm_forward_##S(T* out, float* rstd, const T* x, const float* w, int rows, \
        int cols, float eps) { rmsnorm_forward_k<T>(out, rstd, x, w, rows, cols, eps); }
FOR_TYPES(RMS_F)

template <typename T>
__device__ void rmsnorm_backward_k(T* dx, float* dw, const T* dout, const T* x, const float* w, const float* rstd,
                                   int rows, int cols) {
    extern __shared__ float sh[];
    float* dwPart = sh;
    float* red = sh + cols;
    for (int c = threadIdx.x; c < cols; c += blockDim.x) dwPart[c] = 0.f;
    for (int row = blockIdx.x; row < rows; row += gridDim.x) {
        i64 base = (i64) row * cols;
        float s = rstd[row];
        float bn = 0.f;
        for (int c = threadIdx.x; c < cols; c += blockDim.x) bn += ld(dout, base + c) * w[c] * ld(x, base + c) * s;
        bn = block_sum(bn, red) / cols;
        for (int c = threadIdx.x; c < cols; c += blockDim.x) {
            float d = ld(dout, base + c);
            float norm = ld(x, base + c) * s;
            dwPart[c] += norm * d;
            st(dx, base + c, ld(dx, base + c) + (d * w[c] - norm * bn) * s);
        }
    }
    __syncthreads();
    for (int c = threadIdx.x; c < cols; c += blockDim.x) atomicAdd(&dw[c], dwPart[c]);
}
#define RMS_B(T, S) extern "C" __global__ void rmsnorm_backward_##S(T* dx, float* dw, const T* dout, const T* x, const float* w, \
        const float* rstd, int rows, int cols) { rmsnorm_backward_k<T>(dx, dw, dout, x, w, rstd, rows, cols); }
FOR_TYPES(RMS_B)

// Warp-per-row LayerNorm (8 rows per block of 256 threads): forward, and backward with the block's dweight/dbias
// partial sums in shared memory (2*cols floats), added into the gradients once per block.
template <typename T>
__device__ void layernorm_forward_warp_k(T* out, float* mean, float* rstd, const T* x, const float* w, const float* b,
                                         int rows, int cols, float eps) {
    int lane = threadIdx.x & 31;
    for (int row = blockIdx.x * 8 + (threadIdx.x >> 5); row < rows; row += gridDim.x * 8) {
        const T* xr = x + (i64) row * cols;
        T* o = out + (i64) row * cols;
        float s = 0.f;
        for (int c = lane; c < cols; c += 32) s += ld(xr, c);
        float m = warp_sum(s) / cols;
        float v = 0.f;
        for (int c = lane; c < cols; c += 32) {
            float d = ld(xr, c) - m;
            v += d * d;
        }
        float rs = 1.f / sqrtf(warp_sum(v) / cols + eps);
        for (int c = lane; c < cols; c += 32) st(o, c, (ld(xr, c) - m) * rs * w[c] + b[c]);
        if (lane == 0) {
            mean[row] = m;
            rstd[row] = rs;
        }
    }
}
#define LN_FW(T, S) extern "C" __global__ void __launch_bounds__(256) layernorm_forward_warp_##S(T* out, float* mean, float* rstd, \
        const T* x, const float* w, const float* b, int rows, int cols, float eps) { \
    layernorm_forward_warp_k<T>(out, mean, rstd, x, w, b, rows, cols, eps); }
FOR_TYPES(LN_FW)

template <typename T>
__device__ void layernorm_backward_warp_k(T* dx, float* dw, float* db, const T* dout, const T* x, const float* w,
                                          const float* mean, const float* rstd, int rows, int cols) {
    extern __shared__ float sh[];
    float* dwPart = sh;
    float* dbPart = sh + cols;
    for (int c = threadIdx.x; c < cols; c += blockDim.x) {
        dwPart[c] = 0.f;
        dbPart[c] = 0.f;
    }
    __syncthreads();
    int lane = threadIdx.x & 31;
    for (int row = blockIdx.x * 8 + (threadIdx.x >> 5); row < rows; row += gridDim.x * 8) {
        i64 base = (i64) row * cols;
        float m = mean[row], s = rstd[row];
        float a = 0.f, bn = 0.f;
        for (int c = lane; c < cols; c += 32) {
            float norm = (ld(x, base + c) - m) * s;
            float dn = ld(dout, base + c) * w[c];
            a += dn;
            bn += dn * norm;
        }
        a = warp_sum(a) / cols;
        bn = warp_sum(bn) / cols;
        for (int c = lane; c < cols; c += 32) {
            float d = ld(dout, base + c);
            float norm = (ld(x, base + c) - m) * s;
            atomicAdd(&dbPart[c], d);
            atomicAdd(&dwPart[c], norm * d);
            st(dx, base + c, ld(dx, base + c) + (d * w[c] - a - norm * bn) * s);
        }
    }
    __syncthreads();
    for (int c = threadIdx.x; c < cols; c += blockDim.x) {
        atomicAdd(&dw[c], dwPart[c]);
        atomicAdd(&db[c], dbPart[c]);
    }
}
#define LN_BW(T, S) extern "C" __global__ void __launch_bounds__(256) layernorm_backward_warp_##S(T* dx, float* dw, float* db, \
        const T* dout, const T* x, const float* w, const float* mean, const float* rstd, int rows, int cols) { \
    layernorm_backward_warp_k<T>(dx, dw, db, dout, x, w, mean, rstd, rows, cols); }
FOR_TYPES(LN_BW)

// layernorm_backward_warp with 16-byte loads, for rows of at most 32·P whole packs (cols a multiple of Pack<T>::N,
// 16-byte aligned, weight too), in blocks of LN_BP_WARPS warps (CudaBackend launches them so): a warp per row, its x,
// dout and dx loaded together into registers (dx does not wait for the row's reductions). A warp's rows follow one
// another, so it is the other warps' loads that hide a row's memory latency; for 32 warps an SM (64 registers), each
// warp adds its rows' dweight/dbias terms into sums of its own in shared memory rather than registers: 2·32·P·N floats
// a warp, a lane's 16-byte slots interleaved with the other lanes' (no bank conflicts). At the end the block adds up
// its warps' sums and adds them into the gradients, once a column.
#define LN_BP_WARPS 16

template <typename T, int P>
__device__ __forceinline__ void load_packs(typename Raw<T>::type (&r)[P], const T* p, i64 base, int lane, int packs) {
    typedef typename Raw<T>::type R;
#pragma unroll
    for (int q = 0; q < P; q++) {
        if (lane + 32 * q < packs) r[q] = reinterpret_cast<const R*>(p + base)[lane + 32 * q];
    }
}

// A move the compiler cannot see through: what the first pass over a row derived from its registers (unpacked values,
// weights) is recomputed or reloaded in the second rather than kept alive over the reductions.
__device__ __forceinline__ void opaque(int& v) { asm volatile("mov.b32 %0, %0;" : "+r"(v)); }
__device__ __forceinline__ void opaque(uint4& v) {
    asm volatile("mov.b32 %0, %0;" : "+r"(v.x));
    asm volatile("mov.b32 %0, %0;" : "+r"(v.y));
    asm volatile("mov.b32 %0, %0;" : "+r"(v.z));
    asm volatile("mov.b32 %0, %0;" : "+r"(v.w));
}
__device__ __forceinline__ void opaque(float4& v) {
    asm volatile("mov.b32 %0, %0;" : "+f"(v.x));
    asm volatile("mov.b32 %0, %0;" : "+f"(v.y));
    asm volatile("mov.b32 %0, %0;" : "+f"(v.z));
    asm volatile("mov.b32 %0, %0;" : "+f"(v.w));
}

template <typename T, int P>
__device__ void layernorm_backward_packed_k(T* dx, float* dw, float* db, const T* dout, const T* x, const float* w,
                                            const float* mean, const float* rstd, int rows, int cols) {
    constexpr int N = Pack<T>::N, Q = N / 4, SLOTS = 32 * P * Q; // float4s a pack; a warp's float4 slots a gradient
    typedef typename Raw<T>::type R;
    extern __shared__ float4 sums[]; // warp k: dweight's slots [2k·SLOTS, (2k+1)·SLOTS), then dbias's
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, packs = cols / N;
    float4* dwWarp = sums + 2 * warp * SLOTS;
    float4* dbWarp = dwWarp + SLOTS;
#pragma unroll
    for (int k = 0; k < P * Q; k++) dwWarp[32 * k + lane] = dbWarp[32 * k + lane] = make_float4(0.f, 0.f, 0.f, 0.f);
    for (int row = blockIdx.x * LN_BP_WARPS + warp; row < rows; row += gridDim.x * LN_BP_WARPS) {
        i64 base = (i64) row * cols;
        float m = mean[row], s = rstd[row];
        R xr[P], dr[P], gr[P];
        load_packs<T, P>(xr, x, base, lane, packs);
        load_packs<T, P>(dr, dout, base, lane, packs);
        load_packs<T, P>(gr, dx, base, lane, packs);
        float a = 0.f, bn = 0.f;
#pragma unroll
        for (int p = 0; p < P; p++) {
            int pk = lane + 32 * p;
            if (pk < packs) {
                float xv[N], dv[N], wv[N];
                Pack<T>::load(xv, reinterpret_cast<const T*>(&xr[p]), 0);
                Pack<T>::load(dv, reinterpret_cast<const T*>(&dr[p]), 0);
                load_floats<N>(wv, w + pk * N);
#pragma unroll
                for (int q = 0; q < Q; q++) {
                    float4 dws = dwWarp[32 * (p * Q + q) + lane], dbs = dbWarp[32 * (p * Q + q) + lane];
                    float* dwv = reinterpret_cast<float*>(&dws);
                    float* dbv = reinterpret_cast<float*>(&dbs);
#pragma unroll
                    for (int j = 0; j < 4; j++) {
                        int e = 4 * q + j;
                        float norm = (xv[e] - m) * s, dn = dv[e] * wv[e];
                        dbv[j] += dv[e];
                        dwv[j] += norm * dv[e];
                        a += dn;
                        bn += dn * norm;
                    }
                    dwWarp[32 * (p * Q + q) + lane] = dws;
                    dbWarp[32 * (p * Q + q) + lane] = dbs;
                }
            }
        }
        a = warp_sum(a) / cols;
        bn = warp_sum(bn) / cols;
        int again = 0; // 0, for weights reloaded (from L1) rather than held over the reductions
        opaque(again);
#pragma unroll
        for (int p = 0; p < P; p++) {
            int pk = lane + 32 * p;
            if (pk < packs) {
                opaque(xr[p]);
                opaque(dr[p]);
                float xv[N], dv[N], wv[N], out[N];
                Pack<T>::load(xv, reinterpret_cast<const T*>(&xr[p]), 0);
                Pack<T>::load(dv, reinterpret_cast<const T*>(&dr[p]), 0);
                Pack<T>::load(out, reinterpret_cast<const T*>(&gr[p]), 0);
                load_floats<N>(wv, w + again + pk * N);
#pragma unroll
                for (int e = 0; e < N; e++) {
                    float norm = (xv[e] - m) * s;
                    out[e] += (dv[e] * wv[e] - a - norm * bn) * s;
                }
                Pack<T>::store(dx, base + pk * N, out);
            }
        }
    }
    __syncthreads();
    const float* all = reinterpret_cast<const float*>(sums);
    for (int c = threadIdx.x; c < cols; c += 32 * LN_BP_WARPS) {
        int pk = c / N, e = c % N; // column c: lane pk % 32's float4 slot (pk / 32)·Q + e / 4
        int at = 4 * (32 * ((pk / 32) * Q + e / 4) + pk % 32) + e % 4;
        float dwc = 0.f, dbc = 0.f;
#pragma unroll
        for (int k = 0; k < LN_BP_WARPS; k++) {
            dwc += all[4 * 2 * k * SLOTS + at];
            dbc += all[4 * (2 * k + 1) * SLOTS + at];
        }
        atomicAdd(&dw[c], dwc);
        atomicAdd(&db[c], dbc);
    }
}
// Two blocks an SM where their shared sums fit (so 64 registers), else one.
#define LN_BP(T, S, P) extern "C" __global__ void __launch_bounds__(32 * LN_BP_WARPS, \
        LN_BP_WARPS * 256 * P * Pack<T>::N <= 100 * 1024 ? 2 : 1) layernorm_backward_packed_##S##_##P(T* dx, float* dw, \
        float* db, const T* dout, const T* x, const float* w, const float* mean, const float* rstd, int rows, int cols) { \
    layernorm_backward_packed_k<T, P>(dx, dw, db, dout, x, w, mean, rstd, rows, cols); }
#define LN_BP_ALL(T, S) LN_BP(T, S, 1) LN_BP(T, S, 2) LN_BP(T, S, 3) LN_BP(T, S, 4)
FOR_TYPES(LN_BP_ALL)

#define LN_FP(T, S, P) extern "C" __global__ void __launch_bounds__(256) layernorm_forward_packed_##S##_##P(T* out, float* mean, \
        float* rstd, const T* x, const float* w, const float* b, int rows, int cols, float eps) { \
    layernorm_forward_packed_k<T, P, false, 0>(out, mean, rstd, 0, x, 0, w, b, rows, cols, eps, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0); } \
    extern "C" __global__ void __launch_bounds__(256) add_layernorm_forward_packed_##S##_##P(T* sum, T* out, float* mean, \
        float* rstd, const T* x, const T* r, const float* w, const float* b, int rows, int cols, float eps) { \
    layernorm_forward_packed_k<T, P, true, 0>(out, mean, rstd, sum, x, r, w, b, rows, cols, eps, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0); }
#define LN_FP_ALL(T, S) LN_FP(T, S, 1) LN_FP(T, S, 2) LN_FP(T, S, 3) LN_FP(T, S, 4)
FOR_TYPES(LN_FP_ALL)
