//! Errors of the facade: the lower crates' errors, plus what only the facade can get wrong.

use std::path::PathBuf;

/// Everything that can go wrong loading a model or generating with it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Loading or running the model failed.
    #[error(transparent)]
    Model(#[from] mixtral_model::Error),
    /// Tokenizing or chat formatting failed.
    #[error(transparent)]
    Tokenizer(#[from] mixtral_tokenizer::Error),
    /// Sampling parameters or logits were invalid.
    #[error(transparent)]
    Sampler(#[from] mixtral_sampler::Error),
    /// Text was given but the model has no tokenizer (no `tokenizer.json`, or a GGUF file
    /// without `tokenizer.ggml.*` metadata).
    #[error("{}: no tokenizer (tokenizer.json, or tokenizer metadata in a GGUF file), so text cannot be encoded or decoded (give token ids instead)", dir.display())]
    NoTokenizer {
        /// The model directory.
        dir: PathBuf,
    },
    /// `generation_config.json` exists but is malformed.
    #[error("{}: invalid generation config", path.display())]
    GenerationConfig {
        /// The file.
        path: PathBuf,
        /// The parser's error.
        #[source]
        source: serde_json::Error,
    },
    /// The worker thread pool could not be created.
    #[error("cannot start {threads} worker threads")]
    Threads {
        /// Threads asked for.
        threads: usize,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A [`crate::CancelToken`] stopped the generation while its prompt was being prefilled.
    #[error("cancelled")]
    Cancelled,
    /// The batch scheduler's queue is full: try again later.
    #[error("the request queue is full ({queued} waiting): try again later")]
    QueueFull {
        /// Requests waiting.
        queued: usize,
    },
    /// A request's prompt plus `max_new_tokens` needs more KV memory than the scheduler's
    /// whole budget: it could never run.
    #[error(
        "the prompt plus max_new_tokens needs {needed} bytes of KV cache, more than the budget of {budget} bytes (lower max_new_tokens or raise the budget)"
    )]
    KvBudget {
        /// Bytes needed.
        needed: usize,
        /// The budget.
        budget: usize,
    },
    /// The batch scheduler stopped or failed a request.
    #[error("batch scheduler: {0}")]
    Batch(String),
    /// The model argument is neither an existing path nor a repo id the Hugging Face cache
    /// (or the hub) could provide.
    #[error("model `{model}`: {reason}")]
    ModelNotFound {
        /// The path or repo id given.
        model: String,
        /// Why it could not be found.
        reason: String,
    },
    /// A prompt whose text alone is too long for the model's context: refused before it is
    /// tokenized, since no tokenization of that many bytes could fit (a token covers at most
    /// the bytes of the tokenizer's longest piece).
    #[error(
        "the prompt is {bytes} bytes of text, at least {min_tokens} tokens; the model's context is {context} tokens"
    )]
    PromptTooLong {
        /// Bytes of text in the prompt (message contents, for a conversation).
        bytes: usize,
        /// The fewest tokens that many bytes can encode to.
        min_tokens: usize,
        /// The model's context length.
        context: usize,
    },
    /// A Hugging Face cache snapshot holds a file (or is a directory) that resolves outside
    /// the repo's cache: a snapshot file must lead into the repo's `blobs/` or stay inside the
    /// snapshot, and the snapshot directory inside the repo's `snapshots/`.
    #[error(
        "{}: points outside the Hugging Face cache of its repo (to {}); {allowed}",
        path.display(),
        target.display()
    )]
    SnapshotEscape {
        /// The snapshot file or directory.
        path: PathBuf,
        /// Where it resolves.
        target: PathBuf,
        /// Where it may resolve.
        allowed: &'static str,
    },
    /// A checkpoint quantized already was asked to be quantized (by `quantize_to_gguf` or
    /// [`crate::LoadOptions::quantize`]): its blocks would be decoded and quantized again,
    /// which compounds the error.
    #[error(
        "{}: holds {dtype} tensors, so it is quantized already: quantizing reads bf16, f16 or f32 weights (requantizing compounds the error; quantize the original checkpoint)",
        path.display()
    )]
    AlreadyQuantized {
        /// The file holding a quantized tensor.
        path: PathBuf,
        /// Its type.
        dtype: mixtral_tensor::DType,
    },
    /// A [`crate::Constraint`] could not be compiled (a malformed schema, regex or grammar, or
    /// one past llguidance's size and time limits), or its parser failed while generating.
    #[error("output constraint: {0}")]
    Constraint(String),
    /// A conversation with tools, or a `tool_choice`, that cannot be served as given.
    #[error("tool calls: {0}")]
    ToolConversation(&'static str),
    /// A load option is out of range.
    #[error("invalid option `{option}`: {reason}")]
    InvalidOption {
        /// The option.
        option: &'static str,
        /// Why.
        reason: &'static str,
    },
}

impl From<mixtral_tensor::Error> for Error {
    /// A file or tensor error, as loading reports it.
    fn from(e: mixtral_tensor::Error) -> Error {
        Error::Model(e.into())
    }
}

/// What kind of failure an [`Error`] is, to match on without unpacking the lower crates'
/// errors: `match err.kind() { ErrorKind::InvalidInput => …, ErrorKind::Busy => retry, … }`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The model files: missing, unreadable, malformed, or not a Mixtral checkpoint.
    ModelFiles,
    /// A request's input or parameters: tokens, prompt, chat, sampling, options, context.
    InvalidInput,
    /// No room now (the batch queue is full): retry later.
    Busy,
    /// Stopped on request ([`crate::CancelToken`]).
    Cancelled,
    /// The GPU or its driver.
    Device,
    /// The engine itself: threads, a stopped scheduler.
    Internal,
}

impl Error {
    /// The kind of failure.
    pub fn kind(&self) -> ErrorKind {
        use mixtral_model::Error as M;
        match self {
            Error::Model(m) => match m {
                M::TokenOutOfRange { .. }
                | M::ContextOverflow { .. }
                | M::PositionsLength { .. }
                | M::EmptyInput
                | M::PositionMismatch { .. }
                | M::Intervention { .. }
                | M::CacheSteering { .. }
                | M::Unsupported { .. } => ErrorKind::InvalidInput,
                M::Stopped { .. } => ErrorKind::Cancelled,
                M::Device(_) => ErrorKind::Device,
                _ => ErrorKind::ModelFiles,
            },
            Error::Tokenizer(_)
            | Error::Sampler(_)
            | Error::InvalidOption { .. }
            | Error::Constraint(_)
            | Error::ToolConversation(_)
            | Error::AlreadyQuantized { .. } => ErrorKind::InvalidInput,
            Error::KvBudget { .. } | Error::PromptTooLong { .. } => ErrorKind::InvalidInput,
            Error::NoTokenizer { .. }
            | Error::GenerationConfig { .. }
            | Error::ModelNotFound { .. }
            | Error::SnapshotEscape { .. } => ErrorKind::ModelFiles,
            Error::QueueFull { .. } => ErrorKind::Busy,
            Error::Cancelled => ErrorKind::Cancelled,
            Error::Threads { .. } | Error::Batch(_) => ErrorKind::Internal,
        }
    }
}

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// `e`'s message followed by each cause's, `: `-joined: one line for places that show a single
/// string (an HTTP error body, a Python exception). A cause whose text the line already ends
/// with (a message that quotes its cause, or a transparent wrapper) is not repeated.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut message = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !message.ends_with(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = s.source();
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_chain_names_each_cause_once() {
        let io = || std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let e = Error::Tokenizer(mixtral_tokenizer::Error::Io {
            path: "/m/tokenizer.json".into(),
            source: io(),
        });
        // The message quotes its cause: the chain does not repeat it.
        assert_eq!(
            error_chain(&e),
            "cannot read tokenizer file /m/tokenizer.json: no such file"
        );
        // Two transparent layers over a tensor-file error: still one copy of each text.
        let e = Error::Model(mixtral_model::Error::Tensor(mixtral_tensor::Error::Io {
            path: "/m/a.safetensors".into(),
            source: io(),
        }));
        assert_eq!(error_chain(&e), "/m/a.safetensors: no such file");
        // A cause the message does not quote is appended.
        let e = Error::GenerationConfig {
            path: "/m/generation_config.json".into(),
            source: serde_json::from_str::<u8>("x").unwrap_err(),
        };
        let chain = error_chain(&e);
        assert!(
            chain.starts_with("/m/generation_config.json: invalid generation config: expected"),
            "{chain}"
        );
    }
}
