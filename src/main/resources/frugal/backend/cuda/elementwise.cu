// Element-wise ops, bias, embedding and RoPE. Templated on the activation type T (float or bf16, suffix _f32 or _bf16);
// parameters and their gradients are always float. Math in float. Grid-stride loops: any grid size is correct.
// Kernels with a `vec` argument use 16-byte packs when the host says every pointer is 16-byte aligned.

#define FOR_TYPES(X) X(float, f32) X(bf16, bf16)

template <typename T>
__device__ void add_k(T* out, const T* a, const T* b, i64 n, int vec) {
    i64 start = 0;
    if (vec) {
        constexpr int N = Pack<T>::N;
        i64 packs = n / N;
        GRID_STRIDE(p, packs) {
            float x[N], y[N];
            Pack<T>::load(x, a, p * N);
            Pack<T>::load(y, b, p * N);
#pragma unroll
            for (int k = 0; k < N; k++) x[k] += y[k];
            Pack<T>::store(out, p * N, x);
        }
        start = packs * N;
    }
    for (i64 i = start + (i64) blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (i64) gridDim.x * blockDim.x)
        st(out, i, ld(a, i) + ld(b, i));
}
#define ADD(T, S) extern "C" __global__ void add_##S(T* out, const T* a, const T* b, i64 n, int vec) { add_k<T>(out, a, b, n, vec); }
FOR_TYPES(ADD)

#include "gelu.cuh"

template <typename T>
__device__ void gelu_forward_k(T* out, const T* x, i64 n, int vec) {
    i64 start = 0;
    if (vec) {
        constexpr int N = Pack<T>::N;
        i64 packs = n / N;
        GRID_STRIDE(p, packs) {
            float v[N];
            Pack<T>::load(v, x, p * N);
#pragma unroll
            for (int k = 0; k < N; k++) v[k] = gelu(v[k]);
            Pack<T>::store(out, p * N, v);
        }
        start = packs * N;
    }
    for (i64 i = start + (i64) blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (i64) gridDim.x * blockDim.x)
        st(out, i, gelu(ld(x, i)));
}
#define GELU_F(T, S) extern "C" __global__ void gelu_forward_##S(T* out, const T* x, i64 n, int vec) { gelu_forward_k<T>(out, x, n, vec); }
FOR_TYPES(GELU_F)

// dx may alias dout.
template <typename T>
__device__ void gelu_backward_k(T* dx, const T* dout, const T* x, i64 n, int vec) {
    i64 start = 0;
    if (vec) {
        constexpr int N = Pack<T>::N;
        i64 packs = n / N;
        GRID_STRIDE(p, packs) {
            float v[N], d[N];
            Pack<T>::load(v, x, p * N);
            Pack<T>::load(d, dout, p * N);
#pragma unroll
            for (int k = 0; k < N; k++) v[k] = gelu_grad(v[k]) * d[k];
            Pack<T>::store(dx, p * N, v);
        }
        start = packs * N;
    }
    for (i64 i = start + (i64) blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (i64) gridDim.x * blockDim.x)
        st(dx, i, gelu_grad(ld(x, i)) * ld(dout, i));
}
#define GELU_B(T, S) extern "C" __global__ void gelu_backward_##S(T* dx, const T* dout, const T* x, i64 n, int vec) { gelu_backward_k<T>(dx, dout, x, n, vec); }
FOR_TYPES(GELU_B)

// out[r,j] = silu(gu[r,j]) * gu[r,hidden+j]
template <typename T>
__device__ void swiglu_forward_k(T* out, const T* gu, int rows, int hidden) {
    GRID_STRIDE(i, (i64) rows * hidden) {
        i64 r = i / hidden, j = i - r * hidden;
        float g = ld(gu, 2 * r * hidden + j), u = ld(gu, 2 * r * hidden + hidden + j);
        st(out, i, g / (1.f + expf(-g)) * u);
    }
}
#define SWIGLU_F(T, S) extern "C" __global__ void swiglu_forward_##S(T* out, const T* gu, int rows, int hidden) { swiglu_forward_k<T>(out, gu, rows, hidden); }
FOR_TYPES(SWIGLU_F)

template <typename T>
__device__ void swiglu_backward_k(T* dgu, const T* dout, const T* gu, int rows, int hidden) {
    GRID_STRIDE(i, (i64) rows * hidden) {
        i64 r = i / hidden, j = i - r * hidden;
        i64 gi = 2 * r * hidden + j, ui = gi + hidden;
        float g = ld(gu, gi), u = ld(gu, ui), dy = ld(dout, i);
        float sig = 1.f / (1.f + expf(-g));
        st(dgu, gi, dy * u * sig * (1.f + g * (1.f - sig)));
        st(dgu, ui, dy * g * sig);
    }
}
#define SWIGLU_B(T, S) extern "C" __global__ void swiglu_backward_##S(T* dgu, const T* dout, const T* gu, int rows, int hidden) { swiglu_backward_k<T>(dgu, dout, gu, rows, hidden); }
FOR_TYPES(SWIGLU_B)

template <typename T>
__device__ void add_bias_k(T* out, const float* bias, int rows, int cols) {
    GRID_STRIDE(i, (i64) rows * cols) st(out, i, ld(out, i) + bias[i % cols]);
}
#define ADD_BIAS(T, S) extern "C" __global__ void add_bias_##S(T* out, const float* bias, int rows, int cols) { add_bias_k<T>(out, bias, rows, cols); }
FOR_TYPES(ADD_BIAS)

// dbias[c] += sum_r dout[r,c]. Block (32, 8): 32 columns, 8 row lanes over rowsPerBlock rows; one atomic per column
// and block.
template <typename T>
__device__ void bias_backward_k(float* dbias, const T* dout, int rows, int cols, int rowsPerBlock) {
    __shared__ float part[8][33];
    int c = blockIdx.x * 32 + threadIdx.x;
    int r0 = blockIdx.y * rowsPerBlock, r1 = min(rows, r0 + rowsPerBlock);
    float s = 0.f;
    if (c < cols) {
        for (int r = r0 + threadIdx.y; r < r1; r += 8) s += ld(dout, (i64) r * cols + c);
    }
    part[threadIdx.y][threadIdx.x] = s;
    __syncthreads();
    if (threadIdx.y == 0 && c < cols) {
        float total = 0.f;
        for (int y = 0; y < 8; y++) total += part[y][threadIdx.x];
        atomicAdd(&dbias[c], total);
    }
}
#define BIAS_B(T, S) extern "C" __global__ void bias_backward_##S(float* dbias, const T* dout, int rows, int cols, int rowsPerBlock) { bias_backward_k<T>(dbias, dout, rows, cols, rowsPerBlock); }
FOR_TYPES(BIAS_B)

// bias_backward with 16-byte loads, for rows of whole packs (cols a multiple of Pack<T>::N, 16-byte aligned): block
// (32, 8), each thread summing one pack of columns over every 8th row of the block's rows; 32 packs per block.
template <typename T>
__device__ void bias_backward_packed_k(float* dbias, const T* dout, int rows, int cols, int rowsPerBlock) {
    constexpr int N = Pack<T>::N;
    __shared__ float part[8][32 * N + 1];
    int pack = blockIdx.x * 32 + threadIdx.x, packs = cols / N;
    int r0 = blockIdx.y * rowsPerBlock, r1 = min(rows, r0 + rowsPerBlock);
    float s[N];
#pragma unroll
    for (int e = 0; e < N; e++) s[e] = 0.f;
    if (pack < packs) {
#pragma unroll 4
        for (int r = r0 + threadIdx.y; r < r1; r += 8) {
            float v[N];
            Pack<T>::load(v, dout, (i64) r * cols + pack * N);
#pragma unroll
            for (int e = 0; e < N; e++) s[e] += v[e];
        }
    }
#pragma unroll
    for (int e = 0; e < N; e++) part[threadIdx.y][threadIdx.x * N + e] = s[e];
    __syncthreads();
    // 256 threads add up the 8 row lanes of the block's 32·N columns
    for (int j = threadIdx.y * 32 + threadIdx.x; j < 32 * N; j += 256) {
        int c = blockIdx.x * 32 * N + j;
        if (c >= cols) break;
        float total = 0.f;
        for (int y = 0; y < 8; y++) total += part[y][j];
        atomicAdd(&dbias[c], total);
    }
}
#define BIAS_BP(T, S) extern "C" __global__ void bias_backward_packed_##S(float* dbias, const T* dout, int rows, int cols, int rowsPerBlock) { bias_backward_packed_k<T>(dbias, dout, rows, cols, rowsPerBlock); }
FOR_TYPES(BIAS_BP)

// out[r,:] (+)= table[ids[r],:]; rows whose id is outside [0, tableRows) are left untouched.
template <typename T>
__device__ void embedding_forward_k(T* out, const float* table, const int* ids, int rows, int cols, i64 tableRows,
                                    int accumulate) {
    GRID_STRIDE(i, (i64) rows * cols) {
        i64 r = i / cols, c = i - r * cols;
        int id = ids[r];
        if (id < 0 || id >= tableRows) continue;
        float v = table[(i64) id * cols + c];
        st(out, i, accumulate ? ld(out, i) + v : v);
    }
}
#define EMB_F(T, S) extern "C" __global__ void embedding_forward_##S(T* out, const float* table, const int* ids, int rows, int cols, i64 tableRows, int accumulate) { embedding_forward_k<T>(out, table, ids, rows, cols, tableRows, accumulate); }
FOR_TYPES(EMB_F)

template <typename T>
__device__ void embedding_backward_k(float* dtable, const T* dout, const int* ids, int rows, int cols, i64 tableRows) {
    GRID_STRIDE(i, (i64) rows * cols) {
        i64 r = i / cols, c = i - r * cols;
        int id = ids[r];
        if (id < 0 || id >= tableRows) continue;
        atomicAdd(&dtable[(i64) id * cols + c], ld(dout, i));
    }
}
#define EMB_B(T, S) extern "C" __global__ void embedding_backward_##S(float* dtable, const T* dout, const int* ids, int rows, int cols, i64 tableRows) { embedding_backward_k<T>(dtable, dout, ids, rows, cols, tableRows); }
FOR_TYPES(EMB_B)

// Rotate-half RoPE of the q and k heads of qkv, in place. Angles in double, as the CPU reference.
template <typename T>
__device__ void rope_k(T* qkv, int batch, int seq, int nHead, int nKvHead, int headDim, float theta, int inverse) {
    int half = headDim / 2, rotated = nHead + nKvHead;
    i64 rowWidth = (i64) (nHead + 2 * nKvHead) * headDim;
    GRID_STRIDE(idx, (i64) batch * seq * rotated * half) {
        int i = (int) (idx % half);
        i64 rest = idx / half;
        int h = (int) (rest % rotated);
        i64 r = rest / rotated;
        int t = (int) (r % seq);
        double angle = t * pow((double) theta, -2.0 * i / headDim);
        double sd, cd;
        sincos(angle, &sd, &cd);
        float c = (float) cd, s = (float) (inverse ? -sd : sd);
        i64 base = r * rowWidth + (i64) h * headDim;
        float x1 = ld(qkv, base + i), x2 = ld(qkv, base + half + i);
        st(qkv, base + i, x1 * c - x2 * s);
        st(qkv, base + half + i, x2 * c + x1 * s);
    }
}
#define ROPE(T, S) extern "C" __global__ void rope_##S(T* qkv, int batch, int seq, int nHead, int nKvHead, int headDim, float theta, int inverse) { rope_k<T>(qkv, batch, seq, nHead, nKvHead, headDim, theta, inverse); }
FOR_TYPES(ROPE)

// dst (bf16) = src (float), and back.
extern "C" __global__ void convert_f32_to_bf16(bf16* dst, const float* src, i64 n) {
    GRID_STRIDE(i, n) dst[i] = f2bf(src[i]);
}

extern "C" __global__ void convert_bf16_to_f32(float* dst, const bf16* src, i64 n) {
    GRID_STRIDE(i, n) dst[i] = bf2f(src[i]);
}
