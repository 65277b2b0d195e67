//! Hostile model folders and bad arguments, as an attacker or a careless user would give
//! them: each gets one clean `error:` line (or a correct result), never a panic, an abort, a
//! hang, a clobbered file or unbounded memory.

mod common;

use common::{assert_clean_error, copy_of, fixture, mixtral, s, stdout_json};
use serde_json::Value;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

#[test]
fn logits_out_never_replaces_what_is_not_a_regular_file_or_the_model() {
    let model = copy_of("tiny-f32");
    let weights = model.path().join("model.safetensors");
    let before = std::fs::read(&weights).unwrap();
    let logits = |out: &Path| {
        mixtral(&[
            "logits",
            "--model",
            s(model.path()),
            "--tokens",
            "1,2",
            "--out",
            s(out),
        ])
    };
    assert_clean_error(&logits(&weights), "the model's own file");
    let scratch = tempfile::tempdir().unwrap();
    let link = scratch.path().join("link");
    std::os::unix::fs::symlink(&weights, &link).unwrap();
    assert_clean_error(&logits(&link), "refusing to write over it");
    assert_eq!(std::fs::read(&weights).unwrap(), before);
    assert!(
        std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_clean_error(&logits(Path::new("/dev/null")), "special file");
    assert!(
        std::fs::metadata("/dev/null")
            .unwrap()
            .file_type()
            .is_char_device()
    );
    assert_clean_error(&logits(scratch.path()), "directory");
    // A regular file is replaced and keeps its permissions.
    let out = scratch.path().join("logits.safetensors");
    std::fs::write(&out, b"old").unwrap();
    std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o604)).unwrap();
    let done = logits(&out);
    assert!(
        done.status.success(),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
    assert_eq!(
        std::fs::metadata(&out).unwrap().permissions().mode() & 0o777,
        0o604
    );
    assert!(std::fs::read(&out).unwrap().len() > 8);
}

#[test]
fn absurd_thread_counts_are_refused_at_once() {
    for threads in ["18446744073709551615", "1099511627776", "10000", "0"] {
        let start = Instant::now();
        let out = mixtral(&[
            "generate",
            "--tokens",
            "1,2",
            "--max-new-tokens",
            "1",
            "--threads",
            threads,
        ]);
        assert_clean_error(&out, "invalid option `threads`");
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{threads}: {:?}",
            start.elapsed()
        );
    }
}

#[test]
fn a_full_context_prints_what_was_generated() {
    let model = copy_of("tiny-f32");
    let config = model.path().join("config.json");
    let mut c: Value = serde_json::from_slice(&std::fs::read(&config).unwrap()).unwrap();
    c["max_position_embeddings"] = 8.into();
    std::fs::write(&config, c.to_string()).unwrap();
    let out = mixtral(&[
        "generate",
        "--model",
        s(model.path()),
        "--tokens",
        "1,5,6,7,8",
        "--max-new-tokens",
        "100",
        "--ignore-eos",
        "--json",
    ]);
    let json = stdout_json(&out);
    assert_eq!(json["finish_reason"], "length");
    assert_eq!(json["ids"].as_array().unwrap().len(), 4);
    // A prompt the context cannot hold is refused before any prefill.
    let long: Vec<String> = (0..9).map(|_| "1".to_string()).collect();
    let out = mixtral(&[
        "generate",
        "--model",
        s(model.path()),
        "--tokens",
        &long.join(","),
    ]);
    assert_clean_error(&out, "exceeds max_position_embeddings = 8");
}

#[test]
fn logits_honours_precision_and_device() {
    let scratch = tempfile::tempdir().unwrap();
    let run = |precision: &str| {
        let out = scratch.path().join(format!("{precision}.safetensors"));
        let done = mixtral(&[
            "logits",
            "--model",
            s(&fixture("tiny-bf16")),
            "--tokens",
            "1,22557,1526",
            "--precision",
            precision,
            "--threads",
            "1",
            "--out",
            s(&out),
        ]);
        assert!(
            done.status.success(),
            "{}",
            String::from_utf8_lossy(&done.stderr)
        );
        std::fs::read(out).unwrap()
    };
    assert_ne!(
        run("f32"),
        run("bf16"),
        "--precision bf16 must change bf16-weight logits"
    );
    let out = mixtral(&[
        "logits",
        "--tokens",
        "1,2",
        "--device",
        "cuda:7",
        "--out",
        s(&scratch.path().join("x")),
    ]);
    assert!(!out.status.success());
    assert!(!String::from_utf8_lossy(&out.stderr).contains("panicked"));
}

#[test]
fn side_files_that_are_not_small_regular_files_are_reported() {
    // generation_config.json as a directory, a FIFO, /dev/zero: each one clear error, no hang.
    for kind in ["dir", "fifo", "zero", "json"] {
        let model = copy_of("tiny-f32");
        let g = model.path().join("generation_config.json");
        std::fs::remove_file(&g).unwrap();
        match kind {
            "dir" => std::fs::create_dir(&g).unwrap(),
            "fifo" => assert!(Command::new("mkfifo").arg(&g).status().unwrap().success()),
            "zero" => std::os::unix::fs::symlink("/dev/zero", &g).unwrap(),
            _ => std::fs::write(&g, b"{\"do_sample\": 3").unwrap(),
        }
        let start = Instant::now();
        let out = mixtral(&["generate", "--model", s(model.path()), "--tokens", "1,2"]);
        assert_clean_error(&out, "generation_config.json");
        assert!(start.elapsed() < Duration::from_secs(20), "{kind}");
    }
    // config.json as /dev/zero; a chat file that is a FIFO.
    let model = copy_of("tiny-f32");
    let config = model.path().join("config.json");
    std::fs::remove_file(&config).unwrap();
    std::os::unix::fs::symlink("/dev/zero", &config).unwrap();
    assert_clean_error(
        &mixtral(&["inspect", "--model", s(model.path())]),
        "special file",
    );
    let fifo = model.path().join("chat.json");
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    assert_clean_error(&mixtral(&["generate", "--chat", s(&fifo)]), "special file");
    let huge = model.path().join("huge.json");
    std::fs::File::create(&huge)
        .unwrap()
        .set_len(100 << 20)
        .unwrap();
    assert_clean_error(&mixtral(&["generate", "--chat", s(&huge)]), "more than the");
}

#[test]
fn bench_on_a_tiny_vocabulary_and_absurd_lengths() {
    use mixtral::tensor::{TensorStore, save};
    // tiny-f32 cut to a vocabulary of 2 ids.
    let dir = tempfile::tempdir().unwrap();
    let store = TensorStore::open_dir(fixture("tiny-f32")).unwrap();
    let tensors: Vec<_> = store
        .names()
        .map(|n| {
            let t = store.tensor(n).unwrap();
            let t = match n {
                "model.embed_tokens.weight" | "lm_head.weight" => t.narrow_outer(0, 2).unwrap(),
                _ => t,
            };
            (n.to_string(), t)
        })
        .collect();
    save(dir.path().join("model.safetensors"), &tensors).unwrap();
    let mut c: Value =
        serde_json::from_slice(&std::fs::read(fixture("tiny-f32").join("config.json")).unwrap())
            .unwrap();
    c["vocab_size"] = 2.into();
    std::fs::write(dir.path().join("config.json"), c.to_string()).unwrap();
    let bench = |extra: &[&str]| {
        let mut args = vec!["bench", "--model", s(dir.path()), "--repeat", "1", "--json"];
        args.extend(extra);
        mixtral(&args)
    };
    let out = bench(&["--prompt-len", "4", "--gen", "2"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for len in ["1000000000000", "100000000"] {
        let start = Instant::now();
        assert_clean_error(
            &bench(&["--prompt-len", len]),
            "more than the model's context of 4096",
        );
        assert!(start.elapsed() < Duration::from_secs(10));
    }
}

#[test]
fn bench_runs_beside_a_competing_process() {
    let out = mixtral(&[
        "bench",
        "--prompt-len",
        "8",
        "--gen",
        "4",
        "--repeat",
        "1",
        "--contend",
        "1",
        "--json",
    ]);
    let json = stdout_json(&out);
    assert_eq!(json["contend"], 1);
    assert!(json["preemptions"].is_u64());
    assert!(json["decode_tokens_per_s"].as_f64().unwrap() > 0.0);
    assert_clean_error(
        &mixtral(&["bench", "--contend", "100000"]),
        "--contend 100000",
    );
    // The competitor process is gone once bench returns.
    let spinning = Command::new("pgrep")
        .args(["-f", "mixtral spin"])
        .output()
        .unwrap();
    assert!(
        spinning.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&spinning.stdout)
    );
}
