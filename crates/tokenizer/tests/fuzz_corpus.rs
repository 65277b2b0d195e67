//! Replays the committed fuzz inputs of the `--chat` file format (`fuzz/corpus/chat/`: a JSON
//! message list rendered with the fixture tokenizer) and of chat templates
//! (`fuzz/corpus/template/`) through the fuzz targets' checks (`fuzz/src/chat.rs`,
//! `fuzz/src/template.rs`): none may panic. No cargo-fuzz needed: CI replays, `cargo xtask fuzz`
//! fuzzes.

#[path = "../../../fuzz/src/chat.rs"]
mod checks;
mod common;
#[allow(dead_code)] // the regression-folder check runs in mixtral-tensor's replay test
#[path = "../../../fuzz/src/replay.rs"]
mod replay;
#[path = "../../../fuzz/src/template.rs"]
mod template_checks;

use std::path::Path;

const FUZZ_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fuzz");

#[test]
fn chat_corpus_never_panics() {
    let check = |data: &[u8]| checks::chat(common::tokenizer(), data);
    replay::corpus(Path::new(FUZZ_DIR), "chat", check);
    replay::regressions(Path::new(FUZZ_DIR), "chat", &[], check);
}

#[test]
fn template_corpus_never_panics() {
    let check = |data: &[u8]| template_checks::template(common::tokenizer(), data);
    replay::corpus(Path::new(FUZZ_DIR), "template", check);
    replay::regressions(Path::new(FUZZ_DIR), "template", &[], check);
}
