//! How conversations become token ids: the model's own chat template (from its directory or
//! its GGUF metadata) or the mistral-common-exact `[INST]` renderer, and the choice between
//! them. The engine and `mixtral tokenize --chat` both go through here, so a conversation
//! encodes the same way in either.

use crate::{Error, Result};
use mixtral_tensor::gguf::{GgufFile, Value, has_gguf_magic};
use mixtral_tokenizer::chat::Message;
use mixtral_tokenizer::{ChatTemplate, MAX_TEMPLATE_BYTES, Tokenizer};
use std::path::Path;

/// The GGUF key llama.cpp's converter writes a model's chat template under.
pub const GGUF_TEMPLATE_KEY: &str = "tokenizer.chat_template";

/// How conversations ([`crate::Prompt::Chat`]) become token ids.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum ChatFormat {
    /// The model's own chat template when it has one that is not Mixtral-Instruct's;
    /// otherwise the mistral-common-exact `[INST]` renderer.
    #[default]
    Auto,
    /// The mistral-common-exact `[INST] … [/INST]` renderer, whatever the model carries.
    Mistral,
    /// The model's chat template (`chat_template.jinja` or `tokenizer_config.json`'s
    /// `chat_template` in a directory, `tokenizer.chat_template` in a GGUF file), rendered as
    /// transformers' `apply_chat_template` does; loading fails without one.
    Template,
}

impl std::str::FromStr for ChatFormat {
    type Err = String;

    /// `auto`, `mistral` or `template`.
    fn from_str(s: &str) -> std::result::Result<ChatFormat, String> {
        match s {
            "auto" => Ok(ChatFormat::Auto),
            "mistral" => Ok(ChatFormat::Mistral),
            "template" => Ok(ChatFormat::Template),
            _ => Err(format!(
                "unknown chat format `{s}` (expected auto, mistral or template)"
            )),
        }
    }
}

const NO_TEMPLATE: &str = "`template` needs a model with a chat template (chat_template.jinja or \
                           tokenizer_config.json's chat_template in a directory, \
                           tokenizer.chat_template in a GGUF file)";

/// The template `format` picks among what the model has: `None` means the `[INST]` renderer.
pub(crate) fn choose(
    format: ChatFormat,
    found: Option<ChatTemplate>,
) -> Result<Option<ChatTemplate>> {
    match (format, found) {
        (ChatFormat::Mistral, _) => Ok(None),
        (ChatFormat::Template, None) => Err(Error::InvalidOption {
            option: "chat_format",
            reason: NO_TEMPLATE,
        }),
        (ChatFormat::Template, t) => Ok(t),
        (_, Some(t)) if !t.is_mistral_instruct() => Ok(Some(t)),
        _ => Ok(None),
    }
}

/// The template a model directory carries (Mistral's own directories, and anything that is
/// not a directory, carry none).
pub(crate) fn dir_template(dir: &Path) -> Result<Option<ChatTemplate>> {
    let dir = crate::gguf_vocab::files_dir(dir);
    Ok(match dir.is_dir() {
        true => ChatTemplate::from_dir(dir)?,
        false => None,
    })
}

/// The template a GGUF file carries: `tokenizer.chat_template`, printing the BOS and EOS
/// pieces of the file's own vocabulary (`<s>` / `</s>` without one).
pub(crate) fn gguf_template(
    file: &GgufFile,
    tokenizer: Option<&Tokenizer>,
) -> Result<Option<ChatTemplate>> {
    let bad = |reason: String| mixtral_tokenizer::Error::BadVocab {
        path: file.path().to_path_buf(),
        field: GGUF_TEMPLATE_KEY.into(),
        reason,
    };
    let source = match file.metadata().get(GGUF_TEMPLATE_KEY) {
        None => return Ok(None),
        Some(Value::String(s)) if s.len() as u64 <= MAX_TEMPLATE_BYTES => s.clone(),
        Some(Value::String(s)) => {
            return Err(bad(format!(
                "{} bytes, more than the {MAX_TEMPLATE_BYTES} a chat template may have",
                s.len()
            ))
            .into());
        }
        Some(other) => return Err(bad(format!("{other}: expected a string")).into()),
    };
    let piece = |id: Option<u32>, default: &str| {
        id.and_then(|id| tokenizer?.id_to_piece(id).map(str::to_string))
            .unwrap_or_else(|| default.to_string())
    };
    let bos = piece(tokenizer.map(Tokenizer::bos_id), "<s>");
    let eos = piece(tokenizer.map(Tokenizer::eos_id), "</s>");
    let name = format!("{}: {GGUF_TEMPLATE_KEY}", file.path().display());
    match ChatTemplate::named(name, source, bos, eos) {
        Ok(t) => Ok(Some(t)),
        Err(mixtral_tokenizer::Error::ChatTemplate { message, .. }) => {
            Err(bad(format!("does not compile: {message}")).into())
        }
        Err(e) => Err(e.into()),
    }
}

/// The chat template the model at `model` carries, whatever it is: a directory's
/// (`chat_template.jinja`, else `tokenizer_config.json`'s `chat_template`) or a GGUF file's
/// (`tokenizer.chat_template`; `tokenizer` names its BOS and EOS pieces).
///
/// # Errors
/// Unreadable files, and a template that does not compile.
pub fn model_chat_template(
    model: &Path,
    tokenizer: Option<&Tokenizer>,
) -> Result<Option<ChatTemplate>> {
    if model.is_file() && has_gguf_magic(model) {
        let file = GgufFile::open(model).map_err(mixtral_model::Error::from)?;
        return gguf_template(&file, tokenizer);
    }
    dir_template(model)
}

/// The chat template `format` picks for the model at `model` (a directory or a GGUF file),
/// or `None` for the mistral-common-exact `[INST]` renderer: what [`crate::Engine`] uses,
/// for tools that only tokenize.
///
/// # Errors
/// [`Error::InvalidOption`] for [`ChatFormat::Template`] on a model without a template, and
/// [`model_chat_template`]'s.
pub fn chat_template(
    model: &Path,
    format: ChatFormat,
    tokenizer: Option<&Tokenizer>,
) -> Result<Option<ChatTemplate>> {
    match format {
        ChatFormat::Mistral => Ok(None),
        _ => choose(format, model_chat_template(model, tokenizer)?),
    }
}

/// `messages` as token ids: rendered by `template` (the special tokens it prints, BOS
/// included, become ids; the same text inside a message stays text) or, without one, by the
/// mistral-common-exact `[INST]` renderer. A conversation that ends with an assistant message
/// is rendered for the model to continue that message (no end of turn after it).
///
/// # Errors
/// The template's own errors (it may refuse a conversation, e.g. roles that do not
/// alternate) and the tokenizer's.
pub fn encode_chat(
    tokenizer: &Tokenizer,
    template: Option<&ChatTemplate>,
    messages: &[Message],
) -> Result<Vec<u32>> {
    // A conversation that ends with the assistant's words asks the model to go on with them
    // (a prefill, or a reply cut short), not to answer them.
    let continuing = messages
        .last()
        .is_some_and(|m| m.role == mixtral_tokenizer::chat::Role::Assistant);
    Ok(match (template, continuing) {
        (Some(t), false) => tokenizer.encode_chat_template(t, messages, true)?,
        (Some(t), true) => tokenizer.encode_chat_template_continuing(t, messages)?,
        (None, false) => tokenizer.encode_chat(messages)?,
        (None, true) => tokenizer.encode_chat_continuing(messages)?,
    })
}
