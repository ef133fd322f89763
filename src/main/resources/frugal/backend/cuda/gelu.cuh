// GELU, tanh approximation (GPT-2's gelu_new), and its derivative: elementwise.cu's kernels and stash_gelu.cu's.

#define GELU_SCALE 0.7978845608028654f
#define GELU_CUBE 0.044715f

__device__ __forceinline__ float gelu(float v) {
    return 0.5f * v * (1.f + tanhf(GELU_SCALE * (v + GELU_CUBE * v * v * v)));
}

__device__ __forceinline__ float gelu_grad(float v) {
    float t = tanhf(GELU_SCALE * (v + GELU_CUBE * v * v * v));
    return 0.5f * (1.f + t) + 0.5f * v * (1.f - t * t) * GELU_SCALE * (1.f + 3.f * GELU_CUBE * v * v);
}
