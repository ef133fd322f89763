// GELU's output recomputed for backward from the stash's quantized copy of its input (the pre-activation), instead of
// stashing the output too: one pass that dequantizes the input as quant.cu's fast kernels do (rounded to bf16, as
// dequantize writes it), writes it, and writes GELU of it, as gelu_forward computes it from what was written.
#include "quant.cuh"
#include "gelu.cuh"

// As dequantize_fast_k (its grid), for pre and act 16-byte aligned and n a multiple of 8 (whole groups).
template <int BITS>
__device__ void gelu_recompute_k(bf16* act, bf16* pre, const unsigned char* packed, const unsigned char* scales, i64 n,
                                 i64 groups, int logLanes, int isInt, int scalesAligned) {
    for_each_dequantized_group<BITS>(packed, scales, n, groups, logLanes, isInt, scalesAligned, [&](i64 j0, const float* v) {
        uint4 raw;
        float r[8];
        Pack<bf16>::store(reinterpret_cast<bf16*>(&raw), 0, v);
        reinterpret_cast<uint4*>(pre + j0)[0] = raw;
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
