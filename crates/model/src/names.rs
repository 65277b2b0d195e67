//! Tensor names of a Mixtral checkpoint in each format it comes in: the only place they are
//! spelled. The free functions are Hugging Face's; [`Layout`] picks a format's names.
//!
//! Hugging Face has two expert layouts: the legacy per-expert tensors that every hub
//! checkpoint has (`block_sparse_moe.experts.E.w{1,2,3}`), and transformers 5.x's fused 3-D
//! tensors (`mlp.experts.gate_up_proj` `[E, 2F, D]` with the gate (w1) half first, and
//! `mlp.experts.down_proj` `[E, D, F]`). Mistral's `consolidated.safetensors` names experts
//! `layers.L.feed_forward.experts.E.w{1,2,3}`. GGUF files (llama.cpp's converter) have merged
//! 3-D tensors `blk.L.ffn_{gate,down,up}_exps` (`[E, F, D]`, `[E, D, F]`, `[E, F, D]`), or in
//! files made before early 2024 per-expert 2-D ones `blk.L.ffn_{gate,down,up}.E`.

/// The naming scheme of a checkpoint format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// Hugging Face transformers (`model.layers.L.…`).
    HuggingFace,
    /// Mistral's own `consolidated.safetensors` (`layers.L.attention.wq` …).
    Mistral,
    /// llama.cpp's GGUF (`blk.L.attn_q` …).
    Gguf,
}

/// Which of an expert's three matrices.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExpertMatrix {
    /// Gate projection `[F, D]`.
    W1,
    /// Down projection `[D, F]`.
    W2,
    /// Up projection `[F, D]`.
    W3,
}

impl Layout {
    /// Token embedding `[V, D]`.
    pub fn embed(self) -> &'static str {
        match self {
            Layout::HuggingFace => EMBED,
            Layout::Mistral => "tok_embeddings.weight",
            Layout::Gguf => "token_embd.weight",
        }
    }
    /// Final RMSNorm `[D]`.
    pub fn final_norm(self) -> &'static str {
        match self {
            Layout::HuggingFace => FINAL_NORM,
            Layout::Mistral => "norm.weight",
            Layout::Gguf => "output_norm.weight",
        }
    }
    /// Output projection `[V, D]` (absent when tied to the embedding).
    pub fn lm_head(self) -> &'static str {
        match self {
            Layout::HuggingFace => LM_HEAD,
            Layout::Mistral => "output.weight",
            Layout::Gguf => "output.weight",
        }
    }
    fn per_layer(self, l: usize, hf: fn(usize) -> String, mistral: &str, gguf: &str) -> String {
        match self {
            Layout::HuggingFace => hf(l),
            Layout::Mistral => format!("layers.{l}.{mistral}.weight"),
            Layout::Gguf => format!("blk.{l}.{gguf}.weight"),
        }
    }
    /// RMSNorm before attention `[D]`.
    pub fn attn_norm(self, l: usize) -> String {
        self.per_layer(l, attn_norm, "attention_norm", "attn_norm")
    }
    /// RMSNorm before the MoE block `[D]`.
    pub fn moe_norm(self, l: usize) -> String {
        self.per_layer(l, moe_norm, "ffn_norm", "ffn_norm")
    }
    /// Query projection `[H·Dh, D]`.
    pub fn wq(self, l: usize) -> String {
        self.per_layer(l, wq, "attention.wq", "attn_q")
    }
    /// Key projection `[G·Dh, D]`.
    pub fn wk(self, l: usize) -> String {
        self.per_layer(l, wk, "attention.wk", "attn_k")
    }
    /// Value projection `[G·Dh, D]`.
    pub fn wv(self, l: usize) -> String {
        self.per_layer(l, wv, "attention.wv", "attn_v")
    }
    /// Output projection `[D, H·Dh]`.
    pub fn wo(self, l: usize) -> String {
        self.per_layer(l, wo, "attention.wo", "attn_output")
    }
    /// Router `[E, D]` (per-expert layouts; transformers 5.x's is [`fused_router`]).
    pub fn router(self, l: usize) -> String {
        self.per_layer(l, router, "feed_forward.gate", "ffn_gate_inp")
    }
    /// One expert's matrix as a tensor of its own.
    pub fn expert(self, l: usize, e: usize, m: ExpertMatrix) -> String {
        let (hf, mistral, gguf): (fn(usize, usize) -> String, _, _) = match m {
            ExpertMatrix::W1 => (expert_w1, "w1", "ffn_gate"),
            ExpertMatrix::W2 => (expert_w2, "w2", "ffn_down"),
            ExpertMatrix::W3 => (expert_w3, "w3", "ffn_up"),
        };
        match self {
            Layout::HuggingFace => hf(l, e),
            Layout::Mistral => format!("layers.{l}.feed_forward.experts.{e}.{mistral}.weight"),
            Layout::Gguf => format!("blk.{l}.{gguf}.{e}.weight"),
        }
    }
    /// All experts' matrix `m` as one 3-D tensor (`[E, F, D]` for w1/w3, `[E, D, F]` for w2),
    /// in the layouts that have one (GGUF's merged experts).
    pub fn merged_experts(self, l: usize, m: ExpertMatrix) -> Option<String> {
        let name = match m {
            ExpertMatrix::W1 => "ffn_gate_exps",
            ExpertMatrix::W2 => "ffn_down_exps",
            ExpertMatrix::W3 => "ffn_up_exps",
        };
        (self == Layout::Gguf).then(|| format!("blk.{l}.{name}.weight"))
    }
}

/// Token embedding `[V, D]`.
pub const EMBED: &str = "model.embed_tokens.weight";
/// Final RMSNorm `[D]`.
pub const FINAL_NORM: &str = "model.norm.weight";
/// Output projection `[V, D]` (absent when tied to the embedding).
pub const LM_HEAD: &str = "lm_head.weight";

fn layer(l: usize, rest: &str) -> String {
    format!("model.layers.{l}.{rest}")
}

/// RMSNorm before attention `[D]`.
pub fn attn_norm(l: usize) -> String {
    layer(l, "input_layernorm.weight")
}
/// RMSNorm before the MoE block `[D]`.
pub fn moe_norm(l: usize) -> String {
    layer(l, "post_attention_layernorm.weight")
}
/// Query projection `[H·Dh, D]`.
pub fn wq(l: usize) -> String {
    layer(l, "self_attn.q_proj.weight")
}
/// Key projection `[G·Dh, D]`.
pub fn wk(l: usize) -> String {
    layer(l, "self_attn.k_proj.weight")
}
/// Value projection `[G·Dh, D]`.
pub fn wv(l: usize) -> String {
    layer(l, "self_attn.v_proj.weight")
}
/// Output projection `[D, H·Dh]`.
pub fn wo(l: usize) -> String {
    layer(l, "self_attn.o_proj.weight")
}
/// Router (legacy layout) `[E, D]`.
pub fn router(l: usize) -> String {
    layer(l, "block_sparse_moe.gate.weight")
}
/// Expert gate projection (legacy layout) `[F, D]`.
pub fn expert_w1(l: usize, e: usize) -> String {
    layer(l, &format!("block_sparse_moe.experts.{e}.w1.weight"))
}
/// Expert down projection (legacy layout) `[D, F]`.
pub fn expert_w2(l: usize, e: usize) -> String {
    layer(l, &format!("block_sparse_moe.experts.{e}.w2.weight"))
}
/// Expert up projection (legacy layout) `[F, D]`.
pub fn expert_w3(l: usize, e: usize) -> String {
    layer(l, &format!("block_sparse_moe.experts.{e}.w3.weight"))
}
/// Router (fused layout) `[E, D]`.
pub fn fused_router(l: usize) -> String {
    layer(l, "mlp.gate.weight")
}
/// Gate and up projections of all experts (fused layout) `[E, 2F, D]`, gate first.
pub fn fused_gate_up(l: usize) -> String {
    layer(l, "mlp.experts.gate_up_proj")
}
/// Down projections of all experts (fused layout) `[E, D, F]`.
pub fn fused_down(l: usize) -> String {
    layer(l, "mlp.experts.down_proj")
}

#[cfg(test)]
mod tests {
    #[test]
    fn names_match_the_hub_checkpoints() {
        assert_eq!(
            super::expert_w1(3, 5),
            "model.layers.3.block_sparse_moe.experts.5.w1.weight"
        );
        assert_eq!(super::wo(31), "model.layers.31.self_attn.o_proj.weight");
    }

    #[test]
    fn every_layout_spells_its_own_names() {
        use super::{ExpertMatrix::*, Layout::*};
        assert_eq!(HuggingFace.expert(3, 5, W1), super::expert_w1(3, 5));
        assert_eq!(Mistral.wq(2), "layers.2.attention.wq.weight");
        assert_eq!(
            Mistral.expert(0, 7, W2),
            "layers.0.feed_forward.experts.7.w2.weight"
        );
        assert_eq!(Gguf.router(1), "blk.1.ffn_gate_inp.weight");
        assert_eq!(Gguf.expert(1, 4, W3), "blk.1.ffn_up.4.weight");
        assert_eq!(
            Gguf.merged_experts(0, W2).as_deref(),
            Some("blk.0.ffn_down_exps.weight")
        );
        assert_eq!(Mistral.merged_experts(0, W2), None);
    }
}
