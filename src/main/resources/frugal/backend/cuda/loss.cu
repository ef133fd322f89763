// Fused softmax cross-entropy: one block per row, an online max/sum pass, then (optionally) dlogits in place.
// No probabilities are written. Logits and dlogits are float or bf16 (T); the loss is computed and written in float.
// A target outside [0, vocab) gives a NaN loss.

__device__ __forceinline__ void combine(float& m, float& s, float m2, float s2) {
    float mm = fmaxf(m, m2);
    float a = m == -FRUGAL_INF ? 0.f : s * expf(m - mm);
    float b = m2 == -FRUGAL_INF ? 0.f : s2 * expf(m2 - mm);
    m = mm;
    s = a + b;
}

template <typename T>
__device__ void cross_entropy_k(float* losses, T* dlogits, const T* logits, const int* targets, int rows, int vocab,
                                float gradScale) {
    __shared__ float sm[32], ss[32];
    int row = blockIdx.x;
    const T* lg = logits + (i64) row * vocab;
    int target = targets[row];
    bool valid = target >= 0 && target < vocab;
    float targetLogit = valid ? ld(lg, target) : __int_as_float(0x7fc00000);
    float m = -FRUGAL_INF, s = 0.f;
    for (int c = threadIdx.x; c < vocab; c += blockDim.x) {
        float v = ld(lg, c);
        if (v > m) {
            s = (m == -FRUGAL_INF ? 0.f : s * expf(m - v)) + 1.f;
            m = v;
        } else {
            s += expf(v - m);
        }
    }
    for (int o = 16; o > 0; o >>= 1) {
        float m2 = __shfl_xor_sync(FULL_MASK, m, o), s2 = __shfl_xor_sync(FULL_MASK, s, o);
        combine(m, s, m2, s2);
    }
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    if (lane == 0) {
        sm[warp] = m;
        ss[warp] = s;
    }
    __syncthreads();
    m = lane < warps ? sm[lane] : -FRUGAL_INF;
    s = lane < warps ? ss[lane] : 0.f;
    for (int o = 16; o > 0; o >>= 1) {
        float m2 = __shfl_xor_sync(FULL_MASK, m, o), s2 = __shfl_xor_sync(FULL_MASK, s, o);
        combine(m, s, m2, s2);
    }
    float lse = m + logf(s);
    if (threadIdx.x == 0) losses[row] = lse - targetLogit;
    if (dlogits != 0) {
        T* dl = dlogits + (i64) row * vocab;
        for (int c = threadIdx.x; c < vocab; c += blockDim.x) {
            float d = expf(ld(lg, c) - lse) * gradScale;
            if (c == target) d -= gradScale;
            st(dl, c, d);
        }
    }
}

extern "C" __global__ void cross_entropy_f32(float* losses, float* dlogits, const float* logits, const int* targets,
                                             int rows, int vocab, float gradScale) {
    cross_entropy_k<float>(losses, dlogits, logits, targets, rows, vocab, gradScale);
}

extern "C" __global__ void cross_entropy_bf16(float* losses, bf16* dlogits, const bf16* logits, const int* targets,
                                              int rows, int vocab, float gradScale) {
    cross_entropy_k<bf16>(losses, dlogits, logits, targets, rows, vocab, gradScale);
}
