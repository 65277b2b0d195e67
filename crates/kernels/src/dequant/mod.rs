//! Dequantization of ggml's block-quantized weights (the types of GGUF files) to f32.
//!
//! Each type is a run of fixed-size blocks (32 or 256 values) whose scales are stored in the
//! block; [`reference`](mod@reference) decodes one block at a time in plain code, with ggml's arithmetic
//! exactly (f32, in ggml's order of operations, no fused multiply-add), so its output is
//! bit-identical to ggml's `dequantize_row_*` and gguf-py's `gguf.quants.dequantize`.
//! Matmuls on quantized weights decode a row's blocks as they stream it, never a whole tensor.

pub mod random;
pub mod reference;

pub use random::random_blocks;
pub use reference::{dequantize, dequantize_block};

/// The most values one block holds (the K-quants' 256).
pub const MAX_BLOCK: usize = 256;
