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

// Two blocks an SM where their shared sums fit (so 64 registers), else one.
#define LN_BP(T, S, P) extern "C" __global__ void __launch_bounds__(32 * LN_BP_WARPS, \
        LN_BP_WARPS * 256 * P * Pack<T>::N <= 100 * 1024 ? 2 : 1) layernorm_backward_packed_##S##_##P(T* dx, float* dw, \
        float* db, const T* dout, const T* x, const float* w, const float* mean, const float* rstd, int rows, int cols) { \
    layernorm_backward_packed_k<T, P, 0>(dx, dw, db, dout, x, w, mean, rstd, rows, cols, 0, 0, 0, 0, 0); }
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
