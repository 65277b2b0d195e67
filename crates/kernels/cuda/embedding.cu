// embedding.cu: gather embedding rows by token id.
//
// Reference twin: the model's embedding lookup, `mixtral_model::Model::embed` (a row copy:
// `mixtral_kernels::Weight::row_into` widened to f32), which these match exactly (a gather of
// bf16 is lossless, and bf16 -> f32 widening is exact).
//
// Entry points
//   embedding_bf16      table bf16 [V, D] -> out bf16 [T, D]
//   embedding_f32_bf16  table bf16 [V, D] -> out f32  [T, D] (the f32 residual stream)
//   embedding_f32_q80, _q40, _q4k, _q5k, _q6k
//                       table in GGUF blocks [V, D / QK blocks] -> out f32 [T, D], each row
//                       decoded exactly as `mixtral_kernels::dequant::reference` does.
// Work split: one block per token row (grid.x = T, 128 threads); each thread moves 16-byte
//   chunks (8 bf16) of the row, strided by the block.
// Bytes moved per call: reads T·D·2 (+ 4·T ids), writes T·D·2 (bf16) or T·D·4 (f32).
// Accumulation: none (a copy).
// Shape limits: D % 8 == 0 (for blocks D % QK == 0) and 16-byte-aligned rows (Mixtral D = 4096); ids must be < V
//   (checked by the model before the call; an out-of-range id reads out of bounds).

extern "C" __global__ void __launch_bounds__(128)
embedding_bf16(const unsigned* __restrict__ ids, const bf16_t* __restrict__ table,
               bf16_t* __restrict__ out, int cols) {
    const uint4* src = (const uint4*)(table + (size_t)ids[blockIdx.x] * cols);
    uint4* dst = (uint4*)(out + (size_t)blockIdx.x * cols);
    for (int c = threadIdx.x; c < cols / 8; c += blockDim.x) dst[c] = src[c];
}

extern "C" __global__ void __launch_bounds__(128)
embedding_f32_bf16(const unsigned* __restrict__ ids, const bf16_t* __restrict__ table,
                   float* __restrict__ out, int cols) {
    const uint4* src = (const uint4*)(table + (size_t)ids[blockIdx.x] * cols);
    float4* dst = (float4*)(out + (size_t)blockIdx.x * cols);
    for (int c = threadIdx.x; c < cols / 8; c += blockDim.x) {
        uint4 v = src[c];
        dst[2 * c] = make_float4(bf16x2_lo(v.x), bf16x2_hi(v.x), bf16x2_lo(v.y), bf16x2_hi(v.y));
        dst[2 * c + 1] =
            make_float4(bf16x2_lo(v.z), bf16x2_hi(v.z), bf16x2_lo(v.w), bf16x2_hi(v.w));
    }
}

// Row `ids[blockIdx.x]` of a table in blocks of type B, decoded to f32, 8 values per thread.
template <class B>
__device__ __forceinline__ void embedding_blocks(const unsigned* __restrict__ ids,
                                                 const qbyte_t* __restrict__ table,
                                                 float* __restrict__ out, int cols) {
    const qbyte_t* row = table + (size_t)ids[blockIdx.x] * (cols / B::QK) * B::BYTES;
    float4* dst = (float4*)(out + (size_t)blockIdx.x * cols);
    for (int c = threadIdx.x; c < cols / 8; c += blockDim.x) {
        float v[8];
        B::deq8(row, c * 8, v);
        dst[2 * c] = make_float4(v[0], v[1], v[2], v[3]);
        dst[2 * c + 1] = make_float4(v[4], v[5], v[6], v[7]);
    }
}

// One entry point per block type, written out: `source::entry_points` reads literal names.

extern "C" __global__ void __launch_bounds__(128)
embedding_f32_q80(const unsigned* __restrict__ ids, const qbyte_t* __restrict__ table,
                  float* __restrict__ out, int cols) {
    embedding_blocks<BlockQ8_0>(ids, table, out, cols);
}

extern "C" __global__ void __launch_bounds__(128)
embedding_f32_q40(const unsigned* __restrict__ ids, const qbyte_t* __restrict__ table,
                  float* __restrict__ out, int cols) {
    embedding_blocks<BlockQ4_0>(ids, table, out, cols);
}

extern "C" __global__ void __launch_bounds__(128)
embedding_f32_q4k(const unsigned* __restrict__ ids, const qbyte_t* __restrict__ table,
                  float* __restrict__ out, int cols) {
    embedding_blocks<BlockQ4_K>(ids, table, out, cols);
}

extern "C" __global__ void __launch_bounds__(128)
embedding_f32_q5k(const unsigned* __restrict__ ids, const qbyte_t* __restrict__ table,
                  float* __restrict__ out, int cols) {
    embedding_blocks<BlockQ5_K>(ids, table, out, cols);
}

extern "C" __global__ void __launch_bounds__(128)
embedding_f32_q6k(const unsigned* __restrict__ ids, const qbyte_t* __restrict__ table,
                  float* __restrict__ out, int cols) {
    embedding_blocks<BlockQ6_K>(ids, table, out, cols);
}
