// Causal grouped-query attention on bf16 tensor cores (mma.sync m16n8k16, fp32 accumulation), flash-attention 2
// manner: no T×T matrix in memory. Layouts as attention.cu: qkv row [q heads | k heads | v heads] (bf16), out
// [B*T, H*D] (bf16), lse [B, H, T] (float, natural log). Head dimension D is a template parameter (multiple of 32).
// A block is 4 warps over a tile of 64 rows (16 per warp); keys (or queries) stream through shared memory in tiles
// of 64 rows, padded by 8 elements so that ldmatrix reads are free of bank conflicts.
//   forward:  grid (T/64, H, B), one query tile per block, online softmax in exp2 units.
//   backward (default): delta and the zeroing of an fp32 dq buffer (flash_delta_zero), one pass over (key tile,
//             query tile) pairs computing dk, dv and, by atomics, dq (flash_backward_fused; grid (T/64, KVH, B)), then
//             dq into dqkv (flash_dq_store).
//   forward on Hopper with a stash (head dimension 64, flash_forward_wg2's epilogues): flash_forward_q<BITS>_64 also
//             writes out's quantized copy, qkv's (from the tiles it holds of q, k, v), or both; flash_forward_delta_64,
//             the forward that backward recomputes from a quantized qkv, writes lse, delta and the zeroed dq buffer
//             instead of out, so that flash_delta_zero is not needed.
//   backward (FRUGAL_CUDA_FLASH_FUSED=0, deterministic): delta = rowsum(dO∘O) (attention_delta_bf16 of attention.cu),
//             then dq (grid (T/64, H, B), recomputes P and dP per key tile) and dk/dv (grid (T/64, KVH, B), loops over
//             the group's heads and query tiles); each output has one writer, no atomics.

#define BM 64
#define LOG2E 1.4426950408889634f
#define LN2 0.6931471805599453f

#include "quant.cuh"
#include "wgmma.cuh"

__device__ __forceinline__ void mma16816(float* c, const unsigned* a, unsigned b0, unsigned b1) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ void ldsm_x4(unsigned* r, const bf16* p) {
    unsigned addr = (unsigned) __cvta_generic_to_shared(p);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(addr));
}

__device__ __forceinline__ void ldsm_x4_t(unsigned* r, const bf16* p) {
    unsigned addr = (unsigned) __cvta_generic_to_shared(p);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(addr));
}

// 64 rows of D bf16 from global (row r at base + (r0 + r) * rowW + off) into shared (row stride D + 8); rows at or
// past T are zero.
template <int D>
__device__ __forceinline__ void load_tile(bf16* sm, const bf16* base, i64 rowW, i64 off, int r0, int T) {
    constexpr int CH = D / 8, S = D + 8;
    for (int i = threadIdx.x; i < BM * CH; i += blockDim.x) {
        int r = i / CH, ch = i - r * CH, t = r0 + r;
        uint4 v = make_uint4(0, 0, 0, 0);
        if (t < T) v = *reinterpret_cast<const uint4*>(base + (i64) t * rowW + off + ch * 8);
        *reinterpret_cast<uint4*>(sm + r * S + ch * 8) = v;
    }
}

// As load_tile, with cp.async (16 bytes per copy, zero-filled past T); completes at cp.async.wait_group.
template <int D>
__device__ __forceinline__ void load_tile_async(bf16* sm, const bf16* base, i64 rowW, i64 off, int r0, int T) {
    constexpr int CH = D / 8, S = D + 8;
    for (int i = threadIdx.x; i < BM * CH; i += blockDim.x) {
        int r = i / CH, ch = i - r * CH, t = r0 + r;
        const bf16* src = t < T ? base + (i64) t * rowW + off + ch * 8 : base;
        unsigned dst = (unsigned) __cvta_generic_to_shared(sm + r * S + ch * 8);
        asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" :: "r"(dst), "l"(src), "r"(t < T ? 16 : 0));
    }
}

__device__ __forceinline__ void cp_async_commit() {
    asm volatile("cp.async.commit_group;");
}

template <int N>
__device__ __forceinline__ void cp_async_wait() {
    asm volatile("cp.async.wait_group %0;" :: "n"(N));
}

// A fragments (16 rows × D) of this warp's rows of a shared tile.
template <int D>
__device__ __forceinline__ void load_a(unsigned (*a)[4], const bf16* sm, int warp, int lane) {
    constexpr int S = D + 8;
#pragma unroll
    for (int kk = 0; kk < D / 16; kk++) ldsm_x4(a[kk], sm + (warp * 16 + (lane & 15)) * S + kk * 16 + (lane >> 4) * 8);
}

// s[16 × 64] = A[16 × D] · Bᵀ, B a shared tile [64 rows][D].
template <int D>
__device__ __forceinline__ void mma_abt(float (*s)[4], const unsigned (*a)[4], const bf16* Bs, int lane) {
    constexpr int S = D + 8;
#pragma unroll
    for (int nt = 0; nt < 8; nt++) s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.f;
#pragma unroll
    for (int kk = 0; kk < D / 16; kk += 2) {
#pragma unroll
        for (int nt = 0; nt < 8; nt++) {
            unsigned b[4];
            ldsm_x4(b, Bs + (nt * 8 + (lane & 7)) * S + kk * 16 + (lane >> 3) * 8);
            mma16816(s[nt], a[kk], b[0], b[1]);
            mma16816(s[nt], a[kk + 1], b[2], b[3]);
        }
    }
}

// o[16 × D] += p[16 × 64] · B, p in accumulator layout (rounded to bf16 here), B a shared tile [64 rows][D].
template <int D>
__device__ __forceinline__ void mma_pb(float (*o)[4], const float (*p)[4], const bf16* Bs, int lane) {
    constexpr int S = D + 8;
#pragma unroll
    for (int kk = 0; kk < 4; kk++) {
        unsigned a[4] = {pack_bf16(p[2 * kk][0], p[2 * kk][1]), pack_bf16(p[2 * kk][2], p[2 * kk][3]),
                         pack_bf16(p[2 * kk + 1][0], p[2 * kk + 1][1]), pack_bf16(p[2 * kk + 1][2], p[2 * kk + 1][3])};
#pragma unroll
        for (int dt = 0; dt < D / 8; dt += 2) {
            unsigned b[4];
            ldsm_x4_t(b, Bs + (kk * 16 + (lane & 7) + ((lane >> 3) & 1) * 8) * S + dt * 8 + (lane >> 4) * 8);
            mma16816(o[dt], a, b[0], b[1]);
            mma16816(o[dt + 1], a, b[2], b[3]);
        }
    }
}

__device__ __forceinline__ float quad_max(float v) {
    v = fmaxf(v, __shfl_xor_sync(FULL_MASK, v, 1));
    return fmaxf(v, __shfl_xor_sync(FULL_MASK, v, 2));
}

__device__ __forceinline__ float quad_sum(float v) {
    v += __shfl_xor_sync(FULL_MASK, v, 1);
    return v + __shfl_xor_sync(FULL_MASK, v, 2);
}

// Rows r (this lane's rows g and g+8 of 16) of an accumulator [16 × D] into global bf16 at base + row * rowW + off.
template <int D>
__device__ __forceinline__ void store_rows(bf16* base, i64 rowW, i64 off, int rowA, int T, const float (*o)[4],
                                           float sA, float sB, int c) {
#pragma unroll
    for (int dt = 0; dt < D / 8; dt++) {
        int d = dt * 8 + 2 * c;
        if (rowA < T) *reinterpret_cast<unsigned*>(base + (i64) rowA * rowW + off + d) = pack_bf16(o[dt][0] * sA, o[dt][1] * sA);
        if (rowA + 8 < T) *reinterpret_cast<unsigned*>(base + (i64) (rowA + 8) * rowW + off + d) = pack_bf16(o[dt][2] * sB, o[dt][3] * sB);
    }
}

// exp2 with results below 2^-126 flushed to zero (one MUFU.EX2: softmax terms that small vanish in the sums anyway).
__device__ __forceinline__ float exp2_ftz(float x) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
    return y;
}

// With MASK, the scores s of a warp's 16 rows × 64 keys from n0 whose key comes after the row (causal) or at or past T
// become -inf. xA, xB: the row maxima of this lane's values (rows A = g, B = g + 8).
template <bool MASK>
__device__ __forceinline__ void mask_scores(float (*s)[4], int n0, int c, int rowA, int rowB, int T, float& xA, float& xB) {
#pragma unroll
    for (int nt = 0; nt < 8; nt++) {
#pragma unroll
        for (int e = 0; e < 2; e++) {
            int key = n0 + nt * 8 + 2 * c + e;
            if (MASK && !(key <= rowA && key < T)) s[nt][e] = -FRUGAL_INF;
            if (MASK && !(key <= rowB && key < T)) s[nt][2 + e] = -FRUGAL_INF;
            xA = fmaxf(xA, s[nt][e]);
            xB = fmaxf(xB, s[nt][2 + e]);
        }
    }
}

// One key tile of the online softmax, up to the rescaling of the output: masks the scores s of this lane's rows A and B
// (only on the diagonal tile or past T), raises the running maxima m (exp2 units), turns s into unnormalized
// probabilities and adds them to the sums l. cA, cB: the factors by which the output accumulator must be rescaled (the
// caller does so once no product into it is in flight).
__device__ __forceinline__ void softmax_probs(float (*s)[4], int n0, int q0, int c, int rowA, int rowB, int T, float sl2,
                                              float& mA, float& mB, float& lA, float& lB, float& cA, float& cB) {
    float xA = -FRUGAL_INF, xB = -FRUGAL_INF; // row maxima of the unscaled scores
    if (n0 + BM <= q0 && n0 + BM <= T) mask_scores<false>(s, n0, c, rowA, rowB, T, xA, xB); // below the diagonal
    else mask_scores<true>(s, n0, c, rowA, rowB, T, xA, xB);
    float nA = fmaxf(mA, quad_max(xA) * sl2), nB = fmaxf(mB, quad_max(xB) * sl2);
    float uA = nA == -FRUGAL_INF ? 0.f : nA, uB = nB == -FRUGAL_INF ? 0.f : nB;
    cA = exp2_ftz(mA - uA);
    cB = exp2_ftz(mB - uB);
    lA *= cA;
    lB *= cB;
#pragma unroll
    for (int nt = 0; nt < 8; nt++) {
#pragma unroll
        for (int e = 0; e < 2; e++) {
            float pa = exp2_ftz(fmaf(s[nt][e], sl2, -uA)), pb = exp2_ftz(fmaf(s[nt][2 + e], sl2, -uB));
            s[nt][e] = pa;
            s[nt][2 + e] = pb;
            lA += pa;
            lB += pb;
        }
    }
    mA = nA;
    mB = nB;
}

// o[16 × D] (accumulator layout) rows A and B times cA and cB.
template <int D>
__device__ __forceinline__ void rescale_rows(float (*o)[4], float cA, float cB) {
#pragma unroll
    for (int dt = 0; dt < D / 8; dt++) {
        o[dt][0] *= cA;
        o[dt][1] *= cA;
        o[dt][2] *= cB;
        o[dt][3] *= cB;
    }
}

// One key tile of the online softmax (softmax_probs), with the output accumulator o rescaled at once.
template <int D>
__device__ __forceinline__ void softmax_tile(float (*s)[4], float (*o)[4], int n0, int q0, int c, int rowA, int rowB, int T,
                                             float sl2, float& mA, float& mB, float& lA, float& lB) {
    float cA, cB;
    softmax_probs(s, n0, q0, c, rowA, rowB, T, sl2, mA, mB, lA, lB, cA, cB);
    rescale_rows<D>(o, cA, cB);
}

// The sums lA, lB of rows A and B over the quad's lanes, and the rows' log-sum-exp (natural log) into lse.
__device__ __forceinline__ void store_lse(float* lse, int b, int h, int H, int T, int rowA, int c, float mA, float mB, float& lA,
                                          float& lB) {
    lA = quad_sum(lA);
    lB = quad_sum(lB);
    if (c == 0) {
        if (rowA < T) lse[((i64) b * H + h) * T + rowA] = mA * LN2 + logf(lA);
        if (rowA + 8 < T) lse[((i64) b * H + h) * T + rowA + 8] = mB * LN2 + logf(lB);
    }
}

// Rows A and B of the normalized output into out, and their log-sum-exp (natural log) into lse.
template <int D>
__device__ __forceinline__ void store_forward(bf16* out, float* lse, const float (*o)[4], int b, int h, int H, int T, i64 qOff,
                                              int rowA, int c, float mA, float mB, float lA, float lB) {
    store_lse(lse, b, h, H, T, rowA, c, mA, mB, lA, lB);
    store_rows<D>(out + (i64) b * T * H * D, (i64) H * D, qOff, rowA, T, o, 1.f / lA, 1.f / lB, c);
}

template <int D, bool PIPE>
__device__ void flash_forward(bf16* out, float* lse, const bf16* qkv, int T, int H, int KVH, float scale) {
    constexpr int S = D + 8;
    extern __shared__ __align__(16) unsigned char smraw[];
    bf16* Qs = reinterpret_cast<bf16*>(smraw);
    bf16* Kb = Qs + BM * S; // K, V (and with PIPE a second K, V for the next tile)
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, c = lane & 3;
    int q0 = (gridDim.x - 1 - blockIdx.x) * BM, h = blockIdx.y, b = blockIdx.z;
    i64 rowW = (i64) (H + 2 * KVH) * D;
    int kvh = h / (H / KVH);
    i64 qOff = (i64) h * D, kOff = (i64) (H + kvh) * D, vOff = kOff + (i64) KVH * D;
    const bf16* base = qkv + (i64) b * T * rowW;
    load_tile<D>(Qs, base, rowW, qOff, q0, T);
    if (PIPE) {
        load_tile_async<D>(Kb, base, rowW, kOff, 0, T);
        load_tile_async<D>(Kb + BM * S, base, rowW, vOff, 0, T);
        cp_async_commit();
    }
    __syncthreads();
    unsigned qa[D / 16][4];
    load_a<D>(qa, Qs, warp, lane);
    float o[D / 8][4];
#pragma unroll
    for (int dt = 0; dt < D / 8; dt++) o[dt][0] = o[dt][1] = o[dt][2] = o[dt][3] = 0.f;
    float mA = -FRUGAL_INF, mB = -FRUGAL_INF, lA = 0.f, lB = 0.f;
    const float sl2 = scale * LOG2E;
    int rowA = q0 + warp * 16 + g, rowB = rowA + 8;
    int nEnd = min(T, q0 + BM);
    for (int n0 = 0, it = 0; n0 < nEnd; n0 += BM, it++) {
        bf16 *Ks, *Vs;
        if (PIPE) {
            Ks = Kb + (it & 1) * 2 * BM * S;
            Vs = Ks + BM * S;
            if (n0 + BM < nEnd) {
                bf16* nk = Kb + ((it + 1) & 1) * 2 * BM * S;
                load_tile_async<D>(nk, base, rowW, kOff, n0 + BM, T);
                load_tile_async<D>(nk + BM * S, base, rowW, vOff, n0 + BM, T);
                cp_async_commit();
                cp_async_wait<1>();
            } else {
                cp_async_wait<0>();
            }
            __syncthreads();
        } else {
            Ks = Kb;
            Vs = Kb + BM * S;
            __syncthreads();
            load_tile<D>(Ks, base, rowW, kOff, n0, T);
            load_tile<D>(Vs, base, rowW, vOff, n0, T);
            __syncthreads();
        }
        float s[8][4];
        mma_abt<D>(s, qa, Ks, lane);
        softmax_tile<D>(s, o, n0, q0, c, rowA, rowB, T, sl2, mA, mB, lA, lB);
        mma_pb<D>(o, s, Vs, lane);
        if (PIPE) __syncthreads(); // this tile's buffers are refilled two iterations on
    }
    store_forward<D>(out, lse, o, b, h, H, T, qOff, rowA, c, mA, mB, lA, lB);
}

template <int D, bool PIPE>
__device__ void flash_backward_dq(bf16* dqkv, const bf16* dout, const float* lse, const float* delta, const bf16* qkv,
                                  int T, int H, int KVH, float scale) {
    constexpr int S = D + 8;
    extern __shared__ __align__(16) unsigned char smraw[];
    bf16* Qs = reinterpret_cast<bf16*>(smraw);
    bf16* Os = Qs + BM * S;
    bf16* Kb = Os + BM * S;
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, c = lane & 3;
    int q0 = (gridDim.x - 1 - blockIdx.x) * BM, h = blockIdx.y, b = blockIdx.z;
    i64 rowW = (i64) (H + 2 * KVH) * D;
    int kvh = h / (H / KVH);
    i64 qOff = (i64) h * D, kOff = (i64) (H + kvh) * D, vOff = kOff + (i64) KVH * D;
    const bf16* base = qkv + (i64) b * T * rowW;
    load_tile<D>(Qs, base, rowW, qOff, q0, T);
    load_tile<D>(Os, dout + (i64) b * T * H * D, (i64) H * D, qOff, q0, T);
    if (PIPE) {
        load_tile_async<D>(Kb, base, rowW, kOff, 0, T);
        load_tile_async<D>(Kb + BM * S, base, rowW, vOff, 0, T);
        cp_async_commit();
    }
    __syncthreads();
    unsigned qa[D / 16][4], da[D / 16][4];
    load_a<D>(qa, Qs, warp, lane);
    load_a<D>(da, Os, warp, lane);
    int rowA = q0 + warp * 16 + g, rowB = rowA + 8;
    const float* lseRow = lse + ((i64) b * H + h) * T;
    const float* deltaRow = delta + ((i64) b * H + h) * T;
    float lseA = rowA < T ? lseRow[rowA] * LOG2E : 0.f, lseB = rowB < T ? lseRow[rowB] * LOG2E : 0.f;
    float dlA = rowA < T ? deltaRow[rowA] : 0.f, dlB = rowB < T ? deltaRow[rowB] : 0.f;
    const float sl2 = scale * LOG2E;
    float dq[D / 8][4];
#pragma unroll
    for (int dt = 0; dt < D / 8; dt++) dq[dt][0] = dq[dt][1] = dq[dt][2] = dq[dt][3] = 0.f;
    int nEnd = min(T, q0 + BM);
    for (int n0 = 0, it = 0; n0 < nEnd; n0 += BM, it++) {
        bf16 *Ks, *Vs;
        if (PIPE) {
            Ks = Kb + (it & 1) * 2 * BM * S;
            Vs = Ks + BM * S;
            if (n0 + BM < nEnd) {
                bf16* nk = Kb + ((it + 1) & 1) * 2 * BM * S;
                load_tile_async<D>(nk, base, rowW, kOff, n0 + BM, T);
                load_tile_async<D>(nk + BM * S, base, rowW, vOff, n0 + BM, T);
                cp_async_commit();
                cp_async_wait<1>();
            } else {
                cp_async_wait<0>();
            }
            __syncthreads();
        } else {
            Ks = Kb;
            Vs = Kb + BM * S;
            __syncthreads();
            load_tile<D>(Ks, base, rowW, kOff, n0, T);
            load_tile<D>(Vs, base, rowW, vOff, n0, T);
            __syncthreads();
        }
        float s[8][4], dp[8][4];
        mma_abt<D>(s, qa, Ks, lane);
        mma_abt<D>(dp, da, Vs, lane);
#pragma unroll
        for (int nt = 0; nt < 8; nt++) {
#pragma unroll
            for (int e = 0; e < 2; e++) {
                int key = n0 + nt * 8 + 2 * c + e;
                float pa = key <= rowA && key < T ? exp2f(s[nt][e] * sl2 - lseA) : 0.f;
                float pb = key <= rowB && key < T ? exp2f(s[nt][2 + e] * sl2 - lseB) : 0.f;
                s[nt][e] = pa * (dp[nt][e] - dlA);
                s[nt][2 + e] = pb * (dp[nt][2 + e] - dlB);
            }
        }
        mma_pb<D>(dq, s, Ks, lane);
        if (PIPE) __syncthreads();
    }
    store_rows<D>(dqkv + (i64) b * T * rowW, rowW, qOff, rowA, T, dq, scale, scale, c);
}

template <int D>
__device__ void flash_backward_dkv(bf16* dqkv, const bf16* dout, const float* lse, const float* delta, const bf16* qkv,
                                   int T, int H, int KVH, float scale) {
    constexpr int S = D + 8;
    extern __shared__ __align__(16) unsigned char smraw[];
    bf16* Ks = reinterpret_cast<bf16*>(smraw);
    bf16* Vs = Ks + BM * S;
    bf16* Qs = Vs + BM * S;
    bf16* Os = Qs + BM * S;
    float* Ls = reinterpret_cast<float*>(Os + BM * S);
    float* Dl = Ls + BM;
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, c = lane & 3;
    int k0 = blockIdx.x * BM, kvh = blockIdx.y, b = blockIdx.z;
    int group = H / KVH;
    i64 rowW = (i64) (H + 2 * KVH) * D;
    i64 kOff = (i64) (H + kvh) * D, vOff = kOff + (i64) KVH * D;
    const bf16* base = qkv + (i64) b * T * rowW;
    const bf16* dbase = dout + (i64) b * T * H * D;
    load_tile<D>(Ks, base, rowW, kOff, k0, T);
    load_tile<D>(Vs, base, rowW, vOff, k0, T);
    __syncthreads();
    unsigned ka[D / 16][4], va[D / 16][4];
    load_a<D>(ka, Ks, warp, lane);
    load_a<D>(va, Vs, warp, lane);
    int keyA = k0 + warp * 16 + g, keyB = keyA + 8;
    const float sl2 = scale * LOG2E;
    float dk[D / 8][4], dv[D / 8][4];
#pragma unroll
    for (int dt = 0; dt < D / 8; dt++) {
        dk[dt][0] = dk[dt][1] = dk[dt][2] = dk[dt][3] = 0.f;
        dv[dt][0] = dv[dt][1] = dv[dt][2] = dv[dt][3] = 0.f;
    }
    for (int h = kvh * group; h < (kvh + 1) * group; h++) {
        i64 qOff = (i64) h * D;
        const float* lseRow = lse + ((i64) b * H + h) * T;
        const float* deltaRow = delta + ((i64) b * H + h) * T;
        for (int q0 = k0; q0 < T; q0 += BM) {
            __syncthreads();
            load_tile<D>(Qs, base, rowW, qOff, q0, T);
            load_tile<D>(Os, dbase, (i64) H * D, qOff, q0, T);
            for (int i = threadIdx.x; i < BM; i += blockDim.x) {
                int t = q0 + i;
                Ls[i] = t < T ? lseRow[t] * LOG2E : 0.f;
                Dl[i] = t < T ? deltaRow[t] : 0.f;
            }
            __syncthreads();
            float s[8][4], dp[8][4];
            mma_abt<D>(s, ka, Qs, lane);
            mma_abt<D>(dp, va, Os, lane);
#pragma unroll
            for (int nt = 0; nt < 8; nt++) {
#pragma unroll
                for (int e = 0; e < 2; e++) {
                    int qi = nt * 8 + 2 * c + e, q = q0 + qi;
                    float ls = Ls[qi], dl = Dl[qi];
                    float pa = q >= keyA && q < T ? exp2f(s[nt][e] * sl2 - ls) : 0.f;
                    float pb = q >= keyB && q < T ? exp2f(s[nt][2 + e] * sl2 - ls) : 0.f;
                    s[nt][e] = pa;
                    s[nt][2 + e] = pb;
                    dp[nt][e] = pa * (dp[nt][e] - dl);
                    dp[nt][2 + e] = pb * (dp[nt][2 + e] - dl);
                }
            }
            mma_pb<D>(dv, s, Os, lane);
            mma_pb<D>(dk, dp, Qs, lane);
        }
    }
    bf16* out = dqkv + (i64) b * T * rowW;
    store_rows<D>(out, rowW, kOff, keyA, T, dk, scale, scale, c);
    store_rows<D>(out, rowW, vOff, keyA, T, dv, 1.f, 1.f, c);
}

// For a warp's 16 keys (rows A = g, B = g + 8) × 64 queries from q0: s (scores) becomes P, dp (dO·vᵀ) becomes
// dS = P ∘ (dP − delta); Ls, Dl hold the queries' lse (natural log) and delta. With MASK, queries before the key (causal)
// or at or past T get P = 0.
template <bool MASK>
__device__ __forceinline__ void probabilities_and_ds(float (*s)[4], float (*dp)[4], const float* Ls, const float* Dl, float sl2,
                                                     int q0, int c, int keyA, int keyB, int T) {
#pragma unroll
    for (int nt = 0; nt < 8; nt++) {
#pragma unroll
        for (int e = 0; e < 2; e++) {
            int qi = nt * 8 + 2 * c + e, q = q0 + qi;
            float ls = Ls[qi] * LOG2E, dl = Dl[qi];
            float pa = !MASK || (q >= keyA && q < T) ? exp2_ftz(fmaf(s[nt][e], sl2, -ls)) : 0.f;
            float pb = !MASK || (q >= keyB && q < T) ? exp2_ftz(fmaf(s[nt][2 + e], sl2, -ls)) : 0.f;
            s[nt][e] = pa;
            s[nt][2 + e] = pb;
            dp[nt][e] = pa * (dp[nt][e] - dl);
            dp[nt][2 + e] = pb * (dp[nt][2 + e] - dl);
        }
    }
}

// p[0] += x, p[1] += y atomically: one vector reduction on sm_90 and later, two before.
__device__ __forceinline__ void add2(float* p, float x, float y) {
#if __CUDA_ARCH__ >= 900
    asm volatile("red.global.add.v2.f32 [%0], {%1, %2};" :: "l"(p), "f"(x), "f"(y) : "memory");
#else
    atomicAdd(p, x);
    atomicAdd(p + 1, y);
#endif
}

// The lse and delta of 64 queries from q0 (head h of batch b) into Lb[0, 64) and Lb[64, 128) with cp.async, zero past T.
__device__ __forceinline__ void load_stats_async(float* Lb, const float* lse, const float* delta, int b, int h, int H, int T,
                                                 int q0) {
    const float* lr = lse + ((i64) b * H + h) * T;
    const float* dr = delta + ((i64) b * H + h) * T;
    for (int i = threadIdx.x; i < 2 * BM; i += blockDim.x) {
        int t = q0 + (i & (BM - 1));
        const float* src = i < BM ? lr : dr;
        src = t < T ? src + t : src;
        unsigned dst = (unsigned) __cvta_generic_to_shared(Lb + i);
        asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;" :: "r"(dst), "l"(src), "r"(t < T ? 4 : 0));
    }
}

// This lane's part of dq (rows qA and qA + 8 of head h, accumulator layout, DT tiles of 8 columns) added into dqAcc
// [B*T, H*D] atomically; a caller with later columns of the head passes dqAcc offset by their first.
template <int D, int DT = D / 8>
__device__ __forceinline__ void add_dq_rows(float* dqAcc, const float (*dq)[4], int b, int h, int H, int T, int qA, int c) {
    float* accA = dqAcc + ((i64) b * T + qA) * H * D + (i64) h * D + 2 * c;
    float* accB = accA + (i64) 8 * H * D;
#pragma unroll
    for (int dt = 0; dt < DT; dt++) {
        if (qA < T) add2(accA + dt * 8, dq[dt][0], dq[dt][1]);
        if (qA + 8 < T) add2(accB + dt * 8, dq[dt][2], dq[dt][3]);
    }
}

// dk/dv as flash_backward_dkv, and dq in the same pass (flash-attention 2's single backward kernel). The (head, query
// tile) items of the loop are flattened and double-buffered with cp.async: item i+1's Q, dO, lse and delta load while
// item i computes (shared: K, V, dS, then two buffers of {Q, dO, lse[64], delta[64]}). After dK and dV, each item's dS
// (bf16, [64 keys][64 queries]) goes to shared memory and every warp computes dQ for 16 of the item's queries from it
// and K, adding the fp32 result into dqAcc [B*T, H*D] (zeroed by flash_delta_zero) with vector atomics; flash_dq_store
// then scales it into dqkv. S and dP are computed once per tile pair instead of once in each of two passes.
template <int D>
__device__ void flash_backward_fused(bf16* dqkv, float* dqAcc, const bf16* dout, const float* lse, const float* delta,
                                     const bf16* qkv, int T, int H, int KVH, float scale) {
    constexpr int S = D + 8, SD = BM + 8;
    constexpr int BUF = 2 * BM * S * 2 + 2 * BM * 4; // bytes of one buffer
    extern __shared__ __align__(16) unsigned char smraw[];
    bf16* Ks = reinterpret_cast<bf16*>(smraw);
    bf16* Vs = Ks + BM * S;
    bf16* dSs = Vs + BM * S; // [key][query], row stride SD
    unsigned char* bufs = reinterpret_cast<unsigned char*>(dSs + BM * SD);
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, c = lane & 3;
    int k0 = blockIdx.x * BM, kvh = blockIdx.y, b = blockIdx.z;
    int group = H / KVH;
    i64 rowW = (i64) (H + 2 * KVH) * D;
    i64 kOff = (i64) (H + kvh) * D, vOff = kOff + (i64) KVH * D;
    const bf16* base = qkv + (i64) b * T * rowW;
    const bf16* dbase = dout + (i64) b * T * H * D;
    int nq = (T - k0 + BM - 1) / BM, items = group * nq;
    auto issue = [&](int item) {
        unsigned char* buf = bufs + (item & 1) * BUF;
        bf16* Qb = reinterpret_cast<bf16*>(buf);
        bf16* Ob = Qb + BM * S;
        float* Lb = reinterpret_cast<float*>(Ob + BM * S);
        int h = kvh * group + item / nq, q0 = k0 + (item % nq) * BM;
        load_tile_async<D>(Qb, base, rowW, (i64) h * D, q0, T);
        load_tile_async<D>(Ob, dbase, (i64) H * D, (i64) h * D, q0, T);
        load_stats_async(Lb, lse, delta, b, h, H, T, q0);
        cp_async_commit();
    };
    load_tile<D>(Ks, base, rowW, kOff, k0, T);
    load_tile<D>(Vs, base, rowW, vOff, k0, T);
    if (items > 0) issue(0);
    __syncthreads();
    unsigned ka[D / 16][4], va[D / 16][4];
    load_a<D>(ka, Ks, warp, lane);
    load_a<D>(va, Vs, warp, lane);
    int keyA = k0 + warp * 16 + g, keyB = keyA + 8;
    const float sl2 = scale * LOG2E;
    float dk[D / 8][4], dv[D / 8][4];
#pragma unroll
    for (int dt = 0; dt < D / 8; dt++) {
        dk[dt][0] = dk[dt][1] = dk[dt][2] = dk[dt][3] = 0.f;
        dv[dt][0] = dv[dt][1] = dv[dt][2] = dv[dt][3] = 0.f;
    }
    for (int item = 0; item < items; item++) {
        if (item + 1 < items) {
            issue(item + 1);
            cp_async_wait<1>();
        } else {
            cp_async_wait<0>();
        }
        __syncthreads();
        unsigned char* buf = bufs + (item & 1) * BUF;
        bf16* Qs = reinterpret_cast<bf16*>(buf);
        bf16* Os = Qs + BM * S;
        float* Ls = reinterpret_cast<float*>(Os + BM * S);
        float* Dl = Ls + BM;
        int h = kvh * group + item / nq, q0 = k0 + (item % nq) * BM;
        {
            float s[8][4], dp[8][4];
            mma_abt<D>(s, ka, Qs, lane);
            mma_abt<D>(dp, va, Os, lane);
            if (q0 >= k0 + BM && q0 + BM <= T) probabilities_and_ds<false>(s, dp, Ls, Dl, sl2, q0, c, keyA, keyB, T); // below the diagonal
            else probabilities_and_ds<true>(s, dp, Ls, Dl, sl2, q0, c, keyA, keyB, T);
            mma_pb<D>(dv, s, Os, lane);
            mma_pb<D>(dk, dp, Qs, lane);
#pragma unroll
            for (int nt = 0; nt < 8; nt++) {
                *reinterpret_cast<unsigned*>(dSs + (warp * 16 + g) * SD + nt * 8 + 2 * c) = pack_bf16(dp[nt][0], dp[nt][1]);
                *reinterpret_cast<unsigned*>(dSs + (warp * 16 + g + 8) * SD + nt * 8 + 2 * c) = pack_bf16(dp[nt][2], dp[nt][3]);
            }
        }
        __syncthreads();
        // dQ[this warp's 16 queries × D] = dSᵀ · K: A = dSᵀ by transposed ldmatrix of dSs, B = K from Ks as in mma_pb
        float dq[D / 8][4];
#pragma unroll
        for (int dt = 0; dt < D / 8; dt++) dq[dt][0] = dq[dt][1] = dq[dt][2] = dq[dt][3] = 0.f;
#pragma unroll
        for (int kk = 0; kk < 4; kk++) {
            unsigned a[4];
            ldsm_x4_t(a, dSs + (kk * 16 + (lane & 7) + ((lane >> 4) & 1) * 8) * SD + warp * 16 + ((lane >> 3) & 1) * 8);
#pragma unroll
            for (int dt = 0; dt < D / 8; dt += 2) {
                unsigned bk[4];
                ldsm_x4_t(bk, Ks + (kk * 16 + (lane & 7) + ((lane >> 3) & 1) * 8) * S + dt * 8 + (lane >> 4) * 8);
                mma16816(dq[dt], a, bk[0], bk[1]);
                mma16816(dq[dt + 1], a, bk[2], bk[3]);
            }
        }
        add_dq_rows<D>(dqAcc, dq, b, h, H, T, q0 + warp * 16 + g, c);
        __syncthreads(); // this buffer is refilled two items on, dSs rewritten next item
    }
    bf16* out = dqkv + (i64) b * T * rowW;
    store_rows<D>(out, rowW, kOff, keyA, T, dk, scale, scale, c);
    store_rows<D>(out, rowW, vOff, keyA, T, dv, 1.f, 1.f, c);
}

// The backward's delta of a row, Σ_d dO[d]·O[d], from the L lanes (aligned, L a power of two dividing 32) that hold 8
// values each of it, d of dO and o of O: summed in one order (each lane's 8 in turn, then across the lanes) wherever
// it is computed, so that the forward recomputed for backward (flash_forward_delta_64) writes flash_delta_zero's bits.
template <int L>
__device__ __forceinline__ float row_delta(const float* d, const float* o) {
    float s = 0.f;
#pragma unroll
    for (int e = 0; e < 8; e++) s = __fmaf_rn(d[e], o[e], s);
#pragma unroll
    for (int x = L / 2; x > 0; x >>= 1) s += __shfl_xor_sync(FULL_MASK, s, x);
    return s;
}

// p[0, 8) = 0 (16-byte aligned floats).
__device__ __forceinline__ void zero8(float* p) {
    const float4 zero = make_float4(0.f, 0.f, 0.f, 0.f);
    reinterpret_cast<float4*>(p)[0] = zero;
    reinterpret_cast<float4*>(p)[1] = zero;
}

// For the one-pass backward: delta[b,h,t] = dot(dout row, out row) (rows (b, t, h) of D bf16, D/8 lanes of 8 each, D/8 a
// power of two dividing 32), and the row's D floats of dqAcc zeroed. Launched with exactly rows·D/8 threads rounded up
// to whole blocks: every lane takes part in the shuffles.
template <int D>
__device__ void flash_delta_zero(float* delta, float* dqAcc, const bf16* dout, const bf16* out, i64 rows, int T, int H) {
    constexpr int L = D / 8;
    i64 i = (i64) blockIdx.x * blockDim.x + threadIdx.x, row = i / L;
    int pk = (int) (i % L);
    bool active = row < rows;
    float o[8] = {}, d[8] = {};
    if (active) {
        Pack<bf16>::load(d, dout, row * D + pk * 8);
        Pack<bf16>::load(o, out, row * D + pk * 8);
        zero8(dqAcc + row * D + pk * 8);
    }
    float s = row_delta<L>(d, o);
    if (active && pk == 0) {
        int h = (int) (row % H);
        i64 bt = row / H;
        delta[(bt / T * H + h) * T + bt % T] = s;
    }
}

// dqkv's q columns = dqAcc · scale (rows × H*D floats, 8 per thread; H*D a multiple of 8).
extern "C" __global__ void flash_dq_store(bf16* dqkv, const float* dqAcc, i64 rows, int qWidth, int rowW, float scale) {
    i64 packs = rows * (qWidth / 8);
    GRID_STRIDE(i, packs) {
        i64 r = i / (qWidth / 8), col = (i - r * (qWidth / 8)) * 8;
        float v[8];
        load_floats<8>(v, dqAcc + r * qWidth + col);
#pragma unroll
        for (int e = 0; e < 8; e++) v[e] *= scale;
        Pack<bf16>::store(dqkv, r * rowW + col, v);
    }
}

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
// ---- Hopper (sm_90a): the forward on warpgroup MMA. One warpgroup (4 warps) per 64 query rows; Q, K and V tiles in
// shared memory in the 128-byte swizzled layout that wgmma reads through matrix descriptors (a row of 64 bf16 is one
// 128-byte line; 16-byte chunk ch of row r sits at chunk ch ^ (r % 8); tiles 1024-byte aligned). S = Q·Kᵀ reads both
// operands from shared memory (K-major); O += P·V takes P from registers (the accumulator layout of S is the A
// fragment layout, as with mma.sync) and V from shared memory as an N-major operand. The accumulators of a
// m64n64 wgmma are laid out per warp as the [8][4] fragments of mma.sync's m16n8 tiles, so the online softmax and
// the epilogue are the mma.sync kernel's.

#define WG_TILE_BYTES (BM * 64 * 2)

// A 64-row tile of 64 bf16 per row from global (row r at base + (r0 + r) * rowW + off) into swizzled shared memory,
// with cp.async; rows at or past T are zero.
__device__ __forceinline__ void load_tile_swizzled(bf16* sm, const bf16* base, i64 rowW, i64 off, int r0, int T) {
    unsigned sm0 = (unsigned) __cvta_generic_to_shared(sm);
    for (int i = threadIdx.x; i < BM * 8; i += blockDim.x) {
        int r = i >> 3, ch = i & 7, t = r0 + r;
        const bf16* src = t < T ? base + (i64) t * rowW + off + ch * 8 : base;
        unsigned dst = sm0 + r * 128 + ((ch ^ (r & 7)) << 4);
        asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" :: "r"(dst), "l"(src), "r"(t < T ? 16 : 0));
    }
}

__device__ __forceinline__ void wg_commit_wait() {
    asm volatile("wgmma.commit_group.sync.aligned;" ::: "memory");
    asm volatile("wgmma.wait_group.sync.aligned 0;" ::: "memory");
}

// d[64 × 64] (+)= A[64 × 16] · B[16 × 64], both in shared memory, K-major unless transposed (TA: A M-major, TB: B
// N-major); d is overwritten when accumulate is 0.
template <int TA, int TB>
__device__ __forceinline__ void wgmma_ss(float (*d)[4], unsigned long long a, unsigned long long b, int accumulate) {
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, %32, %33, p, 1, 1, %35, %36;\n}\n"
                 : "+f"(d[0][0]), "+f"(d[0][1]), "+f"(d[0][2]), "+f"(d[0][3]), "+f"(d[1][0]), "+f"(d[1][1]), "+f"(d[1][2]), "+f"(d[1][3]), "+f"(d[2][0]), "+f"(d[2][1]), "+f"(d[2][2]), "+f"(d[2][3]), "+f"(d[3][0]), "+f"(d[3][1]), "+f"(d[3][2]), "+f"(d[3][3]), "+f"(d[4][0]), "+f"(d[4][1]), "+f"(d[4][2]), "+f"(d[4][3]), "+f"(d[5][0]), "+f"(d[5][1]), "+f"(d[5][2]), "+f"(d[5][3]), "+f"(d[6][0]), "+f"(d[6][1]), "+f"(d[6][2]), "+f"(d[6][3]), "+f"(d[7][0]), "+f"(d[7][1]), "+f"(d[7][2]), "+f"(d[7][3])
                 : "l"(a), "l"(b), "r"(accumulate), "n"(TA), "n"(TB));
}

// d[64 × 64] += A[64 × 16] · B[16 × 64], A from registers (this thread's 4 of the fragment), B N-major in shared memory.
__device__ __forceinline__ void wgmma_rs(float (*d)[4], const unsigned* a, unsigned long long b) {
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %37, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, {%32, %33, %34, %35}, %36, p, 1, 1, 1;\n}\n"
                 : "+f"(d[0][0]), "+f"(d[0][1]), "+f"(d[0][2]), "+f"(d[0][3]), "+f"(d[1][0]), "+f"(d[1][1]), "+f"(d[1][2]), "+f"(d[1][3]), "+f"(d[2][0]), "+f"(d[2][1]), "+f"(d[2][2]), "+f"(d[2][3]), "+f"(d[3][0]), "+f"(d[3][1]), "+f"(d[3][2]), "+f"(d[3][3]), "+f"(d[4][0]), "+f"(d[4][1]), "+f"(d[4][2]), "+f"(d[4][3]), "+f"(d[5][0]), "+f"(d[5][1]), "+f"(d[5][2]), "+f"(d[5][3]), "+f"(d[6][0]), "+f"(d[6][1]), "+f"(d[6][2]), "+f"(d[6][3]), "+f"(d[7][0]), "+f"(d[7][1]), "+f"(d[7][2]), "+f"(d[7][3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "r"(1));
}

// d += P · B over 64 keys: P [64 rows × 64] in accumulator layout, rounded to bf16 as the A fragments; B a swizzled
// [64][64] tile read N-major (its rows are the product's K dimension).
__device__ __forceinline__ void wgmma_pb(float (*d)[4], const float (*p)[4], const bf16* Bs) {
#pragma unroll
    for (int kk = 0; kk < 4; kk++) {
        unsigned a[4] = {pack_bf16(p[2 * kk][0], p[2 * kk][1]), pack_bf16(p[2 * kk][2], p[2 * kk][3]),
                         pack_bf16(p[2 * kk + 1][0], p[2 * kk + 1][1]), pack_bf16(p[2 * kk + 1][2], p[2 * kk + 1][3])};
        wgmma_rs(d, a, wg_desc(Bs + kk * 16 * 64));
    }
}

// d = A · Bᵀ over 64 columns: A and B swizzled [64][64] tiles, both K-major.
__device__ __forceinline__ void wgmma_abt(float (*d)[4], const bf16* As, const bf16* Bs) {
#pragma unroll
    for (int kk = 0; kk < 4; kk++) wgmma_ss<0, 0>(d, wg_desc(As + kk * 16), wg_desc(Bs + kk * 16), kk);
}

__device__ void flash_forward_wgmma(bf16* out, float* lse, const bf16* qkv, int T, int H, int KVH, float scale) {
    constexpr int D = 64;
    extern __shared__ __align__(1024) unsigned char smwg[];
    unsigned pad = (1024 - ((unsigned) __cvta_generic_to_shared(smwg) & 1023)) & 1023;
    bf16* Qs = reinterpret_cast<bf16*>(smwg + pad);
    bf16* Kb = Qs + BM * D; // K, V of this tile, then K, V of the next
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, c = lane & 3;
    int q0 = (gridDim.x - 1 - blockIdx.x) * BM, h = blockIdx.y, b = blockIdx.z;
    i64 rowW = (i64) (H + 2 * KVH) * D;
    int kvh = h / (H / KVH);
    i64 qOff = (i64) h * D, kOff = (i64) (H + kvh) * D, vOff = kOff + (i64) KVH * D;
    const bf16* base = qkv + (i64) b * T * rowW;
    load_tile_swizzled(Qs, base, rowW, qOff, q0, T);
    load_tile_swizzled(Kb, base, rowW, kOff, 0, T);
    load_tile_swizzled(Kb + BM * D, base, rowW, vOff, 0, T);
    cp_async_commit();
    float o[D / 8][4];
#pragma unroll
    for (int dt = 0; dt < D / 8; dt++) o[dt][0] = o[dt][1] = o[dt][2] = o[dt][3] = 0.f;
    float mA = -FRUGAL_INF, mB = -FRUGAL_INF, lA = 0.f, lB = 0.f;
    const float sl2 = scale * LOG2E;
    int rowA = q0 + warp * 16 + g, rowB = rowA + 8;
    int nEnd = min(T, q0 + BM);
    for (int n0 = 0, it = 0; n0 < nEnd; n0 += BM, it++) {
        bf16* Ks = Kb + (it & 1) * 2 * BM * D;
        bf16* Vs = Ks + BM * D;
        if (n0 + BM < nEnd) {
            bf16* nk = Kb + ((it + 1) & 1) * 2 * BM * D;
            load_tile_swizzled(nk, base, rowW, kOff, n0 + BM, T);
            load_tile_swizzled(nk + BM * D, base, rowW, vOff, n0 + BM, T);
            cp_async_commit();
            cp_async_wait<1>();
        } else {
            cp_async_wait<0>();
        }
        asm volatile("fence.proxy.async.shared::cta;" ::: "memory"); // cp.async wrote what the tensor cores read
        __syncthreads();
        float s[8][4] = {}; // overwritten by the first product (accumulate 0); zeroed so nothing reads garbage
        wg_fence();
        wgmma_abt(s, Qs, Ks);
        wg_commit_wait();
        softmax_tile<D>(s, o, n0, q0, c, rowA, rowB, T, sl2, mA, mB, lA, lB);
        wg_fence();
        wgmma_pb(o, s, Vs);
        wg_commit_wait();
        __syncthreads(); // this tile's buffers are refilled two iterations on
    }
    store_forward<D>(out, lse, o, b, h, H, T, qOff, rowA, c, mA, mB, lA, lB);
}

extern "C" __global__ void __launch_bounds__(128) flash_forward_wgmma_64(bf16* out, float* lse, const bf16* qkv, int T, int H,
                                                                      int KVH, float scale) {
    flash_forward_wgmma(out, lse, qkv, T, H, KVH, scale);
}

// The one-pass backward (as flash_backward_fused) on warpgroup MMA: a block of 128 threads owns 64 keys of one KV head
// and loops over the (head of the group, query tile) items, double-buffering each item's Q, dO, lse and delta with
// cp.async. Per item: Sᵀ = K·Qᵀ and dPᵀ = V·dOᵀ (both operands swizzled tiles), P and dS in registers (key rows, the
// layout of probabilities_and_ds), dV += P·dO and dK += dS·Q with P and dS as register A fragments, and dQ = dSᵀ·K with
// dS stored (bf16, swizzled [key][query]) and read M-major; dQ goes into dqAcc with vector atomics.
__device__ void flash_backward_wgmma(bf16* dqkv, float* dqAcc, const bf16* dout, const float* lse, const float* delta,
                                     const bf16* qkv, int T, int H, int KVH, float scale) {
    constexpr int D = 64, TILE = BM * D;
    extern __shared__ __align__(1024) unsigned char smwg[];
    unsigned pad = (1024 - ((unsigned) __cvta_generic_to_shared(smwg) & 1023)) & 1023;
    bf16* Ks = reinterpret_cast<bf16*>(smwg + pad);
    bf16* Vs = Ks + TILE;
    bf16* dSs = Vs + TILE;
    bf16* tiles = dSs + TILE;                                 // buffer i: Q at tiles + 2i·TILE, dO after it
    float* stats = reinterpret_cast<float*>(tiles + 4 * TILE); // buffer i: lse at stats + 2i·BM, delta after it
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, c = lane & 3;
    int k0 = blockIdx.x * BM, kvh = blockIdx.y, b = blockIdx.z;
    int group = H / KVH;
    i64 rowW = (i64) (H + 2 * KVH) * D;
    i64 kOff = (i64) (H + kvh) * D, vOff = kOff + (i64) KVH * D;
    const bf16* base = qkv + (i64) b * T * rowW;
    const bf16* dbase = dout + (i64) b * T * H * D;
    int nq = (T - k0 + BM - 1) / BM, items = group * nq;
    auto issue = [&](int item) {
        bf16* Qb = tiles + (item & 1) * 2 * TILE;
        float* Lb = stats + (item & 1) * 2 * BM;
        int h = kvh * group + item / nq, q0 = k0 + (item % nq) * BM;
        load_tile_swizzled(Qb, base, rowW, (i64) h * D, q0, T);
        load_tile_swizzled(Qb + TILE, dbase, (i64) H * D, (i64) h * D, q0, T);
        load_stats_async(Lb, lse, delta, b, h, H, T, q0);
    };
    load_tile_swizzled(Ks, base, rowW, kOff, k0, T);
    load_tile_swizzled(Vs, base, rowW, vOff, k0, T);
    if (items > 0) issue(0);
    cp_async_commit();
    int keyA = k0 + warp * 16 + g, keyB = keyA + 8;
    const float sl2 = scale * LOG2E;
    float dk[8][4], dv[8][4];
#pragma unroll
    for (int dt = 0; dt < 8; dt++) {
        dk[dt][0] = dk[dt][1] = dk[dt][2] = dk[dt][3] = 0.f;
        dv[dt][0] = dv[dt][1] = dv[dt][2] = dv[dt][3] = 0.f;
    }
    unsigned dS0 = (unsigned) __cvta_generic_to_shared(dSs);
    for (int item = 0; item < items; item++) {
        if (item + 1 < items) {
            issue(item + 1);
            cp_async_commit();
            cp_async_wait<1>();
        } else {
            cp_async_wait<0>();
        }
        asm volatile("fence.proxy.async.shared::cta;" ::: "memory"); // cp.async wrote what the tensor cores read
        __syncthreads();
        const bf16* Qs = tiles + (item & 1) * 2 * TILE;
        const bf16* Os = Qs + TILE;
        const float* Ls = stats + (item & 1) * 2 * BM;
        const float* Dl = Ls + BM;
        int h = kvh * group + item / nq, q0 = k0 + (item % nq) * BM;
        float s[8][4] = {}, dp[8][4] = {};
        wg_fence();
        wgmma_abt(s, Ks, Qs);
        wgmma_abt(dp, Vs, Os);
        wg_commit_wait();
        if (q0 >= k0 + BM && q0 + BM <= T) probabilities_and_ds<false>(s, dp, Ls, Dl, sl2, q0, c, keyA, keyB, T); // below the diagonal
        else probabilities_and_ds<true>(s, dp, Ls, Dl, sl2, q0, c, keyA, keyB, T);
#pragma unroll
        for (int nt = 0; nt < 8; nt++) { // dS (key rows) into the swizzled [key][query] tile
            int r = warp * 16 + g, ch = nt, col = 2 * c;
            asm volatile("st.shared.b32 [%0], %1;" :: "r"(dS0 + r * 128 + ((ch ^ (r & 7)) << 4) + col * 2), "r"(pack_bf16(dp[nt][0], dp[nt][1])));
            r += 8;
            asm volatile("st.shared.b32 [%0], %1;" :: "r"(dS0 + r * 128 + ((ch ^ (r & 7)) << 4) + col * 2), "r"(pack_bf16(dp[nt][2], dp[nt][3])));
        }
        asm volatile("fence.proxy.async.shared::cta;" ::: "memory"); // dS, written by this thread, is read by the tensor cores
        __syncthreads();
        float dq[8][4] = {};
        wg_fence();
        wgmma_pb(dv, s, Os);
        wgmma_pb(dk, dp, Qs);
#pragma unroll
        for (int kk = 0; kk < 4; kk++) wgmma_ss<1, 1>(dq, wg_desc(dSs + kk * 16 * 64), wg_desc(Ks + kk * 16 * 64), kk);
        wg_commit_wait();
        add_dq_rows<D>(dqAcc, dq, b, h, H, T, q0 + warp * 16 + g, c);
        __syncthreads(); // this buffer is refilled two items on, dS rewritten next item
    }
    bf16* out = dqkv + (i64) b * T * rowW;
    store_rows<D>(out, rowW, kOff, keyA, T, dk, scale, scale, c);
    store_rows<D>(out, rowW, vOff, keyA, T, dv, 1.f, 1.f, c);
}

extern "C" __global__ void __launch_bounds__(128) flash_backward_wgmma_64(bf16* dqkv, float* dqAcc, const bf16* dout,
        const float* lse, const float* delta, const bf16* qkv, int T, int H, int KVH, float scale) {
    flash_backward_wgmma(dqkv, dqAcc, dout, lse, delta, qkv, T, H, KVH, scale);
}

// ---- Hopper, two warpgroups per block (flash-attention 3's scheme, without a producer warpgroup): the two consumer
// warpgroups share the K/V (forward) or Q/dO (backward) tiles of a 4-stage cp.async ring, with one block-wide barrier
// per tile, and each overlaps its softmax with its own tensor-core work in flight (wgmma.wait_group 1).

#define WG_STAGES 4

// d[64 × 64] = A[64 × 16] · B[16 × 64], both K-major in shared memory; d is written, not read (no zeroing needed).
__device__ __forceinline__ void wgmma_ss_first(float (*d)[4], unsigned long long a, unsigned long long b) {
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, %32, %33, p, 1, 1, 0, 0;\n}\n"
                 : "=f"(d[0][0]), "=f"(d[0][1]), "=f"(d[0][2]), "=f"(d[0][3]), "=f"(d[1][0]), "=f"(d[1][1]), "=f"(d[1][2]), "=f"(d[1][3]), "=f"(d[2][0]), "=f"(d[2][1]), "=f"(d[2][2]), "=f"(d[2][3]), "=f"(d[3][0]), "=f"(d[3][1]), "=f"(d[3][2]), "=f"(d[3][3]), "=f"(d[4][0]), "=f"(d[4][1]), "=f"(d[4][2]), "=f"(d[4][3]), "=f"(d[5][0]), "=f"(d[5][1]), "=f"(d[5][2]), "=f"(d[5][3]), "=f"(d[6][0]), "=f"(d[6][1]), "=f"(d[6][2]), "=f"(d[6][3]), "=f"(d[7][0]), "=f"(d[7][1]), "=f"(d[7][2]), "=f"(d[7][3])
                 : "l"(a), "l"(b), "r"(0));
}

// s = A · Bᵀ over 64 columns (A, B swizzled [64][64] tiles, K-major), issued; complete after wgmma.wait_group.
__device__ __forceinline__ void wgmma_abt_async(float (*s)[4], const bf16* As, const bf16* Bs) {
    wgmma_ss_first(s, wg_desc(As), wg_desc(Bs));
#pragma unroll
    for (int kk = 1; kk < 4; kk++) wgmma_ss<0, 0>(s, wg_desc(As + kk * 16), wg_desc(Bs + kk * 16), 1);
}

// p [64 rows × 64] in accumulator layout as bf16 A fragments, one [4] per 16 columns.
__device__ __forceinline__ void pack_a(unsigned (*a)[4], const float (*p)[4]) {
#pragma unroll
    for (int kk = 0; kk < 4; kk++) {
        a[kk][0] = pack_bf16(p[2 * kk][0], p[2 * kk][1]);
        a[kk][1] = pack_bf16(p[2 * kk][2], p[2 * kk][3]);
        a[kk][2] = pack_bf16(p[2 * kk + 1][0], p[2 * kk + 1][1]);
        a[kk][3] = pack_bf16(p[2 * kk + 1][2], p[2 * kk + 1][3]);
    }
}

// d += A · B over 64: A packed fragments (pack_a), B a swizzled [64][64] tile read N-major; issued, not waited for.
__device__ __forceinline__ void wgmma_pb_async(float (*d)[4], const unsigned (*a)[4], const bf16* Bs) {
#pragma unroll
    for (int kk = 0; kk < 4; kk++) wgmma_rs(d, a[kk], wg_desc(Bs + kk * 16 * 64));
}

// What a forward block leaves its epilogue: this lane's part (lane = 4g + c, the accumulator layout) of rows rowA and
// rowA + 8 of head h of batch b, their running maxima (exp2 units) and sums, and 2 KiB of shared memory the warp may
// stage its 16 rows in, which hold the rows' q until then (swizzled as stage_rows stages); kv: k of the same rows (the
// diagonal key tile's, still in the ring), their v BM·D values after it.
struct ForwardRows {
    int b, h, rowA, lane;
    float mA, mB, lA, lB;
    unsigned char* stage;
    const unsigned char* kv;
};

// The warp's 16 rows of the normalized output o (accumulator layout, rows scaled by sA and sB), rounded to bf16 as
// store_rows rounds them, into its staging (row r's 16-byte chunk ch at r·128 + 16·(ch ^ (r & 7)): no bank conflicts
// either way), so that a lane can read back 8 consecutive values of a row (staged_group).
__device__ __forceinline__ void stage_rows(unsigned char* stage, const float (*o)[4], float sA, float sB, int lane) {
    const int g = lane >> 2, c = lane & 3;
#pragma unroll
    for (int dt = 0; dt < 8; dt++) {
        *reinterpret_cast<unsigned*>(stage + g * 128 + ((dt ^ g) << 4) + 4 * c) = pack_bf16(o[dt][0] * sA, o[dt][1] * sA);
        *reinterpret_cast<unsigned*>(stage + (g + 8) * 128 + ((dt ^ g) << 4) + 4 * c) = pack_bf16(o[dt][2] * sB, o[dt][3] * sB);
    }
    __syncwarp();
}

// Pass k (of 4) over the staged rows: the lane's group is row 4k + lane / 8 of the warp's 16, its values 8·(lane % 8)..
// (8 lanes a row, as flash_delta_zero and quant.cuh's fast kernels hold values), as 8 bf16.
__device__ __forceinline__ uint4 staged_group(const unsigned char* stage, int k, int lane) {
    const int r = 4 * k + (lane >> 3), ch = lane & 7;
    return *reinterpret_cast<const uint4*>(stage + r * 128 + ((ch ^ (r & 7)) << 4));
}

// The epilogue of flash_forward_delta_64: lse as store_forward writes it, and instead of out, the backward's delta of
// each row from out's bf16 values, summed as flash_delta_zero sums them (its bits), and the row's dq accumulator
// (dqAcc [B*T, H*D]) zeroed.
__device__ __forceinline__ void store_forward_delta(float* lse, float* delta, float* dqAcc, const bf16* dout, const float (*o)[4],
                                                    ForwardRows& r, int H, int T) {
    constexpr int D = 64;
    const int lane = r.lane, row0 = r.rowA - (lane >> 2); // the warp's first row
    store_lse(lse, r.b, r.h, H, T, r.rowA, lane & 3, r.mA, r.mB, r.lA, r.lB);
    stage_rows(r.stage, o, 1.f / r.lA, 1.f / r.lB, lane);
#pragma unroll
    for (int k = 0; k < 4; k++) {
        const int row = row0 + 4 * k + (lane >> 3);
        const i64 at = (((i64) r.b * T + row) * H + r.h) * D + (lane & 7) * 8; // the group's first value in [B*T, H*D]
        const uint4 raw = staged_group(r.stage, k, lane);
        float v[8], d[8] = {};
        Pack<bf16>::load(v, reinterpret_cast<const bf16*>(&raw), 0);
        if (row < T) Pack<bf16>::load(d, dout, at);
        const float s = row_delta<D / 8>(d, v); // rows past T stay in their own 8 lanes
        if (row < T) {
            zero8(dqAcc + at);
            if ((lane & 7) == 0) delta[((i64) r.b * H + r.h) * T + row] = s;
        }
    }
}

// Where a stash quantizes what a forward kernel writes: quantize_<T>_q<BITS>'s arguments, less the source and its size.
// packed null: not quantized.
struct StashQuant {
    unsigned char* packed;
    unsigned char* scales;
    int logLanes, isInt, stochastic;
    unsigned seedBits;
    int scalesAligned;
};

// The warp's 16 rows of 64 bf16 in a swizzled stage (stage_rows' layout) quantized as quantize writes them (quant.cuh's
// fast path: a lane a group, a block 1..8 lanes of a row's 8, so blocks of 8..64 values), where row t's values are
// elements base + t·rowW .. of the quantized tensor; with out, also stored at those offsets of out. Rows from row0, those
// at or past T skipped. A row's 8 groups are 8·BITS contiguous packed bytes: where BITS is no power of two, the warp
// assembles them, 4 rows a pass, from bits staged in slots (33 words; they may overlap the stage, which is read first).
template <int BITS>
__device__ __forceinline__ void quantize_rows(const unsigned char* stage, unsigned long long* slots, bf16* out, const StashQuant& q,
                                              unsigned* error, i64 base, i64 rowW, int row0, int T, int lane) {
    uint4 raw[4];
#pragma unroll
    for (int k = 0; k < 4; k++) raw[k] = staged_group(stage, k, lane);
    if constexpr (!DIRECT_WORDS(BITS)) {
        __syncwarp();
        if (lane == 0) slots[32] = 0;
    }
#pragma unroll
    for (int k = 0; k < 4; k++) {
        const int row = row0 + 4 * k + (lane >> 3);
        const i64 at = base + row * rowW + (lane & 7) * 8;
        float v[8];
        Pack<bf16>::load(v, reinterpret_cast<const bf16*>(&raw[k]), 0);
        if (out != nullptr && row < T) *reinterpret_cast<uint4*>(out + at) = raw[k];
        const PackedGroup<BITS> g = pack_block_group<BITS>(v, at >> 3, q.logLanes, q.isInt, q.stochastic, q.seedBits);
        if constexpr (DIRECT_WORDS(BITS)) {
            if (row < T) reinterpret_cast<typename GroupWord<BITS>::type*>(q.packed)[at >> 3] = g.bits;
        } else {
            __syncwarp(); // the previous pass's words are out
            slots[lane] = g.bits;
            __syncwarp();
#pragma unroll
            for (int w = lane; w < 8 * BITS; w += 32) { // word w of the pass: word w % (2·BITS) of its row w / (2·BITS)
                const int rw = row0 + 4 * k + w / (2 * BITS);
                unsigned* words = reinterpret_cast<unsigned*>(q.packed + (base + rw * rowW) * BITS / 8);
                if (rw < T) words[w % (2 * BITS)] = staged_word<BITS>(slots, w);
            }
        }
        if (row < T && (lane & ((1 << q.logLanes) - 1)) == 0) store_scale(q.scales, at >> (3 + q.logLanes), q.isInt, q.scalesAligned, g.sc, error);
    }
    __syncwarp(); // the stage and the slots are read
}

// The epilogue of flash_forward_q<BITS>_64: where qkvq quantizes, the warp's rows of q, k and v as quantize writes qkv
// (k and v by the group's first query head only), from the tiles the forward read them into (its Q rows, r.stage, and
// the diagonal key tile, r.kv); then out and lse as store_forward writes them (out a 16-byte group per lane), and where
// outq quantizes, out's quantized copy from the bf16 values written. The stage is overwritten last: it holds q.
template <int BITS, int QKV_BITS>
__device__ __forceinline__ void store_forward_quantized(bf16* out, float* lse, const StashQuant& outq, const StashQuant& qkvq,
                                                        unsigned* error, const float (*o)[4], ForwardRows& r, int H, int KVH, int T) {
    constexpr int D = 64;
    const int lane = r.lane, row0 = r.rowA - (lane >> 2), group = H / KVH;
    unsigned long long* slots = reinterpret_cast<unsigned long long*>(r.stage);
    if (qkvq.packed != nullptr) {
        const i64 rowW = (i64) (H + 2 * KVH) * D, base = (i64) r.b * T * rowW, kOff = (i64) (H + r.h / group) * D;
#pragma unroll 1
        for (int part = 0; part < (r.h % group == 0 ? 3 : 1); part++) { // q, k, v: one copy of the code (NVRTC's time)
            const unsigned char* src = part == 0 ? r.stage : r.kv + (part - 1) * BM * D * 2;
            const i64 off = part == 0 ? (i64) r.h * D : kOff + (part - 1) * (i64) KVH * D;
            quantize_rows<QKV_BITS>(src, slots, nullptr, qkvq, error, base + off, rowW, row0, T, lane);
        }
    }
    if (outq.packed == nullptr) {
        store_forward<D>(out, lse, o, r.b, r.h, H, T, (i64) r.h * D, r.rowA, lane & 3, r.mA, r.mB, r.lA, r.lB);
        return;
    }
    store_lse(lse, r.b, r.h, H, T, r.rowA, lane & 3, r.mA, r.mB, r.lA, r.lB);
    stage_rows(r.stage, o, 1.f / r.lA, 1.f / r.lB, lane);
    quantize_rows<BITS>(r.stage, slots, out, outq, error, ((i64) r.b * T * H + r.h) * D, (i64) H * D, row0, T, lane);
}

// Forward: a block of 256 threads owns 128 query rows (warpgroup w rows q0 + 64w ...) and streams the key tiles both
// need through the ring (a tile's K and V per stage): after the block's barrier for tile j, tile j + 2 is requested
// into the stage of tile j − 2, whose last reader (P·V, issued at tile j − 1) every warpgroup waited for before that
// barrier. Warpgroup 0 needs one key tile fewer than warpgroup 1 on the diagonal and only joins the barrier there. Per key tile j a warpgroup
// issues S_j = Q·K_jᵀ and O += P_{j-1}·V_{j-1}, waits for S_j alone and computes P_j while the P·V product runs, then
// waits for that and rescales O: the exponentials overlap the tensor cores. What becomes of the rows is the epilogue
// store's (store(o, ForwardRows&)): the kernels below differ only there.
template <typename Store>
__device__ __forceinline__ void flash_forward_wg2(const bf16* qkv, int T, int H, int KVH, float scale, Store store) {
    constexpr int D = 64, TILE = BM * D;
    extern __shared__ __align__(1024) unsigned char smwg[];
    unsigned pad = (1024 - ((unsigned) __cvta_generic_to_shared(smwg) & 1023)) & 1023;
    bf16* Qb = reinterpret_cast<bf16*>(smwg + pad); // the two warpgroups' Q tiles
    bf16* ring = Qb + 2 * TILE;                     // stage i: K at ring + 2i·TILE, V after it
    int wg = warpgroup_index(), warp = (threadIdx.x >> 5) & 3, lane = threadIdx.x & 31, g = lane >> 2, c = lane & 3;
    int q0 = (gridDim.x - 1 - blockIdx.x) * 2 * BM, h = blockIdx.y, b = blockIdx.z;
    int r0 = q0 + wg * BM; // this warpgroup's first row
    i64 rowW = (i64) (H + 2 * KVH) * D;
    int kvh = h / (H / KVH);
    i64 qOff = (i64) h * D, kOff = (i64) (H + kvh) * D, vOff = kOff + (i64) KVH * D;
    const bf16* base = qkv + (i64) b * T * rowW;
    int N = (min(T, q0 + 2 * BM) + BM - 1) / BM;         // key tiles of the block
    int n = r0 < T ? (min(T, r0 + BM) + BM - 1) / BM : 0; // key tiles of this warpgroup (none if its rows are past T)
    auto load_kv = [&](int j) { // tile j (if there is one) into its stage, as one cp.async group
        if (j < N) {
            bf16* st = ring + (j & (WG_STAGES - 1)) * 2 * TILE;
            load_tile_swizzled(st, base, rowW, kOff, j * BM, T);
            load_tile_swizzled(st + TILE, base, rowW, vOff, j * BM, T);
        }
        cp_async_commit();
    };
    auto barrier = [&](int j) { // tile j has landed for the whole block; then tile j + 2 is requested
        cp_async_wait<1>();
        asm volatile("fence.proxy.async.shared::cta;" ::: "memory"); // cp.async wrote what the tensor cores read
        __syncthreads();
        load_kv(j + 2);
    };
    load_tile_swizzled(Qb, base, rowW, qOff, q0, T);
    load_tile_swizzled(Qb + TILE, base, rowW, qOff, q0 + BM, T);
    load_kv(0);
    load_kv(1);
    bf16* Qs = Qb + wg * TILE;
    float o[D / 8][4];
#pragma unroll
    for (int dt = 0; dt < D / 8; dt++) o[dt][0] = o[dt][1] = o[dt][2] = o[dt][3] = 0.f;
    float mA = -FRUGAL_INF, mB = -FRUGAL_INF, lA = 0.f, lB = 0.f, cA, cB;
    const float sl2 = scale * LOG2E;
    int rowA = r0 + warp * 16 + g, rowB = rowA + 8;
    int j = 0;
    if (n > 0) {
        float s[8][4];
        unsigned p[4][4]; // P_{j-1}: the A operand of the product in flight
        barrier(j);
        wg_fence();
        wgmma_abt_async(s, Qs, ring);
        wg_commit();
        wg_wait<0>();
        softmax_probs(s, 0, r0, c, rowA, rowB, T, sl2, mA, mB, lA, lB, cA, cB);
        pack_a(p, s);
        for (j = 1; j < n; j++) {
            barrier(j);
            const bf16* Ks = ring + (j & (WG_STAGES - 1)) * 2 * TILE;
            const bf16* Vp = ring + ((j - 1) & (WG_STAGES - 1)) * 2 * TILE + TILE;
            wg_fence();
            wgmma_abt_async(s, Qs, Ks);
            wg_commit();
            wgmma_pb_async(o, p, Vp);
            wg_commit();
            wg_wait<1>();
            softmax_probs(s, j * BM, r0, c, rowA, rowB, T, sl2, mA, mB, lA, lB, cA, cB);
            wg_wait<0>();
            rescale_rows<D>(o, cA, cB);
            pack_a(p, s);
        }
        if (j < N) barrier(j++); // warpgroup 0 on the diagonal: the block's last tile is warpgroup 1's alone
        wg_fence();
        wgmma_pb_async(o, p, ring + ((n - 1) & (WG_STAGES - 1)) * 2 * TILE + TILE);
        wg_commit();
        wg_wait<0>();
    }
    for (; j < N; j++) barrier(j); // a warpgroup wholly past T
    // The warp's rows of its Q tile are free: the warpgroup's products, which read them, have completed. No tile is
    // loaded after the last barrier, so the ring still holds this warpgroup's diagonal tile r0 / BM (the block's last two).
    ForwardRows rows = {b, h, rowA, lane, mA, mB, lA, lB, reinterpret_cast<unsigned char*>(Qs + warp * 16 * D),
                        reinterpret_cast<const unsigned char*>(ring + ((r0 / BM) & (WG_STAGES - 1)) * 2 * TILE + warp * 16 * D)};
    store(o, rows);
}

extern "C" __global__ void __launch_bounds__(256, 2) flash_forward_wg2_64(bf16* out, float* lse, const bf16* qkv, int T, int H,
                                                                         int KVH, float scale) {
    flash_forward_wg2(qkv, T, H, KVH, scale, [&](const float (*o)[4], ForwardRows& r) {
        store_forward<64>(out, lse, o, r.b, r.h, H, T, (i64) r.h * 64, r.rowA, r.lane & 3, r.mA, r.mB, r.lA, r.lB);
    });
}

// The forward that backward recomputes from q, k, v read back from a quantized stash (attentionBackwardRecomputing):
// instead of out, what the one-pass backward needs of it (store_forward_delta), so that flash_delta_zero need not read
// out back.
extern "C" __global__ void __launch_bounds__(256, 2) flash_forward_delta_64(float* lse, float* delta, float* dqAcc,
        const bf16* dout, const bf16* qkv, int T, int H, int KVH, float scale) {
    flash_forward_wg2(qkv, T, H, KVH, scale, [&](const float (*o)[4], ForwardRows& r) {
        store_forward_delta(lse, delta, dqAcc, dout, o, r, H, T);
    });
}

// flash_forward_q<BITS>_64: the forward that also writes the stash's quantized copies (attentionForwardQuantized) of out
// and of its q, k, v (either; a null packed pointer skips it), for the bit widths DSQ's stash uses (3 and 4 bits, and 8);
// each copy's arguments as quantize_<T>_q<BITS>'s, less the source and its size. flash_forward_q<BITS>_qkv<QKV_BITS>_64:
// the same with q, k, v at another width (8 bits, where backward keeps the forward's log-sum-exp, beside a 3- or 4-bit out).
#define FLASH_FORWARD_Q2(BITS, QKV_BITS, NAME) extern "C" __global__ void __launch_bounds__(256, 2) NAME(bf16* out, \
        float* lse, const bf16* qkv, int T, int H, int KVH, float scale, unsigned char* packed, unsigned char* scales, \
        int logLanes, int isInt, int stochastic, unsigned seedBits, int scalesAligned, unsigned* error, \
        unsigned char* qkvPacked, unsigned char* qkvScales, int qkvLogLanes, int qkvIsInt, int qkvStochastic, \
        unsigned qkvSeedBits, int qkvScalesAligned) { \
    const StashQuant outq = {packed, scales, logLanes, isInt, stochastic, seedBits, scalesAligned}; \
    const StashQuant qkvq = {qkvPacked, qkvScales, qkvLogLanes, qkvIsInt, qkvStochastic, qkvSeedBits, qkvScalesAligned}; \
    flash_forward_wg2(qkv, T, H, KVH, scale, [&](const float (*o)[4], ForwardRows& r) { \
        store_forward_quantized<BITS, QKV_BITS>(out, lse, outq, qkvq, error, o, r, H, KVH, T); }); }
FLASH_FORWARD_Q2(3, 3, flash_forward_q3_64) FLASH_FORWARD_Q2(4, 4, flash_forward_q4_64) FLASH_FORWARD_Q2(8, 8, flash_forward_q8_64)
FLASH_FORWARD_Q2(3, 8, flash_forward_q3_qkv8_64) FLASH_FORWARD_Q2(4, 8, flash_forward_q4_qkv8_64)

// d[64 × 32] (+)= A[64 × 16] · B[16 × 32] in shared memory, A M-major, B K-major; with FIRST d is written, not read.
template <bool FIRST>
__device__ __forceinline__ void wgmma_n32_tn(float (*d)[4], unsigned long long a, unsigned long long b) {
    if (FIRST) {
        asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %18, 0;\n"
                     "wgmma.mma_async.sync.aligned.m64n32k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15}, %16, %17, p, 1, 1, 1, 0;\n}\n"
                     : "=f"(d[0][0]), "=f"(d[0][1]), "=f"(d[0][2]), "=f"(d[0][3]), "=f"(d[1][0]), "=f"(d[1][1]), "=f"(d[1][2]), "=f"(d[1][3]), "=f"(d[2][0]), "=f"(d[2][1]), "=f"(d[2][2]), "=f"(d[2][3]), "=f"(d[3][0]), "=f"(d[3][1]), "=f"(d[3][2]), "=f"(d[3][3])
                     : "l"(a), "l"(b), "r"(0));
    } else {
        asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %18, 0;\n"
                     "wgmma.mma_async.sync.aligned.m64n32k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15}, %16, %17, p, 1, 1, 1, 0;\n}\n"
                     : "+f"(d[0][0]), "+f"(d[0][1]), "+f"(d[0][2]), "+f"(d[0][3]), "+f"(d[1][0]), "+f"(d[1][1]), "+f"(d[1][2]), "+f"(d[1][3]), "+f"(d[2][0]), "+f"(d[2][1]), "+f"(d[2][2]), "+f"(d[2][3]), "+f"(d[3][0]), "+f"(d[3][1]), "+f"(d[3][2]), "+f"(d[3][3])
                     : "l"(a), "l"(b), "r"(1));
    }
}

// Packed A fragments (pack_a) of a warpgroup's [64 rows][64] into rows of a swizzled [64][64] tile at sm0 (a shared
// address), one stmatrix.x4 per 16 columns: matrix m of fragment kk holds rows 8·(m & 1) and 8-column chunk
// 2kk + (m >> 1) of the warp's 16 rows; lane t gives the address of row t & 7 of matrix t >> 3.
__device__ __forceinline__ void store_a_swizzled(unsigned sm0, const unsigned (*a)[4], int warp, int lane) {
    int m = lane >> 3, r = warp * 16 + (lane & 7) + (m & 1) * 8;
#pragma unroll
    for (int kk = 0; kk < 4; kk++) {
        unsigned addr = sm0 + r * 128 + (((2 * kk + (m >> 1)) ^ (r & 7)) << 4);
        asm volatile("stmatrix.sync.aligned.m8n8.x4.shared.b16 [%0], {%1, %2, %3, %4};"
                     :: "r"(addr), "r"(a[kk][0]), "r"(a[kk][1]), "r"(a[kk][2]), "r"(a[kk][3]) : "memory");
    }
}

// One-pass backward: a block of 256 threads owns 128 keys of one KV head (warpgroup w keys k0 + 64w ...) and loops over
// the (head of the group, query tile) items, whose Q, dO, lse and delta both warpgroups share through the ring (loaded
// three items ahead; one block-wide barrier per item). Per item a warpgroup computes Sᵀ and dPᵀ for its keys, P and dS,
// dV += P·dO and dK += dS·Q as flash_backward_wgmma, and stores dS (swizzled [key][query], double-buffered); after
// the barrier warpgroup w computes dQ's columns 32w..32w+31 over all 128 keys as dSᵀ·K (m64n32, K from a transposed
// copy Kᵀ, K-major) and adds them into dqAcc: half the atomics per key of the one-warpgroup kernel. Overlap: the next
// item's Sᵀ and dPᵀ are issued with this item's dQ, and dQ runs on the tensor cores during the next item's P and dS;
// its atomics follow. Warpgroup 1's keys all follow the queries of an item's first query tile: it skips that item's
// products and stores a zero dS. 244 registers: one block per SM.
__device__ void flash_backward_wg2(bf16* dqkv, float* dqAcc, const bf16* dout, const float* lse, const float* delta,
                                   const bf16* qkv, int T, int H, int KVH, float scale) {
    constexpr int D = 64, TILE = BM * D;
    extern __shared__ __align__(1024) unsigned char smwg[];
    unsigned pad = (1024 - ((unsigned) __cvta_generic_to_shared(smwg) & 1023)) & 1023;
    bf16* Ks = reinterpret_cast<bf16*>(smwg + pad); // warpgroup w's K tile at Ks + w·TILE; V, Kᵀ alike
    bf16* Vs = Ks + 2 * TILE;
    bf16* KT = Vs + 2 * TILE;                                 // [d][key] tiles of keys 0..63, 64..127
    bf16* dSb = KT + 2 * TILE;                                // buffer i: warpgroup w's dS at dSb + (2i + w)·TILE
    bf16* ring = dSb + 4 * TILE;                              // stage i: Q at ring + 2i·TILE, dO after it
    float* stats = reinterpret_cast<float*>(ring + 2 * WG_STAGES * TILE); // stage i: lse at stats + 2i·BM, delta after
    int wg = warpgroup_index(), warp = (threadIdx.x >> 5) & 3, lane = threadIdx.x & 31, g = lane >> 2, c = lane & 3;
    int k0 = blockIdx.x * 2 * BM, kvh = blockIdx.y, b = blockIdx.z;
    int kw = k0 + wg * BM; // this warpgroup's first key
    int group = H / KVH;
    i64 rowW = (i64) (H + 2 * KVH) * D;
    i64 kOff = (i64) (H + kvh) * D, vOff = kOff + (i64) KVH * D;
    const bf16* base = qkv + (i64) b * T * rowW;
    const bf16* dbase = dout + (i64) b * T * H * D;
    int nq = (T - k0 + BM - 1) / BM, items = group * nq;
    bool wg1Keys = k0 + BM < T; // whether warpgroup 1 has keys before T
    auto load_item = [&](int item) { // as one cp.async group (empty past the last item)
        if (item < items) {
            int st = item & (WG_STAGES - 1), h = kvh * group + item / nq, q0 = k0 + (item % nq) * BM;
            load_tile_swizzled(ring + 2 * st * TILE, base, rowW, (i64) h * D, q0, T);
            load_tile_swizzled(ring + (2 * st + 1) * TILE, dbase, (i64) H * D, (i64) h * D, q0, T);
            load_stats_async(stats + 2 * st * BM, lse, delta, b, h, H, T, q0);
        }
        cp_async_commit();
    };
    auto issue_s_dp = [&](float (*s)[4], float (*dp)[4], int item) { // Sᵀ = K·Qᵀ, dPᵀ = V·dOᵀ
        const bf16* Qs = ring + 2 * (item & (WG_STAGES - 1)) * TILE;
        wg_fence(); // in the products' own basic block: ptxas would add one there otherwise
        wgmma_abt_async(s, Ks + wg * TILE, Qs);
        wgmma_abt_async(dp, Vs + wg * TILE, Qs + TILE);
        wg_commit();
    };
    load_tile_swizzled(Ks, base, rowW, kOff, k0, T);
    load_tile_swizzled(Ks + TILE, base, rowW, kOff, k0 + BM, T);
    load_tile_swizzled(Vs, base, rowW, vOff, k0, T);
    load_tile_swizzled(Vs + TILE, base, rowW, vOff, k0 + BM, T);
    load_item(0);
    load_item(1);
    load_item(2);
    cp_async_wait<2>(); // K, V and item 0
    asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
    __syncthreads();
    for (int i = threadIdx.x; i < 2 * BM * 8; i += blockDim.x) { // Kᵀ: 8 d of one key per step
        int key = i & (2 * BM - 1), ch = i >> 7, r = key & (BM - 1);
        const unsigned char* src = reinterpret_cast<const unsigned char*>(Ks + (key >> 6) * TILE) + r * 128 + ((ch ^ (r & 7)) << 4);
        uint4 v = *reinterpret_cast<const uint4*>(src);
        unsigned w[4] = {v.x, v.y, v.z, v.w};
        unsigned char* dst = reinterpret_cast<unsigned char*>(KT + (key >> 6) * TILE) + (r & 7) * 2;
#pragma unroll
        for (int x = 0; x < 8; x++) {
            int d = ch * 8 + x;
            *reinterpret_cast<bf16*>(dst + d * 128 + (((r >> 3) ^ (d & 7)) << 4)) = (bf16) (w[x >> 1] >> (16 * (x & 1)));
        }
    }
    int keyA = kw + warp * 16 + g, keyB = keyA + 8;
    const float sl2 = scale * LOG2E;
    float dk[8][4], dv[8][4], s[8][4], dp[8][4], dq[4][4];
#pragma unroll
    for (int dt = 0; dt < 8; dt++) {
        dk[dt][0] = dk[dt][1] = dk[dt][2] = dk[dt][3] = 0.f;
        dv[dt][0] = dv[dt][1] = dv[dt][2] = dv[dt][3] = 0.f;
    }
    bool act = wg == 0; // whether this warpgroup has work in item i: warpgroup 0 always, 1 not in item 0 (its first query tile)
    if (act) {
        issue_s_dp(s, dp, 0);
        wg_wait<0>();
    }
    unsigned dS0 = (unsigned) __cvta_generic_to_shared(dSb);
    int hPrev = 0, qPrev = 0; // the item whose dQ is in flight
    for (int i = 0; i < items; i++) {
        int st = i & (WG_STAGES - 1), h = kvh * group + i / nq, q0 = k0 + (i % nq) * BM;
        const bf16* Qs = ring + 2 * st * TILE;
        unsigned pP[4][4], pS[4][4]; // P and dS as A fragments
        if (act) { // Sᵀ, dPᵀ of item i have completed; dQ of item i - 1 may still run
            const float* Ls = stats + 2 * st * BM;
            // on copies: computed in place, P and dS would be moved into s and dp (a loop-carried value), and ptxas
            // serializes wgmma whose accumulators other instructions define
            float p[8][4], ds[8][4];
#pragma unroll
            for (int nt = 0; nt < 8; nt++) {
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    p[nt][e] = s[nt][e];
                    ds[nt][e] = dp[nt][e];
                }
            }
            if (q0 >= kw + BM && q0 + BM <= T) probabilities_and_ds<false>(p, ds, Ls, Ls + BM, sl2, q0, c, keyA, keyB, T); // below the diagonal
            else probabilities_and_ds<true>(p, ds, Ls, Ls + BM, sl2, q0, c, keyA, keyB, T);
            pack_a(pP, p);
            pack_a(pS, ds);
            store_a_swizzled(dS0 + (2 * (i & 1) + wg) * TILE * 2, pS, warp, lane);
        } else { // dQ sums over both warpgroups' keys
            const unsigned zero[4][4] = {};
            store_a_swizzled(dS0 + (2 * (i & 1) + wg) * TILE * 2, zero, warp, lane);
        }
        wg_wait<0>();
        if (i > 0) add_dq_rows<D, 4>(dqAcc + wg * 32, dq, b, hPrev, H, T, qPrev + warp * 16 + g, c);
        if (act) {
            wg_fence();
            wgmma_pb_async(dv, pP, Qs + TILE);
            wgmma_pb_async(dk, pS, Qs);
            wg_commit();
        }
        cp_async_wait<1>(); // item i + 1 has landed
        asm volatile("fence.proxy.async.shared::cta;" ::: "memory"); // cp.async, stmatrix (and Kᵀ) wrote what the tensor cores read
        __syncthreads();
        load_item(i + 3);
        bool actNext = i + 1 < items && (wg == 0 || (wg1Keys && (i + 1) % nq > 0));
        if (actNext) issue_s_dp(s, dp, i + 1);
        const bf16* dS = dSb + 2 * (i & 1) * TILE;
        const bf16* KTw = KT + wg * 32 * D; // rows d = 32w.. of both Kᵀ tiles
        wg_fence();
        wgmma_n32_tn<true>(dq, wg_desc(dS), wg_desc(KTw));
#pragma unroll
        for (int k = 1; k < 8; k++) { // 16 keys per step: k / 4 picks the warpgroup's tile
            int kt = k >> 2, kk = k & 3;
            wgmma_n32_tn<false>(dq, wg_desc(dS + kt * TILE + kk * 16 * D), wg_desc(KTw + kt * TILE + kk * 16));
        }
        wg_commit();
        wg_wait<1>(); // dV, dK and the next Sᵀ, dPᵀ complete; dQ may run on
        act = actNext;
        hPrev = h;
        qPrev = q0;
    }
    wg_wait<0>();
    add_dq_rows<D, 4>(dqAcc + wg * 32, dq, b, hPrev, H, T, qPrev + warp * 16 + g, c);
    bf16* out = dqkv + (i64) b * T * rowW;
    store_rows<D>(out, rowW, kOff, keyA, T, dk, scale, scale, c);
    store_rows<D>(out, rowW, vOff, keyA, T, dv, 1.f, 1.f, c);
}

extern "C" __global__ void __launch_bounds__(256, 1) flash_backward_wg2_64(bf16* dqkv, float* dqAcc, const bf16* dout,
        const float* lse, const float* delta, const bf16* qkv, int T, int H, int KVH, float scale) {
    flash_backward_wg2(dqkv, dqAcc, dout, lse, delta, qkv, T, H, KVH, scale);
}
#endif

#define FLASH(D)                                                                                                        \
    extern "C" __global__ void __launch_bounds__(128) flash_forward_##D(bf16* out, float* lse, const bf16* qkv, int T,  \
                                                                        int H, int KVH, float scale) {                  \
        flash_forward<D, false>(out, lse, qkv, T, H, KVH, scale);                                                      \
    }                                                                                                                   \
    extern "C" __global__ void __launch_bounds__(128) flash_forward_pipe_##D(bf16* out, float* lse, const bf16* qkv,    \
                                                                             int T, int H, int KVH, float scale) {      \
        flash_forward<D, true>(out, lse, qkv, T, H, KVH, scale);                                                       \
    }                                                                                                                   \
    extern "C" __global__ void __launch_bounds__(128) flash_backward_dq_##D(bf16* dqkv, const bf16* dout,              \
            const float* lse, const float* delta, const bf16* qkv, int T, int H, int KVH, float scale) {                \
        flash_backward_dq<D, false>(dqkv, dout, lse, delta, qkv, T, H, KVH, scale);                                    \
    }                                                                                                                   \
    extern "C" __global__ void __launch_bounds__(128) flash_backward_dq_pipe_##D(bf16* dqkv, const bf16* dout,         \
            const float* lse, const float* delta, const bf16* qkv, int T, int H, int KVH, float scale) {                \
        flash_backward_dq<D, true>(dqkv, dout, lse, delta, qkv, T, H, KVH, scale);                                     \
    }                                                                                                                   \
    extern "C" __global__ void __launch_bounds__(128) flash_backward_dkv_##D(bf16* dqkv, const bf16* dout,             \
            const float* lse, const float* delta, const bf16* qkv, int T, int H, int KVH, float scale) {                \
        flash_backward_dkv<D>(dqkv, dout, lse, delta, qkv, T, H, KVH, scale);                                          \
    }                                                                                                                   \
    extern "C" __global__ void __launch_bounds__(128) flash_backward_fused_##D(bf16* dqkv, float* dqAcc,               \
            const bf16* dout, const float* lse, const float* delta, const bf16* qkv, int T, int H, int KVH,             \
            float scale) {                                                                                              \
        flash_backward_fused<D>(dqkv, dqAcc, dout, lse, delta, qkv, T, H, KVH, scale);                                 \
    }                                                                                                                   \
    extern "C" __global__ void __launch_bounds__(256) flash_delta_zero_##D(float* delta, float* dqAcc,                 \
            const bf16* dout, const bf16* out, i64 rows, int T, int H) {                                               \
        flash_delta_zero<D>(delta, dqAcc, dout, out, rows, T, H);                                                      \
    }

FLASH(32)
FLASH(64)
FLASH(128)
