//! Random data made on the device (benchmark weights at the real Mixtral shape without a
//! download or a host copy; test inputs): one small kernel source kept here, not in
//! `kernels/`, because no model op uses it.

use super::memory::{Bf16, DeviceBuffer};
use super::source::Source;
use super::{CudaBackend, Error, Result};
use cudarc::driver::{LaunchConfig, PushKernelArg};

/// The fill kernels. Element `i` is SplitMix64 of `seed + (i + 1) · golden`, scaled to
/// `[-1, 1)` exactly as `mixtral_testkit::uniform(n, seed)` does, times `scale`; so an f32 fill
/// equals the host's `uniform` bit for bit and a bf16 fill equals it rounded to bf16.
pub const SOURCE: Source = Source {
    file: "fill.cu",
    code: r#"// fill.cu: uniform random values on the device (benchmarks and tests; no model op uses it).
// Reference twin: mixtral_testkit::uniform (SplitMix64, the same stream element by element).
// Work split: grid-stride loop, one element per thread per step. Bytes: n·2 or n·4 written.
__device__ __forceinline__ float splitmix_uniform(unsigned long long i, unsigned long long seed) {
    unsigned long long z = seed + (i + 1ull) * 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return (float)(z >> 40) / 16777216.0f * 2.0f - 1.0f;
}

extern "C" __global__ void __launch_bounds__(256)
fill_uniform_bf16(bf16_t* __restrict__ out, unsigned long long n, unsigned long long seed,
                  float scale) {
    const unsigned long long step = (unsigned long long)gridDim.x * blockDim.x;
    for (unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += step)
        out[i] = f32_to_bf16(splitmix_uniform(i, seed) * scale);
}

extern "C" __global__ void __launch_bounds__(256)
fill_uniform_f32(float* __restrict__ out, unsigned long long n, unsigned long long seed,
                 float scale) {
    const unsigned long long step = (unsigned long long)gridDim.x * blockDim.x;
    for (unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += step)
        out[i] = splitmix_uniform(i, seed) * scale;
}
"#,
};

/// Blocks for a grid-stride fill: enough to cover the device several times over.
fn fill_config(backend: &CudaBackend, n: usize) -> LaunchConfig {
    let blocks = n.div_ceil(256).clamp(1, backend.multiprocessors() * 16);
    LaunchConfig {
        grid_dim: (blocks as u32, 1, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    }
}

impl CudaBackend {
    /// Fills all of `buf` with `scale · uniform[-1, 1)` rounded to bf16, from `seed`.
    pub fn fill_uniform_bf16(
        &self,
        buf: &mut DeviceBuffer<Bf16>,
        seed: u64,
        scale: f32,
    ) -> Result<()> {
        let f = self.function(&SOURCE, "fill_uniform_bf16")?;
        let (n, cfg) = (buf.len() as u64, fill_config(self, buf.len()));
        let mut b = self.stream().launch_builder(&f);
        b.arg(buf.slice_mut()).arg(&n).arg(&seed).arg(&scale);
        // SAFETY: the kernel writes elements 0..n of `buf`, which holds n elements; the
        // argument types match the kernel's (bf16_t*, u64, u64, float).
        unsafe { b.launch(cfg) }
            .map(drop)
            .map_err(Error::driver("fill_uniform_bf16"))
    }

    /// Fills all of `buf` with `scale · uniform[-1, 1)`, from `seed`.
    pub fn fill_uniform_f32(
        &self,
        buf: &mut DeviceBuffer<f32>,
        seed: u64,
        scale: f32,
    ) -> Result<()> {
        let f = self.function(&SOURCE, "fill_uniform_f32")?;
        let (n, cfg) = (buf.len() as u64, fill_config(self, buf.len()));
        let mut b = self.stream().launch_builder(&f);
        b.arg(buf.slice_mut()).arg(&n).arg(&seed).arg(&scale);
        // SAFETY: the kernel writes elements 0..n of `buf`, which holds n elements; the
        // argument types match the kernel's (float*, u64, u64, float).
        unsafe { b.launch(cfg) }
            .map(drop)
            .map_err(Error::driver("fill_uniform_f32"))
    }
}
