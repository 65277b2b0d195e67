// argmax.cu: greedy sampling on the device: the index of the largest logit of each row.
//
// Reference twin: the greedy path of `mixtral_sampler::Sampler` (temperature 0, no penalties):
//   the first index of the maximum, so ties go to the lower token id. Exact: comparisons only.
//   Differences: NaN entries never win here (the sampler returns 0 when logit 0 is NaN), and an
//   all -inf row gives 0 here where the sampler reports `NoCandidates`.
//
// Entry points
//   argmax_f32  logits f32 [R, V] -> ids u32 [R]
// Work split: one block per row (grid.x = R, 1024 threads); each thread scans a strided slice,
//   then a warp argmax and a second warp argmax over the 32 warp winners.
// Bytes moved per call: R·V·4 read, R·4 written (V = 32000: 128 kB per row).
// Accumulation: none (comparisons).
// Shape limits: V < 2^31; blockDim.x a multiple of 32, at most 1024.

extern "C" __global__ void __launch_bounds__(1024)
argmax_f32(const float* __restrict__ logits, unsigned* __restrict__ out, int cols) {
    __shared__ float best_v[WARP];
    __shared__ int best_i[WARP];
    const float* row = logits + (size_t)blockIdx.x * cols;
    float v = -INFINITY;
    int i = 0x7fffffff;
    for (int c = threadIdx.x; c < cols; c += blockDim.x) {
        const float x = row[c];
        if (x > v || (v != v && x == x)) { v = x; i = c; }  // strictly greater: first index wins
    }
    warp_argmax(v, i);
    const int lane = threadIdx.x % WARP, warp = threadIdx.x / WARP;
    if (lane == 0) { best_v[warp] = v; best_i[warp] = i; }
    __syncthreads();
    if (warp == 0) {
        const bool live = lane < (int)(blockDim.x / WARP);
        v = live ? best_v[lane] : -INFINITY;
        i = live ? best_i[lane] : 0x7fffffff;
        warp_argmax(v, i);
        // All-NaN or all -inf rows: fall back to index 0.
        if (lane == 0) out[blockIdx.x] = i == 0x7fffffff ? 0u : (unsigned)i;
    }
}
