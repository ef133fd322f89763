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
// 16-byte aligned, weight too): a warp per row, the row's x and dout kept packed in registers between the two passes, and each
// lane's dweight/dbias column sums in registers (a lane owns the same columns in every row), added into the block's
// shared sums (2*cols floats) once, then into the gradients once per block.
template <typename T, int P>
__device__ void layernorm_backward_packed_k(T* dx, float* dw, float* db, const T* dout, const T* x, const float* w,
                                            const float* mean, const float* rstd, int rows, int cols) {
    constexpr int N = Pack<T>::N;
    typedef typename Raw<T>::type R;
    extern __shared__ float sh[];
    float* dwBlock = sh;
    float* dbBlock = sh + cols;
    for (int c = threadIdx.x; c < cols; c += blockDim.x) {
        dwBlock[c] = 0.f;
        dbBlock[c] = 0.f;
    }
    int lane = threadIdx.x & 31, warps = blockDim.x >> 5, packs = cols / N;
    float dwSum[P][N], dbSum[P][N];
#pragma unroll
    for (int p = 0; p < P; p++) {
#pragma unroll
        for (int e = 0; e < N; e++) dwSum[p][e] = dbSum[p][e] = 0.f;
    }
    for (int row = blockIdx.x * warps + (threadIdx.x >> 5); row < rows; row += gridDim.x * warps) {
        i64 base = (i64) row * cols;
        float m = mean[row], s = rstd[row];
        R xr[P], dr[P];
#pragma unroll
        for (int p = 0; p < P; p++) {
            int pk = lane + 32 * p;
            if (pk < packs) {
                xr[p] = reinterpret_cast<const R*>(x + base)[pk];
                dr[p] = reinterpret_cast<const R*>(dout + base)[pk];
            }
        }
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
                for (int e = 0; e < N; e++) {
                    float dn = dv[e] * wv[e];
                    a += dn;
                    bn += dn * (xv[e] - m) * s;
                }
            }
        }
        a = warp_sum(a) / cols;
        bn = warp_sum(bn) / cols;
#pragma unroll
        for (int p = 0; p < P; p++) {
            int pk = lane + 32 * p;
            if (pk < packs) {
                float xv[N], dv[N], wv[N], out[N];
                Pack<T>::load(xv, reinterpret_cast<const T*>(&xr[p]), 0);
                Pack<T>::load(dv, reinterpret_cast<const T*>(&dr[p]), 0);
                load_floats<N>(wv, w + pk * N);
                Pack<T>::load(out, dx, base + pk * N);
#pragma unroll
                for (int e = 0; e < N; e++) {
                    float norm = (xv[e] - m) * s;
                    dbSum[p][e] += dv[e];
                    dwSum[p][e] += norm * dv[e];
                    out[e] += (dv[e] * wv[e] - a - norm * bn) * s;
                }
                Pack<T>::store(dx, base + pk * N, out);
            }
        }
    }
    __syncthreads();
#pragma unroll
    for (int p = 0; p < P; p++) {
        int pk = lane + 32 * p;
        if (pk < packs) {
#pragma unroll
            for (int e = 0; e < N; e++) {
                atomicAdd(&dwBlock[pk * N + e], dwSum[p][e]);
                atomicAdd(&dbBlock[pk * N + e], dbSum[p][e]);
            }
        }
    }
    __syncthreads();
    for (int c = threadIdx.x; c < cols; c += blockDim.x) {
        atomicAdd(&dw[c], dwBlock[c]);
        atomicAdd(&db[c], dbBlock[c]);
    }
}
#define LN_BP(T, S, P) extern "C" __global__ void __launch_bounds__(256) layernorm_backward_packed_##S##_##P(T* dx, float* dw, \
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
