//! `mixtral inspect` on good and broken checkpoints: a summary, or one clean error and exit 1.

mod common;

use common::{copy_of, fixture};
use std::path::Path;
use std::process::Command;

fn inspect(dir: &Path) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_mixtral"))
        .arg("inspect")
        .arg("--model")
        .arg(dir)
        .output()
        .unwrap();
    let text = |b: Vec<u8>| String::from_utf8(b).unwrap();
    (
        out.status.code().unwrap_or(-1),
        text(out.stdout),
        text(out.stderr),
    )
}

fn assert_clean_failure(dir: &Path, needle: &str) {
    let (code, stdout, stderr) = inspect(dir);
    assert_eq!(code, 1, "stdout: {stdout}\nstderr: {stderr}");
    assert!(stderr.starts_with("error: "), "{stderr}");
    assert!(
        stderr.contains(needle),
        "stderr does not mention `{needle}`: {stderr}"
    );
    assert!(
        !stderr.contains("panicked") && !stderr.contains("backtrace"),
        "{stderr}"
    );
    assert!(stderr.lines().count() <= 4, "{stderr}");
}

#[test]
fn summarises_each_fixture() {
    for (model, needle) in [
        ("tiny-f32", "MoE 8 experts top-2"),
        ("tiny-bf16", "BF16: 19.01 MiB"),
        ("tiny-variant-f32", "sliding window 16"),
    ] {
        let (code, stdout, stderr) = inspect(&fixture(model));
        assert_eq!(code, 0, "{model}: {stderr}");
        assert!(stdout.contains(needle), "{model}: {stdout}");
    }
}

#[test]
fn missing_directory_fails_cleanly() {
    assert_clean_failure(Path::new("/nonexistent/model"), "no such file or directory");
}

#[test]
fn truncated_weights_fail_cleanly() {
    let dir = copy_of("tiny-f32");
    let file = dir.path().join("model.safetensors");
    let len = std::fs::metadata(&file).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&file)
        .unwrap()
        .set_len(len - 100)
        .unwrap();
    assert_clean_failure(dir.path(), "file is truncated");
}

#[test]
fn corrupt_header_fails_cleanly_with_its_cause() {
    let dir = copy_of("tiny-f32");
    let file = dir.path().join("model.safetensors");
    let mut bytes = std::fs::read(&file).unwrap();
    bytes[8] = b'#';
    std::fs::write(&file, bytes).unwrap();
    assert_clean_failure(dir.path(), "corrupt safetensors header");
    let (_, _, stderr) = inspect(dir.path());
    assert!(stderr.contains("caused by:"), "{stderr}");
}

#[test]
fn missing_shard_fails_cleanly() {
    let dir = copy_of("tiny-bf16");
    std::fs::remove_file(dir.path().join("model-00002-of-00002.safetensors")).unwrap();
    assert_clean_failure(dir.path(), "model-00002-of-00002.safetensors");
}

#[test]
fn config_contradicting_tensors_fails_cleanly() {
    let dir = copy_of("tiny-f32");
    let path = dir.path().join("config.json");
    let config = std::fs::read_to_string(&path)
        .unwrap()
        .replace("\"hidden_size\": 64", "\"hidden_size\": 32");
    std::fs::write(&path, config).unwrap();
    assert_clean_failure(dir.path(), "expected [1024, 32], found [1024, 64]");
}

#[test]
fn inspect_validates_the_tokenizer_files_too() {
    let (code, stdout, _) = inspect(&fixture("tiny-bf16"));
    assert_eq!(code, 0);
    assert!(
        stdout.contains("tokenizer    32000 ids, BOS 1, EOS 2"),
        "{stdout}"
    );
    assert!(
        stdout.contains("chat         Mixtral-Instruct's"),
        "{stdout}"
    );
    let dir = copy_of("tiny-bf16");
    std::fs::write(dir.path().join("tokenizer.json"), "{ not json").unwrap();
    assert_clean_failure(dir.path(), "tokenizer.json");
    let dir = copy_of("tiny-bf16");
    std::fs::write(dir.path().join("chat_template.jinja"), "{% for %}").unwrap();
    assert_clean_failure(dir.path(), "chat template");
}

/// `--device cuda` adds the GPU memory plan: weights as the GPU stores them, the cache at
/// `--context` in `--kv-dtype` (bf16 by default), scratch and the total, with or without a
/// GPU to compare it with; a context past the model's is refused.
#[test]
fn device_cuda_prints_the_memory_plan() {
    let gguf =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/quant/tiny-q/Q4_K_M.gguf");
    let run = |extra: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_mixtral"))
            .args(["inspect", "--device", "cuda", "--model"])
            .arg(&gguf)
            .args(extra)
            .output()
            .unwrap();
        let text = |b: Vec<u8>| String::from_utf8(b).unwrap();
        (out.status.code(), text(out.stdout), text(out.stderr))
    };
    let (code, stdout, stderr) = run(&["--context", "300"]);
    assert_eq!(code, Some(0), "{stderr}");
    for needle in [
        "device       cuda:0: ",
        "  weights    ",
        "kept as they are",
        " bf16 for 300 positions (up to ",
        "  scratch    ",
        "for calls of 128 tokens",
        "  total      ",
    ] {
        assert!(stdout.contains(needle), "`{needle}` missing:\n{stdout}");
    }
    let (code, stdout, _) = run(&["--context", "300", "--kv-dtype", "f32"]);
    assert_eq!(code, Some(0));
    assert!(stdout.contains(" f32 for 300 positions"), "{stdout}");
    let (code, _, stderr) = run(&["--context", "99999999"]);
    assert_eq!(code, Some(1));
    assert!(stderr.contains("past the model's"), "{stderr}");
}
