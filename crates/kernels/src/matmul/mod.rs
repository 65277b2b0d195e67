//! Matrix multiplication `y = x Wᵀ` of f32 activations by weights in the checkpoint's
//! `[out, in]` layout.

pub mod cpu;
pub mod reference;

/// What the activations `x` are rounded to before a matmul with **bf16** weights (f32 and
/// f16 weights always multiply f32 activations).
///
/// `F32` is exact: products of f32 activations and widened weights, accumulated in f32, the
/// path the fixtures' f32 tolerance (1e-4 of max |logit|) is checked on. `Bf16` rounds each
/// activation to bf16 (round to nearest even) and accumulates the exact products in f32:
/// what transformers does when it runs a bf16 checkpoint natively and what llama.cpp does
/// with bf16 weights. It halves the bytes of `x` and lets AVX512-BF16 CPUs multiply pairs of
/// bf16 at twice the f32 FMA rate; logits move by about 1% of their range (the fixtures'
/// measured native-bf16 noise), so greedy paths can diverge from the f32 path.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Precision {
    /// f32 activations (exact; the default).
    #[default]
    F32,
    /// Activations rounded to bf16 before multiplying bf16 weights.
    Bf16,
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
