//! The sparse MoE block: each token through its `K` chosen SwiGLU experts, outputs summed
//! with the router weights.

pub mod cpu;
pub mod reference;

use crate::Weight;

/// One expert's weights: `w2(silu(w1 x) ⊙ w3 x)`.
#[derive(Clone, Copy, Debug)]
pub struct Expert<'a> {
    /// Gate projection `[F, D]`.
    pub w1: Weight<'a>,
    /// Down projection `[D, F]`.
    pub w2: Weight<'a>,
    /// Up projection `[F, D]`.
    pub w3: Weight<'a>,
}

/// One MoE call over `[T, D]` activations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Moe {
    /// `T`.
    pub n_tokens: usize,
    /// `D`.
    pub hidden: usize,
    /// `F`.
    pub ffn: usize,
    /// `K`: experts per token.
    pub top_k: usize,
}

impl Moe {
    /// Panics unless the slice lengths match the call (`x`, `y`: `[T, D]`; `ids`, `weights`:
    /// `[T, K]`): a programming error, since the model sizes every buffer.
    pub(crate) fn check(&self, x: &[f32], ids: &[u32], weights: &[f32], y: &[f32]) {
        let p = self;
        assert_eq!(x.len(), p.n_tokens * p.hidden, "moe: x length for {p:?}");
        assert_eq!(y.len(), x.len(), "moe: y length for {p:?}");
        assert_eq!(ids.len(), p.n_tokens * p.top_k, "moe: ids length for {p:?}");
        assert_eq!(weights.len(), ids.len(), "moe: weights length for {p:?}");
    }
}

/// `silu(g) = g · sigmoid(g)`.
#[inline]
pub fn silu(g: f32) -> f32 {
    g / (1.0 + (-g).exp())
}
