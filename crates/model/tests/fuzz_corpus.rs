//! Replays the committed fuzz inputs of the config parsers (`fuzz/corpus/config/`: each read
//! as `config.json` and as `params.json`) through the fuzz target's check
//! (`fuzz/src/model.rs`): none may panic. No cargo-fuzz needed: CI replays, `cargo xtask fuzz`
//! fuzzes.

#[path = "../../../fuzz/src/model.rs"]
mod checks;
#[allow(dead_code)] // the regression-folder check runs in mixtral-tensor's replay test
#[path = "../../../fuzz/src/replay.rs"]
mod replay;

use std::path::Path;

const FUZZ_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fuzz");

/// Ok when either format parses; else both errors.
fn check(data: &[u8]) -> Result<(), String> {
    match checks::config(data) {
        [Err(a), Err(b)] => Err(format!("config.json: {a}; params.json: {b}")),
        _ => Ok(()),
    }
}

#[test]
fn config_corpus_never_panics() {
    replay::corpus(Path::new(FUZZ_DIR), "config", check);
    replay::regressions(Path::new(FUZZ_DIR), "config", &[], check);
}
