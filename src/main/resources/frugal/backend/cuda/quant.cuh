// Block quantization to frugal.quant.QuantFormat and back, bit for bit as CpuQuant does it: the same packed bytes and
// scales for the same values. These are the device functions, shared by quant.cu's kernels and by the kernels that
// quantize what they write or dequantize what they read for the stash. Templated on the activation type T (float or bf16, suffix _f32 or _bf16); math in float,
// every rounding step explicit (__fmul_rn, __fadd_rn, __fdiv_rn; one __fmaf_rn, whose product is exact) so that NVRTC's
// default FMA contraction cannot fuse what Java rounds twice.
//
// Layout: block b's values are fields of `bits` bits, least significant first, from byte b*block*bits/8. 8 values fill
// exactly `bits` bytes, so a "group" of 8 values is the unit of work: group t of the tensor is bytes [t*bits, (t+1)*bits).
// Scales: one exponent byte per block (BFP) or one float per block (INT), written and read byte by byte where the
// scales follow the packed bytes in one buffer at an offset that is no multiple of 4.
//
// A block holding NaN or ±Inf (or, in BFP, a magnitude beyond the largest shared exponent) cannot stop the kernel as
// the CPU stops: it is stored as NaN (exponent byte BFP_NAN_BLOCK, or a NaN INT scale, values 0), so that it reads back
// as NaN, and its reason is OR-ed into *error, which the host reads at its next wait on the stream.

#define BFP_ZERO_BLOCK (-128) // QuantFormat.ZERO_BLOCK
#define BFP_NAN_BLOCK (-127)  // QuantFormat.NAN_BLOCK
#define BFP_MAX_EXPONENT 127  // QuantFormat.MAX_EXPONENT
#define QUANT_NON_FINITE 1u   // error bits, as CudaBackend names them
#define QUANT_BEYOND_BFP 2u
#define QUANT_NAN __int_as_float(0x7fc00000)

// 2^e for e in F32's normal exponent range [-126, 127]: Java's Math.scalb(1f, e) there.
__device__ __forceinline__ float pow2(int e) {
    return __uint_as_float((unsigned) (e + 127) << 23);
}

// QuantFormat.exponent, without its division: the smallest e >= -126 with maxAbs <= maxLevel·2^e (128: beyond BFP).
// Java compares 2^e with the rounded ratio maxAbs/maxLevel, but no ratio above 2^e rounds down to it: maxLevel has at
// most 7 significant bits, so the float next above maxLevel·2^e exceeds it by more than 2^-24 of it, and the rounded
// and the exact comparison agree. With maxAbs = m·2^E and maxLevel = l·2^L, m and l in [1, 2), that e is E - L, plus
// one where m > l (their mantissa bits compare as they do). maxAbs > 0.
__device__ __forceinline__ int bfp_exponent(float maxAbs, int maxLevel) {
    const unsigned a = __float_as_uint(maxAbs), l = __float_as_uint((float) maxLevel);
    if (a < 0x00800000u) return -126; // subnormal: below 2^-126 <= maxLevel·2^-126
    const int e = (int) (a >> 23) - (int) (l >> 23) + ((a & 0x7fffffu) > (l & 0x7fffffu));
    return e < -126 ? -126 : e;
}

// CpuQuant.uniform: a float in [0, 1) from the lowbias32 hash of the element's index mixed with the seed.
__device__ __forceinline__ float uniform01(unsigned seedBits, i64 index) {
    unsigned z = (unsigned) index ^ seedBits;
    z = (z ^ (z >> 16)) * 0x7feb352du;
    z = (z ^ (z >> 15)) * 0x846ca68bu;
    z ^= z >> 16;
    return __fmul_rn((float) (z >> 8), __int_as_float(0x33800000)); // × 2^-24
}

// The level of v = x/s: min(maxLevel, (int) (|v| + offset)) with v's sign. As in Java, (int) NaN is 0 (v is NaN when a
// zero meets the infinite 1/s of an INT scale that underflowed) and +Inf is clamped to maxLevel.
__device__ __forceinline__ int level(float v, float offset, int maxLevel) {
    float a = __fadd_rn(fabsf(v), offset);
    int m = a < (float) maxLevel ? (int) a : a >= (float) maxLevel ? maxLevel : 0;
    return v < 0.f ? -m : m;
}

// A block's scale as QuantFormat.scale gives it (s = 0 for a zero block), its reciprocal (what the values are multiplied
// by, as in CpuQuant), BFP's exponent e, and the QUANT_* bits of a block the CPU would reject (then s = inv = 0).
// maxAbs is +Inf where the block holds NaN or ±Inf.
struct BlockScale {
    float s, inv;
    int e;
    unsigned flags;
};

__device__ __forceinline__ BlockScale block_scale(float maxAbs, int isInt, int maxLevel) {
    BlockScale r = {0.f, 0.f, 0, 0u};
    if (maxAbs == FRUGAL_INF) {
        r.flags = QUANT_NON_FINITE;
    } else if (isInt) {
        r.s = __fdiv_rn(maxAbs, (float) maxLevel);
        r.inv = r.s == 0.f ? 0.f : __fdiv_rn(1.f, r.s);
    } else if (maxAbs != 0.f) {
        r.e = bfp_exponent(maxAbs, maxLevel);
        if (r.e > BFP_MAX_EXPONENT) {
            r.flags = QUANT_BEYOND_BFP;
        } else {
            r.s = pow2(r.e);
            r.inv = r.e < BFP_MAX_EXPONENT ? pow2(-r.e) : __uint_as_float(0x00400000u); // 1/s exactly: 2^-127 is subnormal
        }
    }
    return r;
}

// Writes block b's scale (a NaN block's marker where flags are set) and reports the flags. aligned: scales is 4-byte
// aligned, so an INT scale is one 4-byte store (else byte by byte; see the header).
__device__ __forceinline__ void store_scale(unsigned char* scales, i64 b, int isInt, int aligned, BlockScale sc,
                                            unsigned* error) {
    if (isInt) {
        unsigned u = __float_as_uint(sc.flags ? QUANT_NAN : sc.s);
        if (aligned) {
            reinterpret_cast<unsigned*>(scales)[b] = u;
        } else {
#pragma unroll
            for (int i = 0; i < 4; i++) scales[4 * b + i] = (unsigned char) (u >> (8 * i));
        }
    } else {
        scales[b] = (unsigned char) (sc.flags ? BFP_NAN_BLOCK : sc.s == 0.f ? BFP_ZERO_BLOCK : sc.e);
    }
    if (sc.flags) atomicOr(error, sc.flags);
}

// The scale of block b: CpuQuant.dequantize's. aligned: as for store_scale.
__device__ __forceinline__ float stored_scale(const unsigned char* scales, i64 b, int isInt, int aligned) {
    if (isInt) {
        if (aligned) return __uint_as_float(reinterpret_cast<const unsigned*>(scales)[b]);
        unsigned u = 0;
#pragma unroll
        for (int i = 0; i < 4; i++) u |= (unsigned) scales[4 * b + i] << (8 * i);
        return __uint_as_float(u);
    }
    int e = (signed char) scales[b];
    return e == BFP_ZERO_BLOCK ? 0.f : e == BFP_NAN_BLOCK ? QUANT_NAN : pow2(e);
}

// ---- Fast paths: BITS a template parameter, block a power of two in 8..256, x or y and packed 16-byte aligned.
//
// A lane takes one group (8 values: one 16-byte bf16 load or store, two of f32) and a warp 32 consecutive groups, a
// "chunk": a block is 1..32 lanes, whose largest magnitude meets by xor shuffles, and a chunk's packed bytes (32·BITS)
// are whole 4-byte words. Where BITS is 2, 4 or 8 a group's bits are an aligned 2-, 4- or 8-byte word and each lane
// moves its own; otherwise the warp stages them in shared memory and moves whole words. A warp loads FAST_CHUNKS
// chunks before working on the first, so that enough loads are in flight to cover the latency of HBM. The kernels run
// with FAST_THREADS threads a block (the staging arrays are sized by it). Scheme and rounding are arguments: branches per
// group, not per value. The values and bytes are those of quant.cu's general kernels, hence CpuQuant's.
//
// At HBM speed (~3 TB/s over 2.5 bytes per bf16 value) an H100 SM must take about 5 values a clock: some 200
// instructions per lane and group, of which at most half on the integer/logic pipe (half the FP32 rate), which the
// stochastic rounding's hash loads most. So per value: no division (BFP's scale comes from the exponent bits), one
// float-to-int conversion (on the conversion unit, otherwise idle) instead of integer clamping and negation, and one
// multiply-add into the packed word instead of masking and shifting.

#define FAST_THREADS 256
#define FAST_CHUNKS 2

// A group's packed bits: 32 bits wide where they fit.
template <bool WIDE> struct PackedBits { typedef unsigned type; };
template <> struct PackedBits<true> { typedef unsigned long long type; };
template <int BITS> using packed_t = typename PackedBits<(BITS > 4)>::type;

// The aligned word of one group where BITS is a power of two (2, 4 or 8 bytes).
template <int BITS> struct GroupWord;
template <> struct GroupWord<2> { typedef unsigned short type; };
template <> struct GroupWord<4> { typedef unsigned type; };
template <> struct GroupWord<8> { typedef unsigned long long type; };
#define DIRECT_WORDS(BITS) (((BITS) & ((BITS) - 1)) == 0)

// level() for a = |v| + offset as CpuQuant rounds it, never NaN here (the caller takes level() where 1/s is infinite):
// (int) of a non-negative float is its floor, clamped to maxLevel as floor(min(a, maxLevel + 1/2)) is, and the
// conversion's truncation of that value with v's sign makes the signed level at once (v = -0 gives 0 as in Java).
__device__ __forceinline__ int level_fast(float v, float a, float clamp) {
    return (int) copysignf(fminf(a, clamp), v);
}

// h = 2^(BITS-1) in each of a group's 8 fields.
template <int BITS>
__device__ constexpr packed_t<BITS> halfs() {
    packed_t<BITS> r = 0;
    for (int k = 0; k < 8; k++) r |= (packed_t<BITS>) (1u << (BITS - 1)) << (k * BITS);
    return r;
}

// The packed fields of one group of values v (elements j0.., j0 a multiple of 8, all finite), scaled by inv. The levels
// are summed as integers, Σ q_k·2^(k·BITS), a multiply-add each, instead of masked into their fields: each q_k + h
// lies in [1, 2^BITS) (|q| < h), so HALFS + Σ q_k·2^(k·BITS) = Σ (q_k + h)·2^(k·BITS) holds q_k + h in field k (and
// nothing above the fields), and xoring h out leaves there q_k's two's complement bits.
template <int BITS>
__device__ __forceinline__ packed_t<BITS> pack_group(const float* v, float inv, int maxLevel, int stochastic,
                                                     unsigned seedBits, i64 j0) {
    typedef packed_t<BITS> P;
    const float clamp = (float) maxLevel + 0.5f;
    P acc = 0;
    if (inv == FRUGAL_INF) { // an INT scale in F32's subnormal range: 0·∞ is NaN, which level() maps to 0 as Java does
#pragma unroll
        for (int k = 0; k < 8; k++) {
            float offset = stochastic ? uniform01(seedBits, j0 + k) : 0.5f;
            acc |= (P) ((unsigned) level(__fmul_rn(v[k], inv), offset, maxLevel) & ((1u << BITS) - 1)) << (k * BITS);
        }
        return acc;
    }
    if (stochastic) {
        // uniform01 of index j0 + k: the index's low bits are k, which (j0 ^ seedBits) >> 16 does not see, so the
        // hash's first step is one per group, k xored in. Its last, z >> 8, stays in place as z & ~0xff: converted
        // exactly (24 significant bits) and scaled by 2^-32 in the FMA, whose one rounding is that of Java's sum. The
        // right shifts are multiplications' high words, which run beside the logic ops rather than among them.
        unsigned z0 = (unsigned) j0 ^ seedBits;
        z0 ^= z0 >> 16;
#pragma unroll
        for (int k = 0; k < 8; k++) {
            unsigned z = (z0 ^ k) * 0x7feb352du;
            z = (z ^ __umulhi(z, 1u << 17)) * 0x846ca68bu;
            z = (z ^ __umulhi(z, 1u << 16)) & 0xffffff00u;
            const float vk = __fmul_rn(v[k], inv);
            acc += (P) level_fast(vk, __fmaf_rn((float) z, 0x1p-32f, fabsf(vk)), clamp) << (k * BITS);
        }
    } else {
#pragma unroll
        for (int k = 0; k < 8; k++) {
            const float vk = __fmul_rn(v[k], inv);
            acc += (P) level_fast(vk, __fadd_rn(fabsf(vk), 0.5f), clamp) << (k * BITS);
        }
    }
    constexpr P HALFS = halfs<BITS>();
    return (acc + HALFS) ^ HALFS;
}

// Word w (bits 32w..) of the packed bits of the warp's 32 groups, staged by their lanes in stage[0, 32) (stage[32] zero),
// for BITS whose groups are no aligned words: it starts in lane 4w/BITS at bit r and, a lane holding at least 24 bits,
// ends in that lane or the next.
template <int BITS>
__device__ __forceinline__ unsigned staged_word(const unsigned long long* stage, int w) {
    const int l = 4 * w / BITS, r = 32 * w - 8 * BITS * l;
    return (unsigned) (stage[l] >> r) | (unsigned) (stage[l + 1] << (8 * BITS - r));
}

// Writes the packed bits of chunk c (lane l: group 32c + l), of which those of groups below `groups` belong to the
// tensor. stage: the warp's 33 slots (the last zero), for staged_word.
template <int BITS>
__device__ __forceinline__ void store_chunk(unsigned char* packed, i64 c, i64 groups, packed_t<BITS> acc,
                                            unsigned long long* stage) {
    const int lane = threadIdx.x & 31;
    if constexpr (DIRECT_WORDS(BITS)) {
        if (c * 32 + lane < groups) reinterpret_cast<typename GroupWord<BITS>::type*>(packed)[c * 32 + lane] = acc;
    } else {
        __syncwarp(); // the previous chunk's words are out
        stage[lane] = acc;
        __syncwarp();
        const i64 bytes = (groups - c * 32 < 32 ? groups - c * 32 : 32) * BITS;
        unsigned char* out = packed + c * 32 * BITS;
#pragma unroll
        for (int w = lane; w < 8 * BITS; w += 32) {
            const unsigned word = staged_word<BITS>(stage, w);
            if (4 * w + 4 <= bytes) {
                reinterpret_cast<unsigned*>(out)[w] = word;
            } else {
                for (int i = 0; i < 4; i++) if (4 * w + i < bytes) out[4 * w + i] = (unsigned char) (word >> (8 * i));
            }
        }
    }
}

// What a lane loads of chunk c's packed bits: its group's aligned word (0 past `groups`), or words lane and lane + 32
// of the chunk's 8·BITS (those past the tensor's bytes 0), for unpack_chunk to gather from the warp.
template <int BITS> struct ChunkWords {
    typedef typename GroupWord<DIRECT_WORDS(BITS) ? BITS : 4>::type word;
    word w[DIRECT_WORDS(BITS) ? 1 : (8 * BITS + 31) / 32];
};

template <int BITS>
__device__ __forceinline__ ChunkWords<BITS> load_chunk(const unsigned char* packed, i64 c, i64 groups) {
    const int lane = threadIdx.x & 31;
    ChunkWords<BITS> r;
    if constexpr (DIRECT_WORDS(BITS)) {
        const i64 t = c * 32 + lane;
        r.w[0] = t < groups ? reinterpret_cast<const typename GroupWord<BITS>::type*>(packed)[t] : 0;
    } else {
        const i64 bytes = (groups - c * 32 < 32 ? groups - c * 32 : 32) * BITS;
        const unsigned char* in = packed + c * 32 * BITS;
#pragma unroll
        for (int i = 0; 32 * i < 8 * BITS; i++) {
            const int w = lane + 32 * i;
            r.w[i] = 0;
            if (w >= 8 * BITS) continue;
            if (4 * w + 4 <= bytes) {
                r.w[i] = reinterpret_cast<const unsigned*>(in)[w];
            } else {
                for (int j = 0; j < 4; j++) if (4 * w + j < bytes) r.w[i] |= (unsigned) in[4 * w + j] << (8 * j);
            }
        }
    }
    return r;
}

// The lane's group's packed bits from what the warp loaded: staged in `stage` (8·BITS words and two zeros), a lane's
// 8·BITS bits start at bit 8·BITS·lane, in word w at bit r, and end at most two words further.
template <int BITS>
__device__ __forceinline__ packed_t<BITS> unpack_chunk(const ChunkWords<BITS>& words, unsigned* stage) {
    if constexpr (DIRECT_WORDS(BITS)) {
        return words.w[0];
    } else {
        const int lane = threadIdx.x & 31;
        __syncwarp(); // the previous chunk's words are read
#pragma unroll
        for (int i = 0; 32 * i < 8 * BITS; i++) if (lane + 32 * i < 8 * BITS) stage[lane + 32 * i] = words.w[i];
        __syncwarp();
        const int bit = 8 * BITS * lane, w = bit >> 5, r = bit & 31;
        const unsigned lo = __funnelshift_r(stage[w], stage[w + 1], r);
        if constexpr (BITS <= 4) return lo;
        else return lo | (unsigned long long) __funnelshift_r(stage[w + 1], stage[w + 2], r) << 32;
    }
}

// Value k of a group: its field as a float without an int-to-float conversion (conversions run at a fraction of the
// FP32 rate): with h = 2^(BITS-1), field ^ h is q + h in [0, 2^BITS), so the float with bits 0x4b000000 | (field ^ h)
// is 2^23 + q + h, and subtracting 2^23 + h leaves q exactly. Times s, as CpuQuant.
template <int BITS>
__device__ __forceinline__ float field_value(packed_t<BITS> acc, int k, float s) {
    constexpr unsigned MASK = (1u << BITS) - 1, HALF = 1u << (BITS - 1);
    const unsigned field = (unsigned) (acc >> (k * BITS)) & MASK;
    return __fmul_rn(__fadd_rn(__uint_as_float(0x4b000000u | (field ^ HALF)), -(8388608.f + HALF)), s);
}

// A group's packed bits and its block's scale.
template <int BITS> struct PackedGroup {
    packed_t<BITS> bits;
    BlockScale sc;
};

// The lane's group t of 8 values v (elements 8t.., as the tensor holds them, T-rounded) quantized with the other lanes
// of its block (2^logLanes lanes, aligned), whose largest magnitude gives the block's scale. Every lane of the warp
// calls it.
template <int BITS>
__device__ __forceinline__ PackedGroup<BITS> pack_block_group(const float* v, i64 t, int logLanes, int isInt, int stochastic,
                                                              unsigned seedBits) {
    const int maxLevel = (1 << (BITS - 1)) - 1, lanes = 1 << logLanes;
    // |x| as bits: NaN and ±Inf order above every finite magnitude.
    unsigned m = 0;
#pragma unroll
    for (int k = 0; k < 8; k++) m = max(m, __float_as_uint(v[k]) & 0x7fffffffu);
    for (int o = 1; o < lanes; o <<= 1) m = max(m, __shfl_xor_sync(FULL_MASK, m, o));
    const BlockScale sc = block_scale(m >= 0x7f800000u ? FRUGAL_INF : __uint_as_float(m), isInt, maxLevel);
    packed_t<BITS> acc = 0;
    if (!sc.flags) acc = pack_group<BITS>(v, sc.inv, maxLevel, stochastic, seedBits, 8 * t);
    return {acc, sc};
}

// Quantizes group c·32 + lane of chunk c, whose 8 values v the lane holds, with the other lanes of its block
// (pack_block_group); the packed bits and the scale are stored. The lanes of a block are all past `groups` or none
// (chunks and blocks both align to their size), so dead lanes only meet zeros. Every lane of the warp calls it. slots:
// store_chunk's staging, its slot 32 zero.
template <int BITS>
__device__ __forceinline__ void quantize_group(unsigned char* packed, unsigned char* scales, const float* v, i64 c, i64 groups,
                                               int logLanes, int isInt, int stochastic, unsigned seedBits,
                                               int scalesAligned, unsigned* error, unsigned long long* slots) {
    const int lane = threadIdx.x & 31, lanes = 1 << logLanes;
    const i64 t = c * 32 + lane;
    const PackedGroup<BITS> q = pack_block_group<BITS>(v, t, logLanes, isInt, stochastic, seedBits);
    store_chunk<BITS>(packed, c, groups, q.bits, slots);
    if (t < groups && (lane & (lanes - 1)) == 0) store_scale(scales, t >> logLanes, isInt, scalesAligned, q.sc, error);
}

// The 8 values of the lane's group of a chunk from the words the warp loaded (load_chunk) and its block's scale s.
// Every lane of the warp calls it. staged: unpack_chunk's.
template <int BITS>
__device__ __forceinline__ void dequantize_group(float* v, const ChunkWords<BITS>& words, float s, unsigned* staged) {
    const packed_t<BITS> acc = unpack_chunk<BITS>(words, staged);
#pragma unroll
    for (int k = 0; k < 8; k++) v[k] = field_value<BITS>(acc, k, s);
}

// Group t's values (elements 8t..8t+7), zeros past n: 16-byte loads where the group is whole (x is aligned).
template <typename T>
__device__ __forceinline__ void load_group8(float* v, const T* x, i64 t, i64 n) {
    const i64 j0 = 8 * t;
    if (j0 + 8 <= n) {
#pragma unroll
        for (int k = 0; k < 8; k += Pack<T>::N) Pack<T>::load(v + k, x, j0 + k);
    } else {
#pragma unroll
        for (int k = 0; k < 8; k++) v[k] = j0 + k < n ? ld(x, j0 + k) : 0.f;
    }
}

// The grid-stride loop of the fast quantizing kernels (FAST_THREADS a block; groups: those of all blocks, the last
// block's padding included, which packs as zeros): each lane's group of 8 values of x, at element j0 < n, handed to
// use(j0, v) and then quantized. A warp loads FAST_CHUNKS chunks before quantizing the first, so that enough loads are
// in flight.
template <int BITS, typename T, typename Use>
__device__ __forceinline__ void for_each_quantized_group(unsigned char* packed, unsigned char* scales, const T* x, i64 n, i64 groups,
                                                         int logLanes, int isInt, int stochastic, unsigned seedBits,
                                                         int scalesAligned, unsigned* error, Use use) {
    __shared__ unsigned long long stage[FAST_THREADS / 32][33];
    const int lane = threadIdx.x & 31;
    unsigned long long* slots = stage[threadIdx.x >> 5];
    if (lane == 0) slots[32] = 0;
    const i64 chunks = (groups + 31) >> 5;
    const i64 warp = ((i64) blockIdx.x * blockDim.x + threadIdx.x) >> 5, warps = ((i64) gridDim.x * blockDim.x) >> 5;
    for (i64 c0 = warp * FAST_CHUNKS; c0 < chunks; c0 += warps * FAST_CHUNKS) {
        float v[FAST_CHUNKS][8];
#pragma unroll
        for (int u = 0; u < FAST_CHUNKS; u++) load_group8(v[u], x, (c0 + u) * 32 + lane, n);
#pragma unroll
        for (int u = 0; u < FAST_CHUNKS; u++) {
            const i64 j0 = 8 * ((c0 + u) * 32 + lane);
            if (j0 < n) use(j0, v[u]);
            quantize_group<BITS>(packed, scales, v[u], c0 + u, groups, logLanes, isInt, stochastic, seedBits, scalesAligned,
                                 error, slots);
        }
    }
}

// The grid-stride loop of the fast dequantizing kernels (FAST_THREADS a block): each lane's group of 8 values, at
// element j0 < n (the padding of the last block skipped), dequantized and handed to use(j0, v). A warp loads
// FAST_CHUNKS chunks before unpacking the first, so that enough loads are in flight.
template <int BITS, typename Use>
__device__ __forceinline__ void for_each_dequantized_group(const unsigned char* packed, const unsigned char* scales, i64 n,
                                                           i64 groups, int logLanes, int isInt, int scalesAligned, Use use) {
    __shared__ unsigned stage[FAST_THREADS / 32][8 * 7 + 2];
    const int lane = threadIdx.x & 31;
    unsigned* staged = stage[threadIdx.x >> 5];
    if constexpr (!DIRECT_WORDS(BITS)) {
        if (lane < 2) staged[8 * BITS + lane] = 0;
    }
    const i64 chunks = (groups + 31) >> 5;
    const i64 warp = ((i64) blockIdx.x * blockDim.x + threadIdx.x) >> 5, warps = ((i64) gridDim.x * blockDim.x) >> 5;
    for (i64 c0 = warp * FAST_CHUNKS; c0 < chunks; c0 += warps * FAST_CHUNKS) {
        ChunkWords<BITS> words[FAST_CHUNKS];
        float s[FAST_CHUNKS];
#pragma unroll
        for (int u = 0; u < FAST_CHUNKS; u++) {
            const i64 t = (c0 + u) * 32 + lane;
            words[u] = load_chunk<BITS>(packed, c0 + u, groups);
            s[u] = t < groups ? stored_scale(scales, t >> logLanes, isInt, scalesAligned) : 0.f;
        }
#pragma unroll
        for (int u = 0; u < FAST_CHUNKS; u++) {
            float v[8];
            dequantize_group<BITS>(v, words[u], s[u], staged);
            const i64 j0 = 8 * ((c0 + u) * 32 + lane);
            if (j0 < n) use(j0, v);
        }
    }
}
