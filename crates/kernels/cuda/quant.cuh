// quant.cuh: GGUF weight blocks decoded on the device, eight values at a time.
//
// Prepended to every source after common.cuh (never `#include`d), like it. It is also compiled
// on the host by `crates/kernels/tests/cuda_quant_host.rs`, which checks every type's `deq8`
// bit for bit against `mixtral_kernels::dequant::reference` (the ggml transcription): so this
// file uses nothing of common.cuh but `f16_to_f32`, and marks its functions `QDEV`.
//
// A block type is a struct with `QK` (values per block), `BYTES` (bytes per block) and
// `deq8(row, k0, v)`: the eight values `k0 .. k0 + 8` of the row whose blocks start at `row`
// (k0 % 8 == 0), in f32, computed in ggml's order (`(d·sc)·q - dmin·m` for the K-quants, with
// no FMA contraction, so the values equal the reference's bit for bit on the device too). The
// weights stay in the file's row-major block layout on the device: row r of a [N, K] matrix is
// K / QK blocks at r · (K / QK) · BYTES. Blocks are not aligned (34, 18, 176 or 210 bytes), so
// every read here is a byte read; they hit the same cache lines and coalesce within a warp.
//
// Types: Q8_0, Q4_0 (QK = 32), Q4_K, Q5_K, Q6_K (QK = 256): every type of llama.cpp's Q8_0,
// Q6_K, Q5_K_M, Q4_K_M and Q4_0 files. Other GGUF types are decoded to bf16 at upload.

#ifndef QDEV
#define QDEV __device__ __forceinline__
// A product never fused into a following add: `d·q - m` rounds as the reference's does. With
// these types every product is exact in f32 anyway (an 11-bit f16 mantissa times scales and
// quants of at most 8 and 6 bits), so fused or not the difference rounds once; QMUL keeps
// that true if a type with wider factors joins.
#define QMUL(a, b) __fmul_rn(a, b)
#endif

typedef unsigned char qbyte_t;

QDEV float qf16(const qbyte_t* p) { return f16_to_f32((unsigned short)(p[0] | (p[1] << 8))); }

// Scale and min j (of 8) of a Q4_K/Q5_K block's 12 packed bytes (ggml's get_scale_min_k4).
QDEV void q_scale_min_k4(int j, const qbyte_t* q, int& sc, int& m) {
    if (j < 4) {
        sc = q[j] & 63;
        m = q[j + 4] & 63;
    } else {
        sc = (q[j + 4] & 0x0F) | ((q[j - 4] >> 6) << 4);
        m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
    }
}

// d f16 @0, qs i8[32] @2.
struct BlockQ8_0 {
    static constexpr int QK = 32;
    static constexpr int BYTES = 34;
    static QDEV void deq8(const qbyte_t* row, int k0, float* v) {
        const qbyte_t* b = row + (size_t)(k0 / QK) * BYTES;
        const float d = qf16(b);
        const qbyte_t* q = b + 2 + k0 % QK;
#pragma unroll
        for (int i = 0; i < 8; ++i) v[i] = (float)(signed char)q[i] * d;
    }
};

// d @0, qs[16] @2: low nibbles are values 0..16, high nibbles 16..32.
struct BlockQ4_0 {
    static constexpr int QK = 32;
    static constexpr int BYTES = 18;
    static QDEV void deq8(const qbyte_t* row, int k0, float* v) {
        const qbyte_t* b = row + (size_t)(k0 / QK) * BYTES;
        const float d = qf16(b);
        const int i = k0 % QK, shift = i >= 16 ? 4 : 0;
        const qbyte_t* q = b + 2 + i % 16;
#pragma unroll
        for (int j = 0; j < 8; ++j) v[j] = (float)(((q[j] >> shift) & 0x0F) - 8) * d;
    }
};

// Q4_K and Q5_K (FIFTH): d @0, dmin @2, scales[12] @4, for Q5_K qh[32] @16, then qs[128]
// (@16 or @48). Values 64c .. 64c + 32 are the low nibbles of qs[32c ..] with scale/min 2c,
// 64c + 32 .. 64c + 64 the high nibbles with 2c + 1; Q5_K's bit 2c (low) or 2c + 1 (high) of
// qh[l] adds 16.
template <bool FIFTH>
struct BlockQ45K {
    static constexpr int QK = 256;
    static constexpr int BYTES = FIFTH ? 176 : 144;
    static QDEV void deq8(const qbyte_t* row, int k0, float* v) {
        const qbyte_t* b = row + (size_t)(k0 / QK) * BYTES;
        const int i = k0 % QK, c = i / 64, hi = (i % 64) >= 32, l = i % 32;
        int sc, m;
        q_scale_min_k4(2 * c + hi, b + 4, sc, m);
        const float d = qf16(b) * (float)sc, dm = qf16(b + 2) * (float)m;
        const qbyte_t* q = b + (FIFTH ? 48 : 16) + 32 * c + l;
        const int shift = hi ? 4 : 0;
#pragma unroll
        for (int j = 0; j < 8; ++j) {
            int x = (q[j] >> shift) & 0x0F;
            if (FIFTH) x += (b[16 + l + j] >> (2 * c + hi)) & 1 ? 16 : 0;
            v[j] = QMUL(d, (float)x) - dm;
        }
    }
};
typedef BlockQ45K<false> BlockQ4_K;
typedef BlockQ45K<true> BlockQ5_K;

// ql[128] @0, qh[64] @128, scales i8[16] @192, d @208. Half h (128 values) uses ql[64h ..],
// qh[32h ..] and scales[8h ..]; its quarter s (32 values, l = 0..32) takes the low (s < 2)
// or high (s ≥ 2) nibble of ql[l + 32·(s & 1)], bits 2s..2s+2 of qh[l], and scale
// 8h + l / 16 + 2s; the 6-bit value is offset by -32.
struct BlockQ6_K {
    static constexpr int QK = 256;
    static constexpr int BYTES = 210;
    static QDEV void deq8(const qbyte_t* row, int k0, float* v) {
        const qbyte_t* b = row + (size_t)(k0 / QK) * BYTES;
        const int i = k0 % QK, h = i / 128, s = (i % 128) / 32, l = i % 32;
        const qbyte_t* ql = b + 64 * h + l + 32 * (s & 1);
        const qbyte_t* qh = b + 128 + 32 * h + l;
        const float d = qf16(b + 208) * (float)(signed char)b[192 + 8 * h + l / 16 + 2 * s];
        const int lo_shift = (s >> 1) ? 4 : 0;  // quarters 2 and 3 take the high nibble
#pragma unroll
        for (int j = 0; j < 8; ++j) {
            const int x = ((ql[j] >> lo_shift) & 0x0F) | (((qh[j] >> (2 * s)) & 3) << 4);
            v[j] = d * (float)(x - 32);
        }
    }
};
