// Products of our own for the stash: out[M×N] = a[M×K]·w[N×K]ᵀ + bias (a linear layer's forward, bf16 operands, fp32
// accumulation) that quantize the product for the stash as they write it, so that no pass reads it back to quantize
// it (cuBLASLt cannot: its epilogues write bf16 only). Two forms:
//   gemm_q<BITS>_bf16       writes out and the quantized copy of out (the fused q/k/v projection);
//   gemm_gelu_q<BITS>_bf16  writes out = GELU(product) and the quantized copy of the product, which itself is never
//                           written (GELU's input, which the stash keeps quantized only).
// The quantized copy is what quant.cu's kernels make of the product rounded to bf16, bit for bit, and GELU is
// gelu_forward's of that rounded product: the composed ops' results, given the product.
//
// Tiles of 128 × 256 outputs per block of two warpgroups (each 64 rows × 256 columns: m64n256k16, 128 accumulators a
// thread), K in steps of 64 through a 4-stage cp.async ring (a stage: a's 128 × 64 tile and w's 256 × 64, 48 KiB);
// after the block's barrier for step k, step k + 2 is requested into the stage of step k − 2, whose reader every
// warpgroup waited for (wgmma.wait_group 1) before that barrier. Blocks run along N fastest, so that the blocks of one
// row band of a run together and a is read from memory about once. The epilogue stages the bf16 product in the ring
// (16-byte chunks xor-swizzled by row, so that neither the fragment writes nor the row reads conflict) and a warp then
// takes a row's 256 columns, one chunk of quant.cuh's: lane l its group of 8 values. Requires N % 256 == 0 and
// K % 64 == 0 (CudaBackend checks; other shapes take cuBLASLt and quantize after).
#include "quant.cuh"
#include "gelu.cuh"
#include "wgmma.cuh"

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define QG_BM 128
#define QG_BN 256
#define QG_BK 64
#define QG_STAGES 4
#define QG_THREADS 256
#define QG_STAGE_ELEMS ((QG_BM + QG_BN) * QG_BK)

// Rows [r0, r0 + R) of a row-major [rows × K] matrix, columns [k0, k0 + 64), into a swizzled tile (rows past `rows`
// zero), as cp.async copies of the block's threads.
template <int R>
__device__ __forceinline__ void load_rows_swizzled(bf16* sm, const bf16* m, int rows, int K, int r0, int k0) {
    const unsigned sm0 = (unsigned) __cvta_generic_to_shared(sm);
#pragma unroll
    for (int i = threadIdx.x; i < R * 8; i += QG_THREADS) {
        const int r = i >> 3, ch = i & 7, t = r0 + r;
        const bf16* src = t < rows ? m + (i64) t * K + k0 + ch * 8 : m;
        const unsigned dst = sm0 + r * 128 + ((ch ^ (r & 7)) << 4);
        asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" :: "r"(dst), "l"(src), "r"(t < rows ? 16 : 0));
    }
}

template <int BITS, bool GELU>
__device__ void gemm_quant(bf16* out, const bf16* a, const bf16* w, const bf16* bias, int M, int N, int K,
                           unsigned char* packed, unsigned char* scales, unsigned seedBits, int scalesAligned, int logLanes,
                           int isInt, int stochastic, unsigned* error) {
    extern __shared__ __align__(1024) unsigned char smq[];
    const unsigned pad = (1024 - ((unsigned) __cvta_generic_to_shared(smq) & 1023)) & 1023;
    bf16* ring = reinterpret_cast<bf16*>(smq + pad);
    const int wg = warpgroup_index(), m0 = blockIdx.y * QG_BM, n0 = blockIdx.x * QG_BN, steps = K / QG_BK;
    auto load = [&](int k) { // step k (if there is one) into its stage, as one cp.async group
        if (k < steps) {
            bf16* st = ring + (k % QG_STAGES) * QG_STAGE_ELEMS;
            load_rows_swizzled<QG_BM>(st, a, M, K, m0, k * QG_BK);
            load_rows_swizzled<QG_BN>(st + QG_BM * QG_BK, w, N, K, n0, k * QG_BK);
        }
        cp_async_commit();
    };
    load(0);
    load(1);
    float d[QG_BN / 8][4];
#pragma unroll
    for (int j = 0; j < QG_BN / 8; j++) d[j][0] = d[j][1] = d[j][2] = d[j][3] = 0.f;
    for (int k = 0; k < steps; k++) {
        cp_async_wait<1>();
        asm volatile("fence.proxy.async.shared::cta;" ::: "memory"); // cp.async wrote what the tensor cores read
        __syncthreads();
        load(k + 2);
        const bf16* st = ring + (k % QG_STAGES) * QG_STAGE_ELEMS;
        const bf16* As = st + wg * 64 * QG_BK;
        const bf16* Bs = st + QG_BM * QG_BK;
        wg_fence();
#pragma unroll
        for (int kk = 0; kk < 4; kk++) wgmma_m64n256k16(d, wg_desc(As + kk * 16), wg_desc(Bs + kk * 16), k > 0 || kk > 0);
        wg_commit();
        wg_wait<1>();
    }
    wg_wait<0>();
    cp_async_wait<0>(); // the empty groups of the last steps
    __syncthreads();    // the ring is free: it stages the product

    // The product plus bias, rounded to bf16, into tile[128][256]: chunk j of row r at chunk j ^ (r % 8).
    unsigned char* tile = reinterpret_cast<unsigned char*>(ring);
    const int warp = (threadIdx.x >> 5) & 3, lane = threadIdx.x & 31, g = lane >> 2, c = lane & 3;
#pragma unroll
    for (int j = 0; j < QG_BN / 8; j++) {
        const int col = 8 * j + 2 * c;
        const float b0 = bias ? bf2f(bias[n0 + col]) : 0.f, b1 = bias ? bf2f(bias[n0 + col + 1]) : 0.f;
#pragma unroll
        for (int half = 0; half < 2; half++) {
            const int r = wg * 64 + warp * 16 + g + 8 * half;
            *reinterpret_cast<unsigned*>(tile + r * 512 + ((j ^ (r & 7)) << 4) + 4 * c) =
                    pack_bf16(d[j][2 * half] + b0, d[j][2 * half + 1] + b1);
        }
    }
    unsigned long long* slots = reinterpret_cast<unsigned long long*>(tile + QG_BM * QG_BN * 2) + (threadIdx.x >> 5) * 33;
    if (lane == 0) slots[32] = 0;
    __syncthreads();

    // A warp a row: quantize its 256 values (one chunk), write the product or GELU of it.
    const i64 groups = (i64) M * N / 8;
    for (int r = threadIdx.x >> 5; r < QG_BM && m0 + r < M; r += QG_THREADS / 32) {
        const uint4 raw = *reinterpret_cast<const uint4*>(tile + r * 512 + ((lane ^ (r & 7)) << 4));
        float v[8];
        Pack<bf16>::load(v, reinterpret_cast<const bf16*>(&raw), 0);
        const i64 at = (i64) (m0 + r) * N + n0;
        quantize_group<BITS>(packed, scales, v, at >> 8, groups, logLanes, isInt, stochastic, seedBits, scalesAligned, error, slots);
        if (GELU) {
#pragma unroll
            for (int e = 0; e < 8; e++) v[e] = gelu(v[e]);
            Pack<bf16>::store(out, at + 8 * lane, v);
        } else {
            *reinterpret_cast<uint4*>(out + at + 8 * lane) = raw;
        }
    }
}

#define GEMM_Q(BITS, GELU, NAME) extern "C" __global__ void __launch_bounds__(QG_THREADS, 1) NAME##_q##BITS##_bf16(bf16* out, \
        const bf16* a, const bf16* w, const bf16* bias, int M, int N, int K, unsigned char* packed, unsigned char* scales, \
        unsigned seedBits, int scalesAligned, int logLanes, int isInt, int stochastic, unsigned* error) { \
    gemm_quant<BITS, GELU>(out, a, w, bias, M, N, K, packed, scales, seedBits, scalesAligned, logLanes, isInt, stochastic, error); }
#define GEMM_Q_BOTH(BITS) GEMM_Q(BITS, false, gemm) GEMM_Q(BITS, true, gemm_gelu)
GEMM_Q_BOTH(3) GEMM_Q_BOTH(4) GEMM_Q_BOTH(8)
#endif
