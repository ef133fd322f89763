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

// layernorm_backward_warp with 16-byte loads, for rows of at most 32·P whole packs (cols a multiple of Pack<T>::N,
// 16-byte aligned, weight too), in blocks of LN_BP_WARPS warps (CudaBackend launches them so): a warp per row, its x,
// dout and dx loaded together into registers (dx does not wait for the row's reductions). A warp's rows follow one
// another, so it is the other warps' loads that hide a row's memory latency; for 32 warps an SM (64 registers), each
// warp adds its rows' dweight/dbias terms into sums of its own in shared memory rather than registers: 2·32·P·N floats
// a warp, a lane's 16-byte slots interleaved with the other lanes' (no bank conflicts). At the end the block adds up
// its warps' sums and adds them into the gradients, once a column.
//
// With BITS > 0, x is read from its quantized copy (bf16 rows of 256·P values, as layernorm_forward_packed_k wrote it
// for the stash) and dequantized as quant.cu's fast kernels would, rounded to T: the dx of the unfused path, bit for bit.
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

template <typename T, int P, int BITS>
__device__ void layernorm_backward_packed_k(T* dx, float* dw, float* db, const T* dout, const T* x, const float* w,
                                            const float* mean, const float* rstd, int rows, int cols,
                                            const unsigned char* xPacked, const unsigned char* xScales, int logLanes, int isInt,
                                            int scalesAligned) {
    constexpr int N = Pack<T>::N, Q = N / 4, SLOTS = 32 * P * Q; // float4s a pack; a warp's float4 slots a gradient
    typedef typename Raw<T>::type R;
    extern __shared__ float4 sums[]; // warp k: dweight's slots [2k·SLOTS, (2k+1)·SLOTS), then dbias's
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, packs = cols / N;
    float4* dwWarp = sums + 2 * warp * SLOTS;
    float4* dbWarp = dwWarp + SLOTS;
    __shared__ unsigned stage[BITS > 0 ? LN_BP_WARPS : 1][8 * 7 + 2]; // dequantize_group's, for BITS > 0
    unsigned* staged = stage[BITS > 0 ? warp : 0];
    if (BITS > 0 && lane < 2) staged[8 * BITS + lane] = 0;
#pragma unroll
    for (int k = 0; k < P * Q; k++) dwWarp[32 * k + lane] = dbWarp[32 * k + lane] = make_float4(0.f, 0.f, 0.f, 0.f);
    for (int row = blockIdx.x * LN_BP_WARPS + warp; row < rows; row += gridDim.x * LN_BP_WARPS) {
        i64 base = (i64) row * cols;
        float m = mean[row], s = rstd[row];
        R xr[P], dr[P], gr[P];
        if constexpr (BITS > 0) {
            ChunkWords<BITS> words[P];
            float sc[P];
            const i64 groups = (i64) rows * packs;
#pragma unroll
            for (int p = 0; p < P; p++) {
                words[p] = load_chunk<BITS>(xPacked, (i64) row * P + p, groups);
                sc[p] = stored_scale(xScales, ((i64) row * packs + 32 * p + lane) >> logLanes, isInt, scalesAligned);
            }
            load_packs<T, P>(dr, dout, base, lane, packs);
            load_packs<T, P>(gr, dx, base, lane, packs);
#pragma unroll
            for (int p = 0; p < P; p++) { // as dequantize writes it: rounded to T
                float v[N];
                dequantize_group<BITS>(v, words[p], sc[p], staged);
                Pack<T>::store(reinterpret_cast<T*>(&xr[p]), 0, v);
            }
        } else {
            load_packs<T, P>(xr, x, base, lane, packs);
            load_packs<T, P>(dr, dout, base, lane, packs);
            load_packs<T, P>(gr, dx, base, lane, packs);
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
