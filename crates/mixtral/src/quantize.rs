//! `mixtral quantize`: any checkpoint of float weights (Hugging Face, Mistral or GGUF) written
//! as a quantized GGUF file that llama.cpp's tools load, with the tokenizer in its metadata as llama.cpp's
//! converter writes it.

use crate::Result;
use mixtral_model::Checkpoint;
pub use mixtral_model::export::QuantScheme;
use mixtral_model::export::write_quantized_gguf;
use mixtral_tensor::gguf::{Array, GgufFile, Value};
use mixtral_tokenizer::{PieceType, SentencePieceVocab, read_sentencepiece_vocab};
use std::path::Path;

/// GGUF metadata pairs.
type Keys = Vec<(String, Value)>;

/// The most bytes of `tokenizer_config.json` read (its chat template is a few kB).
const MAX_TOKENIZER_CONFIG_BYTES: u64 = 16 << 20;

/// What [`quantize_to_gguf`] wrote.
#[derive(Clone, Debug)]
pub struct QuantizeReport {
    /// Bytes of tensor data written.
    pub tensor_bytes: u64,
    /// Where the tokenizer metadata came from, or `None` when the model has no
    /// `tokenizer.model` (nor, for a GGUF source, tokenizer keys): llama.cpp then refuses
    /// the file, while this engine runs it from token ids.
    pub tokenizer_from: Option<String>,
}

/// Writes `model` quantized with `scheme` to `out` (which must not exist yet).
/// `progress(done, total)` counts output bytes.
///
/// # Errors
/// [`crate::Error::AlreadyQuantized`] for a checkpoint of quantized weights (a GGUF file
/// quantized already), the model's own errors, [`mixtral_model::Error::Export`] when a matrix's rows are not
/// whole blocks of its type (K-quants need rows of 256), and I/O errors (the partial file is
/// removed).
pub fn quantize_to_gguf(
    model: &Path,
    scheme: QuantScheme,
    out: &Path,
    mut progress: impl FnMut(u64, u64),
) -> Result<QuantizeReport> {
    let ckpt = Checkpoint::open(model)?;
    crate::engine::refuse_quantized(&ckpt)?;
    let (extra, tokenizer_from) = tokenizer_metadata(&ckpt, model)?;
    let mut total = 0;
    write_quantized_gguf(&ckpt, scheme, extra, out, |done, all| {
        total = all;
        progress(done, all);
    })?;
    Ok(QuantizeReport {
        tensor_bytes: total,
        tokenizer_from,
    })
}

/// The `tokenizer.*` keys for the output file: copied from a GGUF source, else built from the
/// directory's `tokenizer.model` (and `tokenizer_config.json`).
fn tokenizer_metadata(ckpt: &Checkpoint, model: &Path) -> Result<(Keys, Option<String>)> {
    if let Some(file) = ckpt.gguf() {
        return Ok(copy_tokenizer_keys(file));
    }
    let spm = model.join("tokenizer.model");
    if !spm.is_file() {
        return Ok((Vec::new(), None));
    }
    let vocab = read_sentencepiece_vocab(&spm)?;
    let config = read_tokenizer_config(&model.join("tokenizer_config.json"))?;
    Ok((vocab_keys(&vocab, &config), Some(spm.display().to_string())))
}

fn copy_tokenizer_keys(file: &GgufFile) -> (Keys, Option<String>) {
    let keys: Keys = file
        .metadata()
        .iter()
        .filter(|(k, _)| k.starts_with("tokenizer."))
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    let from = (!keys.is_empty()).then(|| file.path().display().to_string());
    (keys, from)
}

/// What llama.cpp's converter takes from `tokenizer_config.json`.
#[derive(Default)]
struct TokenizerConfig {
    /// Ids listed as special added tokens (written as control tokens).
    special: Vec<u32>,
    chat_template: Option<String>,
    add_bos: Option<bool>,
    add_eos: Option<bool>,
}

fn read_tokenizer_config(path: &Path) -> Result<TokenizerConfig> {
    // The template as the engine reads it: `chat_template.jinja` first (where transformers 5
    // saves it, and llama.cpp's converter looks too), then tokenizer_config.json's, a named
    // list's `default` included.
    let dir = path.parent().unwrap_or(Path::new("."));
    let chat_template =
        mixtral_tokenizer::ChatTemplate::from_dir(dir)?.map(|t| t.source().to_string());
    if !path.is_file() {
        return Ok(TokenizerConfig {
            chat_template,
            ..TokenizerConfig::default()
        });
    }
    let bytes = mixtral_tensor::read_small_file(path, MAX_TOKENIZER_CONFIG_BYTES)
        .map_err(mixtral_model::Error::from)?;
    let json: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| mixtral_tokenizer::Error::BadVocab {
            path: path.to_path_buf(),
            field: "tokenizer_config.json".into(),
            reason: e.to_string(),
        })?;
    let special = json["added_tokens_decoder"]
        .as_object()
        .map(|m| {
            m.iter()
                .filter(|(_, t)| t["special"].as_bool() == Some(true))
                .filter_map(|(id, _)| id.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    Ok(TokenizerConfig {
        special,
        chat_template,
        add_bos: json["add_bos_token"].as_bool(),
        add_eos: json["add_eos_token"].as_bool(),
    })
}

/// The keys llama.cpp's converter writes for a SentencePiece (`llama`) vocabulary.
fn vocab_keys(v: &SentencePieceVocab, config: &TokenizerConfig) -> Keys {
    let types: Vec<i32> = v
        .types
        .iter()
        .enumerate()
        .map(|(id, t)| {
            if config.special.contains(&(id as u32)) {
                PieceType::Control.number()
            } else {
                t.number()
            }
        })
        .collect();
    // The converter gives special added tokens the score -1000 (they never merge).
    let scores: Vec<f32> = (0..v.scores.len())
        .map(|id| {
            if config.special.contains(&(id as u32)) {
                -1000.0
            } else {
                v.scores[id]
            }
        })
        .collect();
    let mut keys = vec![
        ("tokenizer.ggml.model".into(), Value::String("llama".into())),
        ("tokenizer.ggml.pre".into(), Value::String("default".into())),
        (
            "tokenizer.ggml.tokens".into(),
            Value::Array(Array::String(v.pieces.clone())),
        ),
        (
            "tokenizer.ggml.scores".into(),
            Value::Array(Array::F32(scores)),
        ),
        (
            "tokenizer.ggml.token_type".into(),
            Value::Array(Array::I32(types)),
        ),
    ];
    let ids = [
        ("tokenizer.ggml.bos_token_id", v.bos_id),
        ("tokenizer.ggml.eos_token_id", v.eos_id),
        ("tokenizer.ggml.unknown_token_id", v.unk_id),
    ];
    for (key, id) in ids {
        if let Some(id) = id {
            keys.push((key.into(), Value::U32(id)));
        }
    }
    keys.push((
        "tokenizer.ggml.add_bos_token".into(),
        Value::Bool(config.add_bos.unwrap_or(true)),
    ));
    keys.push((
        "tokenizer.ggml.add_eos_token".into(),
        Value::Bool(config.add_eos.unwrap_or(false)),
    ));
    keys.push(("tokenizer.ggml.add_sep_token".into(), Value::Bool(false)));
    if let Some(t) = &config.chat_template {
        keys.push(("tokenizer.chat_template".into(), Value::String(t.clone())));
    }
    keys
}
