//! CUDA kernels: the `kernels/*.cu` sources, embedded in the binary and compiled by NVRTC at
//! run time for the device's `sm_XY`.
//!
//! # Design decisions
//! - **NVRTC, not nvcc.** The sources are compiled when a backend first needs them, so the
//!   build needs no CUDA toolkit and one binary serves every GPU generation. `cargo xtask
//!   kernels` compiles every source ahead of time with the same NVRTC for sm_80 and sm_90,
//!   assembles the PTX with `ptxas -v`, reports registers, shared memory and spills, and checks
//!   that the GEMM kernels use the tensor cores.
//! - **No include paths.** [`source::COMMON`] (warp reductions, hand-written bf16 helpers) is
//!   prepended to each source rather than `#include`d: NVRTC 13 ships no `cuda_bf16.h`, and a
//!   bf16 is just the upper half of an f32.
//! - **One list.** [`source::ALL`] is the single list of kernel files that xtask, the tidy
//!   checks and (later) the launcher's per-source compile cache iterate over.
//!
//! The run-time launcher (`CudaBackend`, on cudarc) is not written yet.

pub mod source;
