// Causal grouped-query attention, flash-attention manner: no T×T matrix in global memory.
// qkv row: [q heads (nHead*D) | k heads (nKvHead*D) | v heads (nKvHead*D)]; out [B*T, nHead*D]; lse [B, nHead, T].
// A block is 8 warps; in forward and dq, each warp owns one query row; in dk/dv each warp owns one key row. Keys (or
// queries) stream through shared memory in tiles of 32 rows, one row per lane for the scores. NC = ceil(D/32) is the
// number of head dimensions each lane holds (D <= 32*NC).

#define WARPS 8
#define TILE 32

template <typename E, int NC>
__device__ void attention_forward(E* out, float* lse, const E* qkv, int T, int H, int KVH, int D, float scale) {
    extern __shared__ float sm[];
    const int DP = D + 1;
    float* Ks = sm;
    float* Vs = Ks + TILE * DP;
    float* Qs = Vs + TILE * DP;
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    int b = blockIdx.z, h = blockIdx.y, t0 = blockIdx.x * WARPS, t = t0 + warp;
    i64 rowW = (i64) (H + 2 * KVH) * D;
    int kvh = h / (H / KVH);
    i64 qOff = (i64) h * D, kOff = (i64) (H + kvh) * D, vOff = kOff + (i64) KVH * D;
    const E* base = qkv + (i64) b * T * rowW;
    bool active = t < T;
    float* q = Qs + warp * D;
    for (int d = lane; d < D; d += 32) q[d] = active ? ld(base, (i64) t * rowW + qOff + d) : 0.f;
    float m = -FRUGAL_INF, l = 0.f;
    float acc[NC];
#pragma unroll
    for (int i = 0; i < NC; i++) acc[i] = 0.f;
    int tLast = min(t0 + WARPS, T) - 1;
    for (int j0 = 0; j0 <= tLast; j0 += TILE) {
        __syncthreads();
        for (int idx = threadIdx.x; idx < TILE * D; idx += blockDim.x) {
            int r = idx / D, d = idx - r * D, j = j0 + r;
            float kv = 0.f, vv = 0.f;
            if (j < T) {
                kv = ld(base, (i64) j * rowW + kOff + d);
                vv = ld(base, (i64) j * rowW + vOff + d);
            }
            Ks[r * DP + d] = kv;
            Vs[r * DP + d] = vv;
        }
        __syncthreads();
        if (active && j0 <= t) {
            int j = j0 + lane;
            float s = -FRUGAL_INF;
            if (j <= t) {
                float dot = 0.f;
                for (int d = 0; d < D; d++) dot += q[d] * Ks[lane * DP + d];
                s = dot * scale;
            }
            float mNew = fmaxf(m, warp_max(s));
            float corr = expf(m - mNew);
            float p = j <= t ? expf(s - mNew) : 0.f;
            l = l * corr + warp_sum(p);
#pragma unroll
            for (int i = 0; i < NC; i++) acc[i] *= corr;
            int nk = min(TILE, t - j0 + 1);
            for (int jj = 0; jj < nk; jj++) {
                float pj = __shfl_sync(FULL_MASK, p, jj);
#pragma unroll
                for (int i = 0; i < NC; i++) {
                    int d = lane + 32 * i;
                    if (d < D) acc[i] += pj * Vs[jj * DP + d];
                }
            }
            m = mNew;
        }
    }
    if (active) {
        float inv = 1.f / l;
        E* o = out + ((i64) b * T + t) * H * D + qOff;
#pragma unroll
        for (int i = 0; i < NC; i++) {
            int d = lane + 32 * i;
            if (d < D) st(o, d, acc[i] * inv);
        }
        if (lane == 0) lse[((i64) b * H + h) * T + t] = m + logf(l);
    }
}

// delta[b,h,t] = dot(dout row, out row): one warp per (b, t, h).
template <typename E>
__device__ void attention_delta(float* delta, const E* dout, const E* out, int B, int T, int H, int D) {
    i64 row = (i64) blockIdx.x * WARPS + (threadIdx.x >> 5);
    int lane = threadIdx.x & 31;
    if (row >= (i64) B * T * H) return;
    int h = (int) (row % H);
    i64 bt = row / H;
    int t = (int) (bt % T), b = (int) (bt / T);
    const E* dr = dout + row * D;
    const E* orow = out + row * D;
    float s = 0.f;
    for (int d = lane; d < D; d += 32) s += ld(dr, d) * ld(orow, d);
    s = warp_sum(s);
    if (lane == 0) delta[((i64) b * H + h) * T + t] = s;
}

template <typename E, int NC>
__device__ void attention_backward_dq(E* dqkv, const E* dout, const float* lse, const float* delta,
                                      const E* qkv, int T, int H, int KVH, int D, float scale) {
    extern __shared__ float sm[];
    const int DP = D + 1;
    float* Ks = sm;
    float* Vs = Ks + TILE * DP;
    float* Qs = Vs + TILE * DP;
    float* Os = Qs + WARPS * D;
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    int b = blockIdx.z, h = blockIdx.y, t0 = blockIdx.x * WARPS, t = t0 + warp;
    i64 rowW = (i64) (H + 2 * KVH) * D;
    int kvh = h / (H / KVH);
    i64 qOff = (i64) h * D, kOff = (i64) (H + kvh) * D, vOff = kOff + (i64) KVH * D;
    const E* base = qkv + (i64) b * T * rowW;
    bool active = t < T;
    float* q = Qs + warp * D;
    float* dO = Os + warp * D;
    for (int d = lane; d < D; d += 32) {
        q[d] = active ? ld(base, (i64) t * rowW + qOff + d) : 0.f;
        dO[d] = active ? ld(dout, ((i64) b * T + t) * H * D + qOff + d) : 0.f;
    }
    float rowLse = active ? lse[((i64) b * H + h) * T + t] : 0.f;
    float rowDelta = active ? delta[((i64) b * H + h) * T + t] : 0.f;
    float dq[NC];
#pragma unroll
    for (int i = 0; i < NC; i++) dq[i] = 0.f;
    int tLast = min(t0 + WARPS, T) - 1;
    for (int j0 = 0; j0 <= tLast; j0 += TILE) {
        __syncthreads();
        for (int idx = threadIdx.x; idx < TILE * D; idx += blockDim.x) {
            int r = idx / D, d = idx - r * D, j = j0 + r;
            float kv = 0.f, vv = 0.f;
            if (j < T) {
                kv = ld(base, (i64) j * rowW + kOff + d);
                vv = ld(base, (i64) j * rowW + vOff + d);
            }
            Ks[r * DP + d] = kv;
            Vs[r * DP + d] = vv;
        }
        __syncthreads();
        if (active && j0 <= t) {
            int j = j0 + lane;
            float ds = 0.f;
            if (j <= t) {
                float dot = 0.f, dp = 0.f;
                for (int d = 0; d < D; d++) {
                    dot += q[d] * Ks[lane * DP + d];
                    dp += dO[d] * Vs[lane * DP + d];
                }
                float p = expf(dot * scale - rowLse);
                ds = p * (dp - rowDelta) * scale;
            }
            int nk = min(TILE, t - j0 + 1);
            for (int jj = 0; jj < nk; jj++) {
                float dsj = __shfl_sync(FULL_MASK, ds, jj);
#pragma unroll
                for (int i = 0; i < NC; i++) {
                    int d = lane + 32 * i;
                    if (d < D) dq[i] += dsj * Ks[jj * DP + d];
                }
            }
        }
    }
    if (active) {
        E* o = dqkv + (i64) b * T * rowW + (i64) t * rowW + qOff;
#pragma unroll
        for (int i = 0; i < NC; i++) {
            int d = lane + 32 * i;
            if (d < D) st(o, d, dq[i]);
        }
    }
}

// Grid (ceil(T/8), nKvHead, B): each warp owns key row j of kv head kvh and sums over the group's query heads and
// all queries t >= j, so dk and dv have one writer each.
template <typename E, int NC>
__device__ void attention_backward_dkv(E* dqkv, const E* dout, const float* lse, const float* delta,
                                       const E* qkv, int T, int H, int KVH, int D, float scale) {
    extern __shared__ float sm[];
    const int DP = D + 1;
    float* Qs = sm;
    float* Os = Qs + TILE * DP;
    float* Ls = Os + TILE * DP;
    float* Ds = Ls + TILE;
    float* Kw = Ds + TILE;
    float* Vw = Kw + WARPS * D;
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    int b = blockIdx.z, kvh = blockIdx.y, jFirst = blockIdx.x * WARPS, j = jFirst + warp;
    int group = H / KVH;
    i64 rowW = (i64) (H + 2 * KVH) * D;
    i64 kOff = (i64) (H + kvh) * D, vOff = kOff + (i64) KVH * D;
    const E* base = qkv + (i64) b * T * rowW;
    bool active = j < T;
    float* k = Kw + warp * D;
    float* v = Vw + warp * D;
    for (int d = lane; d < D; d += 32) {
        k[d] = active ? ld(base, (i64) j * rowW + kOff + d) : 0.f;
        v[d] = active ? ld(base, (i64) j * rowW + vOff + d) : 0.f;
    }
    float dk[NC], dv[NC];
#pragma unroll
    for (int i = 0; i < NC; i++) {
        dk[i] = 0.f;
        dv[i] = 0.f;
    }
    for (int h = kvh * group; h < (kvh + 1) * group; h++) {
        i64 qOff = (i64) h * D;
        for (int t0 = (jFirst / TILE) * TILE; t0 < T; t0 += TILE) {
            __syncthreads();
            for (int idx = threadIdx.x; idx < TILE * D; idx += blockDim.x) {
                int r = idx / D, d = idx - r * D, t = t0 + r;
                float qv = 0.f, ov = 0.f;
                if (t < T) {
                    qv = ld(base, (i64) t * rowW + qOff + d);
                    ov = ld(dout, ((i64) b * T + t) * H * D + qOff + d);
                }
                Qs[r * DP + d] = qv;
                Os[r * DP + d] = ov;
            }
            if (threadIdx.x < TILE) {
                int t = t0 + threadIdx.x;
                Ls[threadIdx.x] = t < T ? lse[((i64) b * H + h) * T + t] : 0.f;
                Ds[threadIdx.x] = t < T ? delta[((i64) b * H + h) * T + t] : 0.f;
            }
            __syncthreads();
            if (active && t0 + TILE - 1 >= j) {
                int t = t0 + lane;
                float p = 0.f, ds = 0.f;
                if (t >= j && t < T) {
                    float dot = 0.f, dp = 0.f;
                    for (int d = 0; d < D; d++) {
                        dot += Qs[lane * DP + d] * k[d];
                        dp += Os[lane * DP + d] * v[d];
                    }
                    p = expf(dot * scale - Ls[lane]);
                    ds = p * (dp - Ds[lane]) * scale;
                }
                for (int tt = 0; tt < TILE; tt++) {
                    float pt = __shfl_sync(FULL_MASK, p, tt), dst = __shfl_sync(FULL_MASK, ds, tt);
#pragma unroll
                    for (int i = 0; i < NC; i++) {
                        int d = lane + 32 * i;
                        if (d < D) {
                            dv[i] += pt * Os[tt * DP + d];
                            dk[i] += dst * Qs[tt * DP + d];
                        }
                    }
                }
            }
        }
    }
    if (active) {
        E* row = dqkv + (i64) b * T * rowW + (i64) j * rowW;
#pragma unroll
        for (int i = 0; i < NC; i++) {
            int d = lane + 32 * i;
            if (d < D) {
                st(row, kOff + d, dk[i]);
                st(row, vOff + d, dv[i]);
            }
        }
    }
}

extern "C" __global__ void attention_delta_f32(float* delta, const float* dout, const float* out, int B, int T, int H, int D) {
    attention_delta<float>(delta, dout, out, B, T, H, D);
}
extern "C" __global__ void attention_delta_bf16(float* delta, const bf16* dout, const bf16* out, int B, int T, int H, int D) {
    attention_delta<bf16>(delta, dout, out, B, T, H, D);
}

#define INSTANTIATE(T, S, NC)                                                                                            \
    extern "C" __global__ void __launch_bounds__(256) attention_forward_##S##_##NC(                                     \
            T* out, float* lse, const T* qkv, int Tn, int H, int KVH, int D, float scale) {                              \
        attention_forward<T, NC>(out, lse, qkv, Tn, H, KVH, D, scale);                                                  \
    }                                                                                                                   \
    extern "C" __global__ void __launch_bounds__(256) attention_backward_dq_##S##_##NC(                                 \
            T* dqkv, const T* dout, const float* lse, const float* delta, const T* qkv, int Tn, int H,                  \
            int KVH, int D, float scale) {                                                                              \
        attention_backward_dq<T, NC>(dqkv, dout, lse, delta, qkv, Tn, H, KVH, D, scale);                                \
    }                                                                                                                   \
    extern "C" __global__ void __launch_bounds__(256) attention_backward_dkv_##S##_##NC(                                \
            T* dqkv, const T* dout, const float* lse, const float* delta, const T* qkv, int Tn, int H,                  \
            int KVH, int D, float scale) {                                                                              \
        attention_backward_dkv<T, NC>(dqkv, dout, lse, delta, qkv, Tn, H, KVH, D, scale);                               \
    }

#define BOTH(NC) INSTANTIATE(float, f32, NC) INSTANTIATE(bf16, bf16, NC)
BOTH(1)
BOTH(2)
BOTH(4)
BOTH(8)
