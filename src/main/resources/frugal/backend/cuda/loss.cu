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

// bf16 rows whose length is a multiple of 8 (16-byte packs), up to 8·PACKS·blockDim long (blockDim at most the kernel's launch bound): each thread holds its packs
// of the row in registers, so the logits are read from memory once (max, then sum of exponentials, then dlogits from
// the same registers; dlogits may alias logits since every read precedes the first write).
// A block takes rows blockIdx.x, + gridDim.x, ... With fewer blocks than rows (one per SM: a row in registers leaves
// room for no second block), each thread copies its packs of the block's next row into dynamic shared memory (vocab·2
// bytes) with cp.async while it works on this row, so that the load of one row overlaps the arithmetic and stores of
// the last: otherwise an SM alternates between waiting on a row and computing on it. Each thread reads back only the
// slots it copied, so the copies need no barrier.
// The 8 floats of a pack of bf16 held in registers. The opaque move keeps the compiler from keeping every unpacked
// float alive between the passes (which would need 8x the registers of the packed row).
__device__ __forceinline__ void unpack(float* v, uint4 x) {
    unsigned w[4] = {x.x, x.y, x.z, x.w};
#pragma unroll
    for (int k = 0; k < 4; k++) {
        asm volatile("mov.b32 %0, %0;" : "+r"(w[k]));
        v[2 * k] = __uint_as_float(w[k] << 16);
        v[2 * k + 1] = __uint_as_float(w[k] & 0xffff0000u);
    }
}

// Element e (a runtime index) of a pack, by selects: indexing an array by it would put the array in local memory.
__device__ __forceinline__ float bf16_of_pack(uint4 x, int e) {
    unsigned w = e < 4 ? (e < 2 ? x.x : x.y) : (e < 6 ? x.z : x.w);
    return __uint_as_float(e & 1 ? w & 0xffff0000u : w << 16);
}

// threadIdx.x, read anew at each use: each pass derives its PACKS pack indices and addresses from it, and would
// otherwise share them with the other passes and rows, holding them in registers the row needs.
__device__ __forceinline__ int opaque_tid() {
    int t;
    asm volatile("mov.u32 %0, %%tid.x;" : "=r"(t));
    return t;
}

template <int PACKS>
__device__ void cross_entropy_packed_k(float* losses, bf16* dlogits, const bf16* logits, const int* targets, int rows,
                                       int vocab, float gradScale) {
    extern __shared__ uint4 staged[]; // the next row's packs, indexed as in the row
    __shared__ float redMax[32], redSum[32]; // two buffers, so that no barrier is needed between one row and the next
    const uint4 negInf = make_uint4(0xff80ff80u, 0xff80ff80u, 0xff80ff80u, 0xff80ff80u); // bf16 -inf
    int row = blockIdx.x, packs = vocab / 8;
    int target = targets[row];
    uint4 x[PACKS];
    {
        const uint4* lg = reinterpret_cast<const uint4*>(logits + (i64) row * vocab);
        int t = opaque_tid();
#pragma unroll
        for (int k = 0; k < PACKS; k++) {
            int i = t + k * blockDim.x;
            x[k] = i < packs ? lg[i] : negInf;
        }
    }
    for (;;) {
        bool valid = target >= 0 && target < vocab;
        // The thread holding the target logit writes the loss (thread 0 writes NaN for an invalid target).
        int targetPack = valid ? target / 8 : -1;
        int holderK = targetPack / blockDim.x, holderT = targetPack - holderK * blockDim.x;
        bool writesLoss = valid ? threadIdx.x == holderT : threadIdx.x == 0;
        float targetLogit = __int_as_float(0x7fc00000);
        float m = -FRUGAL_INF;
#pragma unroll
        for (int k = 0; k < PACKS; k++) {
            float v[8];
            unpack(v, x[k]);
#pragma unroll
            for (int e = 0; e < 8; e++) m = fmaxf(m, v[e]);
            if (valid && k == holderK) targetLogit = bf16_of_pack(x[k], target & 7);
        }
        m = warp_max(m);
        int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
        if (lane == 0) redMax[warp] = m;
        __syncthreads();
        m = warp_max(lane < warps ? redMax[lane] : -FRUGAL_INF);
        // x is consumed (the max above waited on it), so this thread's slots may take the next row.
        int next = row + gridDim.x, nextTarget = 0;
        if (next < rows) {
            nextTarget = targets[next];
            const uint4* nl = reinterpret_cast<const uint4*>(logits + (i64) next * vocab);
            int t = opaque_tid();
#pragma unroll
            for (int k = 0; k < PACKS; k++) {
                int i = t + k * blockDim.x;
                if (i < packs) {
                    unsigned dst = (unsigned) __cvta_generic_to_shared(staged + i);
                    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" :: "r"(dst), "l"(nl + i) : "memory");
                }
            }
            asm volatile("cp.async.commit_group;" ::: "memory");
        }
        float s = 0.f;
#pragma unroll
        for (int k = 0; k < PACKS; k++) {
            float v[8];
            unpack(v, x[k]);
#pragma unroll
            for (int e = 0; e < 8; e++) s += expf(v[e] - m);
        }
        float lse = m + logf(block_sum(s, redSum));
        if (writesLoss) losses[row] = lse - targetLogit;
        if (dlogits != 0) {
            bf16* dl = dlogits + (i64) row * vocab;
            int t = opaque_tid();
#pragma unroll
            for (int k = 0; k < PACKS; k++) {
                int i = t + k * blockDim.x;
                if (i < packs) {
                    float v[8];
                    unpack(v, x[k]);
                    int targetLane = target - i * 8; // the target's place in this pack, if it is here
#pragma unroll
                    for (int e = 0; e < 8; e++) v[e] = expf(v[e] - lse) * gradScale - (e == targetLane ? gradScale : 0.f);
                    Pack<bf16>::store(dl, (i64) i * 8, v);
                }
            }
        }
        if (next >= rows) return;
        row = next;
        target = nextTarget;
        asm volatile("cp.async.wait_all;" ::: "memory");
        int t = opaque_tid();
#pragma unroll
        for (int k = 0; k < PACKS; k++) {
            int i = t + k * blockDim.x;
            x[k] = i < packs ? staged[i] : negInf;
        }
    }
}

#define CE_PACKED(P, THREADS) extern "C" __global__ void __launch_bounds__(THREADS) cross_entropy_packed_##P( \
        float* losses, bf16* dlogits, const bf16* logits, const int* targets, int rows, int vocab, float gradScale) { \
    cross_entropy_packed_k<P>(losses, dlogits, logits, targets, rows, vocab, gradScale); }
CE_PACKED(1, 1024)
CE_PACKED(4, 1024)
CE_PACKED(10, 640)
