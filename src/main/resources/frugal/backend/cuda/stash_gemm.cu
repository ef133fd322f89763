// Products of our own for the stash: out[M×N] = a[M×K]·w[N×K]ᵀ + bias (a linear layer's forward, bf16 operands, fp32
// accumulation) that quantize the product for the stash as they write it, so that no pass reads it back to quantize
// it (cuBLASLt cannot: its epilogues write bf16 only). Two forms:
//   gemm_q<BITS>_bf16       writes out and the quantized copy of out (the fused q/k/v projection);
//   gemm_gelu_q<BITS>_bf16  writes out = GELU(product) and the quantized copy of the product, which itself is never
//                           written (GELU's input, which the stash keeps quantized only).
// The quantized copy is what quant.cu's kernels make of the product rounded to bf16, bit for bit, and GELU is
// gelu_forward's of that rounded product: the composed ops' results, given the product.
//
// Tiles of 128 × 256 outputs, a persistent grid (a block per SM, taking tiles t, t + gridDim.x, ...) of three
// warpgroups: a producer (one thread issuing the bulk tensor copies) and two consumers, each 64 rows × 256 columns
// (m64n256k16, 128 accumulators a thread). K runs in steps of 64 through a ring of QG_STAGES stages (a stage: a's
// 128 × 64 box and w's 256 × 64, 48 KiB) that spans the tiles; per stage a "full" mbarrier (the copies' bytes landed)
// and an "empty" one (every consumer warp saw the products that read it complete, which a warpgroup signals a step
// late: it issues step k, then waits for step k − 1 only). Tiles run along N fastest, so that the tiles of one row band
// of a run together and a is read from memory about once.
//
// The epilogue (quantization and GELU: many instructions a value) runs under the next tile's products: a finished
// tile's bf16 product plus bias is staged in shared memory (16-byte chunks xor-swizzled by row, so that neither the
// fragment writes nor the row reads conflict), and while the tensor cores work on each step of the next tile, every
// consumer warp takes a share of the staged rows, a row's 256 columns at a time, one chunk of quant.cuh's (lane l its
// group of 8 values): quantizes them and writes the product or GELU of it. Requires N % 256 == 0 and K % 64 == 0
// (CudaBackend checks; other shapes take cuBLASLt and quantize after).
#include "quant.cuh"
#include "gelu.cuh"
#include "wgmma.cuh"

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define QG_BM 128
#define QG_BN 256
#define QG_BK 64
#define QG_STAGES 3
#define QG_THREADS 384
#define QG_CONSUMERS 256
#define QG_A_BYTES (QG_BM * QG_BK * 2)
#define QG_STAGE_BYTES ((QG_BM + QG_BN) * QG_BK * 2)
#define QG_TILE_BYTES (QG_BM * QG_BN * 2)
#define QG_WARP_ROWS (QG_BM / (QG_CONSUMERS / 32)) // staged rows a consumer warp writes out: cw, cw + 8, ...

// The consumers' barrier (named barrier 1): the producer warpgroup takes no part.
__device__ __forceinline__ void consumers_sync() {
    asm volatile("bar.sync 1, %0;" :: "n"(QG_CONSUMERS) : "memory");
}

// Staged rows cw + 8j, j in [j0, j1), of the tile at (m0, n0): quantized, and written as they are or GELU of them.
template <int BITS, bool GELU>
__device__ __forceinline__ void write_staged_rows(const unsigned char* tile, int cw, int j0, int j1, int m0, int n0, int M,
                                                  int N, bf16* out, unsigned char* packed, unsigned char* scales,
                                                  unsigned seedBits, int scalesAligned, int logLanes, int isInt,
                                                  int stochastic, unsigned* error, unsigned long long* slots) {
    const int lane = threadIdx.x & 31;
    for (int j = j0; j < j1; j++) {
        const int r = cw + 8 * j;
        if (m0 + r >= M) return;
        const uint4 raw = *reinterpret_cast<const uint4*>(tile + r * 512 + ((lane ^ (r & 7)) << 4));
        float v[8];
        Pack<bf16>::load(v, reinterpret_cast<const bf16*>(&raw), 0);
        const i64 at = (i64) (m0 + r) * N + n0;
        quantize_group<BITS>(packed, scales, v, at >> 8, (i64) M * N / 8, logLanes, isInt, stochastic, seedBits, scalesAligned,
                             error, slots);
        if (GELU) {
#pragma unroll
            for (int e = 0; e < 8; e++) v[e] = gelu(v[e]);
            Pack<bf16>::store(out, at + 8 * lane, v);
        } else {
            *reinterpret_cast<uint4*>(out + at + 8 * lane) = raw;
        }
    }
}

template <int BITS, bool GELU>
__device__ void gemm_quant(const TensorMap& mapA, const TensorMap& mapW, bf16* out, const bf16* bias, int M, int N, int K,
                           unsigned char* packed, unsigned char* scales, unsigned seedBits, int scalesAligned, int logLanes,
                           int isInt, int stochastic, unsigned* error) {
    extern __shared__ __align__(1024) unsigned char smq[];
    unsigned char* ring = smq + ((1024 - (smem_address(smq) & 1023)) & 1023);
    unsigned char* tile = ring + QG_STAGES * QG_STAGE_BYTES;                                   // the staged product
    unsigned long long* slotsBase = reinterpret_cast<unsigned long long*>(tile + QG_TILE_BYTES); // 8 warps × 33
    const unsigned full = smem_address(slotsBase + 8 * 33), empty = full + 8 * QG_STAGES;      // 8-byte barriers
    const int wg = warpgroup_index(), steps = K / QG_BK, tilesN = N / QG_BN, tiles = tilesN * ((M + QG_BM - 1) / QG_BM);
    if (threadIdx.x == 0) {
        for (int s = 0; s < QG_STAGES; s++) {
            mbarrier_init(full + 8 * s, 1);
            mbarrier_init(empty + 8 * s, QG_CONSUMERS / 32);
        }
        asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
    }
    __syncthreads();
    if (wg == 0) { // producer
        asm volatile("setmaxnreg.dec.sync.aligned.u32 40;");
        if (threadIdx.x == 0) {
            int g = 0; // steps issued, over all tiles
            for (int t = blockIdx.x; t < tiles; t += gridDim.x) {
                const int m0 = t / tilesN * QG_BM, n0 = t % tilesN * QG_BN;
                for (int k = 0; k < steps; k++, g++) {
                    const int s = g % QG_STAGES;
                    if (g >= QG_STAGES) mbarrier_wait(empty + 8 * s, (g / QG_STAGES - 1) & 1);
                    const unsigned st = smem_address(ring + s * QG_STAGE_BYTES);
                    mbarrier_arrive_expect(full + 8 * s, QG_STAGE_BYTES);
                    tma_load_2d(st, mapA, k * QG_BK, m0, full + 8 * s);
                    tma_load_2d(st + QG_A_BYTES, mapW, k * QG_BK, n0, full + 8 * s);
                }
            }
        }
        return;
    }
    asm volatile("setmaxnreg.inc.sync.aligned.u32 232;");
    const int c0 = wg - 1, warp = (threadIdx.x >> 5) & 3, lane = threadIdx.x & 31, g4 = lane >> 2, c = lane & 3;
    const int cw = (threadIdx.x >> 5) - 4; // consumer warp 0..7
    unsigned long long* slots = slotsBase + cw * 33;
    if (lane == 0) slots[32] = 0;
    int g = 0, pm = -1, pn = 0; // steps consumed over all tiles; the staged tile's origin (none yet)
    for (int t = blockIdx.x; t < tiles; t += gridDim.x) {
        const int m0 = t / tilesN * QG_BM, n0 = t % tilesN * QG_BN;
        float d[QG_BN / 8][4];
#pragma unroll
        for (int j = 0; j < QG_BN / 8; j++) d[j][0] = d[j][1] = d[j][2] = d[j][3] = 0.f; // the first product overwrites them
        for (int k = 0; k < steps; k++, g++) {
            const int s = g % QG_STAGES;
            mbarrier_wait(full + 8 * s, (g / QG_STAGES) & 1);
            const bf16* As = reinterpret_cast<const bf16*>(ring + s * QG_STAGE_BYTES) + c0 * 64 * QG_BK;
            const bf16* Bs = reinterpret_cast<const bf16*>(ring + s * QG_STAGE_BYTES + QG_A_BYTES);
            wg_fence();
#pragma unroll
            for (int kk = 0; kk < 4; kk++) wgmma_m64n256k16(d, wg_desc(As + kk * 16), wg_desc(Bs + kk * 16), k > 0 || kk > 0);
            wg_commit();
            if (pm >= 0) { // the previous tile's share of rows for this step, while the products run
                write_staged_rows<BITS, GELU>(tile, cw, QG_WARP_ROWS * k / steps, QG_WARP_ROWS * (k + 1) / steps, pm, pn, M, N,
                                              out, packed, scales, seedBits, scalesAligned, logLanes, isInt, stochastic, error,
                                              slots);
            }
            wg_wait<1>();
            __syncwarp();
            if (k > 0 && lane == 0) mbarrier_arrive(empty + 8 * ((g - 1) % QG_STAGES));
        }
        wg_wait<0>();
        __syncwarp();
        if (lane == 0) mbarrier_arrive(empty + 8 * ((g - 1) % QG_STAGES));
        consumers_sync(); // the previous tile's rows are written out

        // The product plus bias, rounded to bf16, into tile[128][256]: chunk j of row r at chunk j ^ (r % 8).
#pragma unroll
        for (int j = 0; j < QG_BN / 8; j++) {
            const int col = 8 * j + 2 * c;
            const float b0 = bias ? bf2f(bias[n0 + col]) : 0.f, b1 = bias ? bf2f(bias[n0 + col + 1]) : 0.f;
#pragma unroll
            for (int half = 0; half < 2; half++) {
                const int r = c0 * 64 + warp * 16 + g4 + 8 * half;
                *reinterpret_cast<unsigned*>(tile + r * 512 + ((j ^ (r & 7)) << 4) + 4 * c) =
                        pack_bf16(d[j][2 * half] + b0, d[j][2 * half + 1] + b1);
            }
        }
        consumers_sync();
        pm = m0;
        pn = n0;
    }
    if (pm >= 0) { // the last tile's rows, with no products left to hide under
        write_staged_rows<BITS, GELU>(tile, cw, 0, QG_WARP_ROWS, pm, pn, M, N, out, packed, scales, seedBits, scalesAligned,
                                      logLanes, isInt, stochastic, error, slots);
    }
}

#define GEMM_Q(BITS, GELU, NAME) extern "C" __global__ void __launch_bounds__(QG_THREADS, 1) NAME##_q##BITS##_bf16( \
        const __grid_constant__ TensorMap mapA, const __grid_constant__ TensorMap mapW, bf16* out, const bf16* bias, int M, \
        int N, int K, unsigned char* packed, unsigned char* scales, unsigned seedBits, int scalesAligned, int logLanes, int isInt, \
        int stochastic, unsigned* error) { \
    gemm_quant<BITS, GELU>(mapA, mapW, out, bias, M, N, K, packed, scales, seedBits, scalesAligned, logLanes, isInt, stochastic, \
            error); }
#define GEMM_Q_BOTH(BITS) GEMM_Q(BITS, false, gemm) GEMM_Q(BITS, true, gemm_gelu)
GEMM_Q_BOTH(3) GEMM_Q_BOTH(4) GEMM_Q_BOTH(8)
#endif
