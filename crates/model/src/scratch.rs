//! `Scratch`: the activation buffers of one sequence's forward calls, sized once and reused,
//! so a decode step allocates nothing.

use mixtral_kernels::moe::cpu::MoeScratch;
use mixtral_kernels::rope::{Rope, cpu::RopeTable};

/// Positions the RoPE table is extended by at a time.
const ROPE_BLOCK: usize = 1024;

/// Buffers for a forward call over `T` tokens; each grows to the largest call and stays.
#[derive(Debug, Default)]
pub(crate) struct Scratch {
    /// Residual stream `[T, D]`.
    pub h: Vec<f32>,
    /// Normed activations `[T, D]`.
    pub x: Vec<f32>,
    /// `[T, H·Dh]`.
    pub q: Vec<f32>,
    /// `[T, G·Dh]`.
    pub k: Vec<f32>,
    /// `[T, G·Dh]`.
    pub v: Vec<f32>,
    /// Attention output `[T, H·Dh]`.
    pub att: Vec<f32>,
    /// Projection or MoE output `[T, D]`.
    pub out: Vec<f32>,
    /// Router logits `[T, E]`.
    pub router: Vec<f32>,
    /// Chosen experts `[T, K]`.
    pub ids: Vec<u32>,
    /// Their weights `[T, K]`.
    pub weights: Vec<f32>,
    /// Logits `[rows, V]`.
    pub logits: Vec<f32>,
    /// The MoE kernel's own buffers.
    pub moe: MoeScratch,
    /// cos/sin for positions `0..rope.positions()`.
    pub rope: Option<RopeTable>,
}

/// Makes `v` exactly `n` long, reallocating only when it must grow past its capacity.
pub(crate) fn sized<T: Default + Clone>(v: &mut Vec<T>, n: usize) -> &mut [T] {
    v.resize(n, T::default());
    v
}

impl Scratch {
    /// Makes `self.rope` cover positions `0..end`, extending it in blocks as the sequence grows.
    pub(crate) fn ensure_rope(&mut self, p: Rope, end: usize) {
        let fits = self
            .rope
            .as_ref()
            .is_some_and(|t| t.fits(p) && t.positions() >= end);
        if !fits {
            self.rope = Some(RopeTable::new(p, end.div_ceil(ROPE_BLOCK) * ROPE_BLOCK));
        }
    }
}
