//! Rotary position embedding in either pairing of a head's elements: Hugging Face's
//! `rotate_half` (element `i` pairs with `i + Dh/2`) or Mistral's and llama.cpp's adjacent
//! pairs (`2i` with `2i + 1`). Both rotate pair `i` by `position · θ^(−2i/Dh)`; they differ
//! only in where the pair's elements sit, which is how a checkpoint ordered its q/k rows.

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
    /// `true`: pair `i` is elements `(2i, 2i + 1)` (the q/k row order of Mistral's
    /// `consolidated.safetensors` and of GGUF files); `false`: `(i, i + Dh/2)` (Hugging Face).
    pub interleaved: bool,
}

impl Rope {
    /// `inv_freq[i] = theta^(-2i / Dh)` for `i < Dh/2`.
    pub fn inv_freq(&self, i: usize) -> f64 {
        self.theta.powf(-((2 * i) as f64) / self.head_dim as f64)
    }
}
