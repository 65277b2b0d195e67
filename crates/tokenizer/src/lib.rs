//! The Mixtral tokenizer (SentencePiece BPE, 32000 ids, byte fallback) and the v1 instruct format.
//!
//! Stands beside the model in the crate graph and knows nothing of tensors: it turns text and
//! conversations into `u32` token ids for the engine, and the ids the engine generates back into
//! text, streaming ([`IncrementalDecoder`]) or at once ([`Tokenizer::decode`]).
//!
//! Design decisions:
//! - **Encoding** uses the Hugging Face `tokenizers` crate (the ecosystem standard) on the model
//!   directory's `tokenizer.json`, with matching of special tokens in the input switched off:
//!   SentencePiece and mistral-common read a literal `<s>`, `</s>` or `<unk>` in text as text,
//!   while `tokenizer.json` alone would turn it into a control id. Ids equal SentencePiece's
//!   `encode(text)` (dummy-prefix space, no BOS/EOS).
//! - **Decoding** is our own, from the vocabulary pieces, because SentencePiece is the reference
//!   and `tokenizers`' decoder differs from it on `<unk>` (`" ⁇ "`) and on invalid UTF-8 (one
//!   U+FFFD per bad byte). One state machine serves both [`Tokenizer::decode`] and the streaming
//!   [`IncrementalDecoder`], so the streamed deltas always concatenate to the full decode, at
//!   O(1) amortised cost per token.
//! - **Chat** ([`chat`]) renders conversations exactly as mistral-common's v1 instruct tokenizer
//!   (the reference for Mixtral-8x7B-Instruct), not as the Hugging Face `chat_template`, which
//!   drops the space after `[/INST]` and rejects system messages. BOS/EOS are only ever ids.
//! - BOS/EOS ids are read from `tokenizer_config.json` / `special_tokens_map.json` /
//!   `tokenizer.json`; only when none of them has one do they fall back to 1 / 2.

pub mod chat;
mod decode;
mod error;
mod role;
mod sentencepiece_model;
mod strftime;
mod template;
mod template_escape;
mod template_fold;
mod template_limits;
mod tokenizer;
pub mod tools;
mod vocab;

pub use decode::IncrementalDecoder;
pub use error::{Error, Result};
pub use sentencepiece_model::{MAX_MODEL_BYTES, ModelSpec, parse_model, read_sentencepiece_vocab};
pub use template::{ChatTemplate, MAX_TEMPLATE_BYTES};
pub use template_limits::RenderLimits;
pub use tokenizer::{
    FALLBACK_BOS_ID, FALLBACK_EOS_ID, MAX_CONFIG_BYTES, MAX_TOKENIZER_JSON_BYTES, Tokenizer,
};
pub use vocab::{MAX_MERGED_PIECE_CHARS, PieceType, SentencePieceVocab, merges};
