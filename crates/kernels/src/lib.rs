//! Compute kernels for the Mixtral engine, one folder per op family.
//!
//! Sits on the tensor crate and under the model (`tensor ← kernels ← model`). Every op takes a
//! small `Copy` argument struct carrying its shape, f32 activations as slices, and weights as a
//! [`Weight`] view in the checkpoint's own dtype.
//!
//! # Design decisions
//! - **The reference is the specification.** Each op's `reference` module is plain loops with
//!   f32 accumulation, no `unsafe` and no threads, each with a hand-computed unit test. Fast
//!   CPU and CUDA twins are tested against it.
//! - **Slices in, slices out; destination passing.** Kernels never allocate their outputs, so
//!   the model can size buffers once per sequence.
//! - **Shape checks are the model's job.** The model validates every weight when the
//!   checkpoint opens; kernels assert slice lengths (a failed assertion is a bug, not bad input).

pub mod attention;
pub mod cuda;
pub mod dequant;
pub mod isa;
pub mod matmul;
pub mod moe;
pub mod qdot;
pub mod quantize;
pub mod rmsnorm;
pub mod rope;
pub mod router;
pub mod threads;
mod weight;

pub use isa::Isa;
pub use weight::{BlockLayout, QuantBlocks, Weight};
