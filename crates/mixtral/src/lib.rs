//! A from-scratch Rust inference engine for Mixtral: the API a user sees first.
//!
//! The top of the crate graph: it composes [`tensor`], [`kernels`], [`model`], [`sampler`]
//! and [`tokenizer`], and is the only crate that re-exports the others.
//!
//! Stream a chat answer (a Hugging Face repo id, taken from the local Hugging Face cache or
//! downloaded into it; or a Hugging Face or Mistral directory, a GGUF file, a `.safetensors`
//! file with its config beside it):
//!
//! ```no_run
//! use mixtral::{Engine, Message, Prompt};
//! let engine = Engine::load("mistralai/Mixtral-8x7B-Instruct-v0.1")?;
//! let chat = Prompt::Chat(vec![Message::user("What is the capital of France?")]);
//! let mut params = engine.params();
//! params.max_new_tokens = 16;
//! for token in engine.generate(&chat, &params)? {
//!     print!("{}", token?.text);
//! }
//! # Ok::<(), mixtral::Error>(())
//! ```
//!
//! (In a clone of the repository, `tests/fixtures/models/tiny-bf16` is a tiny random-weight
//! model to try it with: its answers are not text.)
//!
//! # Design decisions
//! - **Iterator, not callback.** [`Generation`] yields tokens as they are computed; the caller
//!   decides how to print, collect or stop (Ctrl-C: [`Generation::interrupt`]).
//! - **Repo ids resolve offline first** ([`hub`]): the Hugging Face cache's snapshot is a
//!   model directory as it stands; the network is used only for what it lacks, and never
//!   with `HF_HUB_OFFLINE=1` (or without the default `download` feature).
//! - **Sessions keep the cache.** [`Engine::generate_in`] reuses the cached prefix of a
//!   [`Session`], so a multi-turn chat only computes the new turn.
//! - **Defaults come from the model directory** (`generation_config.json`), as transformers
//!   reads them: greedy unless `do_sample` is set; penalties off.

mod batch;
pub mod bench;
mod chat_format;
mod constraint;
mod defaults;
mod engine;
mod error;
mod generate;
pub mod gguf_vocab;
pub mod hub;
mod quantize;
pub mod tools;

pub use batch::{BatchOptions, Event, Finished, Metrics, RequestHandle, Scheduler, Sink};
pub use chat_format::{
    ChatFormat, GGUF_TEMPLATE_KEY, chat_template, encode_chat, model_chat_template,
};
pub use constraint::Constraint;
pub use defaults::Defaults;
pub use engine::{Device, Engine, LoadOptions, LogitsOptions, MAX_THREADS, Precision};
pub use error::{Error, ErrorKind, Result, error_chain};
pub use generate::{
    CancelToken, FinishReason, GenerateParams, Generation, MAX_CACHE_SALT_BYTES, Overrides, Prompt,
    Session, Stats, Token,
};
pub use gguf_vocab::{find_tokenizer, load_tokenizer};
pub use mixtral_model::{
    ForceRouting, Intervention, KvDType, Output, Recorded, RouterHook, RouterLogits, RoutingTrace,
};
pub use mixtral_sampler::SamplerConfig;
pub use mixtral_tokenizer::chat::{Message, Role};
pub use quantize::{QuantScheme, QuantizeReport, quantize_to_gguf};
pub use tools::{Tool, ToolCall, ToolChoice, ToolMessage};

pub use mixtral_kernels as kernels;
pub use mixtral_model as model;
pub use mixtral_sampler as sampler;
pub use mixtral_tensor as tensor;
pub use mixtral_tokenizer as tokenizer;
