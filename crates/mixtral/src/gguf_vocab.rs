//! Finding a model's tokenizer; for a GGUF file, from its `tokenizer.ggml.*` metadata, so that
//! a GGUF file alone runs `generate` and `chat` as it does in llama.cpp.

use mixtral_tensor::gguf::{Array, GgufFile, Value, has_gguf_magic};
use mixtral_tokenizer::{Error, PieceType, SentencePieceVocab, Tokenizer};
use std::path::Path;

/// The SentencePiece vocabulary in `file`'s metadata, or `None` when it has no
/// `tokenizer.ggml.tokens`.
///
/// # Errors
/// [`Error::BadVocab`] naming the key when the tokenizer is not SentencePiece
/// (`tokenizer.ggml.model` other than `llama`), or an array has the wrong type or length.
pub fn vocab_from_gguf(file: &GgufFile) -> Result<Option<SentencePieceVocab>, Error> {
    let meta = file.metadata();
    let bad = |key: &str, reason: String| Error::BadVocab {
        path: file.path().to_path_buf(),
        field: key.to_string(),
        reason,
    };
    let Some(tokens) = meta.get("tokenizer.ggml.tokens") else {
        return Ok(None);
    };
    match meta.get("tokenizer.ggml.model") {
        Some(Value::String(m)) if m == "llama" => {}
        Some(other) => {
            return Err(bad(
                "tokenizer.ggml.model",
                format!("{other}: only SentencePiece (\"llama\") tokenizers are supported"),
            ));
        }
        None => return Err(bad("tokenizer.ggml.model", "missing".into())),
    }
    let Value::Array(Array::String(pieces)) = tokens else {
        return Err(bad(
            "tokenizer.ggml.tokens",
            format!("{tokens}: expected an array of strings"),
        ));
    };
    let n = pieces.len();
    let scores = match meta.get("tokenizer.ggml.scores") {
        Some(Value::Array(Array::F32(s))) => s.clone(),
        // Without scores llama.cpp ranks pieces by id; so do we.
        None => (0..n).map(|i| -(i as f32)).collect(),
        Some(other) => {
            return Err(bad(
                "tokenizer.ggml.scores",
                format!("{other}: expected an array of float32"),
            ));
        }
    };
    let types = match meta.get("tokenizer.ggml.token_type") {
        Some(Value::Array(Array::I32(t))) => t
            .iter()
            .enumerate()
            .map(|(i, &t)| {
                PieceType::from_number(t.into()).ok_or_else(|| {
                    bad(
                        "tokenizer.ggml.token_type",
                        format!("token {i} has unknown type {t}"),
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?,
        None => vec![PieceType::Normal; n],
        Some(other) => {
            return Err(bad(
                "tokenizer.ggml.token_type",
                format!("{other}: expected an array of int32"),
            ));
        }
    };
    let id = |key: &str| -> Result<Option<u32>, Error> {
        match meta.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .and_then(|i| u32::try_from(i).ok())
                .map(Some)
                .ok_or_else(|| bad(key, format!("{v}: expected a token id"))),
        }
    };
    Ok(Some(SentencePieceVocab {
        pieces: pieces.clone(),
        scores,
        types,
        bos_id: id("tokenizer.ggml.bos_token_id")?,
        eos_id: id("tokenizer.ggml.eos_token_id")?,
        unk_id: id("tokenizer.ggml.unknown_token_id")?,
    }))
}

/// The tokenizer a GGUF file carries, if it carries one.
pub fn tokenizer_from_gguf(file: &GgufFile) -> Result<Option<Tokenizer>, Error> {
    vocab_from_gguf(file)?
        .map(|v| Tokenizer::from_vocab(&v, file.path()))
        .transpose()
}

/// The tokenizer of a model, from whichever file its format keeps it in: a GGUF file's
/// metadata, a directory's `tokenizer.json` (with `tokenizer_config.json` /
/// `special_tokens_map.json` for BOS/EOS), or else its SentencePiece `tokenizer.model`
/// (Mistral's format). `None` when there is none.
pub fn find_tokenizer(model: &Path) -> crate::Result<Option<Tokenizer>> {
    if model.is_file() && has_gguf_magic(model) {
        let file = GgufFile::open(model).map_err(mixtral_model::Error::from)?;
        return Ok(tokenizer_from_gguf(&file)?);
    }
    let model = files_dir(model);
    if model.join("tokenizer.json").is_file() {
        return Ok(Some(Tokenizer::from_dir(model)?));
    }
    // Mistral's own directories carry only SentencePiece's model file.
    let spm = model.join("tokenizer.model");
    if spm.is_file() {
        return Ok(Some(Tokenizer::from_sentencepiece_model(&spm)?));
    }
    Ok(None)
}

/// Where the files beside the weights (tokenizer, generation and chat config) are: the
/// directory of a single `.safetensors` file, else the model path itself.
pub(crate) fn files_dir(model: &Path) -> &Path {
    if model.is_file() && model.extension().is_some_and(|e| e == "safetensors") {
        match model.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        }
    } else {
        model
    }
}

/// [`find_tokenizer`], failing with [`crate::Error::NoTokenizer`] when there is none.
pub fn load_tokenizer(model: &Path) -> crate::Result<Tokenizer> {
    find_tokenizer(model)?.ok_or_else(|| crate::Error::NoTokenizer {
        dir: model.to_path_buf(),
    })
}
