// add.cu: the residual add of the model graph, `h += y`.
//
// Reference twin: the CPU device's `add` in mixtral_model (`device/cpu.rs`): h[i] += y[i].
//   Exact: one f32 add per element, the same rounding on both sides.
//
// Entry points
//   add_f32  h f32 [n] (in/out), y f32 [n]
// Work split: one thread per element, 256 threads a block, grid.x = ceil(n / 256).
// Bytes moved per call: n·12.
// Accumulation: none.
// Shape limits: n < 2^31.

extern "C" __global__ void __launch_bounds__(256)
add_f32(float* __restrict__ h, const float* __restrict__ y, int n) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) h[i] += y[i];
}
