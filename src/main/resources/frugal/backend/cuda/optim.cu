// Global squared norm (two passes, double partial sums, deterministic) and AdamW with the on-device clip scale.

extern "C" __global__ void sum_squares_partial_f32(double* partials, const float* x, i64 n) {
    __shared__ double red[32];
    double s = 0.0;
    GRID_STRIDE(i, n) {
        double v = x[i];
        s += v * v;
    }
    s = block_sum_d(s, red);
    if (threadIdx.x == 0) partials[blockIdx.x] = s;
}

extern "C" __global__ void sum_squares_final_f32(float* out, const double* partials, int parts, int accumulate) {
    __shared__ double red[32];
    double s = 0.0;
    for (int i = threadIdx.x; i < parts; i += blockDim.x) s += partials[i];
    s = block_sum_d(s, red);
    if (threadIdx.x == 0) out[0] = (float) ((accumulate ? (double) out[0] : 0.0) + s);
}

// The global-norm clip factor min(1, maxNorm / (sqrt(normSquared[0]) + 1e-6)); 1 when normSquared is null.
__device__ __forceinline__ float clip_factor(const float* normSquared, float maxNorm) {
    if (normSquared == 0) return 1.f;
    return (float) fmin(1.0, maxNorm / (sqrt((double) normSquared[0]) + 1e-6));
}

// One element's AdamW update: m and v in place, the new parameter returned (g already clipped).
__device__ __forceinline__ float adamw_update(float p, float g, float& m, float& v, float beta1, float beta2, float eps,
                                              float decay, float stepSize, float correction2Sqrt) {
    m = m * beta1 + g * (1.f - beta1);
    v = v * beta2 + g * g * (1.f - beta2);
    return p * decay - stepSize * m / (sqrtf(v) / correction2Sqrt + eps);
}

// decay, stepSize and correction2Sqrt from hyper = [lr, step] on the device, the bias corrections computed as the
// host does (double, then rounded to float).
__device__ __forceinline__ void adamw_scalars(const float* hyper, float beta1, float beta2, float weightDecay, float& decay,
                                              float& stepSize, float& correction2Sqrt) {
    float lr = hyper[0];
    double step = (double) hyper[1];
    decay = 1.f - lr * weightDecay;
    stepSize = (float) ((double) lr / (1.0 - pow((double) beta1, step)));
    correction2Sqrt = (float) sqrt(1.0 - pow((double) beta2, step));
}

// stepSize = lr / (1 - beta1^step), correction2Sqrt = sqrt(1 - beta2^step), decay = 1 - lr * weightDecay (host side).
extern "C" __global__ void adamw_f32(float* param, const float* grad, float* m, float* v, i64 n, float beta1, float beta2,
                                     float eps, float decay, float stepSize, float correction2Sqrt,
                                     const float* normSquared, float maxNorm) {
    float clip = clip_factor(normSquared, maxNorm);
    GRID_STRIDE(i, n) {
        float mi = m[i], vi = v[i];
        param[i] = adamw_update(param[i], grad[i] * clip, mi, vi, beta1, beta2, eps, decay, stepSize, correction2Sqrt);
        m[i] = mi;
        v[i] = vi;
    }
}

// AdamW whose step scalars come from device memory, hyper = [lr, step], so that a captured step can be replayed with
// new values. Also writes the bf16 compute copy of the updated parameter when compute is non-null.
extern "C" __global__ void adamw_hyper_f32(float* param, const float* grad, float* m, float* v, bf16* compute, i64 n,
                                           const float* hyper, float beta1, float beta2, float eps, float weightDecay,
                                           const float* normSquared, float maxNorm) {
    float decay, stepSize, correction2Sqrt;
    adamw_scalars(hyper, beta1, beta2, weightDecay, decay, stepSize, correction2Sqrt);
    float clip = clip_factor(normSquared, maxNorm);
    GRID_STRIDE(i, n) {
        float mi = m[i], vi = v[i];
        float p = adamw_update(param[i], grad[i] * clip, mi, vi, beta1, beta2, eps, decay, stepSize, correction2Sqrt);
        m[i] = mi;
        v[i] = vi;
        param[i] = p;
        if (compute != 0) compute[i] = f2bf(p);
    }
}

// ---- multi-tensor kernels: one launch over many tensors, one block per chunk of at most 65536 elements of one tensor.
// The host builds the chunk tables once (pointers already offset to the chunk) and keeps them on the device.

struct Chunk {
    float* x;
    i64 n;
};

struct AdamWChunk {
    float* param;
    const float* grad;
    float* m;
    float* v;
    bf16* compute; // null: no compute copy
    i64 n;
    float weightDecay;
    int unused;
};

__device__ __forceinline__ bool aligned16(const void* p) {
    return (reinterpret_cast<unsigned long long>(p) & 15) == 0;
}

// partials[chunk] = sum of x² over the chunk (double); sum_squares_final_f32 then adds the partials in a fixed order.
extern "C" __global__ void sum_squares_chunks_f32(double* partials, const Chunk* chunks) {
    __shared__ double red[32];
    Chunk ch = chunks[blockIdx.x];
    double s = 0.0;
    i64 vec = aligned16(ch.x) ? ch.n / 4 : 0;
    for (i64 i = threadIdx.x; i < vec; i += blockDim.x) {
        float4 q = reinterpret_cast<const float4*>(ch.x)[i];
        s += (double) q.x * q.x + (double) q.y * q.y + (double) q.z * q.z + (double) q.w * q.w;
    }
    for (i64 i = vec * 4 + threadIdx.x; i < ch.n; i += blockDim.x) {
        double v = ch.x[i];
        s += v * v;
    }
    s = block_sum_d(s, red);
    if (threadIdx.x == 0) partials[blockIdx.x] = s;
}

extern "C" __global__ void zero_chunks_f32(const Chunk* chunks) {
    Chunk ch = chunks[blockIdx.x];
    i64 vec = aligned16(ch.x) ? ch.n / 4 : 0;
    for (i64 i = threadIdx.x; i < vec; i += blockDim.x) reinterpret_cast<float4*>(ch.x)[i] = make_float4(0.f, 0.f, 0.f, 0.f);
    for (i64 i = vec * 4 + threadIdx.x; i < ch.n; i += blockDim.x) ch.x[i] = 0.f;
}

// adamw_hyper_f32 over every chunk, each with its parameter's weight decay.
extern "C" __global__ void adamw_chunks_f32(const AdamWChunk* chunks, const float* hyper, float beta1, float beta2, float eps,
                                           const float* normSquared, float maxNorm) {
    AdamWChunk ch = chunks[blockIdx.x];
    float decay, stepSize, correction2Sqrt;
    adamw_scalars(hyper, beta1, beta2, ch.weightDecay, decay, stepSize, correction2Sqrt);
    float clip = clip_factor(normSquared, maxNorm);
    bool vector = aligned16(ch.param) && aligned16(ch.grad) && aligned16(ch.m) && aligned16(ch.v)
                  && (reinterpret_cast<unsigned long long>(ch.compute) & 7) == 0;
    i64 vec = vector ? ch.n / 4 : 0;
    for (i64 i = threadIdx.x; i < vec; i += blockDim.x) {
        float4 p4 = reinterpret_cast<const float4*>(ch.param)[i], g4 = reinterpret_cast<const float4*>(ch.grad)[i];
        float4 m4 = reinterpret_cast<const float4*>(ch.m)[i], v4 = reinterpret_cast<const float4*>(ch.v)[i];
        float p[4] = {p4.x, p4.y, p4.z, p4.w}, g[4] = {g4.x, g4.y, g4.z, g4.w};
        float m[4] = {m4.x, m4.y, m4.z, m4.w}, v[4] = {v4.x, v4.y, v4.z, v4.w};
#pragma unroll
        for (int e = 0; e < 4; e++) p[e] = adamw_update(p[e], g[e] * clip, m[e], v[e], beta1, beta2, eps, decay, stepSize, correction2Sqrt);
        reinterpret_cast<float4*>(ch.m)[i] = make_float4(m[0], m[1], m[2], m[3]);
        reinterpret_cast<float4*>(ch.v)[i] = make_float4(v[0], v[1], v[2], v[3]);
        reinterpret_cast<float4*>(ch.param)[i] = make_float4(p[0], p[1], p[2], p[3]);
        if (ch.compute != 0) reinterpret_cast<uint2*>(ch.compute)[i] = make_uint2(pack_bf16(p[0], p[1]), pack_bf16(p[2], p[3]));
    }
    for (i64 i = vec * 4 + threadIdx.x; i < ch.n; i += blockDim.x) {
        float mi = ch.m[i], vi = ch.v[i];
        float p = adamw_update(ch.param[i], ch.grad[i] * clip, mi, vi, beta1, beta2, eps, decay, stepSize, correction2Sqrt);
        ch.m[i] = mi;
        ch.v[i] = vi;
        ch.param[i] = p;
        if (ch.compute != 0) ch.compute[i] = f2bf(p);
    }
}
