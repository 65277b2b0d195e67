//! Rotary position embedding in the Hugging Face convention (rotate_half: element `i` pairs
//! with element `i + Dh/2` of the same head).

pub mod cpu;
pub mod reference;

/// One RoPE call over `[T, n_heads · head_dim]` rows, one position per row.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rope {
    /// Heads per row.
    pub n_heads: usize,
    /// `Dh`, even.
    pub head_dim: usize,
    /// Base frequency (`rope_theta`, 1e6 for Mixtral).
    pub theta: f64,
}

impl Rope {
    /// `inv_freq[i] = theta^(-2i / Dh)` for `i < Dh/2`.
    pub fn inv_freq(&self, i: usize) -> f64 {
        self.theta.powf(-((2 * i) as f64) / self.head_dim as f64)
    }
}
