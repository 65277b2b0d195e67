//! The `mixtral` commands on a GGUF file made by llama.cpp's tools: generation with the
//! tokenizer from the file's metadata, greedy output equal to the exact reference, `tokenize`
//! equal to SentencePiece, `chat`, `inspect`, and one clean `error:` line for a broken file.

mod common;

use common::{csv, mixtral, ok_stdout, stdout_json};
use serde_json::Value;
use std::path::{Path, PathBuf};

fn quant() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/quant/tiny-q"
    ))
}

fn gguf() -> String {
    quant().join("Q4_K_M.gguf").to_str().unwrap().to_string()
}

fn expected() -> Value {
    serde_json::from_slice(&std::fs::read(quant().join("expected.json")).unwrap()).unwrap()
}

#[test]
fn greedy_generation_equals_the_exact_reference() {
    let exp = expected();
    let prompt = &exp["prompts"][1];
    let out = mixtral(&[
        "generate",
        "--model",
        &gguf(),
        "--tokens",
        &csv(&prompt["input_ids"]),
        "--max-new-tokens",
        "32",
        "--ignore-eos",
        "--temperature",
        "0",
        "--precision",
        "f32",
        "--json",
    ]);
    let json: Value = stdout_json(&out);
    assert_eq!(
        json["ids"],
        exp["files"]["Q4_K_M"]["cases"][1]["exact"]["greedy_new_tokens"]
    );
}

#[test]
fn text_prompts_use_the_tokenizer_in_the_file() {
    let exp = expected();
    for prompt in exp["prompts"].as_array().unwrap() {
        let text = prompt["text"].as_str().unwrap();
        let out = mixtral(&["tokenize", "--model", &gguf(), "--text", text, "--bos"]);
        let json: Value = stdout_json(&out);
        assert_eq!(json["ids"], prompt["text_ids_with_bos"], "{text}");
    }
    let text = exp["prompts"][0]["text"].as_str().unwrap();
    let out = mixtral(&[
        "generate",
        "--model",
        &gguf(),
        "--prompt",
        text,
        "--max-new-tokens",
        "4",
        "--json",
    ]);
    let json: Value = stdout_json(&out);
    let n = exp["prompts"][0]["text_ids_with_bos"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(json["prompt_tokens"], n);
    assert_eq!(json["ids"].as_array().unwrap().len(), 4);
}

#[test]
fn chat_runs_on_a_gguf_file_alone() {
    let gguf = gguf();
    let args = ["chat", "--model", &gguf, "--max-new-tokens", "8"];
    let out = common::mixtral_with_stdin(&args, "Bonjour\n\n");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(stderr.contains("8 generated]"), "{stderr}");
}

#[test]
fn inspect_summarises_a_gguf_file() {
    let out = ok_stdout(&mixtral(&[
        "inspect",
        "--model",
        &gguf(),
        "--context",
        "32768",
    ]));
    for needle in [
        "GGUF v3 (llama.cpp), architecture llama, file type Q4_K_M (15)",
        "Q4_K: ",
        "Q6_K: ",
        "Q8_0: ",
        "(8 tensors)",
        "bits/weight  ",
        "kv cache     64.00 MiB f32 / 32.00 MiB f16 for 32768 positions",
    ] {
        assert!(out.contains(needle), "no `{needle}` in:\n{out}");
    }
}

/// A copy of the fixture with `edit` applied to its bytes.
fn broken(dir: &Path, edit: impl FnOnce(&mut Vec<u8>)) -> String {
    let mut bytes = std::fs::read(gguf()).unwrap();
    edit(&mut bytes);
    let path = dir.join("broken.gguf");
    std::fs::write(&path, bytes).unwrap();
    path.to_str().unwrap().to_string()
}

#[test]
fn a_broken_gguf_file_is_one_error_line() {
    let dir = tempfile::tempdir().unwrap();
    type Edit = Box<dyn FnOnce(&mut Vec<u8>)>;
    let cases: Vec<(Edit, &str)> = vec![
        (
            Box::new(|b| b[4] = 9),
            "version: GGUF version 9 is not supported",
        ),
        (
            Box::new(|b| b.truncate(100)),
            "tensor_count: count 23 of tensor infos needs",
        ),
        (Box::new(|b| b.truncate(5000)), "metadata["),
        (
            Box::new(|b| b.truncate(b.len() - 1000)),
            "runs past the end of the file",
        ),
        // tensor_count = 2^60
        (
            Box::new(|b| b[8..16].copy_from_slice(&(1u64 << 60).to_le_bytes())),
            "tensor_count: count 1152921504606846976",
        ),
    ];
    for (edit, needle) in cases {
        let path = broken(dir.path(), edit);
        for cmd in ["inspect", "generate"] {
            let mut args = vec![cmd, "--model", &path];
            if cmd == "generate" {
                args.extend(["--tokens", "1,2"]);
            }
            let out = mixtral(&args);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(1), "{cmd} {needle}: {stderr}");
            assert!(stderr.starts_with("error: "), "{stderr}");
            assert!(stderr.contains(needle), "{cmd}: no `{needle}` in {stderr}");
            assert!(stderr.contains("broken.gguf"), "{stderr}");
            assert!(
                !stderr.contains("panicked") && stderr.lines().count() <= 3,
                "{stderr}"
            );
        }
        std::fs::remove_file(dir.path().join("broken.gguf")).unwrap();
    }
}

#[test]
fn a_gguf_of_another_architecture_is_named() {
    use mixtral::tensor::gguf::{GgufWriter, Value as V};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("qwen.gguf");
    let mut w = GgufWriter::new();
    w.metadata("general.architecture", V::String("qwen2".into()));
    w.write_new(&path).unwrap();
    let out = mixtral(&["inspect", "--model", path.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr.contains("not a Mixtral: its architecture is \"qwen2\""),
        "{stderr}"
    );
}
