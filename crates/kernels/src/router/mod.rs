//! The MoE router: softmax over each token's expert logits, top-k, renormalise.

pub mod cpu;
pub mod reference;

/// One router call over `[T, E]` logits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Router {
    /// Tokens.
    pub n_tokens: usize,
    /// `E`.
    pub n_experts: usize,
    /// `K`, at most `E`.
    pub top_k: usize,
    /// Renormalise the k chosen probabilities to sum to 1 (Mixtral: true).
    pub norm_topk_prob: bool,
}
