// Element-wise ops, bias, embedding and RoPE (float32). Grid-stride loops: any grid size is correct.

extern "C" __global__ void add_f32(float* out, const float* a, const float* b, i64 n) {
    GRID_STRIDE(i, n) out[i] = a[i] + b[i];
}

#define GELU_SCALE 0.7978845608028654f
#define GELU_CUBE 0.044715f

extern "C" __global__ void gelu_forward_f32(float* out, const float* x, i64 n) {
    GRID_STRIDE(i, n) {
        float v = x[i];
        out[i] = 0.5f * v * (1.f + tanhf(GELU_SCALE * (v + GELU_CUBE * v * v * v)));
    }
}

// dx may alias dout.
extern "C" __global__ void gelu_backward_f32(float* dx, const float* dout, const float* x, i64 n) {
    GRID_STRIDE(i, n) {
        float v = x[i];
        float t = tanhf(GELU_SCALE * (v + GELU_CUBE * v * v * v));
        float grad = 0.5f * (1.f + t) + 0.5f * v * (1.f - t * t) * GELU_SCALE * (1.f + 3.f * GELU_CUBE * v * v);
        dx[i] = grad * dout[i];
    }
}

// out[r,j] = silu(gu[r,j]) * gu[r,hidden+j]
extern "C" __global__ void swiglu_forward_f32(float* out, const float* gu, int rows, int hidden) {
    GRID_STRIDE(i, (i64) rows * hidden) {
        i64 r = i / hidden, j = i - r * hidden;
        float g = gu[2 * r * hidden + j], u = gu[2 * r * hidden + hidden + j];
        out[i] = g / (1.f + expf(-g)) * u;
    }
}

extern "C" __global__ void swiglu_backward_f32(float* dgu, const float* dout, const float* gu, int rows, int hidden) {
    GRID_STRIDE(i, (i64) rows * hidden) {
        i64 r = i / hidden, j = i - r * hidden;
        i64 gi = 2 * r * hidden + j, ui = gi + hidden;
        float g = gu[gi], u = gu[ui], dy = dout[i];
        float sig = 1.f / (1.f + expf(-g));
        dgu[gi] = dy * u * sig * (1.f + g * (1.f - sig));
        dgu[ui] = dy * g * sig;
    }
}

extern "C" __global__ void add_bias_f32(float* out, const float* bias, int rows, int cols) {
    GRID_STRIDE(i, (i64) rows * cols) out[i] += bias[i % cols];
}

// dbias[c] += sum_r dout[r,c]. Block (32, 8): 32 columns, 8 row lanes over rowsPerBlock rows; one atomic per column
// and block.
extern "C" __global__ void bias_backward_f32(float* dbias, const float* dout, int rows, int cols, int rowsPerBlock) {
    __shared__ float part[8][33];
    int c = blockIdx.x * 32 + threadIdx.x;
    int r0 = blockIdx.y * rowsPerBlock, r1 = min(rows, r0 + rowsPerBlock);
    float s = 0.f;
    if (c < cols) {
        for (int r = r0 + threadIdx.y; r < r1; r += 8) s += dout[(i64) r * cols + c];
    }
    part[threadIdx.y][threadIdx.x] = s;
    __syncthreads();
    if (threadIdx.y == 0 && c < cols) {
        float total = 0.f;
        for (int y = 0; y < 8; y++) total += part[y][threadIdx.x];
        atomicAdd(&dbias[c], total);
    }
}

// out[r,:] (+)= table[ids[r],:]; rows whose id is outside [0, tableRows) are left untouched.
extern "C" __global__ void embedding_forward_f32(float* out, const float* table, const int* ids, int rows, int cols,
                                                 i64 tableRows, int accumulate) {
    GRID_STRIDE(i, (i64) rows * cols) {
        i64 r = i / cols, c = i - r * cols;
        int id = ids[r];
        if (id < 0 || id >= tableRows) continue;
        float v = table[(i64) id * cols + c];
        out[i] = accumulate ? out[i] + v : v;
    }
}

extern "C" __global__ void embedding_backward_f32(float* dtable, const float* dout, const int* ids, int rows, int cols,
                                                  i64 tableRows) {
    GRID_STRIDE(i, (i64) rows * cols) {
        i64 r = i / cols, c = i - r * cols;
        int id = ids[r];
        if (id < 0 || id >= tableRows) continue;
        atomicAdd(&dtable[(i64) id * cols + c], dout[i]);
    }
}

// Rotate-half RoPE of the q and k heads of qkv, in place. Angles in double, as the CPU reference.
extern "C" __global__ void rope_f32(float* qkv, int batch, int seq, int nHead, int nKvHead, int headDim, float theta,
                                   int inverse) {
    int half = headDim / 2, rotated = nHead + nKvHead;
    i64 rowWidth = (i64) (nHead + 2 * nKvHead) * headDim;
    GRID_STRIDE(idx, (i64) batch * seq * rotated * half) {
        int i = (int) (idx % half);
        i64 rest = idx / half;
        int h = (int) (rest % rotated);
        i64 r = rest / rotated;
        int t = (int) (r % seq);
        double angle = t * pow((double) theta, -2.0 * i / headDim);
        double sd, cd;
        sincos(angle, &sd, &cd);
        float c = (float) cd, s = (float) (inverse ? -sd : sd);
        i64 base = r * rowWidth + (i64) h * headDim;
        float x1 = qkv[base + i], x2 = qkv[base + half + i];
        qkv[base + i] = x1 * c - x2 * s;
        qkv[base + half + i] = x2 * c + x1 * s;
    }
}
