//! Shared helpers for the integration tests: fixture paths, the fixture tokenizer, JSONL cases.

#![allow(dead_code)] // each test binary uses its own subset

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use mixtral_tokenizer::Tokenizer;
use serde::de::DeserializeOwned;

/// The model directory that carries the real Mixtral tokenizer files.
pub const MODEL_DIR: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../tests/fixtures/models/tiny-bf16"
);

/// The directory of the tokenizer JSONL cases.
pub const CASES_DIR: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../tests/fixtures/tokenizer"
);

/// The fixture tokenizer, loaded once per test binary.
pub fn tokenizer() -> &'static Tokenizer {
    static TOK: OnceLock<Tokenizer> = OnceLock::new();
    TOK.get_or_init(|| Tokenizer::from_dir(Path::new(MODEL_DIR)).expect("load fixture tokenizer"))
}

/// Every line of a JSONL fixture, parsed; also checks that no non-empty line was skipped.
pub fn read_cases<T: DeserializeOwned>(file: &str) -> Vec<T> {
    let path = Path::new(CASES_DIR).join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {path:?}: {e}"));
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let cases: Vec<T> = lines
        .iter()
        .enumerate()
        .map(|(i, l)| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("{file} line {}: {e}", i + 1))
        })
        .collect();
    assert_eq!(cases.len(), lines.len());
    cases
}

/// The raw lines of a JSONL fixture as JSON values (to count fields independently of the types).
pub fn read_values(file: &str) -> Vec<serde_json::Value> {
    read_cases(file)
}

/// A fresh, empty scratch directory for one test.
pub fn scratch_dir(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mixtral-tokenizer-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

/// Collects failure reports and panics with all of them at the end.
#[derive(Default)]
pub struct Failures(Vec<String>);

impl Failures {
    pub fn push(&mut self, report: String) {
        self.0.push(report);
    }

    pub fn check(self, what: &str, checked: usize) {
        if !self.0.is_empty() {
            panic!(
                "{what}: {} of {checked} cases failed:\n{}",
                self.0.len(),
                self.0.join("\n")
            );
        }
    }
}
