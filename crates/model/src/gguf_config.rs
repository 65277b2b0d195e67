//! A Mixtral [`Config`] from a GGUF file's metadata (llama.cpp's converter writes Mixtral as
//! architecture `llama` with `llama.expert_count` > 0).

use crate::{Config, Error, Result};
use mixtral_tensor::gguf::{GgufFile, Value};
use std::path::Path;

/// Reads the keys of one architecture prefix, each failure naming the file and key.
struct Keys<'a> {
    file: &'a GgufFile,
    arch: &'a str,
}

impl Keys<'_> {
    fn path(&self) -> &Path {
        self.file.path()
    }

    fn err(&self, key: &str, reason: String) -> Error {
        Error::GgufMetadata {
            path: self.path().to_path_buf(),
            key: key.to_string(),
            reason,
        }
    }

    fn raw(&self, suffix: &str) -> (String, Option<&Value>) {
        let key = format!("{}.{suffix}", self.arch);
        let value = self.file.metadata().get(&key);
        (key, value)
    }

    /// A non-negative integer that fits a `usize`.
    fn count(&self, suffix: &str) -> Result<Option<usize>> {
        let (key, value) = self.raw(suffix);
        let Some(v) = value else { return Ok(None) };
        let n = v.as_u64().and_then(|n| usize::try_from(n).ok());
        n.map(Some).ok_or_else(|| {
            let reason = format!("expected a non-negative integer, found {}", v.value_type());
            self.err(&key, reason)
        })
    }

    fn required(&self, suffix: &str) -> Result<usize> {
        self.count(suffix)?
            .ok_or_else(|| self.err(&format!("{}.{suffix}", self.arch), "missing".into()))
    }

    fn float(&self, suffix: &str) -> Result<Option<f64>> {
        let (key, value) = self.raw(suffix);
        let Some(v) = value else { return Ok(None) };
        v.as_f64().map(Some).ok_or_else(|| {
            let reason = format!("expected a number, found {}", v.value_type());
            self.err(&key, reason)
        })
    }
}

/// The token id stored under `key` (`tokenizer.ggml.bos_token_id` …), if any.
fn token_id(file: &GgufFile, key: &str) -> Option<u32> {
    let id = file.metadata().get(key)?.as_u64()?;
    u32::try_from(id).ok()
}

impl Config {
    /// The architecture of a GGUF file. Fails with [`Error::NotMixtral`] for a file of another
    /// architecture (or a dense Llama), and with [`Error::GgufMetadata`] for a missing or
    /// mistyped key.
    pub fn from_gguf(file: &GgufFile) -> Result<Config> {
        let path = file.path();
        let not_mixtral = |what: String| Error::NotMixtral {
            path: path.to_path_buf(),
            what,
        };
        let arch = match file.metadata().get("general.architecture") {
            Some(Value::String(a)) => a.as_str(),
            Some(other) => {
                return Err(Error::GgufMetadata {
                    path: path.to_path_buf(),
                    key: "general.architecture".into(),
                    reason: format!("expected a string, found {}", other.value_type()),
                });
            }
            None => return Err(not_mixtral("it has no general.architecture".into())),
        };
        if arch != "llama" && arch != "mixtral" {
            let shown: String = arch.escape_debug().take(40).collect();
            return Err(not_mixtral(format!(
                "its architecture is \"{shown}\" (a Mixtral GGUF has architecture llama with \
                 llama.expert_count > 0)"
            )));
        }
        let keys = Keys { file, arch };
        let experts = keys.count("expert_count")?.unwrap_or(0);
        if experts == 0 {
            return Err(not_mixtral(format!(
                "{arch}.expert_count is absent or 0: a dense Llama/Mistral model, not a mixture of experts"
            )));
        }
        let hidden = keys.required("embedding_length")?;
        let heads = keys.required("attention.head_count")?;
        let head_dim = match keys.count("attention.key_length")? {
            Some(d) => d,
            None if heads > 0 && hidden % heads == 0 => hidden / heads,
            None => {
                return Err(keys.err(
                    &format!("{arch}.attention.head_count"),
                    format!("{heads} does not divide embedding_length {hidden}"),
                ));
            }
        };
        if let Some(rot) = keys.count("rope.dimension_count")?
            && rot != head_dim
        {
            return Err(keys.err(
                &format!("{arch}.rope.dimension_count"),
                format!(
                    "{rot}: partial rotary embeddings (head size {head_dim}) are not supported"
                ),
            ));
        }
        if let Some(v) = file.metadata().get(&format!("{arch}.rope.scaling.type"))
            && v.as_str() != Some("none")
        {
            return Err(keys.err(
                &format!("{arch}.rope.scaling.type"),
                format!("{v}: RoPE scaling is not supported"),
            ));
        }
        let vocab = match keys.count("vocab_size")? {
            Some(v) => v,
            None => match file.metadata().get("tokenizer.ggml.tokens") {
                Some(Value::Array(a)) => a.len(),
                _ => match file.infos().get("token_embd.weight") {
                    Some(info) => info.shape.dims()[0],
                    None => return Err(keys.err("llama.vocab_size", "missing".into())),
                },
            },
        };
        let cfg = Config {
            vocab_size: vocab,
            hidden_size: hidden,
            intermediate_size: keys.required("feed_forward_length")?,
            num_hidden_layers: keys.required("block_count")?,
            num_attention_heads: heads,
            num_key_value_heads: keys.count("attention.head_count_kv")?.unwrap_or(heads),
            head_dim,
            num_local_experts: experts,
            num_experts_per_tok: keys.required("expert_used_count")?,
            // llama.cpp's default when the key is absent.
            rope_theta: keys.float("rope.freq_base")?.unwrap_or(10_000.0),
            rms_norm_eps: keys
                .float("attention.layer_norm_rms_epsilon")?
                .unwrap_or(1e-5),
            max_position_embeddings: keys.count("context_length")?.unwrap_or(32_768),
            sliding_window: None,
            tie_word_embeddings: !file.infos().contains_key("output.weight"),
            torch_dtype: None,
            norm_topk_prob: true,
            bos_token_id: token_id(file, "tokenizer.ggml.bos_token_id"),
            eos_token_id: token_id(file, "tokenizer.ggml.eos_token_id"),
            // llama.cpp's converter permuted q/k rows into adjacent-pair order.
            rope_interleaved: true,
        };
        cfg.check(path)?;
        Ok(cfg)
    }
}
