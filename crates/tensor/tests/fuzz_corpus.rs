//! Replays the committed fuzz inputs of the tensor file parsers through the checks the fuzz
//! targets run (`fuzz/src/tensor.rs`): `fuzz/corpus/{gguf,safetensors,safetensors_index}/`
//! must not panic, and the reproducers of fixed crashes (`fuzz/regressions/`) must give their
//! error. No cargo-fuzz needed: CI replays, `cargo xtask fuzz` fuzzes.

#[path = "../../../fuzz/src/tensor.rs"]
mod checks;
#[path = "../../../fuzz/src/replay.rs"]
mod replay;

use std::path::Path;

const FUZZ_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fuzz");

fn fuzz_dir() -> &'static Path {
    Path::new(FUZZ_DIR)
}

/// `regressions/gguf/`: each fixed crash and a piece of the error it now gives.
const GGUF_REGRESSIONS: &[(&str, &str)] = &[
    // ne = [0, 2^32, 2^32]: the zero hid the overflow when multiplied innermost first.
    ("zero-dim-hides-overflow.gguf", "overflow"),
    // The input the fuzzer found (the same bug, 4 dimensions).
    ("zero-dim-hides-overflow-found.gguf", "overflow"),
];

#[test]
fn gguf_corpus_never_panics() {
    replay::corpus(fuzz_dir(), "gguf", checks::gguf);
    replay::regressions(fuzz_dir(), "gguf", GGUF_REGRESSIONS, checks::gguf);
}

#[test]
fn safetensors_corpus_never_panics() {
    replay::corpus(fuzz_dir(), "safetensors", checks::safetensors);
    replay::regressions(fuzz_dir(), "safetensors", &[], checks::safetensors);
}

#[test]
fn safetensors_index_corpus_never_panics() {
    replay::corpus(fuzz_dir(), "safetensors_index", checks::safetensors_index);
    replay::regressions(
        fuzz_dir(),
        "safetensors_index",
        &[],
        checks::safetensors_index,
    );
    checks::remove_index_dir();
}

#[test]
fn every_regression_folder_is_a_target() {
    replay::check_regression_folders(fuzz_dir());
}
