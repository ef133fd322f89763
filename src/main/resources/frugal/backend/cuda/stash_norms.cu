// The packed LayerNorm kernels of norms.cuh in their forms that quantize for the stash (bf16 activations). Apart from
// norms.cu because their many instantiations (bit width × row length) take NVRTC tens of seconds to compile, which a
// step with a full-precision stash should not pay.
#include "quant.cuh"
#include "norms.cuh"

// layernorm_forward_q<BITS>_bf16_<P> (x alone: sum is unused) and add_layernorm_forward_q<BITS>_bf16_<P>, for the
// widths DSQ's settings use (3 and 4 bits, and 8); the others quantize in quant.cu after the norm.
#define LN_FQ(P, ADD, NAME, BITS) extern "C" __global__ void __launch_bounds__(256) NAME##_q##BITS##_bf16_##P(bf16* sum, \
        bf16* out, float* mean, float* rstd, const bf16* x, const bf16* r, const float* w, const float* b, int rows, int cols, \
        float eps, unsigned char* xPacked, unsigned char* xScales, unsigned xSeed, int xScalesAligned, unsigned char* outPacked, \
        unsigned char* outScales, unsigned outSeed, int outScalesAligned, int logLanes, int isInt, int stochastic, \
        unsigned* error) { \
    layernorm_forward_packed_k<bf16, P, ADD, BITS>(out, mean, rstd, sum, x, r, w, b, rows, cols, eps, xPacked, xScales, xSeed, \
            xScalesAligned, outPacked, outScales, outSeed, outScalesAligned, logLanes, isInt, stochastic, error); }
#define LN_FQ_P(BITS, P) LN_FQ(P, false, layernorm_forward, BITS) LN_FQ(P, true, add_layernorm_forward, BITS)
#define LN_FQ_ALL(BITS) LN_FQ_P(BITS, 1) LN_FQ_P(BITS, 2) LN_FQ_P(BITS, 3) LN_FQ_P(BITS, 4)
LN_FQ_ALL(3) LN_FQ_ALL(4) LN_FQ_ALL(8)

// layernorm_backward_q<BITS>_bf16_<P>: layernorm_backward_packed with x read from its quantized copy.
#define LN_BQ(BITS, P) extern "C" __global__ void __launch_bounds__(32 * LN_BP_WARPS, P <= 3 ? 2 : 1) \
        layernorm_backward_q##BITS##_bf16_##P(bf16* dx, float* dw, float* db, const bf16* dout, const float* w, const float* mean, \
        const float* rstd, int rows, int cols, const unsigned char* xPacked, const unsigned char* xScales, int logLanes, int isInt, \
        int scalesAligned) { \
    layernorm_backward_packed_k<bf16, P, BITS>(dx, dw, db, dout, 0, w, mean, rstd, rows, cols, xPacked, xScales, logLanes, isInt, \
            scalesAligned); }
#define LN_BQ_ALL(BITS) LN_BQ(BITS, 1) LN_BQ(BITS, 2) LN_BQ(BITS, 3) LN_BQ(BITS, 4)
LN_BQ_ALL(3) LN_BQ_ALL(4) LN_BQ_ALL(8)
