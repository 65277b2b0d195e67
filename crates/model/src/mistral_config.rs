//! A Mixtral [`Config`] from Mistral's own `params.json` (mistral-inference's `ModelArgs`).

use crate::{Config, Error, Result};
use serde::Deserialize;
use std::path::Path;

#[derive(Deserialize)]
struct Params {
    dim: usize,
    n_layers: usize,
    head_dim: Option<usize>,
    hidden_dim: usize,
    n_heads: usize,
    n_kv_heads: Option<usize>,
    norm_eps: f64,
    vocab_size: usize,
    rope_theta: Option<f64>,
    sliding_window: Option<usize>,
    max_seq_len: Option<usize>,
    #[serde(default)]
    tied_embeddings: bool,
    moe: Option<MoeParams>,
}

#[derive(Deserialize)]
struct MoeParams {
    num_experts: usize,
    num_experts_per_tok: usize,
}

impl Config {
    /// Reads and validates Mistral's `params.json`.
    pub fn from_params_file(path: &Path) -> Result<Config> {
        let text = mixtral_tensor::read_small_file(path, crate::config::MAX_CONFIG_BYTES)?;
        Config::from_params_json(path, &text)
    }

    /// Parses and validates `params.json` text; `path` is used in error messages.
    pub fn from_params_json(path: &Path, json: &[u8]) -> Result<Config> {
        let p: Params = serde_json::from_slice(json).map_err(|source| Error::ConfigParse {
            path: path.into(),
            source,
        })?;
        let Some(moe) = p.moe else {
            return Err(Error::ConfigValue {
                path: path.into(),
                field: "moe",
                value: "absent".into(),
                reason: "a dense Mistral model, not a Mixtral (mixture of experts)",
            });
        };
        if p.n_heads == 0 || (p.head_dim.is_none() && !p.dim.is_multiple_of(p.n_heads)) {
            return Err(Error::ConfigValue {
                path: path.into(),
                field: "n_heads",
                value: p.n_heads.to_string(),
                reason: "must be positive and divide dim when head_dim is absent",
            });
        }
        let cfg = Config {
            vocab_size: p.vocab_size,
            hidden_size: p.dim,
            intermediate_size: p.hidden_dim,
            num_hidden_layers: p.n_layers,
            num_attention_heads: p.n_heads,
            num_key_value_heads: p.n_kv_heads.unwrap_or(p.n_heads),
            head_dim: p.head_dim.unwrap_or(p.dim / p.n_heads),
            num_local_experts: moe.num_experts,
            num_experts_per_tok: moe.num_experts_per_tok,
            // mistral-inference's default when params.json has none.
            rope_theta: p.rope_theta.unwrap_or(10_000.0),
            rms_norm_eps: p.norm_eps,
            // Mixtral's 32k context when params.json does not say.
            max_position_embeddings: p.max_seq_len.unwrap_or(32_768),
            sliding_window: p.sliding_window,
            tie_word_embeddings: p.tied_embeddings,
            torch_dtype: None,
            norm_topk_prob: true,
            bos_token_id: Some(1),
            eos_token_id: Some(2),
            // Mistral's checkpoints keep q/k rows in the order its RoPE pairs them.
            rope_interleaved: true,
        };
        cfg.check(path)?;
        Ok(cfg)
    }
}
