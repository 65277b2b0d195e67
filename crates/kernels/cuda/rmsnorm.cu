// rmsnorm.cu: RMSNorm of f32 rows with a bf16 weight, optionally fused with the residual add.
//
// Reference twin: `mixtral_kernels::rmsnorm::reference::rms_norm`
//   y[r] = w · (x[r] · 1/sqrt(mean(x[r]²) + eps)), computed in f32 and rounded to bf16 once.
//   The fused variant first does `h += r` in f32 (the model's `h += o` after attention and
//   `h += moe(...)` after the experts), writes h back, and normalises the new h.
//
// Entry points
//   rmsnorm_bf16           x f32 [T, D], w bf16 [D] -> y bf16 [T, D]
//   rmsnorm_residual_bf16  h f32 [T, D] (in/out), r f32 [T, D], w bf16 [D] -> y bf16 [T, D]
// Work split: one block per row (grid.x = T, 256 threads); each thread owns the columns
//   threadIdx.x + 256·i, keeps them in registers between the reduction and the scaling pass
//   (up to RMS_MAX_PER_THREAD of them), and the block reduces the sum of squares.
// Bytes moved per call: T·D·(4 + 2) + D·2 plain; T·D·(4 + 4 + 4 + 2) + D·2 fused.
// Accumulation: f32. The sum of squares is a tree (per thread, then warp, then block), not the
//   reference's left-to-right sum: expect ~1e-6 relative difference before the bf16 rounding.
// Shape limits: D ≤ 256 · RMS_MAX_PER_THREAD = 8192.

#define RMS_THREADS 256
#define RMS_MAX_PER_THREAD 32

// Normalises the row held in `v` (thread-owned columns) and writes it as bf16.
__device__ __forceinline__ void rms_scale_store(const float (&v)[RMS_MAX_PER_THREAD],
                                                float sum_sq, const bf16_t* __restrict__ w,
                                                bf16_t* __restrict__ y, int cols, float eps) {
    const float inv = 1.0f / sqrtf(block_sum(sum_sq) / (float)cols + eps);
#pragma unroll
    for (int i = 0; i < RMS_MAX_PER_THREAD; ++i) {
        const int c = threadIdx.x + i * RMS_THREADS;
        if (c < cols) y[c] = f32_to_bf16(bf16_to_f32(w[c]) * (v[i] * inv));
    }
}

extern "C" __global__ void __launch_bounds__(RMS_THREADS)
rmsnorm_bf16(const float* __restrict__ x, const bf16_t* __restrict__ w, bf16_t* __restrict__ y,
             int cols, float eps) {
    const size_t row = (size_t)blockIdx.x * cols;
    float v[RMS_MAX_PER_THREAD];
    float sum_sq = 0.0f;
#pragma unroll
    for (int i = 0; i < RMS_MAX_PER_THREAD; ++i) {
        const int c = threadIdx.x + i * RMS_THREADS;
        v[i] = c < cols ? x[row + c] : 0.0f;
        sum_sq = fmaf(v[i], v[i], sum_sq);
    }
    rms_scale_store(v, sum_sq, w, y + row, cols, eps);
}

extern "C" __global__ void __launch_bounds__(RMS_THREADS)
rmsnorm_residual_bf16(float* __restrict__ h, const float* __restrict__ r,
                      const bf16_t* __restrict__ w, bf16_t* __restrict__ y, int cols, float eps) {
    const size_t row = (size_t)blockIdx.x * cols;
    float v[RMS_MAX_PER_THREAD];
    float sum_sq = 0.0f;
#pragma unroll
    for (int i = 0; i < RMS_MAX_PER_THREAD; ++i) {
        const int c = threadIdx.x + i * RMS_THREADS;
        v[i] = 0.0f;
        if (c < cols) {
            v[i] = h[row + c] + r[row + c];
            h[row + c] = v[i];
        }
        sum_sq = fmaf(v[i], v[i], sum_sq);
    }
    rms_scale_store(v, sum_sq, w, y + row, cols, eps);
}
