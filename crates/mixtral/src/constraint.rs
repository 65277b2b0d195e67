//! Constrained decoding (structured outputs): a [`Constraint`] on [`crate::GenerateParams`]
//! limits every sampled token to those that keep the output inside a JSON Schema, a regular
//! expression, a list of choices or a Lark grammar, through **llguidance** (the library
//! llama.cpp, vLLM, SGLang and mistral.rs use for this).
//!
//! # How it works
//! llguidance walks a trie of the vocabulary's bytes ([`token_env`]: each id's text as
//! [`Tokenizer::token_bytes`] gives it; control tokens are marked special so no text ever
//! matches them). Per generated token, the sequence's [`Guide`] computes the mask of tokens
//! the grammar allows, the sampler draws from the masked logits (every sampler option still
//! applies, among the allowed tokens), and the chosen token advances the grammar. When the
//! grammar can end, EOS is allowed; when it cannot go on, EOS is the only token left; and the
//! sequence ends as soon as the grammar is complete ([`mixtral_sampler::StopReason::Eos`]
//! is not claimed: the finish reason is `stop`, as OpenAI reports it).
//!
//! # Bounds
//! A grammar comes from a stranger (an HTTP request). llguidance bounds the work of each
//! mask ("lexer fuel" per step) and the size of a compiled grammar (`ParserLimits`); a
//! grammar over those limits, or one that fails to compile, is an
//! [`Error::Constraint`](crate::Error::Constraint) before the first token. The parser factory
//! (the vocabulary's trie and its token-class slices) is built once per engine, on the first
//! constrained request.

use crate::{Error, Result};
use llguidance::api::TopLevelGrammar;
use llguidance::toktrie::{ApproximateTokEnv, TokEnv, TokRxInfo, TokTrie};
use llguidance::{Matcher, ParserFactory};
use mixtral_tokenizer::Tokenizer;
use std::sync::{Arc, OnceLock};

/// What the generated text must match.
#[derive(Clone, Debug, PartialEq)]
pub enum Constraint {
    /// JSON valid against this JSON Schema (OpenAI's `response_format` `json_schema`; vLLM's
    /// `guided_json`). llguidance's subset of JSON Schema: objects, arrays, enums, `const`,
    /// `anyOf`/`oneOf`, `$ref`, string formats and patterns, number ranges. Between JSON
    /// tokens at most 8 whitespace characters are allowed, unless the schema's `x-guidance`
    /// key (llguidance's JSON options) says otherwise.
    JsonSchema(serde_json::Value),
    /// Any JSON object (OpenAI's `response_format` `json_object`).
    JsonObject,
    /// Text matching this regular expression (Rust `regex` syntax), whole (vLLM's
    /// `guided_regex`).
    Regex(String),
    /// Exactly one of these strings (vLLM's `guided_choice`).
    Choice(Vec<String>),
    /// Text matching this grammar, in llguidance's Lark syntax (vLLM's `guided_grammar`).
    Lark(String),
}

impl Constraint {
    /// The grammar llguidance compiles.
    fn grammar(&self) -> TopLevelGrammar {
        match self {
            Constraint::JsonSchema(schema) => {
                TopLevelGrammar::from_json_schema(bounded_whitespace(schema))
            }
            Constraint::JsonObject => TopLevelGrammar::from_json_schema(bounded_whitespace(
                &serde_json::json!({ "type": "object" }),
            )),
            Constraint::Regex(rx) => TopLevelGrammar::from_regex(rx),
            Constraint::Choice(choices) => {
                let alternatives: Vec<String> = choices.iter().map(|c| escape_regex(c)).collect();
                TopLevelGrammar::from_regex(&alternatives.join("|"))
            }
            Constraint::Lark(grammar) => TopLevelGrammar::from_lark(grammar.clone()),
        }
    }
}

/// Whitespace between JSON tokens, at most: enough for pretty-printed JSON a few levels deep,
/// and a bound on the runs of spaces and newlines a model can fall into (llguidance's default
/// allows any amount, so a model can spend its whole token budget between two keys).
const JSON_WHITESPACE: &str = r"[\x20\x0A\x0D\x09]{1,8}";

/// `schema` with llguidance's JSON options set to [`JSON_WHITESPACE`], unless the schema sets
/// its own (`x-guidance`, llguidance's extension key).
fn bounded_whitespace(schema: &serde_json::Value) -> serde_json::Value {
    let mut schema = schema.clone();
    if let Some(o) = schema.as_object_mut() {
        o.entry("x-guidance")
            .or_insert_with(|| serde_json::json!({ "whitespace_pattern": JSON_WHITESPACE }));
    }
    schema
}

/// `text` as a regular expression matching exactly it: every character the `regex` syntax
/// gives a meaning escaped (the set `regex_syntax::escape` escapes).
fn escape_regex(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if "\\.+*?()|[]{}^$#&-~".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The per-engine parser factory, built on first use (see the module doc).
#[derive(Default)]
pub(crate) struct Guides {
    factory: OnceLock<std::result::Result<ParserFactory, String>>,
}

impl std::fmt::Debug for Guides {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guides")
            .field("built", &self.factory.get().is_some())
            .finish()
    }
}

impl Guides {
    /// A [`Guide`] for `constraint` over `tokenizer`'s vocabulary, padded to the model's
    /// `vocab` logits.
    pub(crate) fn guide(
        &self,
        constraint: &Constraint,
        tokenizer: &Tokenizer,
        vocab: usize,
    ) -> Result<Guide> {
        let factory = self
            .factory
            .get_or_init(|| build_factory(tokenizer, vocab))
            .as_ref()
            .map_err(|e| Error::Constraint(format!("the vocabulary's token trie: {e}")))?;
        let parser = factory
            .create_parser(constraint.grammar())
            .map_err(|e| Error::Constraint(e.to_string()))?;
        let matcher = Matcher::new(Ok(parser));
        if let Some(e) = matcher.get_error() {
            return Err(Error::Constraint(e));
        }
        Ok(Guide { matcher })
    }
}

/// The factory over `tokenizer`'s vocabulary. llguidance asserts on a malformed trie; a
/// vocabulary from a stranger's files must not take the process down, so a panic is an error.
fn build_factory(
    tokenizer: &Tokenizer,
    vocab: usize,
) -> std::result::Result<ParserFactory, String> {
    let env = std::panic::catch_unwind(|| token_env(tokenizer, vocab))
        .map_err(|_| "llguidance refused the vocabulary".to_string())?;
    let mut factory = ParserFactory::new_simple(&env).map_err(|e| e.to_string())?;
    // llguidance logs to stderr by default; a server's log is ours to write.
    factory.set_stderr_log_level(0);
    Ok(factory)
}

/// llguidance's view of the vocabulary: the bytes of each of the model's `vocab` ids. Ids
/// that are not text (control tokens, `<unk>`, ids past the tokenizer's vocabulary) carry
/// llguidance's special-token marker, so no grammar's text can produce them.
fn token_env(tokenizer: &Tokenizer, vocab: usize) -> TokEnv {
    let words: Vec<Vec<u8>> = (0..vocab as u32)
        .map(|id| {
            tokenizer.token_bytes(id).unwrap_or_else(|| {
                let name = tokenizer
                    .id_to_piece(id)
                    .map_or_else(|| format!("<unused{id}>"), str::to_owned);
                let mut word = vec![TokTrie::SPECIAL_TOKEN_MARKER];
                word.extend_from_slice(name.as_bytes());
                word
            })
        })
        .collect();
    let info = TokRxInfo::new(vocab as u32, tokenizer.eos_id());
    Arc::new(ApproximateTokEnv::new(TokTrie::from(&info, &words)))
}

/// One sequence's constraint state.
pub(crate) struct Guide {
    matcher: Matcher,
}

impl Guide {
    /// `out` = `logits` with every token the grammar does not allow now at `-inf`.
    pub(crate) fn mask(&mut self, logits: &[f32], out: &mut Vec<f32>) -> Result<()> {
        let allowed = self.matcher.compute_mask_or_eos().map_err(constraint)?;
        out.clear();
        out.extend(logits.iter().enumerate().map(|(id, &l)| {
            if allowed.is_allowed(id as u32) {
                l
            } else {
                f32::NEG_INFINITY
            }
        }));
        Ok(())
    }

    /// Advances the grammar by `token`; returns whether the grammar is now complete (no
    /// further token can extend the text).
    pub(crate) fn advance(&mut self, token: u32) -> Result<bool> {
        self.matcher.consume_token(token).map_err(constraint)?;
        Ok(self.matcher.is_stopped())
    }
}

fn constraint(e: impl std::fmt::Display) -> Error {
    Error::Constraint(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn choices_escape_every_regex_metacharacter() {
        assert_eq!(escape_regex("a.b*(c)|d"), r"a\.b\*\(c\)\|d");
        assert_eq!(escape_regex("plain text"), "plain text");
        assert_eq!(escape_regex(r"\d{2}"), r"\\d\{2\}");
    }
}
