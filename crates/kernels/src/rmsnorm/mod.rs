//! RMSNorm: `y = x / sqrt(mean(x²) + eps) * w`, computed in f32.

pub mod cpu;
pub mod reference;

/// One RMSNorm call over `rows` vectors of length `cols`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RmsNorm {
    /// Vectors (tokens).
    pub rows: usize,
    /// Length of each vector (hidden size).
    pub cols: usize,
    /// Added to the mean square before the square root.
    pub eps: f32,
}
