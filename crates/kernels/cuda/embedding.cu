// embedding.cu: gather embedding rows by token id.
//
// Reference twin: the model's embedding lookup, `mixtral_model::Model::embed` (a row copy:
// `mixtral_kernels::Weight::row_into` widened to f32), which these match exactly (a gather of
// bf16 is lossless, and bf16 -> f32 widening is exact).
//
// Entry points
//   embedding_bf16      table bf16 [V, D] -> out bf16 [T, D]
//   embedding_f32_bf16  table bf16 [V, D] -> out f32  [T, D] (the f32 residual stream)
// Work split: one block per token row (grid.x = T, 128 threads); each thread moves 16-byte
//   chunks (8 bf16) of the row, strided by the block.
// Bytes moved per call: reads T·D·2 (+ 4·T ids), writes T·D·2 (bf16) or T·D·4 (f32).
// Accumulation: none (a copy).
// Shape limits: D % 8 == 0 and 16-byte-aligned rows (Mixtral D = 4096); ids must be < V
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
