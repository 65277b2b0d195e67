// moe.cu: the sparse MoE block on the device: group the T·K (token, expert) assignments by
// expert, run every expert's SwiGLU MLP as one grouped tensor-core GEMM pair, and sum each
// token's K outputs with its router weights.
//
// Reference twin: `mixtral_kernels::moe::reference::moe`
//   y[t] = Σ_j weights[t, j] · w2_e(silu(w1_e x[t]) ⊙ w3_e x[t]), e = ids[t, j].
//
// Entry points, launched in this order for one MoE call (A = T·K assignments, E experts):
//   moe_align_u32         ids u32 [A] -> offsets u32 [E+1] (first permuted row of each expert),
//                         tile_offsets u32 [E+1] (first M tile of each expert), slot_of u32 [A]
//                         (permuted row of assignment a), row_token u32 [A] (token of a row).
//                         One block of 1024 threads: shared-memory histogram, prefix sum by one
//                         thread (E ≤ 256), then slots from per-expert atomic cursors. The row
//                         order inside an expert is not fixed, but each GEMM row depends only on
//                         its own input row, so results are bitwise reproducible.
//   moe_gemm_swiglu_bf16  act bf16 [A, F] = silu(x[row_token] w1_eᵀ) ⊙ (x[row_token] w3_eᵀ):
//                         grouped GEMM with the row gather fused into the A-tile load, w1 and w3
//                         tiles computed together, SwiGLU in f32 in the epilogue, one bf16 round.
//   moe_gemm_down_bf16    out f32 [A, D] = act w2_eᵀ: the same grouped GEMM, plain epilogue.
//                         With E = 1, offsets = [0, T], tile_offsets = [0, ceil(T/64)] and
//                         row_map = null it is a dense bf16 GEMM (prefill projections, lm_head).
//   moe_combine_f32       y f32 [T, D] = Σ_j weights[t, j] · out[slot_of[t·K + j]], in j order.
//   moe_gemm_swiglu_<q>, moe_gemm_down_<q> for q in q80, q40, q4k, q5k, q6k
//                         the same GEMMs over weights in the GGUF file's blocks (quant.cuh):
//                         each thread decodes its 8 values of a W-tile row in registers, rounds
//                         them to bf16 and stores them into the same shared tile the bf16
//                         kernels fill with cp.async (Marlin's approach: dequantize into shared
//                         memory, then the bf16 tensor cores; not llama.cpp's MMQ int8 path, so
//                         prefill reads the same bf16 activations as every other matmul). A
//                         quantized tile load is synchronous, so only the bf16 kernels overlap
//                         it with the MMAs. The E = 1 down kernel is again the dense GEMM.
//   moe_gemv_swiglu_<q>, moe_gemv_down_<q> for q in q80, q40, q4k, q5k, q6k
//                         the same two products for few rows (decode: T·K ≤ 128 assignments),
//                         as GEMVs: block y takes one expert's next ≤ 8 rows (found by scanning
//                         `offsets`, so no host sync), each warp 2 output columns, each lane
//                         decoding 8 values of a weight row per step in registers (quant.cuh)
//                         and multiplying them into all the chunk's rows in f32. An expert's
//                         weights are read once per 8 of its rows, in order, with no tile
//                         padding: what a bandwidth-bound step needs. Same outputs as the GEMMs
//                         (act bf16 [A, F] in slot order, out f32 [A, D]), then moe_combine_f32.
// GEMV work split: grid (ceil(N/16), ceil(A/8) + E), 256 threads; blocks past the last chunk
//   exit. Accumulation in f32 per lane, then a shuffle tree; exact weights (no bf16 rounding).
// GEMM work split: grid (ceil(A/64) + E, ceil(N/64)); block x finds its expert by scanning
//   tile_offsets and exits if it is past the last tile, so an expert with no tokens costs
//   nothing and no host sync is needed. A block computes a 64-row × 64-column tile (per weight
//   matrix) with 4 warps in a 2×2 layout, each warp 32×32 as 2×4 mma.sync m16n8k16 tiles (bf16
//   in, f32 accumulate); K is walked in steps of 32 through a 2-stage cp.async double buffer.
// Bytes moved per call (T tokens, D = 4096, F = 14336, E_hit experts hit): weights 3·E_hit·F·D·2
//   once per 64-row tile of each expert; activations A·(D·2 + F·2 + F·2 + D·4) + T·D·4.
// Accumulation: f32 everywhere (MMA accumulators, SwiGLU, combine); the SwiGLU product is
//   rounded to bf16 once (the reference keeps it in f32: expect bf16-level differences).
// Shape limits: K dims (D for the first GEMM, F for the second) % 32 == 0 (for blocks, % QK);
//   N % 2 == 0; rows 16-byte aligned; E ≤ 256; A < 2^31. Rows of a tile past the expert's end
//   read zeros. Stacked experts: expert e's [N, K] matrix starts e·N rows into its buffer.

#define GEMM_BM 64
#define GEMM_BN 64
#define GEMM_BK 32
#define GEMM_LD (GEMM_BK + 8)  // padded row: 80 bytes, conflict-free fragment reads
#define GEMM_THREADS 128
#define MOE_MAX_EXPERTS 256

extern "C" __global__ void __launch_bounds__(1024)
moe_align_u32(const unsigned* __restrict__ ids, int n_assign, int top_k, int n_experts,
              unsigned* __restrict__ offsets, unsigned* __restrict__ tile_offsets,
              unsigned* __restrict__ slot_of, unsigned* __restrict__ row_token) {
    __shared__ unsigned count[MOE_MAX_EXPERTS];
    for (int e = threadIdx.x; e < n_experts; e += blockDim.x) count[e] = 0;
    __syncthreads();
    for (int a = threadIdx.x; a < n_assign; a += blockDim.x) atomicAdd(&count[ids[a]], 1u);
    __syncthreads();
    if (threadIdx.x == 0) {
        unsigned rows = 0, tiles = 0;
        for (int e = 0; e < n_experts; ++e) {
            const unsigned c = count[e];
            offsets[e] = rows;
            tile_offsets[e] = tiles;
            count[e] = rows;  // becomes expert e's cursor
            rows += c;
            tiles += (c + GEMM_BM - 1) / GEMM_BM;
        }
        offsets[n_experts] = rows;
        tile_offsets[n_experts] = tiles;
    }
    __syncthreads();
    for (int a = threadIdx.x; a < n_assign; a += blockDim.x) {
        const unsigned slot = atomicAdd(&count[ids[a]], 1u);
        slot_of[a] = slot;
        row_token[slot] = (unsigned)(a / top_k);
    }
}

// Where the W tiles come from. `matrix` finds expert e's [n, k] matrix in a stacked buffer,
// `row` a row of it, and `load` puts 8 values of a row (from k0) into shared memory as bf16,
// or zeros when the row is past the matrix (`ok` false).
struct WBf16 {
    static __device__ __forceinline__ const void* matrix(const void* w, int e, int n, int k) {
        return (const bf16_t*)w + (size_t)e * n * k;
    }
    static __device__ __forceinline__ const void* row(const void* m, size_t r, int k) {
        return (const bf16_t*)m + r * k;
    }
    static __device__ __forceinline__ void load(bf16_t* dst, const void* row, int k0, bool ok) {
        cp_async16(dst, (const bf16_t*)row + k0, ok);
    }
};

template <class B>
struct WBlocks {
    static __device__ __forceinline__ size_t row_bytes(int k) {
        return (size_t)(k / B::QK) * B::BYTES;
    }
    static __device__ __forceinline__ const void* matrix(const void* w, int e, int n, int k) {
        return (const qbyte_t*)w + (size_t)e * n * row_bytes(k);
    }
    static __device__ __forceinline__ const void* row(const void* m, size_t r, int k) {
        return (const qbyte_t*)m + r * row_bytes(k);
    }
    static __device__ __forceinline__ void load(bf16_t* dst, const void* row, int k0, bool ok) {
        uint4 packed = make_uint4(0u, 0u, 0u, 0u);
        if (ok) {
            float v[8];
            B::deq8((const qbyte_t*)row, k0, v);
            packed = make_uint4(pack_bf16x2(v[0], v[1]), pack_bf16x2(v[2], v[3]),
                                pack_bf16x2(v[4], v[5]), pack_bf16x2(v[6], v[7]));
        }
        *(uint4*)dst = packed;
    }
    static __device__ __forceinline__ void vals8(const void* row, int k0, float* v) {
        B::deq8((const qbyte_t*)row, k0, v);
    }
};

// One block's tile of the grouped GEMM: out rows [row0, row_end) of expert e, columns
// [col0, col0 + 64), for NW weight matrices sharing the A tile (2: w1 and w3, 1: w2).
template <int NW>
struct GemmTile {
    float acc[NW][2][4][4];  // [matrix][m16 tile][n8 tile][fragment]
};

template <int NW, class WL>
__device__ __forceinline__ void grouped_gemm_tile(
    const bf16_t* __restrict__ a, const unsigned* __restrict__ row_map,
    const void* __restrict__ w0, const void* __restrict__ w1, int row0, int row_end,
    int col0, int n, int k, GemmTile<NW>& t) {
    __shared__ __align__(16) bf16_t as[2][GEMM_BM][GEMM_LD];
    __shared__ __align__(16) bf16_t ws[2][NW][GEMM_BN][GEMM_LD];
    const int tid = threadIdx.x, lane = tid % WARP, warp = tid / WARP;
    const int wm = (warp / 2) * 32, wn = (warp % 2) * 32, g = lane / 4, q = lane % 4;

    // Each thread copies 2 chunks of 16 bytes of the A tile and of each W tile per stage:
    // chunk c -> row c / 4, columns (c % 4) · 8 .. + 8.
    const bf16_t* a_src[2];
    const void* w_row[NW][2];
    bool a_ok[2], w_ok[2];
#pragma unroll
    for (int i = 0; i < 2; ++i) {
        const int c = tid + i * GEMM_THREADS, r = c / 4, kc = (c % 4) * 8;
        const int row = row0 + r;
        a_ok[i] = row < row_end;
        const size_t src_row = a_ok[i] ? (row_map ? row_map[row] : (unsigned)row) : 0;
        a_src[i] = a + src_row * k + kc;
        w_ok[i] = col0 + r < n;
        const size_t wrow = w_ok[i] ? (size_t)(col0 + r) : 0;
        w_row[0][i] = WL::row(w0, wrow, k);
        if (NW == 2) w_row[NW - 1][i] = WL::row(w1, wrow, k);
    }
    auto load_stage = [&](int stage, int k0) {
#pragma unroll
        for (int i = 0; i < 2; ++i) {
            const int c = tid + i * GEMM_THREADS, r = c / 4, kc = (c % 4) * 8;
            cp_async16(&as[stage][r][kc], a_src[i] + k0, a_ok[i]);
#pragma unroll
            for (int m = 0; m < NW; ++m) WL::load(&ws[stage][m][r][kc], w_row[m][i], k0 + kc, w_ok[i]);
        }
        cp_async_commit();
    };

#pragma unroll
    for (int m = 0; m < NW; ++m)
#pragma unroll
        for (int i = 0; i < 2; ++i)
#pragma unroll
            for (int j = 0; j < 4; ++j)
#pragma unroll
                for (int f = 0; f < 4; ++f) t.acc[m][i][j][f] = 0.0f;

    const int steps = k / GEMM_BK;
    load_stage(0, 0);
    for (int s = 0; s < steps; ++s) {
        const int cur = s & 1;
        if (s + 1 < steps) {
            load_stage(cur ^ 1, (s + 1) * GEMM_BK);
            cp_async_wait<1>();
        } else {
            cp_async_wait<0>();
        }
        __syncthreads();
#pragma unroll
        for (int kk = 0; kk < GEMM_BK; kk += 16) {
            unsigned af[2][4];
#pragma unroll
            for (int i = 0; i < 2; ++i) {
                const bf16_t* base = &as[cur][wm + i * 16 + g][kk + 2 * q];
                af[i][0] = *(const unsigned*)base;
                af[i][1] = *(const unsigned*)(base + 8 * GEMM_LD);
                af[i][2] = *(const unsigned*)(base + 8);
                af[i][3] = *(const unsigned*)(base + 8 * GEMM_LD + 8);
            }
#pragma unroll
            for (int m = 0; m < NW; ++m)
#pragma unroll
                for (int j = 0; j < 4; ++j) {
                    const bf16_t* base = &ws[cur][m][wn + j * 8 + g][kk + 2 * q];
                    const unsigned bf[2] = {*(const unsigned*)base, *(const unsigned*)(base + 8)};
#pragma unroll
                    for (int i = 0; i < 2; ++i) mma_bf16_16816(t.acc[m][i][j], af[i], bf);
                }
        }
        __syncthreads();  // the next iteration's copy overwrites this stage
    }
}

// Finds this block's expert and rows; false when the block has no tile (past the last one).
__device__ __forceinline__ bool tile_rows(const unsigned* __restrict__ offsets,
                                          const unsigned* __restrict__ tile_offsets,
                                          int n_experts, int& e, int& row0, int& row_end) {
    const unsigned tile = blockIdx.x;
    if (tile >= tile_offsets[n_experts]) return false;
    e = 0;
    while (tile >= tile_offsets[e + 1]) ++e;  // empty experts have equal bounds: skipped
    row0 = offsets[e] + (tile - tile_offsets[e]) * GEMM_BM;
    row_end = offsets[e + 1];
    return true;
}

template <class WL>
__device__ __forceinline__ void gemm_swiglu(const bf16_t* __restrict__ x,
                                            const unsigned* __restrict__ row_token,
                                            const void* __restrict__ w1,
                                            const void* __restrict__ w3,
                                            const unsigned* __restrict__ offsets,
                                            const unsigned* __restrict__ tile_offsets,
                                            int n_experts, int ffn, int hidden,
                                            bf16_t* __restrict__ act) {
    int e, row0, row_end;
    if (!tile_rows(offsets, tile_offsets, n_experts, e, row0, row_end)) return;
    const int col0 = blockIdx.y * GEMM_BN;
    GemmTile<2> t;
    grouped_gemm_tile<2, WL>(x, row_token, WL::matrix(w1, e, ffn, hidden),
                             WL::matrix(w3, e, ffn, hidden), row0, row_end, col0, ffn, hidden,
                             t);
    const int lane = threadIdx.x % WARP, warp = threadIdx.x / WARP;
    const int wm = (warp / 2) * 32, wn = (warp % 2) * 32, g = lane / 4, q = lane % 4;
#pragma unroll
    for (int i = 0; i < 2; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j)
#pragma unroll
            for (int h = 0; h < 2; ++h) {  // h = 0: row g, h = 1: row g + 8
                const int row = row0 + wm + i * 16 + g + 8 * h;
                const int col = col0 + wn + j * 8 + 2 * q;
                if (row >= row_end || col >= ffn) continue;
                float v[2];
#pragma unroll
                for (int c = 0; c < 2; ++c) {
                    const float gate = t.acc[0][i][j][2 * h + c], up = t.acc[1][i][j][2 * h + c];
                    v[c] = gate / (1.0f + expf(-gate)) * up;
                }
                *(unsigned*)(act + (size_t)row * ffn + col) = pack_bf16x2(v[0], v[1]);
            }
}

template <class WL>
__device__ __forceinline__ void gemm_down(const bf16_t* __restrict__ act,
                                          const unsigned* __restrict__ row_map,
                                          const void* __restrict__ w2,
                                          const unsigned* __restrict__ offsets,
                                          const unsigned* __restrict__ tile_offsets,
                                          int n_experts, int hidden, int ffn,
                                          float* __restrict__ out) {
    int e, row0, row_end;
    if (!tile_rows(offsets, tile_offsets, n_experts, e, row0, row_end)) return;
    const int col0 = blockIdx.y * GEMM_BN;
    GemmTile<1> t;
    grouped_gemm_tile<1, WL>(act, row_map, WL::matrix(w2, e, hidden, ffn), nullptr, row0,
                             row_end, col0, hidden, ffn, t);
    const int lane = threadIdx.x % WARP, warp = threadIdx.x / WARP;
    const int wm = (warp / 2) * 32, wn = (warp % 2) * 32, g = lane / 4, q = lane % 4;
#pragma unroll
    for (int i = 0; i < 2; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j)
#pragma unroll
            for (int h = 0; h < 2; ++h) {
                const int row = row0 + wm + i * 16 + g + 8 * h;
                const int col = col0 + wn + j * 8 + 2 * q;
                if (row >= row_end || col >= hidden) continue;
                *(float2*)(out + (size_t)row * hidden + col) =
                    make_float2(t.acc[0][i][j][2 * h], t.acc[0][i][j][2 * h + 1]);
            }
}

// ---- the MoE as GEMVs, for few rows ---------------------------------------------------------

#define MGV_THREADS 256
#define MGV_COLS 2  // output columns per warp
#define MGV_ROWS 8  // rows of one expert per block

// Finds block y's chunk: expert e's rows [r0, r0 + rows), rows ≤ 8; false past the last one.
__device__ __forceinline__ bool gemv_chunk(const unsigned* __restrict__ offsets, int n_experts,
                                           int& e, int& r0, int& rows) {
    int c = blockIdx.y;
    for (e = 0; e < n_experts; ++e) {
        const int count = (int)(offsets[e + 1] - offsets[e]);
        const int chunks = (count + MGV_ROWS - 1) / MGV_ROWS;
        if (c < chunks) {
            r0 = (int)offsets[e] + c * MGV_ROWS;
            rows = min(MGV_ROWS, (int)offsets[e + 1] - r0);
            return true;
        }
        c -= chunks;
    }
    return false;
}

// One warp's sums over k for NW matrices of expert e, columns col0 .. col0 + 2, and the
// chunk's rows (input row of permuted row s: row_map[s], or s itself without a map), reduced
// across the warp: every lane ends with every total.
template <class WL, int NW>
__device__ __forceinline__ void moe_gemv_sums(const bf16_t* __restrict__ a,
                                              const unsigned* __restrict__ row_map,
                                              const void* __restrict__ w0,
                                              const void* __restrict__ w1, int e, int r0,
                                              int rows, int col0, int n, int k,
                                              float (&acc)[NW][MGV_ROWS][MGV_COLS]) {
    const int lane = threadIdx.x % WARP;
#pragma unroll
    for (int m = 0; m < NW; ++m)
#pragma unroll
        for (int r = 0; r < MGV_ROWS; ++r)
#pragma unroll
            for (int j = 0; j < MGV_COLS; ++j) acc[m][r][j] = 0.0f;
    const void* wrow[NW][MGV_COLS];
#pragma unroll
    for (int m = 0; m < NW; ++m)
#pragma unroll
        for (int j = 0; j < MGV_COLS; ++j)
            // A missing last column re-reads a valid row; its sum is never written.
            wrow[m][j] = WL::row(WL::matrix(m == 0 ? w0 : w1, e, n, k), min(col0 + j, n - 1), k);
    const bf16_t* arow[MGV_ROWS];
#pragma unroll
    for (int r = 0; r < MGV_ROWS; ++r) {
        const int s = r0 + min(r, rows - 1);
        arow[r] = a + (size_t)(row_map ? row_map[s] : (unsigned)s) * k;
    }
    for (int c = lane; c < k / 8; c += WARP) {
        float wv[NW][MGV_COLS][8];
#pragma unroll
        for (int m = 0; m < NW; ++m)
#pragma unroll
            for (int j = 0; j < MGV_COLS; ++j) WL::vals8(wrow[m][j], c * 8, wv[m][j]);
#pragma unroll
        for (int r = 0; r < MGV_ROWS; ++r) {
            if (r >= rows) break;
            float xs[8];
            unpack_bf16x8(((const uint4*)arow[r])[c], xs);
#pragma unroll
            for (int m = 0; m < NW; ++m)
#pragma unroll
                for (int j = 0; j < MGV_COLS; ++j)
#pragma unroll
                    for (int i = 0; i < 8; ++i) acc[m][r][j] = fmaf(xs[i], wv[m][j][i], acc[m][r][j]);
        }
    }
#pragma unroll
    for (int m = 0; m < NW; ++m)
#pragma unroll
        for (int r = 0; r < MGV_ROWS; ++r) {
            if (r >= rows) break;  // block-uniform: decode reduces one row, not eight
#pragma unroll
            for (int j = 0; j < MGV_COLS; ++j) acc[m][r][j] = warp_sum(acc[m][r][j]);
        }
}

template <class WL>
__device__ __forceinline__ void gemv_swiglu(const bf16_t* __restrict__ x,
                                            const unsigned* __restrict__ row_token,
                                            const void* __restrict__ w1,
                                            const void* __restrict__ w3,
                                            const unsigned* __restrict__ offsets,
                                            int n_experts, int ffn, int hidden,
                                            bf16_t* __restrict__ act) {
    const int col0 = (blockIdx.x * (MGV_THREADS / WARP) + threadIdx.x / WARP) * MGV_COLS;
    int e, r0, rows;
    if (col0 >= ffn || !gemv_chunk(offsets, n_experts, e, r0, rows)) return;  // warp-uniform
    float acc[2][MGV_ROWS][MGV_COLS];
    moe_gemv_sums<WL, 2>(x, row_token, w1, w3, e, r0, rows, col0, ffn, hidden, acc);
    if (threadIdx.x % WARP != 0) return;
#pragma unroll
    for (int r = 0; r < MGV_ROWS; ++r) {
        if (r >= rows) break;
#pragma unroll
        for (int j = 0; j < MGV_COLS; ++j) {
            if (col0 + j >= ffn) break;
            const float gate = acc[0][r][j], up = acc[1][r][j];
            act[(size_t)(r0 + r) * ffn + col0 + j] = f32_to_bf16(gate / (1.0f + expf(-gate)) * up);
        }
    }
}

template <class WL>
__device__ __forceinline__ void gemv_down(const bf16_t* __restrict__ act,
                                          const void* __restrict__ w2,
                                          const unsigned* __restrict__ offsets, int n_experts,
                                          int hidden, int ffn, float* __restrict__ out) {
    const int col0 = (blockIdx.x * (MGV_THREADS / WARP) + threadIdx.x / WARP) * MGV_COLS;
    int e, r0, rows;
    if (col0 >= hidden || !gemv_chunk(offsets, n_experts, e, r0, rows)) return;  // warp-uniform
    float acc[1][MGV_ROWS][MGV_COLS];
    moe_gemv_sums<WL, 1>(act, nullptr, w2, nullptr, e, r0, rows, col0, hidden, ffn, acc);
    if (threadIdx.x % WARP != 0) return;
#pragma unroll
    for (int r = 0; r < MGV_ROWS; ++r) {
        if (r >= rows) break;
#pragma unroll
        for (int j = 0; j < MGV_COLS; ++j) {
            if (col0 + j >= hidden) break;
            out[(size_t)(r0 + r) * hidden + col0 + j] = acc[0][r][j];
        }
    }
}

// The entry points, one per weight type, written out: `source::entry_points` reads literal
// names. Arguments as in the header: x/act bf16, row map, weights (bf16 or blocks), the
// expert tables, then the sizes and the output.
extern "C" __global__ void __launch_bounds__(GEMM_THREADS)
moe_gemm_swiglu_bf16(const bf16_t* __restrict__ x, const unsigned* __restrict__ row_token,
                     const bf16_t* __restrict__ w1, const bf16_t* __restrict__ w3,
                     const unsigned* __restrict__ offsets,
                     const unsigned* __restrict__ tile_offsets, int n_experts, int ffn,
                     int hidden, bf16_t* __restrict__ act) {
    gemm_swiglu<WBf16>(x, row_token, w1, w3, offsets, tile_offsets, n_experts, ffn, hidden, act);
}

extern "C" __global__ void __launch_bounds__(GEMM_THREADS)
moe_gemm_down_bf16(const bf16_t* __restrict__ act, const unsigned* __restrict__ row_map,
                   const bf16_t* __restrict__ w2, const unsigned* __restrict__ offsets,
                   const unsigned* __restrict__ tile_offsets, int n_experts, int hidden,
                   int ffn, float* __restrict__ out) {
    gemm_down<WBf16>(act, row_map, w2, offsets, tile_offsets, n_experts, hidden, ffn, out);
}

extern "C" __global__ void __launch_bounds__(GEMM_THREADS)
moe_gemm_swiglu_q80(const bf16_t* __restrict__ x, const unsigned* __restrict__ row_token,
                    const qbyte_t* __restrict__ w1, const qbyte_t* __restrict__ w3,
                    const unsigned* __restrict__ offsets,
                    const unsigned* __restrict__ tile_offsets, int n_experts, int ffn,
                    int hidden, bf16_t* __restrict__ act) {
    gemm_swiglu<WBlocks<BlockQ8_0>>(x, row_token, w1, w3, offsets, tile_offsets, n_experts, ffn,
                              hidden, act);
}

extern "C" __global__ void __launch_bounds__(GEMM_THREADS)
moe_gemm_down_q80(const bf16_t* __restrict__ act, const unsigned* __restrict__ row_map,
                  const qbyte_t* __restrict__ w2, const unsigned* __restrict__ offsets,
                  const unsigned* __restrict__ tile_offsets, int n_experts, int hidden,
                  int ffn, float* __restrict__ out) {
    gemm_down<WBlocks<BlockQ8_0>>(act, row_map, w2, offsets, tile_offsets, n_experts, hidden, ffn,
                            out);
}

extern "C" __global__ void __launch_bounds__(GEMM_THREADS)
moe_gemm_swiglu_q40(const bf16_t* __restrict__ x, const unsigned* __restrict__ row_token,
                    const qbyte_t* __restrict__ w1, const qbyte_t* __restrict__ w3,
                    const unsigned* __restrict__ offsets,
                    const unsigned* __restrict__ tile_offsets, int n_experts, int ffn,
                    int hidden, bf16_t* __restrict__ act) {
    gemm_swiglu<WBlocks<BlockQ4_0>>(x, row_token, w1, w3, offsets, tile_offsets, n_experts, ffn,
                              hidden, act);
}

extern "C" __global__ void __launch_bounds__(GEMM_THREADS)
moe_gemm_down_q40(const bf16_t* __restrict__ act, const unsigned* __restrict__ row_map,
                  const qbyte_t* __restrict__ w2, const unsigned* __restrict__ offsets,
                  const unsigned* __restrict__ tile_offsets, int n_experts, int hidden,
                  int ffn, float* __restrict__ out) {
    gemm_down<WBlocks<BlockQ4_0>>(act, row_map, w2, offsets, tile_offsets, n_experts, hidden, ffn,
                            out);
}

extern "C" __global__ void __launch_bounds__(GEMM_THREADS)
moe_gemm_swiglu_q4k(const bf16_t* __restrict__ x, const unsigned* __restrict__ row_token,
                    const qbyte_t* __restrict__ w1, const qbyte_t* __restrict__ w3,
                    const unsigned* __restrict__ offsets,
                    const unsigned* __restrict__ tile_offsets, int n_experts, int ffn,
                    int hidden, bf16_t* __restrict__ act) {
    gemm_swiglu<WBlocks<BlockQ4_K>>(x, row_token, w1, w3, offsets, tile_offsets, n_experts, ffn,
                              hidden, act);
}

extern "C" __global__ void __launch_bounds__(GEMM_THREADS)
moe_gemm_down_q4k(const bf16_t* __restrict__ act, const unsigned* __restrict__ row_map,
                  const qbyte_t* __restrict__ w2, const unsigned* __restrict__ offsets,
                  const unsigned* __restrict__ tile_offsets, int n_experts, int hidden,
                  int ffn, float* __restrict__ out) {
    gemm_down<WBlocks<BlockQ4_K>>(act, row_map, w2, offsets, tile_offsets, n_experts, hidden, ffn,
                            out);
}

extern "C" __global__ void __launch_bounds__(GEMM_THREADS)
moe_gemm_swiglu_q5k(const bf16_t* __restrict__ x, const unsigned* __restrict__ row_token,
                    const qbyte_t* __restrict__ w1, const qbyte_t* __restrict__ w3,
                    const unsigned* __restrict__ offsets,
                    const unsigned* __restrict__ tile_offsets, int n_experts, int ffn,
                    int hidden, bf16_t* __restrict__ act) {
    gemm_swiglu<WBlocks<BlockQ5_K>>(x, row_token, w1, w3, offsets, tile_offsets, n_experts, ffn,
                              hidden, act);
}

extern "C" __global__ void __launch_bounds__(GEMM_THREADS)
moe_gemm_down_q5k(const bf16_t* __restrict__ act, const unsigned* __restrict__ row_map,
                  const qbyte_t* __restrict__ w2, const unsigned* __restrict__ offsets,
                  const unsigned* __restrict__ tile_offsets, int n_experts, int hidden,
                  int ffn, float* __restrict__ out) {
    gemm_down<WBlocks<BlockQ5_K>>(act, row_map, w2, offsets, tile_offsets, n_experts, hidden, ffn,
                            out);
}

extern "C" __global__ void __launch_bounds__(GEMM_THREADS)
moe_gemm_swiglu_q6k(const bf16_t* __restrict__ x, const unsigned* __restrict__ row_token,
                    const qbyte_t* __restrict__ w1, const qbyte_t* __restrict__ w3,
                    const unsigned* __restrict__ offsets,
                    const unsigned* __restrict__ tile_offsets, int n_experts, int ffn,
                    int hidden, bf16_t* __restrict__ act) {
    gemm_swiglu<WBlocks<BlockQ6_K>>(x, row_token, w1, w3, offsets, tile_offsets, n_experts, ffn,
                              hidden, act);
}

extern "C" __global__ void __launch_bounds__(GEMM_THREADS)
moe_gemm_down_q6k(const bf16_t* __restrict__ act, const unsigned* __restrict__ row_map,
                  const qbyte_t* __restrict__ w2, const unsigned* __restrict__ offsets,
                  const unsigned* __restrict__ tile_offsets, int n_experts, int hidden,
                  int ffn, float* __restrict__ out) {
    gemm_down<WBlocks<BlockQ6_K>>(act, row_map, w2, offsets, tile_offsets, n_experts, hidden, ffn,
                            out);
}

extern "C" __global__ void __launch_bounds__(MGV_THREADS)
moe_gemv_swiglu_q80(const bf16_t* __restrict__ x, const unsigned* __restrict__ row_token,
                    const qbyte_t* __restrict__ w1, const qbyte_t* __restrict__ w3,
                    const unsigned* __restrict__ offsets, int n_experts, int ffn, int hidden,
                    bf16_t* __restrict__ act) {
    gemv_swiglu<WBlocks<BlockQ8_0>>(x, row_token, w1, w3, offsets, n_experts, ffn, hidden, act);
}

extern "C" __global__ void __launch_bounds__(MGV_THREADS)
moe_gemv_down_q80(const bf16_t* __restrict__ act, const qbyte_t* __restrict__ w2,
                  const unsigned* __restrict__ offsets, int n_experts, int hidden, int ffn,
                  float* __restrict__ out) {
    gemv_down<WBlocks<BlockQ8_0>>(act, w2, offsets, n_experts, hidden, ffn, out);
}

extern "C" __global__ void __launch_bounds__(MGV_THREADS)
moe_gemv_swiglu_q40(const bf16_t* __restrict__ x, const unsigned* __restrict__ row_token,
                    const qbyte_t* __restrict__ w1, const qbyte_t* __restrict__ w3,
                    const unsigned* __restrict__ offsets, int n_experts, int ffn, int hidden,
                    bf16_t* __restrict__ act) {
    gemv_swiglu<WBlocks<BlockQ4_0>>(x, row_token, w1, w3, offsets, n_experts, ffn, hidden, act);
}

extern "C" __global__ void __launch_bounds__(MGV_THREADS)
moe_gemv_down_q40(const bf16_t* __restrict__ act, const qbyte_t* __restrict__ w2,
                  const unsigned* __restrict__ offsets, int n_experts, int hidden, int ffn,
                  float* __restrict__ out) {
    gemv_down<WBlocks<BlockQ4_0>>(act, w2, offsets, n_experts, hidden, ffn, out);
}

extern "C" __global__ void __launch_bounds__(MGV_THREADS)
moe_gemv_swiglu_q4k(const bf16_t* __restrict__ x, const unsigned* __restrict__ row_token,
                    const qbyte_t* __restrict__ w1, const qbyte_t* __restrict__ w3,
                    const unsigned* __restrict__ offsets, int n_experts, int ffn, int hidden,
                    bf16_t* __restrict__ act) {
    gemv_swiglu<WBlocks<BlockQ4_K>>(x, row_token, w1, w3, offsets, n_experts, ffn, hidden, act);
}

extern "C" __global__ void __launch_bounds__(MGV_THREADS)
moe_gemv_down_q4k(const bf16_t* __restrict__ act, const qbyte_t* __restrict__ w2,
                  const unsigned* __restrict__ offsets, int n_experts, int hidden, int ffn,
                  float* __restrict__ out) {
    gemv_down<WBlocks<BlockQ4_K>>(act, w2, offsets, n_experts, hidden, ffn, out);
}

extern "C" __global__ void __launch_bounds__(MGV_THREADS)
moe_gemv_swiglu_q5k(const bf16_t* __restrict__ x, const unsigned* __restrict__ row_token,
                    const qbyte_t* __restrict__ w1, const qbyte_t* __restrict__ w3,
                    const unsigned* __restrict__ offsets, int n_experts, int ffn, int hidden,
                    bf16_t* __restrict__ act) {
    gemv_swiglu<WBlocks<BlockQ5_K>>(x, row_token, w1, w3, offsets, n_experts, ffn, hidden, act);
}

extern "C" __global__ void __launch_bounds__(MGV_THREADS)
moe_gemv_down_q5k(const bf16_t* __restrict__ act, const qbyte_t* __restrict__ w2,
                  const unsigned* __restrict__ offsets, int n_experts, int hidden, int ffn,
                  float* __restrict__ out) {
    gemv_down<WBlocks<BlockQ5_K>>(act, w2, offsets, n_experts, hidden, ffn, out);
}

extern "C" __global__ void __launch_bounds__(MGV_THREADS)
moe_gemv_swiglu_q6k(const bf16_t* __restrict__ x, const unsigned* __restrict__ row_token,
                    const qbyte_t* __restrict__ w1, const qbyte_t* __restrict__ w3,
                    const unsigned* __restrict__ offsets, int n_experts, int ffn, int hidden,
                    bf16_t* __restrict__ act) {
    gemv_swiglu<WBlocks<BlockQ6_K>>(x, row_token, w1, w3, offsets, n_experts, ffn, hidden, act);
}

extern "C" __global__ void __launch_bounds__(MGV_THREADS)
moe_gemv_down_q6k(const bf16_t* __restrict__ act, const qbyte_t* __restrict__ w2,
                  const unsigned* __restrict__ offsets, int n_experts, int hidden, int ffn,
                  float* __restrict__ out) {
    gemv_down<WBlocks<BlockQ6_K>>(act, w2, offsets, n_experts, hidden, ffn, out);
}

extern "C" __global__ void __launch_bounds__(256)
moe_combine_f32(const float* __restrict__ out, const unsigned* __restrict__ slot_of,
                const float* __restrict__ weights, int top_k, int hidden,
                float* __restrict__ y) {
    const size_t t = blockIdx.x;
    for (int c = threadIdx.x; c < hidden; c += blockDim.x) {
        float acc = 0.0f;
        for (int j = 0; j < top_k; ++j) {
            const size_t slot = slot_of[t * top_k + j];
            acc = fmaf(weights[t * top_k + j], out[slot * hidden + c], acc);
        }
        y[t * hidden + c] = acc;
    }
}
