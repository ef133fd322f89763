// LayerNorm and RMSNorm. Forward: one block per row. Backward: a grid of blocks over rows, each keeping its partial
// dweight/dbias column sums in shared memory (dynamic: 2*cols floats + 32), added into the gradients once at the end.

extern "C" __global__ void layernorm_forward_f32(float* out, float* mean, float* rstd, const float* x, const float* w,
                                                 const float* b, int rows, int cols, float eps) {
    __shared__ float red[32];
    int row = blockIdx.x;
    const float* xr = x + (i64) row * cols;
    float* o = out + (i64) row * cols;
    float s = 0.f;
    for (int c = threadIdx.x; c < cols; c += blockDim.x) s += xr[c];
    float m = block_sum(s, red) / cols;
    float v = 0.f;
    for (int c = threadIdx.x; c < cols; c += blockDim.x) {
        float d = xr[c] - m;
        v += d * d;
    }
    float var = block_sum(v, red) / cols;
    float rs = 1.f / sqrtf(var + eps);
    for (int c = threadIdx.x; c < cols; c += blockDim.x) o[c] = (xr[c] - m) * rs * w[c] + b[c];
    if (threadIdx.x == 0) {
        mean[row] = m;
        rstd[row] = rs;
    }
}

extern "C" __global__ void layernorm_backward_f32(float* dx, float* dw, float* db, const float* dout, const float* x,
                                                  const float* w, const float* mean, const float* rstd, int rows, int cols) {
    extern __shared__ float sh[];
    float* dwPart = sh;
    float* dbPart = sh + cols;
    float* red = sh + 2 * cols;
    for (int c = threadIdx.x; c < cols; c += blockDim.x) {
        dwPart[c] = 0.f;
        dbPart[c] = 0.f;
    }
    for (int row = blockIdx.x; row < rows; row += gridDim.x) {
        i64 base = (i64) row * cols;
        float m = mean[row], s = rstd[row];
        float a = 0.f, bn = 0.f;
        for (int c = threadIdx.x; c < cols; c += blockDim.x) {
            float norm = (x[base + c] - m) * s;
            float dn = dout[base + c] * w[c];
            a += dn;
            bn += dn * norm;
        }
        a = block_sum(a, red) / cols;
        bn = block_sum(bn, red) / cols;
        for (int c = threadIdx.x; c < cols; c += blockDim.x) {
            float d = dout[base + c];
            float norm = (x[base + c] - m) * s;
            dbPart[c] += d;
            dwPart[c] += norm * d;
            dx[base + c] += (d * w[c] - a - norm * bn) * s;
        }
    }
    for (int c = threadIdx.x; c < cols; c += blockDim.x) {
        atomicAdd(&dw[c], dwPart[c]);
        atomicAdd(&db[c], dbPart[c]);
    }
}

extern "C" __global__ void rmsnorm_forward_f32(float* out, float* rstd, const float* x, const float* w, int rows, int cols,
                                               float eps) {
    __shared__ float red[32];
    int row = blockIdx.x;
    const float* xr = x + (i64) row * cols;
    float* o = out + (i64) row * cols;
    float ss = 0.f;
    for (int c = threadIdx.x; c < cols; c += blockDim.x) ss += xr[c] * xr[c];
    float rs = 1.f / sqrtf(block_sum(ss, red) / cols + eps);
    for (int c = threadIdx.x; c < cols; c += blockDim.x) o[c] = xr[c] * rs * w[c];
    if (threadIdx.x == 0) rstd[row] = rs;
}

extern "C" __global__ void rmsnorm_backward_f32(float* dx, float* dw, const float* dout, const float* x, const float* w,
                                                const float* rstd, int rows, int cols) {
    extern __shared__ float sh[];
    float* dwPart = sh;
    float* red = sh + cols;
    for (int c = threadIdx.x; c < cols; c += blockDim.x) dwPart[c] = 0.f;
    for (int row = blockIdx.x; row < rows; row += gridDim.x) {
        i64 base = (i64) row * cols;
        float s = rstd[row];
        float bn = 0.f;
        for (int c = threadIdx.x; c < cols; c += blockDim.x) bn += dout[base + c] * w[c] * x[base + c] * s;
        bn = block_sum(bn, red) / cols;
        for (int c = threadIdx.x; c < cols; c += blockDim.x) {
            float d = dout[base + c];
            float norm = x[base + c] * s;
            dwPart[c] += norm * d;
            dx[base + c] += (d * w[c] - norm * bn) * s;
        }
    }
    for (int c = threadIdx.x; c < cols; c += blockDim.x) atomicAdd(&dw[c], dwPart[c]);
}
