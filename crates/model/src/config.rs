//! `Config`: every `config.json` field that changes the math, with transformers' defaults.

use crate::{Error, Result};
use mixtral_kernels::attention::Attention;
use mixtral_kernels::moe::Moe;
use mixtral_kernels::rmsnorm::RmsNorm;
use mixtral_kernels::rope::Rope;
use mixtral_kernels::router::Router;
use mixtral_tensor::DType;
use serde::Deserialize;
use std::path::Path;

/// A Mixtral architecture, read from a Hugging Face `config.json`.
///
/// Field names are the `config.json` names. Defaults are those of transformers'
/// `MixtralConfig` (the Mixtral-8x7B shape). Both key styles found in the wild are read:
/// the hub's top-level `rope_theta` / `torch_dtype` / explicit `head_dim`, and transformers
/// 5.x's `rope_parameters: {rope_theta, rope_type}` / `dtype` / `head_dim: null`.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// `V`: vocabulary size.
    pub vocab_size: usize,
    /// `D`: hidden size.
    pub hidden_size: usize,
    /// `F`: width of each expert's SwiGLU.
    pub intermediate_size: usize,
    /// Number of decoder layers.
    pub num_hidden_layers: usize,
    /// `H`: query heads.
    pub num_attention_heads: usize,
    /// `G`: key/value heads (grouped-query attention).
    pub num_key_value_heads: usize,
    /// `Dh`: per-head width (hidden_size / heads when the file gives none).
    pub head_dim: usize,
    /// `E`: experts per layer.
    pub num_local_experts: usize,
    /// `K`: experts each token is routed to.
    pub num_experts_per_tok: usize,
    /// RoPE base frequency.
    pub rope_theta: f64,
    /// RMSNorm epsilon.
    pub rms_norm_eps: f64,
    /// Longest sequence the model supports.
    pub max_position_embeddings: usize,
    /// Attention window: position p sees p-w+1..=p. `None` is full causal attention
    /// (Mixtral-8x7B v0.1 has `null`: dense 32k context).
    pub sliding_window: Option<usize>,
    /// True when `lm_head` shares the embedding matrix.
    pub tie_word_embeddings: bool,
    /// The dtype the checkpoint was saved in, if the config says.
    pub torch_dtype: Option<DType>,
    /// Whether the top-k router weights are renormalised to sum to 1 (always true for Mixtral).
    pub norm_topk_prob: bool,
    /// BOS id, if given.
    pub bos_token_id: Option<u32>,
    /// EOS id, if given.
    pub eos_token_id: Option<u32>,
    /// Whether the checkpoint's q/k rows are in adjacent-pair RoPE order (Mistral's
    /// `consolidated.safetensors` and GGUF files: pair `i` of a head is elements `2i, 2i + 1`)
    /// rather than Hugging Face's half-split order (`i, i + Dh/2`). The rows are used as
    /// stored and RoPE rotates the matching pairs; attention is the same either way.
    pub rope_interleaved: bool,
}

/// The raw JSON, before defaults and validation.
#[derive(Deserialize)]
struct RawConfig {
    model_type: Option<String>,
    vocab_size: Option<usize>,
    hidden_size: Option<usize>,
    intermediate_size: Option<usize>,
    num_hidden_layers: Option<usize>,
    num_attention_heads: Option<usize>,
    num_key_value_heads: Option<usize>,
    head_dim: Option<usize>,
    num_local_experts: Option<usize>,
    num_experts_per_tok: Option<usize>,
    rope_theta: Option<f64>,
    rope_parameters: Option<RopeParameters>,
    rms_norm_eps: Option<f64>,
    max_position_embeddings: Option<usize>,
    sliding_window: Option<usize>,
    tie_word_embeddings: Option<bool>,
    torch_dtype: Option<String>,
    dtype: Option<String>,
    hidden_act: Option<String>,
    norm_topk_prob: Option<bool>,
    bos_token_id: Option<u32>,
    eos_token_id: Option<u32>,
}

#[derive(Deserialize)]
struct RopeParameters {
    rope_theta: Option<f64>,
    rope_type: Option<String>,
}

impl Config {
    /// Reads and validates `config.json`.
    pub fn from_file(path: &Path) -> Result<Config> {
        let text = mixtral_tensor::read_small_file(path, crate::config::MAX_CONFIG_BYTES)?;
        Config::from_json(path, &text)
    }

    /// Parses and validates config JSON; `path` is used in error messages.
    pub fn from_json(path: &Path, json: &[u8]) -> Result<Config> {
        let raw: RawConfig = serde_json::from_slice(json).map_err(|source| Error::ConfigParse {
            path: path.into(),
            source,
        })?;
        raw.resolve(path)
    }

    /// Key/value projection width (`G·Dh`).
    pub fn kv_dim(&self) -> usize {
        self.num_key_value_heads * self.head_dim
    }

    /// RMSNorm over `rows` rows of `D`, with the model's epsilon.
    pub fn norm(&self, rows: usize) -> RmsNorm {
        RmsNorm {
            rows,
            cols: self.hidden_size,
            eps: self.rms_norm_eps as f32,
        }
    }

    /// RoPE over `heads` heads (`H` for queries, `G` for keys).
    pub fn rope(&self, heads: usize) -> Rope {
        Rope {
            n_heads: heads,
            head_dim: self.head_dim,
            theta: self.rope_theta,
            interleaved: self.rope_interleaved,
        }
    }

    /// Grouped-query attention with the model's heads and window.
    pub fn attention(&self) -> Attention {
        Attention {
            n_heads: self.num_attention_heads,
            n_kv_heads: self.num_key_value_heads,
            head_dim: self.head_dim,
            window: self.sliding_window,
        }
    }

    /// The router's top-`k` over `n` tokens.
    pub fn router(&self, n: usize, k: usize) -> Router {
        Router {
            n_tokens: n,
            n_experts: self.num_local_experts,
            top_k: k,
            norm_topk_prob: self.norm_topk_prob,
        }
    }

    /// The sparse MoE block over `n` tokens with `k` experts each.
    pub fn moe(&self, n: usize, k: usize) -> Moe {
        Moe {
            n_tokens: n,
            hidden: self.hidden_size,
            ffn: self.intermediate_size,
            top_k: k,
        }
    }

    /// Query projection width (`H·Dh`).
    pub fn q_dim(&self) -> usize {
        self.num_attention_heads * self.head_dim
    }

    /// Parameters in one expert (w1, w3: `F×D`; w2: `D×F`).
    pub fn expert_params(&self) -> u64 {
        3 * (self.hidden_size * self.intermediate_size) as u64
    }

    /// Parameters of one layer that every token uses: attention, norms and router.
    fn layer_dense_params(&self) -> u64 {
        let d = self.hidden_size as u64;
        let attn = d * (2 * self.q_dim() + 2 * self.kv_dim()) as u64;
        attn + 2 * d + d * self.num_local_experts as u64
    }

    fn head_params(&self) -> u64 {
        let embed = (self.vocab_size * self.hidden_size) as u64;
        let lm_head = if self.tie_word_embeddings { 0 } else { embed };
        embed + lm_head + self.hidden_size as u64
    }

    /// Total parameters.
    pub fn n_params(&self) -> u64 {
        let per_layer =
            self.layer_dense_params() + self.num_local_experts as u64 * self.expert_params();
        self.head_params() + self.num_hidden_layers as u64 * per_layer
    }

    /// Parameters each token is computed with: all but the experts it is not routed to
    /// (12.9 B of 46.7 B for 8x7B). Embedding counted whole, as in the usual figure.
    pub fn n_active_params(&self) -> u64 {
        let per_layer =
            self.layer_dense_params() + self.num_experts_per_tok as u64 * self.expert_params();
        self.head_params() + self.num_hidden_layers as u64 * per_layer
    }

    /// Bytes of KV cache per cached position (f32 keys and values, all layers).
    pub fn kv_bytes_per_position(&self) -> u64 {
        (2 * self.num_hidden_layers * self.kv_dim() * std::mem::size_of::<f32>()) as u64
    }

    /// Bytes of f32 KV cache for `positions` positions, or `None` if that overflows a `u64`.
    pub fn kv_bytes(&self, positions: usize) -> Option<u64> {
        self.kv_bytes_per_position().checked_mul(positions as u64)
    }

    /// Bytes of KV cache stored as `dtype` for `positions` positions, or `None` on overflow.
    pub fn kv_bytes_as(&self, positions: usize, dtype: crate::KvDType) -> Option<u64> {
        let per = (2 * self.num_hidden_layers * self.kv_dim() * dtype.bytes()) as u64;
        per.checked_mul(positions as u64)
    }
}

impl RawConfig {
    fn resolve(self, path: &Path) -> Result<Config> {
        let bad = |field, value: String, reason| Error::ConfigValue {
            path: path.into(),
            field,
            value,
            reason,
        };
        if let Some(t) = &self.model_type
            && t != "mixtral"
        {
            return Err(bad(
                "model_type",
                format!("{t:?}"),
                "only \"mixtral\" checkpoints are supported",
            ));
        }
        if let Some(act) = &self.hidden_act
            && act != "silu"
        {
            return Err(bad(
                "hidden_act",
                format!("{act:?}"),
                "Mixtral experts use \"silu\"",
            ));
        }
        let (rope_theta, rope_type) = match &self.rope_parameters {
            Some(p) => (p.rope_theta.or(self.rope_theta), p.rope_type.as_deref()),
            None => (self.rope_theta, None),
        };
        if let Some(kind) = rope_type
            && kind != "default"
        {
            return Err(bad(
                "rope_parameters.rope_type",
                format!("{kind:?}"),
                "only \"default\" RoPE is supported",
            ));
        }
        let dtype_name = self.dtype.or(self.torch_dtype);
        let torch_dtype = match dtype_name.as_deref() {
            None => None,
            Some("float32") => Some(DType::F32),
            Some("float16") => Some(DType::F16),
            Some("bfloat16") => Some(DType::BF16),
            Some(other) => {
                return Err(bad(
                    "torch_dtype",
                    format!("{other:?}"),
                    "expected float32, float16 or bfloat16",
                ));
            }
        };
        let hidden_size = self.hidden_size.unwrap_or(4096);
        let num_attention_heads = self.num_attention_heads.unwrap_or(32);
        if num_attention_heads == 0 {
            return Err(bad("num_attention_heads", "0".into(), "must be positive"));
        }
        let head_dim = match self.head_dim {
            Some(h) => h,
            None => {
                if num_attention_heads == 0 || !hidden_size.is_multiple_of(num_attention_heads) {
                    return Err(bad(
                        "hidden_size",
                        hidden_size.to_string(),
                        "not divisible by num_attention_heads and no head_dim is given",
                    ));
                }
                hidden_size / num_attention_heads
            }
        };
        let cfg = Config {
            vocab_size: self.vocab_size.unwrap_or(32000),
            hidden_size,
            intermediate_size: self.intermediate_size.unwrap_or(14336),
            num_hidden_layers: self.num_hidden_layers.unwrap_or(32),
            num_attention_heads,
            num_key_value_heads: self.num_key_value_heads.unwrap_or(8),
            head_dim,
            num_local_experts: self.num_local_experts.unwrap_or(8),
            num_experts_per_tok: self.num_experts_per_tok.unwrap_or(2),
            rope_theta: rope_theta.unwrap_or(1e6),
            rms_norm_eps: self.rms_norm_eps.unwrap_or(1e-5),
            max_position_embeddings: self.max_position_embeddings.unwrap_or(4096 * 32),
            sliding_window: self.sliding_window,
            tie_word_embeddings: self.tie_word_embeddings.unwrap_or(false),
            torch_dtype,
            norm_topk_prob: self.norm_topk_prob.unwrap_or(true),
            bos_token_id: self.bos_token_id,
            eos_token_id: self.eos_token_id,
            rope_interleaved: false,
        };
        cfg.check(path)?;
        Ok(cfg)
    }
}

/// The largest value accepted for any one size in a config (heads, widths, vocabulary, layers,
/// experts): 2^20, 64 times Mixtral-8x7B's widest (14336). With every size this small, every
/// product the engine forms (`H·Dh`, `V·D`, `E·F·D`, KV bytes per position) fits a `u64`
/// with room to spare, so no size arithmetic derived from a config can wrap.
pub const MAX_DIM: usize = 1 << 20;
/// The longest context accepted: 2^24 positions (512 times Mixtral's 32k).
pub const MAX_CONTEXT: usize = 1 << 24;
/// The largest `config.json` / `params.json` read (real ones are about 1 KB).
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;

impl Config {
    /// Checks the ranges and relations the forward pass relies on.
    pub(crate) fn check(&self, path: &Path) -> Result<()> {
        let bad = |field, value: String, reason| {
            Err(Error::ConfigValue {
                path: path.into(),
                field,
                value,
                reason,
            })
        };
        let positive = [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("num_key_value_heads", self.num_key_value_heads),
            ("head_dim", self.head_dim),
            ("num_local_experts", self.num_local_experts),
            ("num_experts_per_tok", self.num_experts_per_tok),
            ("max_position_embeddings", self.max_position_embeddings),
        ];
        for (field, v) in positive {
            if v == 0 {
                return bad(field, "0".into(), "must be positive");
            }
            let max = if field == "max_position_embeddings" {
                MAX_CONTEXT
            } else {
                MAX_DIM
            };
            if v > max {
                return bad(
                    field,
                    v.to_string(),
                    if field == "max_position_embeddings" {
                        "exceeds the longest context this engine accepts (2^24 positions)"
                    } else {
                        "exceeds the largest size this engine accepts for one dimension (2^20)"
                    },
                );
            }
        }
        if !self
            .num_attention_heads
            .is_multiple_of(self.num_key_value_heads)
        {
            return bad(
                "num_key_value_heads",
                self.num_key_value_heads.to_string(),
                "must divide num_attention_heads (grouped-query attention)",
            );
        }
        if !self.head_dim.is_multiple_of(2) {
            return bad(
                "head_dim",
                self.head_dim.to_string(),
                "must be even for rotary embeddings",
            );
        }
        if self.num_experts_per_tok > self.num_local_experts {
            return bad(
                "num_experts_per_tok",
                self.num_experts_per_tok.to_string(),
                "exceeds num_local_experts",
            );
        }
        if !(self.rms_norm_eps > 0.0 && self.rms_norm_eps.is_finite()) {
            return bad(
                "rms_norm_eps",
                self.rms_norm_eps.to_string(),
                "must be a positive finite number",
            );
        }
        if !(self.rope_theta > 1.0 && self.rope_theta.is_finite()) {
            return bad(
                "rope_theta",
                self.rope_theta.to_string(),
                "must be a finite number above 1",
            );
        }
        if self.sliding_window == Some(0) {
            return bad("sliding_window", "0".into(), "must be positive or null");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<Config> {
        Config::from_json(Path::new("config.json"), json.as_bytes())
    }

    #[test]
    fn empty_config_is_mixtral_8x7b() {
        let c = parse("{}").unwrap();
        assert_eq!(
            (
                c.hidden_size,
                c.intermediate_size,
                c.head_dim,
                c.num_key_value_heads
            ),
            (4096, 14336, 128, 8)
        );
        assert_eq!(c.rope_theta, 1e6);
        assert_eq!(c.sliding_window, None);
        // 46.7 B total, 12.9 B active per token.
        let tenths_of_billion = |n: u64| (n as f64 / 1e8).round() as u64;
        assert_eq!(tenths_of_billion(c.n_params()), 467);
        assert_eq!(tenths_of_billion(c.n_active_params()), 129);
    }

    #[test]
    fn transformers_5_rope_parameters_are_read() {
        let c = parse(r#"{"rope_parameters": {"rope_theta": 500.0, "rope_type": "default"}, "dtype": "float32", "head_dim": null}"#).unwrap();
        assert_eq!(c.rope_theta, 500.0);
        assert_eq!(c.torch_dtype, Some(DType::F32));
        assert_eq!(c.head_dim, 128);
    }

    #[test]
    fn hub_style_keys_are_read() {
        let c = parse(r#"{"rope_theta": 1e4, "torch_dtype": "bfloat16", "head_dim": 64, "sliding_window": 4096}"#).unwrap();
        assert_eq!(
            (c.rope_theta, c.torch_dtype, c.head_dim, c.sliding_window),
            (1e4, Some(DType::BF16), 64, Some(4096))
        );
    }

    #[test]
    fn hidden_not_divisible_by_heads_is_rejected() {
        let err = parse(r#"{"hidden_size": 100, "num_attention_heads": 3}"#).unwrap_err();
        assert_eq!(
            err.to_string(),
            "config.json: `hidden_size` = 100: not divisible by num_attention_heads and no head_dim is given"
        );
    }

    #[test]
    fn contradictions_are_rejected() {
        for (json, field) in [
            (r#"{"num_key_value_heads": 5}"#, "num_key_value_heads"),
            (r#"{"num_experts_per_tok": 9}"#, "num_experts_per_tok"),
            (
                r#"{"rope_parameters": {"rope_type": "yarn"}}"#,
                "rope_parameters.rope_type",
            ),
            (r#"{"hidden_act": "gelu"}"#, "hidden_act"),
            (r#"{"model_type": "llama"}"#, "model_type"),
            (r#"{"torch_dtype": "int8"}"#, "torch_dtype"),
            (r#"{"head_dim": 33}"#, "head_dim"),
            (r#"{"vocab_size": 0}"#, "vocab_size"),
            (r#"{"sliding_window": 0}"#, "sliding_window"),
        ] {
            match parse(json) {
                Err(Error::ConfigValue { field: f, .. }) => assert_eq!(f, field, "{json}"),
                other => panic!("{json}: expected a ConfigValue error, got {other:?}"),
            }
        }
    }

    #[test]
    fn sizes_that_would_wrap_are_rejected() {
        // 2^63 + 16: times 32 heads it wraps to 512 in a u64; it must never get that far.
        let err = parse(r#"{"head_dim": 9223372036854775824}"#).unwrap_err();
        assert_eq!(
            err.to_string(),
            "config.json: `head_dim` = 9223372036854775824: exceeds the largest size this engine accepts for one dimension (2^20)"
        );
        for field in [
            "hidden_size",
            "intermediate_size",
            "vocab_size",
            "num_local_experts",
        ] {
            let json = format!(r#"{{"{field}": 1099511627776, "head_dim": 128}}"#);
            assert!(
                matches!(parse(&json), Err(Error::ConfigValue { field: f, .. }) if f == field),
                "{field}"
            );
        }
        let err = parse(r#"{"max_position_embeddings": 36028797018963968}"#).unwrap_err();
        assert!(err.to_string().contains("longest context"), "{err}");
        // The largest accepted sizes still multiply without overflow.
        let c = parse(r#"{"head_dim": 1048576, "num_attention_heads": 1048576, "num_key_value_heads": 1048576, "num_hidden_layers": 1048576}"#).unwrap();
        assert!(c.q_dim() > 0 && c.kv_bytes_per_position() > 0);
        assert_eq!(c.kv_bytes(1 << 40), None);
        assert_eq!(parse("{}").unwrap().kv_bytes(1 << 55), None);
    }

    #[test]
    fn zero_heads_say_so() {
        let err = parse(r#"{"num_attention_heads": 0}"#).unwrap_err();
        assert_eq!(
            err.to_string(),
            "config.json: `num_attention_heads` = 0: must be positive"
        );
    }

    #[test]
    fn malformed_json_is_a_parse_error() {
        assert!(matches!(
            parse(r#"{"hidden_size": "big"}"#),
            Err(Error::ConfigParse { .. })
        ));
    }
}
