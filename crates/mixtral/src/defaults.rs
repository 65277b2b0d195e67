//! `Defaults`: sampling settings and stop ids from `generation_config.json`, as transformers
//! reads them.

use crate::{Error, Result};
use mixtral_model::Config;
use mixtral_sampler::SamplerConfig;
use mixtral_tokenizer::Tokenizer;
use serde::Deserialize;
use std::path::Path;

/// The largest `generation_config.json` read (real ones are a few hundred bytes).
const MAX_GENERATION_CONFIG_BYTES: u64 = 1 << 20;

/// Generation defaults of a model directory.
///
/// transformers samples only when `do_sample` is true; then `temperature`, `top_k` and
/// `top_p` apply (its own defaults 1.0, 50, 1.0). Otherwise decoding is greedy. Penalties are
/// off: they hurt Mixtral (llama.cpp's Mixtral notes recommend a repeat penalty of 1).
#[derive(Clone, Debug, PartialEq)]
pub struct Defaults {
    /// Sampling settings.
    pub sampling: SamplerConfig,
    /// Token ids that end generation.
    pub eos_token_ids: Vec<u32>,
    /// BOS id to start a plain prompt with.
    pub bos_token_id: Option<u32>,
    /// `max_new_tokens` if the file sets one.
    pub max_new_tokens: Option<usize>,
}

#[derive(Deserialize, Default)]
struct GenerationConfig {
    do_sample: Option<bool>,
    temperature: Option<f32>,
    top_k: Option<usize>,
    top_p: Option<f32>,
    max_new_tokens: Option<usize>,
    eos_token_id: Option<OneOrMany>,
    bos_token_id: Option<u32>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(u32),
    Many(Vec<u32>),
}

impl Defaults {
    /// Reads `dir/generation_config.json` if present; ids fall back to the tokenizer's, then the
    /// config's.
    pub fn read(dir: &Path, config: &Config, tokenizer: Option<&Tokenizer>) -> Result<Defaults> {
        let path = dir.join("generation_config.json");
        // Optional: absent (or no directory at all, as for a GGUF file) means no defaults; any
        // other failure (a directory in its place, a FIFO, an unreadable or huge file, bad
        // JSON) is reported, never silently ignored.
        let g: GenerationConfig = if !dir.is_dir() || !path.exists() {
            GenerationConfig::default()
        } else {
            let bytes = mixtral_tensor::read_small_file(&path, MAX_GENERATION_CONFIG_BYTES)
                .map_err(mixtral_model::Error::from)?;
            serde_json::from_slice(&bytes)
                .map_err(|source| Error::GenerationConfig { path, source })?
        };
        let mut sampling = SamplerConfig::default(); // greedy
        if g.do_sample == Some(true) {
            sampling.temperature = g.temperature.unwrap_or(1.0);
            sampling.top_k = Some(g.top_k.unwrap_or(50)).filter(|&k| k > 0);
            sampling.top_p = g.top_p.unwrap_or(1.0);
        }
        let eos_token_ids = match g.eos_token_id {
            Some(OneOrMany::One(id)) => vec![id],
            Some(OneOrMany::Many(ids)) => ids,
            None => tokenizer
                .map(|t| t.eos_id())
                .or(config.eos_token_id)
                .into_iter()
                .collect(),
        };
        let bos_token_id = g
            .bos_token_id
            .or(tokenizer.map(|t| t.bos_id()))
            .or(config.bos_token_id);
        Ok(Defaults {
            sampling,
            eos_token_ids,
            bos_token_id,
            max_new_tokens: g.max_new_tokens,
        })
    }
}
