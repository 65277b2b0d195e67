// matmul.cu: GEMV for decode (a few activation rows against a bf16 weight): y = x Wᵀ.
//
// Reference twin: `mixtral_kernels::matmul::reference::matmul` (x [rows, k], W [n, k] in the
//   checkpoint's [out, in] layout, y [rows, n]); here x is bf16, as the normed activations are.
//
// Entry points
//   matmul_gemv_bf16  x bf16 [R, K], W bf16 [N, K] -> y f32 [R, N], R ≤ GEMV_MAX_ROWS (8).
//                     Used for every decode projection (q, k, v, o, router gate) and lm_head.
//   matmul_gemv_q80, _q40, _q4k, _q5k, _q6k
//                     the same with W in the GGUF file's blocks (quant.cuh), decoded in
//                     registers and multiplied in f32 (the "dequantize, then FMA" choice, not
//                     dp4a on quantized activations: the activations stay exactly the bf16 the
//                     other paths see, and the weight bytes, not the ALU, bound a GEMV).
// Work split: 256 threads = 8 warps per block, GEMV_ROWS_PER_WARP (2) output columns n per
//   warp (grid.x = ceil(N / 16)). Each lane streams 16-byte chunks (8 bf16) of the warp's W rows
//   with non-allocating loads, so a warp reads 512 contiguous bytes per row per step, and
//   multiplies them by the matching chunks of all R rows of x (x is small and stays in L1/L2).
//   Per-lane partial sums are reduced with warp shuffles; lane 0 writes.
// Bytes moved per call: N·K·2 (each weight read once) + R·K·2 per warp from cache + R·N·4.
//   The kernel is bandwidth-bound: lm_head (32000 × 4096) reads 262 MB.
// Accumulation: f32, per lane in index order over its chunks, then a shuffle tree: not the
//   reference's left-to-right sum (expect ~√K ulp-level differences).
// Shape limits: K % 8 == 0, rows of x and W 16-byte aligned, 1 ≤ R ≤ 8; for blocks, K % QK == 0
//   (32 or 256) and W holds N · K / QK blocks (no alignment: blocks are read bytewise).
// Quantized work split: the same warps and columns; lane c decodes the 8 values c·8 .. c·8 + 8
//   of each of its rows (a warp covers 256 consecutive values per step: one K-quant block, or
//   eight Q8_0 / Q4_0 blocks), so a warp's step reads one contiguous run of blocks from memory.
//   Within it, lanes re-read shared bytes (a K-quant's scales; Q4_K's low and high nibbles are
//   the same bytes) through L1, with about ten byte loads per 8 values: if a GPU run shows the
//   issue rate, not DRAM, bounding it, wider loads per lane are the next step.

#define GEMV_THREADS 256
#define GEMV_ROWS_PER_WARP 2
#define GEMV_MAX_ROWS 8

extern "C" __global__ void __launch_bounds__(GEMV_THREADS)
matmul_gemv_bf16(const bf16_t* __restrict__ x, const bf16_t* __restrict__ w,
                 float* __restrict__ y, int rows, int n, int k) {
    const int lane = threadIdx.x % WARP;
    const int n0 = (blockIdx.x * (GEMV_THREADS / WARP) + threadIdx.x / WARP) * GEMV_ROWS_PER_WARP;
    if (n0 >= n) return;  // warp-uniform

    float acc[GEMV_MAX_ROWS][GEMV_ROWS_PER_WARP];
#pragma unroll
    for (int r = 0; r < GEMV_MAX_ROWS; ++r)
#pragma unroll
        for (int j = 0; j < GEMV_ROWS_PER_WARP; ++j) acc[r][j] = 0.0f;

    const uint4* wrow[GEMV_ROWS_PER_WARP];
#pragma unroll
    for (int j = 0; j < GEMV_ROWS_PER_WARP; ++j) {
        const int col = min(n0 + j, n - 1);  // a missing last column re-reads a valid row
        wrow[j] = (const uint4*)(w + (size_t)col * k);
    }
    const int chunks = k / 8;
    for (int c = lane; c < chunks; c += WARP) {
        uint4 wv[GEMV_ROWS_PER_WARP];
#pragma unroll
        for (int j = 0; j < GEMV_ROWS_PER_WARP; ++j) wv[j] = ld_stream_u4(wrow[j] + c);
#pragma unroll
        for (int r = 0; r < GEMV_MAX_ROWS; ++r) {
            if (r >= rows) break;
            const uint4 xv = ((const uint4*)(x + (size_t)r * k))[c];
#pragma unroll
            for (int j = 0; j < GEMV_ROWS_PER_WARP; ++j) acc[r][j] = dot_bf16x8(xv, wv[j], acc[r][j]);
        }
    }
#pragma unroll
    for (int r = 0; r < GEMV_MAX_ROWS; ++r) {
        if (r >= rows) break;
#pragma unroll
        for (int j = 0; j < GEMV_ROWS_PER_WARP; ++j) {
            const float s = warp_sum(acc[r][j]);
            if (lane == 0 && n0 + j < n) y[(size_t)r * n + n0 + j] = s;
        }
    }
}

// One warp's GEMV_ROWS_PER_WARP columns over W in blocks of type B.
template <class B>
__device__ __forceinline__ void gemv_blocks(const bf16_t* __restrict__ x,
                                            const qbyte_t* __restrict__ w, float* __restrict__ y,
                                            int rows, int n, int k) {
    const int lane = threadIdx.x % WARP;
    const int n0 = (blockIdx.x * (GEMV_THREADS / WARP) + threadIdx.x / WARP) * GEMV_ROWS_PER_WARP;
    if (n0 >= n) return;  // warp-uniform
    const size_t row_bytes = (size_t)(k / B::QK) * B::BYTES;

    float acc[GEMV_MAX_ROWS][GEMV_ROWS_PER_WARP];
#pragma unroll
    for (int r = 0; r < GEMV_MAX_ROWS; ++r)
#pragma unroll
        for (int j = 0; j < GEMV_ROWS_PER_WARP; ++j) acc[r][j] = 0.0f;

    const qbyte_t* wrow[GEMV_ROWS_PER_WARP];
#pragma unroll
    for (int j = 0; j < GEMV_ROWS_PER_WARP; ++j) wrow[j] = w + (size_t)min(n0 + j, n - 1) * row_bytes;
    const int chunks = k / 8;
    for (int c = lane; c < chunks; c += WARP) {
        float wv[GEMV_ROWS_PER_WARP][8];
#pragma unroll
        for (int j = 0; j < GEMV_ROWS_PER_WARP; ++j) B::deq8(wrow[j], c * 8, wv[j]);
#pragma unroll
        for (int r = 0; r < GEMV_MAX_ROWS; ++r) {
            if (r >= rows) break;
            float xs[8];
            unpack_bf16x8(((const uint4*)(x + (size_t)r * k))[c], xs);
#pragma unroll
            for (int j = 0; j < GEMV_ROWS_PER_WARP; ++j)
#pragma unroll
                for (int i = 0; i < 8; ++i) acc[r][j] = fmaf(xs[i], wv[j][i], acc[r][j]);
        }
    }
#pragma unroll
    for (int r = 0; r < GEMV_MAX_ROWS; ++r) {
        if (r >= rows) break;
#pragma unroll
        for (int j = 0; j < GEMV_ROWS_PER_WARP; ++j) {
            const float s = warp_sum(acc[r][j]);
            if (lane == 0 && n0 + j < n) y[(size_t)r * n + n0 + j] = s;
        }
    }
}

// One entry point per block type, written out: `source::entry_points` reads literal names.

extern "C" __global__ void __launch_bounds__(GEMV_THREADS)
matmul_gemv_q80(const bf16_t* __restrict__ x, const qbyte_t* __restrict__ w,
                float* __restrict__ y, int rows, int n, int k) {
    gemv_blocks<BlockQ8_0>(x, w, y, rows, n, k);
}

extern "C" __global__ void __launch_bounds__(GEMV_THREADS)
matmul_gemv_q40(const bf16_t* __restrict__ x, const qbyte_t* __restrict__ w,
                float* __restrict__ y, int rows, int n, int k) {
    gemv_blocks<BlockQ4_0>(x, w, y, rows, n, k);
}

extern "C" __global__ void __launch_bounds__(GEMV_THREADS)
matmul_gemv_q4k(const bf16_t* __restrict__ x, const qbyte_t* __restrict__ w,
                float* __restrict__ y, int rows, int n, int k) {
    gemv_blocks<BlockQ4_K>(x, w, y, rows, n, k);
}

extern "C" __global__ void __launch_bounds__(GEMV_THREADS)
matmul_gemv_q5k(const bf16_t* __restrict__ x, const qbyte_t* __restrict__ w,
                float* __restrict__ y, int rows, int n, int k) {
    gemv_blocks<BlockQ5_K>(x, w, y, rows, n, k);
}

extern "C" __global__ void __launch_bounds__(GEMV_THREADS)
matmul_gemv_q6k(const bf16_t* __restrict__ x, const qbyte_t* __restrict__ w,
                float* __restrict__ y, int rows, int n, int k) {
    gemv_blocks<BlockQ6_K>(x, w, y, rows, n, k);
}
