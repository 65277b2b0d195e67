//! What each fuzz target does with its input, shared with the corpus replay tests: those
//! include these files with `#[path]` (`crates/{tensor,model,tokenizer}/tests/fuzz_corpus.rs`),
//! so the stable test suite makes exactly the calls the fuzzers make.
//!
//! Every check returns the parser's error as text (`Err` is a fine outcome for any input) and
//! panics only on a bug: a parser panic, or a parsed result that breaks an invariant the
//! loader relies on.

pub mod chat;
pub mod fixture;
pub mod model;
pub mod replay;
pub mod template;
pub mod tensor;
