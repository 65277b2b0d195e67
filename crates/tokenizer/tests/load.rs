//! Loading: the fixture model directory, BOS/EOS read from the files, and typed errors that
//! name the file for missing or malformed files.

mod common;

use std::path::Path;

use common::{MODEL_DIR, scratch_dir, tokenizer};
use mixtral_tokenizer::{Error, FALLBACK_BOS_ID, FALLBACK_EOS_ID, Tokenizer};

fn fixture_tokenizer_json() -> String {
    std::fs::read_to_string(Path::new(MODEL_DIR).join("tokenizer.json"))
        .expect("read tokenizer.json")
}

#[test]
fn fixture_directory_loads_with_mixtral_ids() {
    let tok = tokenizer();
    assert_eq!(
        (tok.bos_id(), tok.eos_id(), tok.vocab_size()),
        (1, 2, 32000)
    );
    assert_eq!(tok.id_to_piece(0), Some("<unk>"));
    assert_eq!(tok.id_to_piece(1), Some("<s>"));
    assert_eq!(tok.id_to_piece(2), Some("</s>"));
    assert_eq!(tok.id_to_piece(3), Some("<0x00>"));
    assert_eq!(tok.id_to_piece(258), Some("<0xFF>"));
    assert_eq!(tok.id_to_piece(32000), None);
    assert_eq!(tok.piece_to_id("▁Hello"), Some(22557));
    assert_eq!(tok.piece_to_id("no such piece"), None);

    let alone =
        Tokenizer::from_file(&Path::new(MODEL_DIR).join("tokenizer.json")).expect("from_file");
    assert_eq!(
        (alone.bos_id(), alone.eos_id(), alone.vocab_size()),
        (1, 2, 32000)
    );
    assert_eq!(alone.encode("Hello world").expect("encode"), [22557, 1526]);
}

#[test]
fn missing_tokenizer_json_is_an_io_error_naming_the_file() {
    let dir = scratch_dir("missing");
    let err = Tokenizer::from_dir(&dir).expect_err("no tokenizer.json");
    match &err {
        Error::Io { path, source } => {
            assert_eq!(path, &dir.join("tokenizer.json"));
            assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
        }
        other => panic!("expected Error::Io, got {other:?}"),
    }
    assert!(err.to_string().contains("tokenizer.json"), "{err}");
    let err = Tokenizer::from_file(&dir.join("nope.json")).expect_err("no such file");
    assert!(
        matches!(err, Error::Io { .. }) && err.to_string().contains("nope.json"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn malformed_tokenizer_json_is_a_json_error_naming_the_file() {
    let dir = scratch_dir("malformed-json");
    for (i, content) in ["{ not json", r#"{"version": "1.0"}"#, "[]"]
        .iter()
        .enumerate()
    {
        let path = dir.join(format!("bad{i}.json"));
        std::fs::write(&path, content).expect("write");
        let err = Tokenizer::from_file(&path).expect_err("malformed");
        assert!(
            matches!(&err, Error::Json { path: p, .. } if p == &path),
            "{content}: {err:?}"
        );
        assert!(err.to_string().contains(&format!("bad{i}.json")), "{err}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn malformed_tokenizer_config_is_a_json_error_naming_the_file() {
    let dir = scratch_dir("malformed-config");
    std::fs::write(dir.join("tokenizer.json"), fixture_tokenizer_json()).expect("write");
    std::fs::write(dir.join("tokenizer_config.json"), r#"{"bos_token": 7}"#).expect("write");
    let err = Tokenizer::from_dir(&dir).expect_err("bad config");
    assert!(
        matches!(&err, Error::Json { path, .. } if path.ends_with("tokenizer_config.json")),
        "{err:?}"
    );
    assert!(err.to_string().contains("tokenizer_config.json"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bos_and_eos_ids_are_read_from_the_config_files() {
    let dir = scratch_dir("config-ids");
    std::fs::write(dir.join("tokenizer.json"), fixture_tokenizer_json()).expect("write");
    // tokenizer_config.json names BOS (as an AddedToken object); special_tokens_map.json names
    // both, and is used only for what the first file does not name.
    std::fs::write(
        dir.join("tokenizer_config.json"),
        r#"{"bos_token": {"content": "</s>", "special": true}, "eos_token": null}"#,
    )
    .expect("write");
    std::fs::write(
        dir.join("special_tokens_map.json"),
        r#"{"bos_token": "<s>", "eos_token": "<unk>"}"#,
    )
    .expect("write");
    let tok = Tokenizer::from_dir(&dir).expect("load");
    assert_eq!((tok.bos_id(), tok.eos_id()), (2, 0));
    // Without config files: `<s>` / `</s>` of tokenizer.json.
    std::fs::remove_file(dir.join("tokenizer_config.json")).expect("rm");
    std::fs::remove_file(dir.join("special_tokens_map.json")).expect("rm");
    let tok = Tokenizer::from_dir(&dir).expect("load");
    assert_eq!((tok.bos_id(), tok.eos_id()), (1, 2));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn config_naming_a_token_missing_from_the_vocabulary_is_an_error() {
    let dir = scratch_dir("config-missing-token");
    std::fs::write(dir.join("tokenizer.json"), fixture_tokenizer_json()).expect("write");
    std::fs::write(
        dir.join("special_tokens_map.json"),
        r#"{"eos_token": "<|end|>"}"#,
    )
    .expect("write");
    let err = Tokenizer::from_dir(&dir).expect_err("unknown eos");
    assert!(
        matches!(&err, Error::SpecialTokenNotInVocab { which: "eos", token, path }
            if token == "<|end|>" && path.ends_with("special_tokens_map.json")),
        "{err:?}"
    );
    assert!(err.to_string().contains("special_tokens_map.json"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn ids_fall_back_to_1_and_2_only_when_no_file_has_the_tokens() {
    let dir = scratch_dir("fallback");
    // Rename the specials so that tokenizer.json has no `<s>` / `</s>`; make EOS id 5 visible
    // through a config file to show the fallback applies only where nothing names a token.
    let json = fixture_tokenizer_json()
        .replace("\"<s>\"", "\"<bos>\"")
        .replace("\"</s>\"", "\"<eos>\"");
    std::fs::write(dir.join("tokenizer.json"), &json).expect("write");
    let tok = Tokenizer::from_file(&dir.join("tokenizer.json")).expect("load");
    assert_eq!(tok.id_to_piece(1), Some("<bos>"));
    assert_eq!(
        (tok.bos_id(), tok.eos_id()),
        (FALLBACK_BOS_ID, FALLBACK_EOS_ID)
    );
    std::fs::write(
        dir.join("tokenizer_config.json"),
        r#"{"eos_token": "<0x02>"}"#,
    )
    .expect("write");
    let tok = Tokenizer::from_dir(&dir).expect("load");
    assert_eq!((tok.bos_id(), tok.eos_id()), (FALLBACK_BOS_ID, 5));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn non_bpe_tokenizer_json_is_refused() {
    let dir = scratch_dir("wordlevel");
    let path = dir.join("tokenizer.json");
    std::fs::write(
        &path,
        r#"{"version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
            "normalizer": null, "pre_tokenizer": null, "post_processor": null, "decoder": null,
            "model": {"type": "WordLevel", "vocab": {"<unk>": 0, "a": 1}, "unk_token": "<unk>"}}"#,
    )
    .expect("write");
    let err = Tokenizer::from_file(&path).expect_err("WordLevel");
    assert!(
        matches!(&err, Error::UnsupportedModel { found, .. } if found == "WordLevel"),
        "{err:?}"
    );
    assert!(err.to_string().contains("tokenizer.json"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_token_id_far_past_the_vocabulary_is_an_error_not_an_abort() {
    let dir = scratch_dir("huge-id");
    let json = fixture_tokenizer_json().replacen("\"▁Hello\": 22557", "\"▁Hello\": 4294967295", 1);
    assert!(json.contains("4294967295"));
    std::fs::write(dir.join("tokenizer.json"), json).unwrap();
    let err = Tokenizer::from_dir(&dir).expect_err("id past the vocabulary");
    let msg = err.to_string();
    assert!(
        msg.contains("has id 4294967295") && msg.contains("tokenizer.json"),
        "{msg}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn side_files_must_be_small_regular_files() {
    let dir = scratch_dir("side-files");
    std::fs::copy(
        Path::new(MODEL_DIR).join("tokenizer.json"),
        dir.join("tokenizer.json"),
    )
    .unwrap();
    // A FIFO would block a reader forever; a directory or a device is no config either.
    let config = dir.join("tokenizer_config.json");
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&config)
            .status()
            .unwrap()
            .success()
    );
    let err = Tokenizer::from_dir(&dir).expect_err("FIFO config");
    assert!(err.to_string().contains("not a regular file"), "{err}");
    std::fs::remove_file(&config).unwrap();
    std::os::unix::fs::symlink("/dev/zero", &config).unwrap();
    let err = Tokenizer::from_dir(&dir).expect_err("/dev/zero config");
    assert!(err.to_string().contains("not a regular file"), "{err}");
    std::fs::remove_file(&config).unwrap();
    let big = std::fs::File::create(&config).unwrap();
    big.set_len(mixtral_tokenizer::MAX_CONFIG_BYTES + 1)
        .unwrap();
    let err = Tokenizer::from_dir(&dir).expect_err("huge config");
    assert!(err.to_string().contains("more than the"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_100_kb_token_in_a_message_is_cut_short() {
    let dir = scratch_dir("huge-piece");
    let long = "x".repeat(100_000);
    let json = fixture_tokenizer_json().replacen(
        "\"▁Hello\": 22557",
        &format!("\"▁Hello\": 22557, \"{long}\": 4294967295"),
        1,
    );
    std::fs::write(dir.join("tokenizer.json"), json).unwrap();
    let msg = match Tokenizer::from_dir(&dir) {
        Ok(t) => panic!("loaded: {}", t.vocab_size()),
        Err(e) => e.to_string(),
    };
    assert!(
        msg.contains("has id 4294967295"),
        "{}",
        &msg[..msg.len().min(300)]
    );
    assert!(msg.len() < 1000, "{} bytes", msg.len());
    let _ = std::fs::remove_dir_all(&dir);
}
