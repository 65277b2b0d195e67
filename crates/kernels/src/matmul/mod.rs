//! Matrix multiplication `y = x Wᵀ` of f32 activations by weights in the checkpoint's
//! `[out, in]` layout.

pub mod cpu;
pub mod reference;

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
