//! `--model OWNER/NAME` against a Hugging Face cache built from the fixture models in
//! `huggingface_hub`'s layout, offline (`HF_HUB_CACHE`, `HF_HUB_OFFLINE=1`): the same tokens
//! as the fixture directory, `--revision`, and a clean error for what the cache lacks.
#![cfg(unix)]

mod common;

use common::{assert_clean_error, csv, fixture, stdout_json};
use mixtral_testkit::make_hub_cache;
use serde_json::Value;
use std::process::{Command, Output};

fn offline(cache: &std::path::Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mixtral"))
        .args(args)
        .env_remove("MIXTRAL_MODEL")
        .env_remove("HF_HOME")
        .env("HF_HUB_CACHE", cache)
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .unwrap()
}

#[test]
fn a_repo_id_runs_from_the_hub_cache_offline() {
    let cache = tempfile::tempdir().unwrap();
    make_hub_cache(
        cache.path(),
        "mixtral-test/tiny",
        "main",
        &fixture("tiny-bf16"),
    );
    make_hub_cache(
        cache.path(),
        "mixtral-test/tiny",
        "variant",
        &fixture("tiny-variant-f32"),
    );
    for (revision, model) in [("main", "tiny-bf16"), ("variant", "tiny-variant-f32")] {
        let exp: Value =
            serde_json::from_slice(&std::fs::read(fixture(model).join("expected.json")).unwrap())
                .unwrap();
        let case = &exp["cases"][1];
        let out = offline(
            cache.path(),
            &[
                "generate",
                "-m",
                "mixtral-test/tiny",
                "--revision",
                revision,
                "--tokens",
                &csv(&case["input_ids"]),
                "-n",
                "16",
                "--ignore-eos",
                "--temperature",
                "0",
                "--json",
            ],
        );
        let want: Vec<Value> = case["greedy_new_tokens"].as_array().unwrap()[..16].to_vec();
        assert_eq!(stdout_json(&out)["ids"], Value::Array(want), "{revision}");
    }
    // Commands that only read the tokenizer or the headers resolve it too.
    let out = offline(
        cache.path(),
        &["tokenize", "-m", "mixtral-test/tiny", "--text", "Hi"],
    );
    assert!(stdout_json(&out)["ids"].is_array());
    let out = offline(cache.path(), &["inspect", "-m", "mixtral-test/tiny"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = offline(
        cache.path(),
        &[
            "generate",
            "-m",
            "mixtral-test/tiny",
            "--revision",
            "v9",
            "-p",
            "Hi",
        ],
    );
    assert_clean_error(&out, "HF_HUB_OFFLINE");
    let out = offline(
        cache.path(),
        &["generate", "-m", "nobody/nothing", "-p", "Hi"],
    );
    assert_clean_error(&out, "not in the Hugging Face cache");
    let out = offline(cache.path(), &["generate", "-m", "no-such-dir", "-p", "Hi"]);
    assert_clean_error(&out, "no such file or directory");
}

#[test]
fn a_snapshot_file_leading_out_of_the_cache_is_a_clean_error() {
    let cache = tempfile::tempdir().unwrap();
    let commit = make_hub_cache(cache.path(), "a/tiny", "main", &fixture("tiny-bf16"));
    let config = cache
        .path()
        .join("models--a--tiny/snapshots")
        .join(commit)
        .join("config.json");
    std::fs::remove_file(&config).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", &config).unwrap();
    for args in [
        &["generate", "-m", "a/tiny", "-p", "Hi"][..],
        &["inspect", "-m", "a/tiny"],
    ] {
        let out = offline(cache.path(), args);
        assert_clean_error(&out, "outside the Hugging Face cache");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(&config.display().to_string()) && stderr.contains("/etc/passwd"),
            "{stderr}"
        );
    }
}
