// common.cuh: helpers shared by every kernel file.
//
// This text is prepended to each .cu source before NVRTC compiles it (see
// `mixtral_kernels::cuda::source::nvrtc_source`); it is never `#include`d, so NVRTC needs no
// include path at run time. In particular there is no <cuda_bf16.h>: a bf16 is the upper 16
// bits of an IEEE f32, carried here as `bf16_t` (an unsigned short), and two bf16 values pack
// into one 32-bit register the way `mma.sync` wants them (lower address in the low half).
//
// Contents: bf16 <-> f32 and f16 <-> f32 conversion (round to nearest even, NaN kept quiet),
// the KV cache element types (bf16, f16, f32) the attention kernels are templated on, warp and
// block
// reductions in f32, 16-byte loads and cp.async copies, and the m16n8k16 bf16 tensor-core MMA.
// Everything here is `__device__ __forceinline__` (unused helpers cost nothing); nothing is an
// entry point.

typedef unsigned short bf16_t;

#define WARP 32
#define FULL_MASK 0xffffffffu
#ifndef INFINITY  // NVRTC has no <math.h> macros
#define INFINITY __int_as_float(0x7f800000)
#endif

// ---- bf16 ----------------------------------------------------------------------------------

__device__ __forceinline__ float bf16_to_f32(bf16_t v) {
    return __uint_as_float(((unsigned)v) << 16);
}

// Round to nearest even, as `half::bf16::from_f32` does; NaN stays NaN (quiet bit set).
__device__ __forceinline__ bf16_t f32_to_bf16(float f) {
    unsigned u = __float_as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (bf16_t)((u >> 16) | 0x40u);
    return (bf16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

// The two bf16 halves of a 32-bit word: `lo` is the element at the lower address.
__device__ __forceinline__ float bf16x2_lo(unsigned w) { return __uint_as_float(w << 16); }
__device__ __forceinline__ float bf16x2_hi(unsigned w) { return __uint_as_float(w & 0xffff0000u); }

__device__ __forceinline__ unsigned pack_bf16x2(float lo, float hi) {
    return (unsigned)f32_to_bf16(lo) | ((unsigned)f32_to_bf16(hi) << 16);
}

// The eight bf16 of a uint4 (16 bytes), widened to f32 in address order.
__device__ __forceinline__ void unpack_bf16x8(uint4 u, float* v) {
    v[0] = bf16x2_lo(u.x), v[1] = bf16x2_hi(u.x), v[2] = bf16x2_lo(u.y), v[3] = bf16x2_hi(u.y);
    v[4] = bf16x2_lo(u.z), v[5] = bf16x2_hi(u.z), v[6] = bf16x2_lo(u.w), v[7] = bf16x2_hi(u.w);
}

// Dot product of eight bf16 pairs held in two uint4 words, accumulated in f32 in index order.
__device__ __forceinline__ float dot_bf16x8(uint4 a, uint4 b, float acc) {
    acc = fmaf(bf16x2_lo(a.x), bf16x2_lo(b.x), acc);
    acc = fmaf(bf16x2_hi(a.x), bf16x2_hi(b.x), acc);
    acc = fmaf(bf16x2_lo(a.y), bf16x2_lo(b.y), acc);
    acc = fmaf(bf16x2_hi(a.y), bf16x2_hi(b.y), acc);
    acc = fmaf(bf16x2_lo(a.z), bf16x2_lo(b.z), acc);
    acc = fmaf(bf16x2_hi(a.z), bf16x2_hi(b.z), acc);
    acc = fmaf(bf16x2_lo(a.w), bf16x2_lo(b.w), acc);
    acc = fmaf(bf16x2_hi(a.w), bf16x2_hi(b.w), acc);
    return acc;
}

// ---- f16 ----------------------------------------------------------------------------------

// IEEE half <-> f32 through PTX's own conversions (round to nearest even), since NVRTC ships
// no <cuda_fp16.h>. A half is carried as its bits in an unsigned short, as a bf16 is.
__device__ __forceinline__ float f16_to_f32(unsigned short h) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
    return f;
}

__device__ __forceinline__ unsigned short f32_to_f16(float f) {
    unsigned short h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f));
    return h;
}

// ---- KV cache element types ---------------------------------------------------------------

// What the attention and RoPE-append kernels need of a KV cache's element type: load two
// consecutive elements (at an even index, so the load is aligned) as f32, and round an f32
// into one. The kernels are templates over these; each entry point names its type.
struct KvBf16 {
    typedef unsigned short elem;
    static __device__ __forceinline__ void load2(const elem* p, float& a, float& b) {
        const unsigned w = *(const unsigned*)p;
        a = bf16x2_lo(w);
        b = bf16x2_hi(w);
    }
    static __device__ __forceinline__ elem store(float x) { return f32_to_bf16(x); }
};

struct KvF16 {
    typedef unsigned short elem;
    static __device__ __forceinline__ void load2(const elem* p, float& a, float& b) {
        const unsigned w = *(const unsigned*)p;
        a = f16_to_f32((unsigned short)(w & 0xffffu));
        b = f16_to_f32((unsigned short)(w >> 16));
    }
    static __device__ __forceinline__ elem store(float x) { return f32_to_f16(x); }
};

struct KvF32 {
    typedef float elem;
    static __device__ __forceinline__ void load2(const elem* p, float& a, float& b) {
        const float2 v = *(const float2*)p;
        a = v.x;
        b = v.y;
    }
    static __device__ __forceinline__ elem store(float x) { return x; }
};

// ---- reductions (f32) ----------------------------------------------------------------------

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int o = WARP / 2; o > 0; o >>= 1) v += __shfl_xor_sync(FULL_MASK, v, o);
    return v;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
    for (int o = WARP / 2; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(FULL_MASK, v, o));
    return v;
}

// Largest value, ties to the lower index; NaN never wins. Every lane gets the result.
__device__ __forceinline__ void warp_argmax(float& v, int& i) {
#pragma unroll
    for (int o = WARP / 2; o > 0; o >>= 1) {
        float ov = __shfl_xor_sync(FULL_MASK, v, o);
        int oi = __shfl_xor_sync(FULL_MASK, i, o);
        if (ov > v || (ov == v && oi < i) || (v != v && ov == ov)) { v = ov; i = oi; }
    }
}

// Sum over the whole block (blockDim.x a multiple of 32, at most 1024). Every thread gets it.
__device__ __forceinline__ float block_sum(float v) {
    __shared__ float partial[WARP];
    const int lane = threadIdx.x % WARP, warp = threadIdx.x / WARP;
    v = warp_sum(v);
    __syncthreads();  // `partial` may still be read by a previous call
    if (lane == 0) partial[warp] = v;
    __syncthreads();
    v = lane < (int)(blockDim.x / WARP) ? partial[lane] : 0.0f;
    return warp_sum(v);
}

// ---- memory --------------------------------------------------------------------------------

// 16-byte read of data used once (weights): bypass L1 allocation.
__device__ __forceinline__ uint4 ld_stream_u4(const void* p) {
    uint4 r;
    asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
                 : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w)
                 : "l"(p));
    return r;
}

// Asynchronous 16-byte global -> shared copy (sm_80+); `valid == false` writes zeros instead.
__device__ __forceinline__ void cp_async16(void* smem, const void* gmem, bool valid) {
    unsigned s = (unsigned)__cvta_generic_to_shared(smem);
    int n = valid ? 16 : 0;
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(s), "l"(gmem), "r"(n));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;"); }
// Wait until at most `N` committed groups are still in flight.
template <int N>
__device__ __forceinline__ void cp_async_wait() {
    asm volatile("cp.async.wait_group %0;" ::"n"(N));
}

// ---- tensor cores --------------------------------------------------------------------------

// d += a · b for one m16n8k16 tile: a is 16x16 bf16 row-major (4 regs), b is 16x8 bf16
// column-major (2 regs), c/d 16x8 f32 (4 regs). Fragment layout (g = lane / 4, t = lane % 4):
// a0 (g, 2t..2t+1) a1 (g+8, 2t..) a2 (g, 2t+8..) a3 (g+8, 2t+8..); b0 (k 2t..2t+1, n g)
// b1 (k 2t+8.., n g); d0,d1 (g, 2t..2t+1) d2,d3 (g+8, 2t..2t+1).
__device__ __forceinline__ void mma_bf16_16816(float d[4], const unsigned a[4],
                                                      const unsigned b[2]) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
        "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}
