//! Matrix multiplication `y = x Wᵀ` of f32 activations by weights in the checkpoint's
//! `[out, in]` layout.

pub mod cpu;
pub mod reference;

/// The lowest precision a matmul may round its activations `x` to; each weight type uses the
/// closest its kernels support at or above it.
///
/// - `F32` is exact everywhere: products of f32 activations and exactly widened (or exactly
///   dequantized) weights, accumulated in f32; the path the fixtures' f32 tolerance (1e-4 of
///   max |logit|) and the quantized fixtures' `exact` tolerance (2e-5) are checked on.
/// - `Bf16` rounds the activations of **bf16** weights to bf16 (round to nearest even) and
///   accumulates the exact products in f32: what transformers does when it runs a bf16
///   checkpoint natively and what llama.cpp does with bf16 weights. It halves the bytes of
///   `x` and lets AVX512-BF16 CPUs multiply pairs of bf16 at twice the f32 FMA rate; logits
///   move by about 1% of their range. Other weight types stay exact.
/// - `Int8` adds, for **block-quantized** weights, activations quantized per block to 8 bits
///   and integer dot products ([`crate::qdot`]): llama.cpp's numerics on its quantized files
///   (Q8_0 activations for Q8_0/Q4_0, Q8_K for the K-quants), about 0.4% of a dot's scale;
///   bf16 weights behave as at `Bf16`. Types without an integer dot stay exact.
///
/// f32 and f16 weights always multiply f32 activations.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Precision {
    /// f32 activations (exact; the default).
    #[default]
    F32,
    /// Activations rounded to bf16 before multiplying bf16 weights.
    Bf16,
    /// As `Bf16`, and activations quantized to 8-bit blocks before multiplying quantized
    /// weights.
    Int8,
}

impl Precision {
    /// Whether bf16 weights get bf16-rounded activations.
    pub fn rounds_bf16(self) -> bool {
        self != Precision::F32
    }

    /// Whether quantized weights with an integer dot get 8-bit activations.
    pub fn quantizes_acts(self) -> bool {
        self == Precision::Int8
    }
}

/// One matmul: `x` is `[rows, k]`, `W` is `[n, k]`, `y` is `[rows, n]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Matmul {
    /// Rows of `x` (tokens).
    pub rows: usize,
    /// Inner dimension (input features).
    pub k: usize,
    /// Output features (rows of `W`).
    pub n: usize,
}

impl Matmul {
    /// Panics unless the slice lengths match the shape: a programming error, since the model
    /// validated every weight at load.
    pub(crate) fn check(&self, x: usize, w: usize, y: usize) {
        assert_eq!(
            x,
            self.rows * self.k,
            "matmul: x has {x} elements for {self:?}"
        );
        assert_eq!(
            w,
            self.n * self.k,
            "matmul: W has {w} elements for {self:?}"
        );
        assert_eq!(
            y,
            self.rows * self.n,
            "matmul: y has {y} elements for {self:?}"
        );
    }
}
