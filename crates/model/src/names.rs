//! Hugging Face tensor names of a Mixtral checkpoint: the only place they are spelled.
//!
//! Two expert layouts exist: the legacy per-expert tensors that every hub checkpoint has
//! (`block_sparse_moe.experts.E.w{1,2,3}`), and transformers 5.x's fused 3-D tensors
//! (`mlp.experts.gate_up_proj` `[E, 2F, D]` with the gate (w1) half first, and
//! `mlp.experts.down_proj` `[E, D, F]`).

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
}
