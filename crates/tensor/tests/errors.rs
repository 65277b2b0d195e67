//! Every way a checkpoint file can be broken gives a typed error that names the file.

use mixtral_tensor::{Error, SafetensorsFile, TensorStore};
use std::path::{Path, PathBuf};

/// A safetensors file from a raw header string and data length (data is zeros).
fn write_raw(dir: &Path, name: &str, header: &str, data_len: usize) -> PathBuf {
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    bytes.resize(bytes.len() + data_len, 0);
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

const ONE_F32: &str = r#"{"w":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}}"#;

fn assert_names(err: &Error, what: &str) {
    let msg = err.to_string();
    assert!(msg.contains(what), "message `{msg}` does not name `{what}`");
}

#[test]
fn truncated_data_is_reported_with_sizes() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_raw(dir.path(), "t.safetensors", ONE_F32, 10);
    let err = SafetensorsFile::open(&path).unwrap_err();
    assert!(
        matches!(err, Error::Truncated { what: "tensor data", found, .. } if found == 8 + ONE_F32.len() as u64 + 10)
    );
    assert_names(&err, "t.safetensors");
}

#[test]
fn file_shorter_than_its_length_field_is_truncated() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("short.safetensors");
    std::fs::write(&path, [1u8, 2, 3]).unwrap();
    let err = SafetensorsFile::open(&path).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Truncated {
                what: "header length",
                ..
            }
        ),
        "{err:?}"
    );
    let mut bytes = 500u64.to_le_bytes().to_vec();
    bytes.extend_from_slice(b"{}");
    std::fs::write(&path, bytes).unwrap();
    let err = SafetensorsFile::open(&path).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Truncated {
                what: "header",
                expected: 508,
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn oversized_header_is_rejected_before_reading_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("huge.safetensors");
    std::fs::write(&path, u64::MAX.to_le_bytes()).unwrap();
    let err = SafetensorsFile::open(&path).unwrap_err();
    assert!(
        matches!(err, Error::HeaderTooLarge { len: u64::MAX, .. }),
        "{err:?}"
    );
    assert_names(&err, "huge.safetensors");
    // 90 MB of header (within the safetensors crate's own 100 MB limit) is refused at once,
    // not parsed into gigabytes of memory.
    let mut bytes = (90_000_000u64).to_le_bytes().to_vec();
    bytes.resize(8 + 90_000_000, b' ');
    std::fs::write(&path, bytes).unwrap();
    let err = SafetensorsFile::open(&path).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "{}: safetensors header of 90000000 bytes exceeds the limit of 16777216",
            path.display()
        )
    );
}

#[test]
fn corrupt_header_json_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_raw(
        dir.path(),
        "bad.safetensors",
        r#"{"w":{"dtype":"F32","shape":[2,2]"#,
        16,
    );
    let err = SafetensorsFile::open(&path).unwrap_err();
    assert!(matches!(err, Error::CorruptHeader { .. }), "{err:?}");
    assert_names(&err, "bad.safetensors");
}

#[test]
fn inconsistent_offsets_are_a_corrupt_header() {
    let dir = tempfile::tempdir().unwrap();
    // 2×2 F32 needs 16 bytes, the offsets claim 12.
    let path = write_raw(
        dir.path(),
        "off.safetensors",
        r#"{"w":{"dtype":"F32","shape":[2,2],"data_offsets":[0,12]}}"#,
        12,
    );
    let err = SafetensorsFile::open(&path).unwrap_err();
    assert!(matches!(err, Error::CorruptHeader { .. }), "{err:?}");
}

#[test]
fn a_100_kb_tensor_name_in_a_corrupt_header_is_shown_cut_short() {
    let dir = tempfile::tempdir().unwrap();
    // Data that does not start at offset 0: the parser's message quotes the tensor's name.
    let name = "\\u001b".repeat((100 << 10) / 6);
    let header = format!(r#"{{"{name}":{{"dtype":"F32","shape":[2,2],"data_offsets":[4,20]}}}}"#);
    let path = write_raw(dir.path(), "long.safetensors", &header, 20);
    let err = SafetensorsFile::open(&path).unwrap_err();
    assert!(matches!(err, Error::CorruptHeader { .. }), "{err:?}");
    let cause = std::error::Error::source(&err).unwrap().to_string();
    assert!(
        cause.len() < 400,
        "{} bytes: {}",
        cause.len(),
        &cause[..400]
    );
    assert!(
        cause.contains("invalid offset") && !cause.contains('\u{1b}'),
        "{cause}"
    );
}

#[test]
fn trailing_bytes_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_raw(dir.path(), "long.safetensors", ONE_F32, 20);
    let err = SafetensorsFile::open(&path).unwrap_err();
    assert!(matches!(err, Error::TrailingBytes { .. }), "{err:?}");
}

#[test]
fn unsupported_dtype_names_file_and_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_raw(
        dir.path(),
        "u8.safetensors",
        r#"{"q":{"dtype":"U8","shape":[4],"data_offsets":[0,4]}}"#,
        4,
    );
    let file = SafetensorsFile::open(&path).unwrap(); // listing works
    let err = file.tensor("q").unwrap_err();
    assert!(
        matches!(&err, Error::UnsupportedDtype { name, dtype, .. } if name == "q" && dtype == "U8"),
        "{err:?}"
    );
    assert_names(&err, "u8.safetensors");
}

#[test]
fn missing_tensor_names_file_and_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_raw(dir.path(), "one.safetensors", ONE_F32, 16);
    let err = SafetensorsFile::open(&path)
        .unwrap()
        .tensor("nope")
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("{}: tensor `nope` is missing", path.display())
    );
}

#[test]
fn tensors_off_their_alignment_are_read_through_an_aligned_copy() {
    let dir = tempfile::tempdir().unwrap();
    // A 57-byte header puts the data at offset 65: not 4-aligned for f32 (the format allows it).
    let header = r#"{"w":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}}"#;
    assert_eq!((8 + header.len()) % 4, 1);
    let path = write_raw(dir.path(), "odd.safetensors", header, 0);
    let mut bytes = std::fs::read(&path).unwrap();
    for v in [1.5f32, -2.0, 3.25, 4.0] {
        bytes.extend_from_slice(&v.to_le_bytes());
    }
    std::fs::write(&path, bytes).unwrap();
    let file = SafetensorsFile::open(&path).unwrap();
    assert!(file.copies_misaligned_data());
    let t = file.tensor("w").unwrap();
    assert!(!t.is_mapped());
    assert_eq!(t.as_slice::<f32>().unwrap(), &[1.5, -2.0, 3.25, 4.0]);
    // An aligned file is borrowed, not copied.
    let padded = format!("{ONE_F32}       ");
    let aligned = write_raw(dir.path(), "even.safetensors", &padded, 16);
    let file = SafetensorsFile::open(&aligned).unwrap();
    assert!(!file.copies_misaligned_data());
    assert!(file.tensor("w").unwrap().is_mapped());
}

#[test]
fn index_naming_a_missing_shard_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    write_raw(dir.path(), "a.safetensors", ONE_F32, 16);
    let index = r#"{"metadata":{},"weight_map":{"w":"a.safetensors","v":"gone.safetensors"}}"#;
    std::fs::write(dir.path().join("model.safetensors.index.json"), index).unwrap();
    let err = TensorStore::open_dir(dir.path()).unwrap_err();
    assert!(
        matches!(&err, Error::MissingShard { shard, .. } if shard == "gone.safetensors"),
        "{err:?}"
    );
    assert_names(&err, "model.safetensors.index.json");
}

#[test]
fn index_naming_a_tensor_its_shard_lacks_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    write_raw(dir.path(), "a.safetensors", ONE_F32, 16);
    let index = r#"{"weight_map":{"w":"a.safetensors","v":"a.safetensors"}}"#;
    std::fs::write(dir.path().join("model.safetensors.index.json"), index).unwrap();
    let err = TensorStore::open_dir(dir.path()).unwrap_err();
    assert!(
        matches!(&err, Error::NotInShard { name, .. } if name == "v"),
        "{err:?}"
    );
    assert_names(&err, "a.safetensors");
    assert_names(&err, "the index lists it in this shard");
}

#[test]
fn shard_names_cannot_leave_the_model_directory() {
    let root = tempfile::tempdir().unwrap();
    let model = root.path().join("model");
    let outside = root.path().join("outside");
    std::fs::create_dir_all(&model).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    write_raw(&outside, "x.safetensors", ONE_F32, 16);
    for shard in [
        "../outside/x.safetensors",
        "/etc/passwd",
        "./x.safetensors",
        "sub/x.safetensors",
        "..",
        "",
        "a\\b",
    ] {
        let index = serde_json::json!({"weight_map": {"w": shard}}).to_string();
        std::fs::write(model.join("model.safetensors.index.json"), index).unwrap();
        let err = TensorStore::open_dir(&model).unwrap_err();
        assert!(
            matches!(err, Error::BadShardName { .. }),
            "{shard}: {err:?}"
        );
        assert_names(
            &err,
            "shard names must be plain file names inside the model directory",
        );
        assert!(!err.to_string().contains("root:"), "{err}");
    }
    // A symbolic link in the directory itself is followed (the Hugging Face cache is made of
    // them).
    std::os::unix::fs::symlink(outside.join("x.safetensors"), model.join("x.safetensors")).unwrap();
    let index = r#"{"weight_map":{"w":"x.safetensors"}}"#;
    std::fs::write(model.join("model.safetensors.index.json"), index).unwrap();
    assert_eq!(TensorStore::open_dir(&model).unwrap().len(), 1);
}

#[test]
fn an_empty_index_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors.index.json");
    std::fs::write(&path, r#"{"weight_map":{}}"#).unwrap();
    let err = TensorStore::open_dir(dir.path()).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "{}: the index's weight_map is empty: it names no tensor and no shard",
            path.display()
        )
    );
}

#[test]
fn the_index_decides_the_shard_of_a_tensor_in_two() {
    let dir = tempfile::tempdir().unwrap();
    // Padded so the data starts 8-aligned.
    let two = r#"{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}  "#;
    write_raw(dir.path(), "a.safetensors", two, 4);
    let mut bytes = (two.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(two.as_bytes());
    bytes.extend_from_slice(&2.5f32.to_le_bytes());
    std::fs::write(dir.path().join("b.safetensors"), bytes).unwrap();
    for (shard, value) in [("a.safetensors", 0.0f32), ("b.safetensors", 2.5)] {
        let index = format!(r#"{{"weight_map":{{"w":"{shard}"}}}}"#);
        std::fs::write(dir.path().join("model.safetensors.index.json"), index).unwrap();
        let store = TensorStore::open_dir(dir.path()).unwrap();
        assert_eq!(
            store.tensor("w").unwrap().as_slice::<f32>().unwrap(),
            &[value]
        );
    }
}

#[test]
fn names_from_files_are_escaped_in_messages() {
    let dir = tempfile::tempdir().unwrap();
    let index = r#"{"weight_map":{"w":"\u001b[2Jevil\u0000.safetensors"}}"#;
    std::fs::write(dir.path().join("model.safetensors.index.json"), index).unwrap();
    let err = TensorStore::open_dir(dir.path()).unwrap_err().to_string();
    assert!(!err.contains('\u{1b}') && !err.contains('\0'), "{err:?}");
    assert!(err.contains("\\u{1b}[2Jevil"), "{err}");
    let path = write_raw(dir.path(), "t.safetensors", ONE_F32, 16);
    let file = SafetensorsFile::open(&path).unwrap();
    let err = file.tensor("\u{7}bell").unwrap_err().to_string();
    assert!(
        !err.contains('\u{7}') && err.contains("\\u{7}bell"),
        "{err}"
    );
}

#[test]
fn corrupt_index_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("model.safetensors.index.json"),
        "{\"weight_map\": [",
    )
    .unwrap();
    let err = TensorStore::open_dir(dir.path()).unwrap_err();
    assert!(matches!(err, Error::CorruptIndex { .. }), "{err:?}");
}

#[test]
fn directory_without_weights_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let err = TensorStore::open_dir(dir.path()).unwrap_err();
    assert!(matches!(err, Error::NoSafetensors { .. }), "{err:?}");
    assert_names(&err, "model.safetensors.index.json");
}

#[test]
fn missing_file_is_an_io_error_naming_it() {
    let err = SafetensorsFile::open("/nonexistent/x.safetensors").unwrap_err();
    assert!(matches!(err, Error::Io { .. }));
    assert_names(&err, "/nonexistent/x.safetensors");
}

#[test]
fn saved_tensors_read_back_identically() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.safetensors");
    let a = mixtral_tensor::Tensor::from_vec(vec![1.5f32, -2.0, 3.25], [1, 3]).unwrap();
    let b = mixtral_tensor::Tensor::from_vec(vec![7i64, 9], [2, 1]).unwrap();
    mixtral_tensor::save(&path, &[("a".into(), a), ("b".into(), b)]).unwrap();
    let file = SafetensorsFile::open(&path).unwrap();
    assert_eq!(
        file.tensor("a").unwrap().as_slice::<f32>().unwrap(),
        &[1.5, -2.0, 3.25]
    );
    assert_eq!(
        file.tensor("b").unwrap().as_slice::<i64>().unwrap(),
        &[7, 9]
    );
    assert_eq!(file.tensor("b").unwrap().dims(), &[2, 1]);
}
