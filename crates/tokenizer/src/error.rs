//! The crate's error type: loading tokenizer files, decoding ids, and conversations that break
//! the v1 instruct format.

use std::path::PathBuf;

use crate::role::Role;

/// Everything that can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A model's chat template does not compile, or failed while rendering (it raised).
    #[error("chat template {template}: {message}")]
    ChatTemplate {
        /// Where the template came from (`dir/chat_template.jinja` …).
        template: String,
        /// The template engine's message.
        message: String,
    },

    /// Rendering a chat template ran past its [`crate::RenderLimits`] (a template that loops
    /// or builds text without end): the model's template is at fault, not the conversation.
    #[error("chat template {template}: rendering stopped: {limit}")]
    TemplateLimit {
        /// Where the template came from.
        template: String,
        /// The limit it ran into.
        limit: String,
    },

    /// A config file's chat template field has a type or shape that holds no chat template.
    #[error("{}: {field}: {reason}", path.display())]
    BadTemplateField {
        /// The file (`tokenizer_config.json`).
        path: PathBuf,
        /// The field (`chat_template`).
        field: &'static str,
        /// What is wrong.
        reason: String,
    },

    /// A tokenizer file could not be read (missing, unreadable).
    #[error("cannot read tokenizer file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },

    /// A tokenizer file is not valid JSON, or not the JSON shape expected of it.
    #[error("malformed JSON in {path}: {source}")]
    Json {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        #[source]
        source: serde_json::Error,
    },

    /// `tokenizer.json` holds a model this crate cannot decode the SentencePiece way.
    #[error(
        "{path}: unsupported tokenizer model type {found:?}; expected a SentencePiece-style \"BPE\" model"
    )]
    UnsupportedModel {
        /// The `tokenizer.json` file.
        path: PathBuf,
        /// The `model.type` found there.
        found: String,
    },

    /// A config file names a BOS/EOS token that `tokenizer.json` does not have.
    #[error("{path} names {token:?} as the {which} token, but tokenizer.json has no such token")]
    SpecialTokenNotInVocab {
        /// The config file that named the token.
        path: PathBuf,
        /// `"bos"` or `"eos"`.
        which: &'static str,
        /// The token text it named.
        token: String,
    },

    /// A SentencePiece vocabulary (from a GGUF file's metadata or a `tokenizer.model`) is
    /// inconsistent or not one this crate can encode with.
    #[error("{}: {field}: {reason}", path.display())]
    BadVocab {
        /// The file it came from.
        path: PathBuf,
        /// The field (`tokenizer.ggml.scores`, …).
        field: String,
        /// What is wrong.
        reason: String,
    },

    /// The underlying `tokenizers` pipeline failed on some text.
    #[error("tokenizer failed to encode text: {source}")]
    Encode {
        /// The `tokenizers` crate's error.
        #[source]
        source: tokenizers::Error,
    },

    /// A token id outside the vocabulary was given to a decoder.
    #[error("token id {id} is not in the vocabulary ({vocab_size} ids)")]
    UnknownId {
        /// The offending id.
        id: u32,
        /// The vocabulary size.
        vocab_size: usize,
    },

    /// `encode_chat` was given no messages.
    #[error("conversation has no messages")]
    EmptyConversation,

    /// The conversation's last message is an assistant message, so there is no request to answer.
    #[error(
        "conversation ends with an assistant message (message {index}); a prompt for a reply must end with a user or system message"
    )]
    EndsWithAssistant {
        /// Index of the last message.
        index: usize,
    },

    /// Mistral's v3 format (tools) was asked of a vocabulary without its control tokens.
    #[error(
        "the vocabulary has no `{token}` control token, so it cannot render Mistral's v3 (tool-calling) format"
    )]
    NotV3Vocabulary {
        /// The first control token missing.
        token: &'static str,
    },

    /// A conversation to continue does not end with an assistant message that has content.
    #[error("continuing a reply needs a last message from the assistant with content")]
    ContinueWithoutAssistant,

    /// A message's role may not follow the previous message's role in the v1 instruct format.
    #[error(
        "message {index} has role {role} right after a {previous} message, which the v1 instruct format does not allow"
    )]
    UnexpectedRole {
        /// Index of the message.
        index: usize,
        /// Its role.
        role: Role,
        /// The role of the message before it.
        previous: Role,
    },

    /// An assistant message has empty content (mistral-common refuses these).
    #[error("assistant message {index} has empty content")]
    EmptyAssistantMessage {
        /// Index of the message.
        index: usize,
    },
}

/// This crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
