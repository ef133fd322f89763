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

// stepSize = lr / (1 - beta1^step), correction2Sqrt = sqrt(1 - beta2^step), decay = 1 - lr * weightDecay (host side).
// When normSquared is non-null, gradients are scaled by min(1, maxNorm / (sqrt(normSquared[0]) + 1e-6)).
extern "C" __global__ void adamw_f32(float* param, const float* grad, float* m, float* v, i64 n, float beta1, float beta2,
                                     float eps, float decay, float stepSize, float correction2Sqrt,
                                     const float* normSquared, float maxNorm) {
    float clip = 1.f;
    if (normSquared != 0) {
        double norm = sqrt((double) normSquared[0]);
        clip = (float) fmin(1.0, maxNorm / (norm + 1e-6));
    }
    GRID_STRIDE(i, n) {
        float g = grad[i] * clip;
        float mi = m[i] * beta1 + g * (1.f - beta1);
        float vi = v[i] * beta2 + g * g * (1.f - beta2);
        m[i] = mi;
        v[i] = vi;
        param[i] = param[i] * decay - stepSize * mi / (sqrtf(vi) / correction2Sqrt + eps);
    }
}

// AdamW whose step scalars come from device memory, hyper = [lr, step], so that a captured step can be replayed with
// new values; the bias corrections are computed here as the host does (double, then rounded to float). Also writes
// the bf16 compute copy of the updated parameter when compute is non-null.
extern "C" __global__ void adamw_hyper_f32(float* param, const float* grad, float* m, float* v, bf16* compute, i64 n,
                                           const float* hyper, float beta1, float beta2, float eps, float weightDecay,
                                           const float* normSquared, float maxNorm) {
    float lr = hyper[0];
    double step = (double) hyper[1];
    float decay = 1.f - lr * weightDecay;
    float stepSize = (float) ((double) lr / (1.0 - pow((double) beta1, step)));
    float correction2Sqrt = (float) sqrt(1.0 - pow((double) beta2, step));
    float clip = 1.f;
    if (normSquared != 0) {
        double norm = sqrt((double) normSquared[0]);
        clip = (float) fmin(1.0, maxNorm / (norm + 1e-6));
    }
    GRID_STRIDE(i, n) {
        float g = grad[i] * clip;
        float mi = m[i] * beta1 + g * (1.f - beta1);
        float vi = v[i] * beta2 + g * g * (1.f - beta2);
        m[i] = mi;
        v[i] = vi;
        float p = param[i] * decay - stepSize * mi / (sqrtf(vi) / correction2Sqrt + eps);
        param[i] = p;
        if (compute != 0) compute[i] = f2bf(p);
    }
}
