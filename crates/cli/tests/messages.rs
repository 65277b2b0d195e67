//! What the commands say when they refuse: the message names the thing refused and the way
//! out, and the help describes what an option takes.

mod common;

use common::{assert_clean_error, fixture, mixtral, ok_stdout, s};

#[cfg(unix)]
#[test]
fn quantize_refuses_a_dangling_link_as_out_like_any_existing_path() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("q.gguf");
    std::os::unix::fs::symlink(dir.path().join("nowhere"), &out).unwrap();
    let run = mixtral(&[
        "quantize",
        "--model",
        s(&fixture("tiny-bf16")),
        "--type",
        "q8_0",
        "--out",
        s(&out),
    ]);
    assert_clean_error(&run, "already exists (refusing to overwrite it)");
    // The link is left as it was, and nothing was written where it points.
    assert!(std::fs::symlink_metadata(&out).unwrap().is_symlink());
    assert!(!dir.path().join("nowhere").exists());
}

#[test]
fn quantize_refuses_a_quantized_gguf_naming_the_file_and_why() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("again.gguf");
    let gguf = fixture("../quant/tiny-q/Q4_K_M.gguf");
    let run = mixtral(&[
        "quantize",
        "--model",
        s(&gguf),
        "--type",
        "q8_0",
        "--out",
        s(&out),
    ]);
    assert_clean_error(&run, "Q4_K_M.gguf: holds ");
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        stderr.contains("quantized already") && stderr.contains("bf16, f16 or f32"),
        "{stderr}"
    );
    assert!(!stderr.contains("invalid option"), "{stderr}");
    assert!(!out.exists());
    // The help says the same.
    let help = ok_stdout(&mixtral(&["quantize", "--help"]));
    assert!(help.contains("quantized already is refused"), "{help}");
}

#[test]
fn chat_options_are_described_as_file_paths() {
    for command in ["generate", "tokenize"] {
        let help = ok_stdout(&mixtral(&[command, "--help"]));
        let line = help
            .lines()
            .skip_while(|l| !l.trim_start().starts_with("--chat "))
            .take(3)
            .collect::<Vec<_>>()
            .join(" ");
        assert!(
            line.contains("--chat <FILE>") && line.contains("Path of a JSON"),
            "{command}: {line}"
        );
    }
}
