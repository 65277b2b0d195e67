//! Shared by the CLI's integration tests: fixture paths, running the binary, reading its output.
#![allow(dead_code)] // each test file uses its own subset

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A fixture model directory.
pub fn fixture(model: &str) -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/models"
    ))
    .join(model)
}

/// A writable copy of a fixture model directory.
pub fn copy_of(model: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    mixtral_testkit::copy_dir(&fixture(model), dir.path());
    dir
}

/// Runs `mixtral ARGS…` with `input` on its standard input (then closed).
pub fn mixtral_with_stdin(args: &[&str], input: &str) -> Output {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_mixtral"))
        .args(args)
        .env_remove("MIXTRAL_MODEL")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// Runs `mixtral ARGS…` to completion, with `MIXTRAL_MODEL` naming the tiny test model (what
/// `--model` falls back to), so a test names its model only when it is another.
pub fn mixtral(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mixtral"))
        .args(args)
        .env("MIXTRAL_MODEL", fixture("tiny-bf16"))
        .output()
        .unwrap()
}

/// Runs `mixtral ARGS…` with no `MIXTRAL_MODEL` in its environment.
pub fn mixtral_bare(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mixtral"))
        .args(args)
        .env_remove("MIXTRAL_MODEL")
        .output()
        .unwrap()
}

/// The standard output of a run that must have succeeded.
pub fn ok_stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// The JSON a successful run printed.
pub fn stdout_json(out: &Output) -> Value {
    serde_json::from_str(&ok_stdout(out)).unwrap()
}

/// Fails with exit 1 and one `error:` line (a few with its causes) that mentions `needle`.
pub fn assert_clean_error(out: &Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    assert!(stderr.starts_with("error: "), "{stderr}");
    assert!(stderr.contains(needle), "no `{needle}` in: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(stderr.lines().count() <= 4, "{stderr}");
}

/// A JSON list of ids as the comma-separated argument of `--tokens`.
pub fn csv(v: &Value) -> String {
    let ids: Vec<String> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.to_string())
        .collect();
    ids.join(",")
}

/// A path as a command-line argument.
pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}
pub mod server;
