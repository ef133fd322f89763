// GELU's kernels for a stash that keeps only the quantized copy of its input (the pre-activation), forward and backward.
// Forward: GELU of the product's pre-activation, written together with pre's quantized copy (one pass over pre instead
// of gelu_forward's and quantize's). Backward: GELU's output recomputed from the quantized copy instead of stashed, and
// GELU's backward reading the quantized copy, with the bias gradient of the product before it. The values are those of
// the composed ops bit for bit: quant.cu's fast kernels (values dequantized rounded to bf16, as dequantize writes them),
// gelu_forward, gelu_backward, bias_backward_packed's sums (but for the order in which its blocks' sums meet).
#include "quant.cuh"
#include "gelu.cuh"

// act = GELU(pre) and pre quantized, in quantize_fast_k's grid and loop, for act 16-byte aligned and n a multiple of 8
// (whole groups).
template <int BITS>
__device__ void gelu_quantize_k(bf16* act, unsigned char* packed, unsigned char* scales, const bf16* pre, i64 n, i64 groups,
                                int logLanes, int isInt, int stochastic, unsigned seedBits, int scalesAligned, unsigned* error) {
    for_each_quantized_group<BITS>(packed, scales, pre, n, groups, logLanes, isInt, stochastic, seedBits, scalesAligned, error,
                                   [&](i64 j0, const float* v) {
        float g[8];
#pragma unroll
        for (int k = 0; k < 8; k++) g[k] = gelu(v[k]);
        Pack<bf16>::store(act, j0, g);
    });
}
#define GELU_QUANTIZE(BITS) extern "C" __global__ void __launch_bounds__(FAST_THREADS) gelu_quantize_q##BITS##_bf16(bf16* act, \
        unsigned char* packed, unsigned char* scales, const bf16* pre, i64 n, i64 groups, int logLanes, int isInt, int stochastic, \
        unsigned seedBits, int scalesAligned, unsigned* error) { \
    gelu_quantize_k<BITS>(act, packed, scales, pre, n, groups, logLanes, isInt, stochastic, seedBits, scalesAligned, error); }
GELU_QUANTIZE(2) GELU_QUANTIZE(3) GELU_QUANTIZE(4) GELU_QUANTIZE(5) GELU_QUANTIZE(6) GELU_QUANTIZE(7) GELU_QUANTIZE(8)

// As dequantize_fast_k (its grid), for act 16-byte aligned and n a multiple of 8 (whole groups); pre, where non-null,
// receives the dequantized values too.
template <int BITS>
__device__ void gelu_recompute_k(bf16* act, bf16* pre, const unsigned char* packed, const unsigned char* scales, i64 n,
                                 i64 groups, int logLanes, int isInt, int scalesAligned) {
    for_each_dequantized_group<BITS>(packed, scales, n, groups, logLanes, isInt, scalesAligned, [&](i64 j0, const float* v) {
        uint4 raw;
        float r[8];
        Pack<bf16>::store(reinterpret_cast<bf16*>(&raw), 0, v);
        if (pre != nullptr) reinterpret_cast<uint4*>(pre + j0)[0] = raw;
        Pack<bf16>::load(r, reinterpret_cast<const bf16*>(&raw), 0);
#pragma unroll
        for (int k = 0; k < 8; k++) r[k] = gelu(r[k]);
        Pack<bf16>::store(act, j0, r);
    });
}
#define GELU_RECOMPUTE(BITS) extern "C" __global__ void __launch_bounds__(FAST_THREADS) gelu_recompute_q##BITS##_bf16(bf16* act, \
        bf16* pre, const unsigned char* packed, const unsigned char* scales, i64 n, i64 groups, int logLanes, int isInt, \
        int scalesAligned) { gelu_recompute_k<BITS>(act, pre, packed, scales, n, groups, logLanes, isInt, scalesAligned); }
GELU_RECOMPUTE(2) GELU_RECOMPUTE(3) GELU_RECOMPUTE(4) GELU_RECOMPUTE(5) GELU_RECOMPUTE(6) GELU_RECOMPUTE(7) GELU_RECOMPUTE(8)

// Rows of a warp in flight: the grid is bias_backward_packed's (a few blocks an SM), so each warp keeps several rows'
// loads outstanding to cover HBM's latency.
#define GELU_BACKWARD_ROWS 4

// dpre = dact ⊙ gelu'(pre), pre dequantized from its quantized copy, over rows of cols values (a multiple of 256, so that
// a warp's chunk of 32 groups is 256 values of one row); where partials is non-null, also the sums of the bf16 dpre over
// the block's rows into partials[blockIdx.y][cols], as bias_backward_packed sums them before its atomic adds. Its grid:
// blockIdx.x the 256 columns, blockIdx.y the rows [blockIdx.y·rowsPerBlock, +rowsPerBlock); FAST_THREADS (256) threads,
// warp w (its threadIdx.y) over the rows w, w + 8, ...; its lane the 8 columns of one 16-byte pack.
template <int BITS>
__device__ void gelu_backward_k(bf16* dpre, float* partials, const bf16* dact, const unsigned char* packed,
                                const unsigned char* scales, int rows, int cols, int rowsPerBlock, int logLanes, int isInt,
                                int scalesAligned) {
    __shared__ unsigned stage[FAST_THREADS / 32][8 * 7 + 2];
    __shared__ float part[8][32 * 8 + 1];
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
    unsigned* staged = stage[w];
    if constexpr (!DIRECT_WORDS(BITS)) {
        if (lane < 2) staged[8 * BITS + lane] = 0;
    }
    const int chunksPerRow = cols >> 8;
    const i64 groups = (i64) rows * cols / 8;
    const int r0 = blockIdx.y * rowsPerBlock, r1 = min(rows, r0 + rowsPerBlock);
    float s[8];
#pragma unroll
    for (int k = 0; k < 8; k++) s[k] = 0.f;
    for (int rb = r0 + w; rb < r1; rb += 8 * GELU_BACKWARD_ROWS) {
        ChunkWords<BITS> words[GELU_BACKWARD_ROWS];
        float sc[GELU_BACKWARD_ROWS];
        uint4 d[GELU_BACKWARD_ROWS];
#pragma unroll
        for (int u = 0; u < GELU_BACKWARD_ROWS; u++) {
            const int r = rb + 8 * u;
            if (r < r1) { // uniform over the warp
                const i64 c = (i64) r * chunksPerRow + blockIdx.x, t = c * 32 + lane;
                words[u] = load_chunk<BITS>(packed, c, groups);
                sc[u] = stored_scale(scales, t >> logLanes, isInt, scalesAligned);
                d[u] = reinterpret_cast<const uint4*>(dact)[t];
            }
        }
#pragma unroll
        for (int u = 0; u < GELU_BACKWARD_ROWS; u++) {
            const int r = rb + 8 * u;
            if (r >= r1) break;
            const i64 t = ((i64) r * chunksPerRow + blockIdx.x) * 32 + lane;
            float x[8], g[8];
            dequantize_group<BITS>(x, words[u], sc[u], staged);
            Pack<bf16>::load(g, reinterpret_cast<const bf16*>(&d[u]), 0);
#pragma unroll
            for (int k = 0; k < 8; k++) x[k] = gelu_grad(bf2f(f2bf(x[k]))) * g[k]; // pre as dequantize writes it
            uint4 raw;
            Pack<bf16>::store(reinterpret_cast<bf16*>(&raw), 0, x);
            reinterpret_cast<uint4*>(dpre)[t] = raw;
            if (partials != nullptr) {
                Pack<bf16>::load(g, reinterpret_cast<const bf16*>(&raw), 0); // dpre as bias_backward reads it
#pragma unroll
                for (int k = 0; k < 8; k++) s[k] += g[k];
            }
        }
    }
    if (partials == nullptr) return;
#pragma unroll
    for (int k = 0; k < 8; k++) part[w][lane * 8 + k] = s[k];
    __syncthreads();
    float total = 0.f;
    for (int y = 0; y < 8; y++) total += part[y][threadIdx.x];
    partials[(i64) blockIdx.y * cols + blockIdx.x * 256 + threadIdx.x] = total;
}
#define GELU_BACKWARD(BITS) extern "C" __global__ void __launch_bounds__(FAST_THREADS, 4) gelu_backward_q##BITS##_bf16(bf16* dpre, \
        float* partials, const bf16* dact, const unsigned char* packed, const unsigned char* scales, int rows, int cols, \
        int rowsPerBlock, int logLanes, int isInt, int scalesAligned) { \
    gelu_backward_k<BITS>(dpre, partials, dact, packed, scales, rows, cols, rowsPerBlock, logLanes, isInt, scalesAligned); }
GELU_BACKWARD(2) GELU_BACKWARD(3) GELU_BACKWARD(4) GELU_BACKWARD(5) GELU_BACKWARD(6) GELU_BACKWARD(7) GELU_BACKWARD(8)

// dbias[c] += the chunks' partial sums in chunk order: one of the orders in which bias_backward's atomic adds may meet,
// fixed here, so that a step's bias gradient does not vary from run to run.
extern "C" __global__ void bias_partials_add(float* dbias, const float* partials, int chunks, int cols) {
    GRID_STRIDE(c, cols) {
        float acc = dbias[c];
        for (int y = 0; y < chunks; y++) acc += partials[(i64) y * cols + c];
        dbias[c] = acc;
    }
}
