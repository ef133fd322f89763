// The packed LayerNorm kernels (a warp per row, 16-byte packs held in registers) as templates, instantiated plain in
// norms.cu and quantizing for the stash in stash_norms.cu (compiled only where a stash quantizes). Needs quant.cuh.

// layernorm_forward_warp with 16-byte loads, for rows of at most 32·P whole packs (cols a multiple of Pack<T>::N,
// 16-byte aligned, weight and bias too): a warp per row, the row kept packed in registers for the mean, the variance
// (two passes over the registers, as the other kernels compute it) and the output. With ADD, the row is x + r (the
// residual add before the norm), written to sum as T and normalized as written, so the add costs no extra read of it.
//
// With BITS > 0 it also quantizes for the stash, where their packed pointers are non-null, the row it normalizes (x or
// the sum) and its output, as they are written (T-rounded), bit for bit as quant.cu's fast kernels would from memory:
// for bf16 rows of exactly 32·P packs (cols = 256·P), a lane's pack p is group row·32P + 32p + lane, so a warp's pack p
// is one whole chunk (c = row·P + p) and no block (8..256 values) straddles two rows. The two tensors share a format
// (logLanes, isInt, stochastic) and each has its own seed.
template <typename T, int P, bool ADD, int BITS>
__device__ void layernorm_forward_packed_k(T* out, float* mean, float* rstd, T* sum, const T* x, const T* r, const float* w,
                                           const float* b, int rows, int cols, float eps, unsigned char* xPacked,
                                           unsigned char* xScales, unsigned xSeed, int xScalesAligned,
                                           unsigned char* outPacked, unsigned char* outScales, unsigned outSeed,
                                           int outScalesAligned, int logLanes, int isInt, int stochastic, unsigned* error) {
    constexpr int N = Pack<T>::N;
    typedef typename Raw<T>::type R;
    int lane = threadIdx.x & 31, warps = blockDim.x >> 5, packs = cols / N;
    __shared__ unsigned long long stage[BITS > 0 ? 8 : 1][33];
    unsigned long long* slots = stage[BITS > 0 ? threadIdx.x >> 5 : 0];
    if (BITS > 0 && lane == 0) slots[32] = 0;
    const i64 groups = (i64) rows * packs;
    for (int row = blockIdx.x * warps + (threadIdx.x >> 5); row < rows; row += gridDim.x * warps) {
        i64 base = (i64) row * cols;
        R xr[P];
#pragma unroll
        for (int p = 0; p < P; p++) {
            int pk = lane + 32 * p;
            if (pk < packs) xr[p] = reinterpret_cast<const R*>(x + base)[pk];
        }
        if (ADD) {
#pragma unroll
            for (int p = 0; p < P; p++) {
                int pk = lane + 32 * p;
                if (pk < packs) {
                    float v[N], rv[N];
                    Pack<T>::load(v, reinterpret_cast<const T*>(&xr[p]), 0);
                    Pack<T>::load(rv, r, base + pk * N);
#pragma unroll
                    for (int e = 0; e < N; e++) v[e] += rv[e];
                    Pack<T>::store(reinterpret_cast<T*>(&xr[p]), 0, v);
                    reinterpret_cast<R*>(sum + base)[pk] = xr[p];
                }
            }
        }
        if constexpr (BITS > 0) {
            if (xPacked != 0) {
#pragma unroll
                for (int p = 0; p < P; p++) {
                    float v[N];
                    Pack<T>::load(v, reinterpret_cast<const T*>(&xr[p]), 0);
                    quantize_group<BITS>(xPacked, xScales, v, (i64) row * P + p, groups, logLanes, isInt, stochastic, xSeed,
                                         xScalesAligned, error, slots);
                }
            }
        }
        float total = 0.f;
#pragma unroll
        for (int p = 0; p < P; p++) {
            if (lane + 32 * p < packs) {
                float v[N];
                Pack<T>::load(v, reinterpret_cast<const T*>(&xr[p]), 0);
#pragma unroll
                for (int e = 0; e < N; e++) total += v[e];
            }
        }
        float m = warp_sum(total) / cols, var = 0.f;
#pragma unroll
        for (int p = 0; p < P; p++) {
            if (lane + 32 * p < packs) {
                float v[N];
                Pack<T>::load(v, reinterpret_cast<const T*>(&xr[p]), 0);
#pragma unroll
                for (int e = 0; e < N; e++) var += (v[e] - m) * (v[e] - m);
            }
        }
        float rs = 1.f / sqrtf(warp_sum(var) / cols + eps);
#pragma unroll
        for (int p = 0; p < P; p++) {
            int pk = lane + 32 * p;
            if (pk < packs) {
                float v[N], wv[N], bv[N];
                Pack<T>::load(v, reinterpret_cast<const T*>(&xr[p]), 0);
                load_floats<N>(wv, w + pk * N);
                load_floats<N>(bv, b + pk * N);
#pragma unroll
                for (int e = 0; e < N; e++) v[e] = (v[e] - m) * rs * wv[e] + bv[e];
                R o;
                Pack<T>::store(reinterpret_cast<T*>(&o), 0, v);
                reinterpret_cast<R*>(out + base)[pk] = o;
                if constexpr (BITS > 0) {
                    if (outPacked != 0) {
                        Pack<T>::load(v, reinterpret_cast<const T*>(&o), 0);
                        quantize_group<BITS>(outPacked, outScales, v, (i64) row * P + p, groups, logLanes, isInt, stochastic,
                                             outSeed, outScalesAligned, error, slots);
                    }
                }
            }
        }
        if (lane == 0) {
            mean[row] = m;
            rstd[row] = rs;
        }
    }
}
