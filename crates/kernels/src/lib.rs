//! Compute kernels for the Mixtral engine: plain reference twins, and later CPU SIMD and CUDA.
//!
//! Sits on the tensor crate and under the model (`tensor ← kernels ← model`). Kernels work
//! on slices with explicit sizes; the model crate composes them.
