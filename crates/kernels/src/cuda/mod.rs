//! CUDA kernels: the `kernels/*.cu` sources, embedded in the binary and compiled by NVRTC at
//! run time for the device's `sm_XY`, and [`CudaBackend`], which launches them.
//!
//! # Design decisions
//! - **NVRTC, not nvcc.** The sources are compiled when a backend first needs them, so the
//!   build needs no CUDA toolkit and one binary serves every GPU generation. `cargo xtask
//!   kernels` compiles every source ahead of time with the same NVRTC for sm_80 and sm_90,
//!   assembles the PTX with `ptxas -v`, reports registers, shared memory and spills, and checks
//!   that the GEMM kernels use the tensor cores. Where NVRTC is missing at run time, PTX
//!   written by `cargo xtask gpu-check` can stand in ([`compile::PTX_DIR_VAR`]).
//! - **No include paths.** [`source::COMMON`] (warp reductions, hand-written bf16 helpers) is
//!   prepended to each source rather than `#include`d: NVRTC 13 ships no `cuda_bf16.h`, and a
//!   bf16 is just the upper half of an f32.
//! - **One list.** [`source::ALL`] is the single list of kernel files that xtask, the tidy
//!   checks and the backend's per-source module cache iterate over.
//! - **Never a panic for a missing GPU.** cudarc panics when `libcuda.so.1` or
//!   `libnvrtc.so.13` cannot be loaded, so [`library`] opens them first and
//!   [`CudaBackend::new`] returns `Err(NoDriver)` / compiles return `Err(NoNvrtc)`; cudarc
//!   calls that could still panic run under `catch_unwind` with a silent hook.
//! - **No feature gate.** The module always compiles; only running it needs a GPU.
//! - **One stream, no host sync inside a forward pass.** Launchers queue work and return;
//!   only reading a result back waits.
//! - **`unsafe` stays here.** Kernel launches are the only `unsafe` (each with its SAFETY
//!   line); the model crate drives the device through the safe launchers in [`ops`].

pub mod blocks;
mod check;
pub mod compile;
mod device;
mod error;
pub mod fill;
pub mod library;
mod memory;
pub mod ops;
pub mod source;
mod timeline;

pub use blocks::{BlockType, DeviceMatrix, Storage};
pub use device::CudaBackend;
pub use error::{Error, Result};
pub use memory::{Bf16, DeviceBuffer, F16, KvElement, Progress};
pub use ops::{DecodeScratch, DeviceExperts, MoeScratch, Positions, Routing, TokenIds};
pub use timeline::Breakdown;
