//! The GGUF reader: the fixture files read exactly as the generator recorded them, a writer
//! round trip of every value type, and every malformation rejected with its exact message
//! (file, field, what is wrong), without allocating from counts the file cannot back.

use mixtral_tensor::gguf::{
    Array, GgufError, GgufFile, GgufWriter, Header, MAX_NESTING, Value, ValueType, WriteTensor,
};
use mixtral_tensor::{DType, Error, Shape};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------------
// Allocation tracking: the largest single allocation made by the current thread while tracking
// is on (thread-local, so tests running in parallel do not disturb each other).

struct Tracking;

thread_local! {
    static TRACKING: Cell<bool> = const { Cell::new(false) };
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

fn note(size: usize) {
    let _ = TRACKING.try_with(|on| {
        if on.get() {
            let _ = LARGEST.try_with(|l| l.set(l.get().max(size)));
        }
    });
}

// SAFETY: every call is forwarded unchanged to the system allocator; `note` only touches
// const-initialised thread-locals without destructors, which never allocate.
unsafe impl GlobalAlloc for Tracking {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: the caller's contract for `alloc` is passed through.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        // SAFETY: the caller's contract for `realloc` is passed through.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract for `dealloc` is passed through.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Tracking = Tracking;

/// Runs `f` and returns its result, the largest single allocation it made and its duration.
fn measured<R>(f: impl FnOnce() -> R) -> (R, usize, Duration) {
    LARGEST.with(|l| l.set(0));
    TRACKING.with(|t| t.set(true));
    let start = Instant::now();
    let r = f();
    let elapsed = start.elapsed();
    TRACKING.with(|t| t.set(false));
    (r, LARGEST.with(|l| l.get()), elapsed)
}

// ---------------------------------------------------------------------------------------------
// Helpers.

fn fixture(rel: &str) -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures")).join(rel)
}

fn expected_json(rel: &str) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(fixture(rel)).unwrap()).unwrap()
}

/// Little-endian GGUF bytes assembled by hand, for files the writer would never make.
#[derive(Clone, Default)]
struct Raw(Vec<u8>);

impl Raw {
    fn header(version: u32, n_tensors: u64, n_kv: u64) -> Raw {
        Raw::default()
            .bytes(b"GGUF")
            .u32(version)
            .u64(n_tensors)
            .u64(n_kv)
    }

    fn bytes(mut self, b: &[u8]) -> Raw {
        self.0.extend_from_slice(b);
        self
    }

    fn u32(self, v: u32) -> Raw {
        self.bytes(&v.to_le_bytes())
    }

    fn u64(self, v: u64) -> Raw {
        self.bytes(&v.to_le_bytes())
    }

    fn str(self, s: &str) -> Raw {
        self.u64(s.len() as u64).bytes(s.as_bytes())
    }

    fn zeros(self, n: usize) -> Raw {
        self.bytes(&vec![0; n])
    }

    fn pad_to(mut self, align: usize) -> Raw {
        let n = self.0.len().next_multiple_of(align);
        self.0.resize(n, 0);
        self
    }

    /// A key, its value type id and nothing else (the caller writes the value).
    fn key(self, key: &str, ty: ValueType) -> Raw {
        self.str(key).u32(ty.id())
    }

    fn tensor_info(self, name: &str, ne: &[u64], ggml_type: u32, offset: u64) -> Raw {
        let mut r = self.str(name).u32(ne.len() as u32);
        for &d in ne {
            r = r.u64(d);
        }
        r.u32(ggml_type).u64(offset)
    }
}

/// Writes `bytes` to a fresh temporary directory and opens the file.
fn open_bytes(bytes: &[u8]) -> (tempfile::TempDir, PathBuf, mixtral_tensor::Result<GgufFile>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.gguf");
    std::fs::write(&path, bytes).unwrap();
    let result = GgufFile::open(&path);
    (dir, path, result)
}

/// Asserts that opening `bytes` fails with exactly `"{path}: {expected}"`, that the error is
/// `Error::Gguf` naming the file, and that `Header::parse` reports the same field and kind.
#[track_caller]
fn assert_rejects(bytes: &[u8], expected: &str) -> Error {
    let (_dir, path, result) = open_bytes(bytes);
    let err = result.unwrap_err();
    assert_eq!(err.to_string(), format!("{}: {expected}", path.display()));
    assert!(
        matches!(&err, Error::Gguf { path: p, .. } if *p == path),
        "{err:?}"
    );
    let (field, kind) = Header::parse(bytes).unwrap_err();
    assert_eq!(format!("{field}: {kind}"), expected);
    err
}

/// The kind of a `GgufError` inside `err`.
fn kind(err: &Error) -> &GgufError {
    match err {
        Error::Gguf { kind, .. } => kind,
        other => panic!("not a GGUF error: {other:?}"),
    }
}

/// A small valid file: no metadata, one F32 tensor `w` of 8 values. The header ends at 57
/// (24 + the 33-byte tensor info), the data is at 64..96.
fn small_valid() -> Vec<u8> {
    let data: Vec<u8> = (0..32).collect();
    let mut w = GgufWriter::new();
    w.tensor(WriteTensor {
        name: "w".into(),
        dtype: DType::F32,
        shape: Shape::from([8]),
        bytes: &data,
    });
    w.to_bytes()
}

fn f32_tensor<'a>(name: &str, dims: &[usize], bytes: &'a [u8]) -> WriteTensor<'a> {
    WriteTensor {
        name: name.into(),
        dtype: DType::F32,
        shape: Shape::from(dims),
        bytes,
    }
}

// ---------------------------------------------------------------------------------------------
// The fixture files.

/// Compares one of our metadata values with expected.json's rendering of it.
fn assert_value_matches(key: &str, ours: &Value, json: &serde_json::Value) {
    use serde_json::Value as J;
    match json {
        J::String(s) => assert_eq!(ours.as_str(), Some(s.as_str()), "{key}"),
        J::Bool(b) => assert_eq!(ours.as_bool(), Some(*b), "{key}"),
        J::Number(n) if n.is_u64() => assert_eq!(ours.as_u64(), n.as_u64(), "{key}"),
        J::Number(n) => assert_eq!(ours.as_f64(), n.as_f64(), "{key}"),
        J::Object(o) => {
            let a = ours.as_array().unwrap_or_else(|| panic!("{key}: {ours}"));
            let of = o["array_of"].as_str().unwrap();
            assert_eq!(a.element_type().name().to_uppercase(), of, "{key}");
            assert_eq!(a.len() as u64, o["len"].as_u64().unwrap(), "{key}");
        }
        other => panic!("{key}: unexpected JSON {other}"),
    }
}

#[test]
fn q4_k_m_fixture_matches_expected_json() {
    let path = fixture("quant/tiny-q/Q4_K_M.gguf");
    let expected = expected_json("quant/tiny-q/expected.json");
    let file = GgufFile::open(&path).unwrap();
    let independent = std::fs::read(&path).unwrap();
    let e_file = &expected["files"]["Q4_K_M"];
    assert_eq!(independent.len() as u64, e_file["bytes"].as_u64().unwrap());

    assert_eq!(file.version(), 3);
    assert_eq!(file.header().alignment, 32);
    assert_eq!(file.header().data_start % 32, 0);

    // Metadata: every key of expected.json, with its value, and nothing else.
    let e_meta = expected["metadata"].as_object().unwrap();
    let meta = file.metadata();
    assert_eq!(meta.len(), 30);
    assert_eq!(e_meta.len(), 30);
    for (key, json) in e_meta {
        let ours = meta.get(key).unwrap_or_else(|| panic!("missing key {key}"));
        assert_value_matches(key, ours, json);
    }
    for (key, _) in meta.iter() {
        assert!(e_meta.contains_key(key), "unexpected key {key}");
    }
    assert_eq!(meta.get("llama.expert_count"), Some(&Value::U32(8)));
    assert_eq!(meta.get("llama.expert_used_count"), Some(&Value::U32(2)));
    assert_eq!(meta.get("llama.rope.freq_base"), Some(&Value::F32(1e6)));
    assert_eq!(
        meta.get("llama.attention.layer_norm_rms_epsilon"),
        Some(&Value::F32(1e-5_f32))
    );
    assert_eq!(
        meta.get("general.file_type").and_then(Value::as_u64),
        Some(15)
    );
    assert_eq!(
        meta.get("general.architecture").and_then(Value::as_str),
        Some("llama")
    );
    match meta.get("tokenizer.ggml.tokens") {
        Some(Value::Array(Array::String(tokens))) => {
            assert_eq!(tokens.len(), 1024);
            assert_eq!(tokens[1], "<s>");
            assert_eq!(tokens[2], "</s>");
        }
        other => panic!("tokens: {other:?}"),
    }
    assert!(matches!(
        meta.get("tokenizer.ggml.scores"),
        Some(Value::Array(Array::F32(v))) if v.len() == 1024
    ));
    assert!(matches!(
        meta.get("tokenizer.ggml.token_type"),
        Some(Value::Array(Array::I32(v))) if v.len() == 1024 && v[0] == 3 && v[3] == 6
    ));

    // Tensors: same names in the same (file) order, types, ne, absolute offsets and sizes.
    let e_tensors = e_file["tensors"].as_array().unwrap();
    let tensors = &file.header().tensors;
    assert_eq!(e_tensors.len(), 23);
    assert_eq!(tensors.len(), e_tensors.len());
    assert_eq!(file.infos().len(), e_tensors.len());
    let map = file.mapped_range();
    assert_eq!(map.len(), independent.len());
    for (t, e) in tensors.iter().zip(e_tensors) {
        let name = e["name"].as_str().unwrap();
        let ne: Vec<u64> = e["ne"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_u64().unwrap())
            .collect();
        let offset = e["offset"].as_u64().unwrap() as usize;
        let n_bytes = e["n_bytes"].as_u64().unwrap() as usize;
        assert_eq!(t.name, name);
        assert_eq!(t.dtype.name(), e["type"].as_str().unwrap(), "{name}");
        assert_eq!(t.ne, ne, "{name}");
        let reversed: Vec<usize> = ne.iter().rev().map(|&d| d as usize).collect();
        assert_eq!(t.shape.dims(), &reversed[..], "{name}");
        assert_eq!(t.range, offset..offset + n_bytes, "{name}");
        assert_eq!(
            t.offset,
            (offset as u64) - file.header().data_start,
            "{name}"
        );

        let info = &file.infos()[name];
        assert_eq!(info.range, t.range, "{name}");
        assert_eq!(info.shape, t.shape, "{name}");

        // A view into the mapping, at exactly the expected place, with the file's bytes.
        let tensor = file.tensor(name).unwrap();
        assert!(tensor.is_mapped(), "{name}");
        assert_eq!(tensor.dtype(), t.dtype);
        assert_eq!(tensor.dims(), &reversed[..]);
        let ptr = tensor.as_bytes().as_ptr() as usize;
        assert!(map.contains(&ptr), "{name}");
        assert_eq!(ptr, map.start + offset, "{name}");
        assert_eq!(
            tensor.as_bytes(),
            &independent[offset..offset + n_bytes],
            "{name}"
        );
    }

    let gate = file.tensor("blk.0.ffn_gate_exps.weight").unwrap();
    assert_eq!(
        (gate.dtype(), gate.dims()),
        (DType::Q4_K, &[8usize, 512, 256][..])
    );
}

#[test]
fn types_fixture_matches_expected_json() {
    let path = fixture("quant/gguf-types/types.gguf");
    let expected = expected_json("quant/gguf-types/expected.json");
    let file = GgufFile::open(&path).unwrap();
    let independent = std::fs::read(&path).unwrap();
    let cases = expected["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 8);
    assert_eq!(file.header().tensors.len(), 8);
    let mut types = Vec::new();
    for c in cases {
        let name = c["name"].as_str().unwrap();
        let t = file
            .header()
            .tensors
            .iter()
            .find(|t| t.name == name)
            .unwrap_or_else(|| panic!("no tensor {name}"));
        let ne: Vec<u64> = c["ne"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_u64().unwrap())
            .collect();
        let offset = c["offset"].as_u64().unwrap() as usize;
        let n_bytes = c["n_bytes"].as_u64().unwrap() as usize;
        assert_eq!(t.dtype.name(), c["type"].as_str().unwrap(), "{name}");
        assert_eq!(t.ne, ne, "{name}");
        assert_eq!(t.range, offset..offset + n_bytes, "{name}");
        let tensor = file.tensor(name).unwrap();
        assert_eq!(tensor.dims(), &[8usize, 512][..], "{name}");
        assert_eq!(tensor.as_bytes(), &independent[offset..offset + n_bytes]);
        types.push(t.dtype);
    }
    use DType::*;
    assert_eq!(types, [F32, F16, BF16, Q8_0, Q4_0, Q4_K, Q5_K, Q6_K]);
}

#[test]
fn vocab_only_fixture_has_no_tensors_and_the_full_vocabulary() {
    let file = GgufFile::open(fixture("tokenizer/vocab.gguf")).unwrap();
    assert!(file.header().tensors.is_empty());
    assert!(file.infos().is_empty());
    let meta = file.metadata();
    match meta.get("tokenizer.ggml.tokens") {
        Some(Value::Array(Array::String(tokens))) => {
            assert_eq!(tokens.len(), 32000);
            assert_eq!(tokens[0], "<unk>");
            assert_eq!(tokens[1], "<s>");
            assert_eq!(tokens[2], "</s>");
        }
        other => panic!("tokens: {other:?}"),
    }
    match meta.get("tokenizer.ggml.scores") {
        Some(Value::Array(Array::F32(scores))) => assert_eq!(scores.len(), 32000),
        other => panic!("scores: {other:?}"),
    }
    assert_eq!(
        meta.get("tokenizer.ggml.model").and_then(Value::as_str),
        Some("llama")
    );
}

// ---------------------------------------------------------------------------------------------
// Writer round trip.

fn every_value() -> Vec<(String, Value)> {
    let nested = Array::Array(vec![
        Array::U32(vec![1, 2, 3]),
        Array::String(vec!["x".into(), String::new()]),
        Array::Array(vec![Array::I8(vec![-1]), Array::Array(vec![])]),
        Array::F64(vec![]),
    ]);
    let v = |k: &str, v: Value| (k.to_string(), v);
    vec![
        v("general.alignment", Value::U32(64)),
        v("t.u8", Value::U8(0xfe)),
        v("t.i8", Value::I8(-128)),
        v("t.u16", Value::U16(0xbeef)),
        v("t.i16", Value::I16(-12345)),
        v("t.u32", Value::U32(0xdead_beef)),
        v("t.i32", Value::I32(i32::MIN)),
        v("t.f32", Value::F32(-1.5e-39)), // subnormal
        v("t.f32.inf", Value::F32(f32::INFINITY)),
        v("t.bool.true", Value::Bool(true)),
        v("t.bool.false", Value::Bool(false)),
        v(
            "t.string",
            Value::String("Mixtral — ünïcødé ✓ \"q\"".into()),
        ),
        v("t.string.empty", Value::String(String::new())),
        v("t.u64", Value::U64(u64::MAX)),
        v("t.i64", Value::I64(i64::MIN + 1)),
        v("t.f64", Value::F64(-std::f64::consts::PI)),
        v("a.u8", Value::Array(Array::U8(vec![0, 1, 255]))),
        v("a.i8", Value::Array(Array::I8(vec![-128, 0, 127]))),
        v("a.u16", Value::Array(Array::U16(vec![0, 65535]))),
        v("a.i16", Value::Array(Array::I16(vec![-32768, 32767]))),
        v("a.u32", Value::Array(Array::U32(vec![7, u32::MAX]))),
        v("a.i32", Value::Array(Array::I32(vec![-7, i32::MAX]))),
        v("a.f32", Value::Array(Array::F32(vec![0.5, -0.0, 3.25e10]))),
        v("a.bool", Value::Array(Array::Bool(vec![true, false, true]))),
        v(
            "a.string",
            Value::Array(Array::String(vec!["<s>".into(), "".into(), "▁the".into()])),
        ),
        v("a.u64", Value::Array(Array::U64(vec![u64::MAX, 0]))),
        v("a.i64", Value::Array(Array::I64(vec![i64::MIN, -1]))),
        v("a.f64", Value::Array(Array::F64(vec![1e300, -2.5]))),
        v("a.nested", Value::Array(nested)),
        v("a.empty", Value::Array(Array::F32(vec![]))),
        v("a.empty.array", Value::Array(Array::Array(vec![]))),
    ]
}

#[test]
fn writer_round_trip_keeps_every_value_and_tensor_with_custom_alignment() {
    let values = every_value();
    // 3×5 F32 (60 bytes: padded), 2×64 Q8_0 (136 bytes), a rank-4 F32 and a one-row Q8_0.
    let a: Vec<u8> = (0..15u32)
        .flat_map(|i| (i as f32 * 0.5).to_le_bytes())
        .collect();
    let q: Vec<u8> = (0..136u32).map(|i| (i * 7 + 3) as u8).collect();
    let r4: Vec<u8> = (0..24u32).flat_map(|i| (i as f32).to_le_bytes()).collect();
    let q1: Vec<u8> = (0..34u32).map(|i| (255 - i) as u8).collect();
    let tensors = [
        f32_tensor("a", &[3, 5], &a),
        WriteTensor {
            name: "blk.0.q".into(),
            dtype: DType::Q8_0,
            shape: Shape::from([2, 64]),
            bytes: &q,
        },
        f32_tensor("rank4", &[1, 2, 3, 4], &r4),
        WriteTensor {
            name: "q.one".into(),
            dtype: DType::Q8_0,
            shape: Shape::from([32]),
            bytes: &q1,
        },
    ];
    let mut w = GgufWriter::new();
    for (k, v) in &values {
        w.metadata(k.clone(), v.clone());
    }
    for t in &tensors {
        w.tensor(t.clone());
    }
    let bytes = w.to_bytes();

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("round.gguf");
    w.write_new(&path).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), bytes);
    // Nothing is ever overwritten.
    assert!(w.write_new(&path).is_err());

    let file = GgufFile::open(&path).unwrap();
    assert_eq!(file.version(), 3);
    assert_eq!(file.header().alignment, 64);
    assert_eq!(file.header().data_start % 64, 0);

    // Metadata: identical, in the same order.
    let got: Vec<(String, Value)> = file
        .metadata()
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    assert_eq!(got, values);
    for (k, v) in &values {
        assert_eq!(file.metadata().get(k), Some(v));
    }
    // PartialEq on floats does not see the sign of zero: check the bits.
    match file.metadata().get("a.f32") {
        Some(Value::Array(Array::F32(v))) => assert_eq!(v[1].to_bits(), (-0.0f32).to_bits()),
        other => panic!("{other:?}"),
    }

    // Tensors: same names, types, shapes and bytes, each on a multiple of 64.
    assert_eq!(file.header().tensors.len(), tensors.len());
    let map = file.mapped_range();
    for (info, t) in file.header().tensors.iter().zip(&tensors) {
        assert_eq!(info.name, t.name);
        assert_eq!(info.dtype, t.dtype);
        assert_eq!(info.shape, t.shape);
        let ne: Vec<u64> = t.shape.dims().iter().rev().map(|&d| d as u64).collect();
        assert_eq!(info.ne, ne);
        assert_eq!(info.range.start % 64, 0, "{}", t.name);
        assert_eq!(info.offset % 64, 0, "{}", t.name);
        assert_eq!(&bytes[info.range.clone()], t.bytes);
        let tensor = file.tensor(&t.name).unwrap();
        assert_eq!(tensor.as_bytes(), t.bytes);
        assert!(map.contains(&(tensor.as_bytes().as_ptr() as usize)));
    }
    assert_eq!(file.tensor("a").unwrap().as_slice::<f32>().unwrap()[3], 1.5);

    // Writing what was read gives the same bytes.
    let mut again = GgufWriter::new();
    for (k, v) in file.metadata().iter() {
        again.metadata(k, v.clone());
    }
    let owned: Vec<(String, DType, Shape, Vec<u8>)> = file
        .header()
        .tensors
        .iter()
        .map(|t| {
            let b = file.tensor(&t.name).unwrap().as_bytes().to_vec();
            (t.name.clone(), t.dtype, t.shape.clone(), b)
        })
        .collect();
    for (name, dtype, shape, b) in &owned {
        again.tensor(WriteTensor {
            name: name.clone(),
            dtype: *dtype,
            shape: shape.clone(),
            bytes: b,
        });
    }
    assert_eq!(again.to_bytes(), bytes);
}

#[test]
fn nan_payloads_survive_the_round_trip() {
    let nan = f32::from_bits(0x7fc0_1234);
    let nan64 = f64::from_bits(0xfff8_0000_0000_4321);
    let mut w = GgufWriter::new();
    w.metadata("f32", Value::F32(nan));
    w.metadata("f64", Value::Array(Array::F64(vec![nan64])));
    let header = Header::parse(&w.to_bytes()).unwrap();
    match header.metadata.get("f32") {
        Some(Value::F32(v)) => assert_eq!(v.to_bits(), nan.to_bits()),
        other => panic!("{other:?}"),
    }
    match header.metadata.get("f64") {
        Some(Value::Array(Array::F64(v))) => assert_eq!(v[0].to_bits(), nan64.to_bits()),
        other => panic!("{other:?}"),
    }
}

#[test]
fn version_2_is_read_like_version_3() {
    let mut bytes = small_valid();
    bytes[4..8].copy_from_slice(&2u32.to_le_bytes());
    let (_dir, _path, file) = open_bytes(&bytes);
    let file = file.unwrap();
    assert_eq!(file.version(), 2);
    assert_eq!(file.header().tensors[0].range, 64..96);
}

#[test]
fn a_tensorless_file_may_end_before_the_aligned_data_section() {
    let bytes = Raw::header(3, 0, 1).key("k", ValueType::U8).bytes(&[5]).0;
    assert_eq!(bytes.len(), 38);
    let (_dir, _path, file) = open_bytes(&bytes);
    let file = file.unwrap();
    assert_eq!(file.metadata().get("k"), Some(&Value::U8(5)));
    assert_eq!(file.header().data_start, 64);
}

#[test]
fn small_valid_file_layout_is_as_computed_by_hand() {
    // The malformation tests below compute offsets from this layout.
    let bytes = small_valid();
    let header = Header::parse(&bytes).unwrap();
    assert_eq!(bytes.len(), 96);
    assert_eq!(header.data_start, 64);
    assert_eq!(header.tensors[0].range, 64..96);
    assert_eq!(header.alignment, 32);
}

// ---------------------------------------------------------------------------------------------
// Malformations: the header fields.

#[test]
fn bad_magic() {
    let mut bytes = small_valid();
    bytes[..4].copy_from_slice(b"GGML");
    let err = assert_rejects(
        &bytes,
        r#"magic: not a GGUF file: the magic is "GGML", expected "GGUF""#,
    );
    assert!(matches!(kind(&err), GgufError::BadMagic { .. }));

    // Binary magic: escaped, no raw control bytes in the message.
    bytes[..4].copy_from_slice(b"\x7fELF");
    let (_dir, path, result) = open_bytes(&bytes);
    let msg = result.unwrap_err().to_string();
    let prefix = format!("{}: magic: not a GGUF file: the magic is ", path.display());
    assert!(msg.starts_with(&prefix), "{msg}");
    assert!(!msg.chars().any(|c| c.is_control()), "{msg:?}");

    assert_rejects(
        b"GG",
        "magic: file is truncated: 4 bytes needed at offset 0, the file has 2",
    );
    assert_rejects(
        b"",
        "magic: file is truncated: 4 bytes needed at offset 0, the file has 0",
    );
}

#[test]
fn unsupported_versions() {
    let mut bytes = small_valid();
    for (v, msg) in [
        (
            1u32,
            "version: GGUF version 1 is not supported (versions 2 and 3 are)",
        ),
        (
            4,
            "version: GGUF version 4 is not supported (versions 2 and 3 are)",
        ),
        (
            0,
            "version: GGUF version 0 is not supported (versions 2 and 3 are)",
        ),
    ] {
        bytes[4..8].copy_from_slice(&v.to_le_bytes());
        let err = assert_rejects(&bytes, msg);
        assert_eq!(kind(&err), &GgufError::UnsupportedVersion { version: v });
    }
}

#[test]
fn big_endian_version() {
    let mut bytes = small_valid();
    for v in [3u32, 2] {
        bytes[4..8].copy_from_slice(&v.to_be_bytes());
        let err = assert_rejects(&bytes, "version: big-endian GGUF files are not supported");
        assert_eq!(kind(&err), &GgufError::BigEndian);
    }
    assert_rejects(
        &bytes[..6],
        "version: file is truncated: 4 bytes needed at offset 4, the file has 6",
    );
}

#[test]
fn truncated_in_the_header_counts() {
    let full = Raw::header(3, 0, 0).0;
    assert_rejects(
        &full[..13],
        "tensor_count: file is truncated: 8 bytes needed at offset 8, the file has 13",
    );
    let err = assert_rejects(
        &full[..20],
        "metadata_kv_count: file is truncated: 8 bytes needed at offset 16, the file has 20",
    );
    assert_eq!(
        kind(&err),
        &GgufError::Truncated {
            needed: 8,
            at: 16,
            file_len: 20
        }
    );
    // A whole file cut anywhere in its header or data is rejected, never a panic.
    let bytes = small_valid();
    for cut in 0..bytes.len() {
        assert!(Header::parse(&bytes[..cut]).is_err(), "cut at {cut}");
    }
}

#[test]
fn absurd_counts() {
    let bytes = Raw::header(3, u64::MAX, 0).0;
    let (err, largest, elapsed) = measured(|| Header::parse(&bytes).unwrap_err());
    assert_eq!(
        format!("{}: {}", err.0, err.1),
        "tensor_count: count 18446744073709551615 of tensor infos needs at least 32 bytes each, but only 8 bytes remain in the file"
    );
    assert!(largest < 4096 && elapsed < Duration::from_secs(1));
    assert_rejects(
        &bytes,
        "tensor_count: count 18446744073709551615 of tensor infos needs at least 32 bytes each, but only 8 bytes remain in the file",
    );

    let bytes = Raw::header(3, 0, 1 << 40).zeros(100).0;
    assert_rejects(
        &bytes,
        "metadata_kv_count: count 1099511627776 of metadata pairs needs at least 13 bytes each, but only 100 bytes remain in the file",
    );
    // One pair more than the bytes could hold at 13 bytes each.
    let bytes = Raw::header(3, 0, 8).zeros(103).0;
    assert_rejects(
        &bytes,
        "metadata_kv_count: count 8 of metadata pairs needs at least 13 bytes each, but only 103 bytes remain in the file",
    );
    let bytes = Raw::header(3, 4, 0).zeros(119).0;
    assert_rejects(
        &bytes,
        "tensor_count: count 4 of tensor infos needs at least 32 bytes each, but only 127 bytes remain in the file",
    );
}

// ---------------------------------------------------------------------------------------------
// Malformations: metadata.

#[test]
fn truncated_inside_a_key() {
    // The key's bytes: length 10 but only 5 bytes follow.
    let bytes = Raw::header(3, 0, 1).u64(10).bytes(b"gener").0;
    assert_rejects(
        &bytes,
        "metadata[0].key: string length 10 at offset 32 runs past the end of the file (37 bytes)",
    );
    // The second key's length field: 4 of its 8 bytes.
    let bytes = Raw::header(3, 0, 2)
        .key("a", ValueType::String)
        .str("twenty characters...")
        .bytes(&[1, 0, 0, 0])
        .0;
    assert_eq!(bytes.len(), 69);
    assert_rejects(
        &bytes,
        "metadata[1].key: file is truncated: 8 bytes needed at offset 65, the file has 69",
    );
}

#[test]
fn truncated_inside_a_value() {
    // The value type.
    let bytes = Raw::header(3, 0, 1).str("abcd").bytes(&[4, 0]).0;
    assert_rejects(
        &bytes,
        "metadata[0] `abcd`: file is truncated: 4 bytes needed at offset 36, the file has 38",
    );
    // A u64 value, 3 of its 8 bytes.
    let bytes = Raw::header(3, 0, 1)
        .key("k", ValueType::U64)
        .bytes(&[1, 2, 3])
        .0;
    assert_rejects(
        &bytes,
        "metadata[0] `k`: file is truncated: 8 bytes needed at offset 37, the file has 40",
    );
    // An i16 array of 3 with 5 bytes left: caught by the count check, before reading.
    let bytes = Raw::header(3, 0, 1)
        .key("k", ValueType::Array)
        .u32(ValueType::I16.id())
        .u64(3)
        .bytes(&[1, 0, 2, 0, 3])
        .0;
    assert_rejects(
        &bytes,
        "metadata[0] `k`: count 3 of array elements of type int16 needs at least 2 bytes each, but only 5 bytes remain in the file",
    );
    let bytes = Raw::header(3, 0, 1)
        .key("k", ValueType::Array)
        .u32(ValueType::String.id())
        .u64(2)
        .str("ab")
        .bytes(&[9, 0, 0, 0, 0, 0])
        .0;
    assert_rejects(
        &bytes,
        "metadata[0] `k`: file is truncated: 8 bytes needed at offset 59, the file has 65",
    );
}

#[test]
fn string_length_past_the_end() {
    let bytes = Raw::header(3, 0, 1).u64(1000).bytes(b"abcdefghijklm").0;
    let err = assert_rejects(
        &bytes,
        "metadata[0].key: string length 1000 at offset 32 runs past the end of the file (45 bytes)",
    );
    assert_eq!(
        kind(&err),
        &GgufError::StringPastEnd {
            len: 1000,
            at: 32,
            file_len: 45
        }
    );
    let bytes = Raw::header(3, 0, 1)
        .key("k", ValueType::String)
        .u64(u64::MAX)
        .0;
    let (err, largest, _) = measured(|| Header::parse(&bytes).unwrap_err());
    assert!(largest < 4096, "{err:?}");
    assert_rejects(
        &bytes,
        "metadata[0] `k`: string length 18446744073709551615 at offset 45 runs past the end of the file (45 bytes)",
    );
    // One byte more than there is.
    let bytes = Raw::header(3, 0, 1)
        .key("k", ValueType::String)
        .u64(4)
        .bytes(b"abc")
        .0;
    assert_rejects(
        &bytes,
        "metadata[0] `k`: string length 4 at offset 45 runs past the end of the file (48 bytes)",
    );
}

#[test]
fn array_count_past_the_end_fails_fast_without_allocating() {
    let count = u64::MAX / 2;
    let bytes = Raw::header(3, 0, 1)
        .key("k", ValueType::Array)
        .u32(ValueType::U32.id())
        .u64(count)
        .zeros(8)
        .0;
    let (err, largest, elapsed) = measured(|| Header::parse(&bytes).unwrap_err());
    assert!(matches!(err.1, GgufError::CountPastEnd { .. }), "{err:?}");
    assert!(largest < 4096, "allocated {largest} bytes");
    assert!(elapsed < Duration::from_secs(1), "{elapsed:?}");
    assert_rejects(
        &bytes,
        "metadata[0] `k`: count 9223372036854775807 of array elements of type uint32 needs at least 4 bytes each, but only 8 bytes remain in the file",
    );
    // u64 elements: count × 8 does not overflow but is far past the end.
    let bytes = Raw::header(3, 0, 1)
        .key("k", ValueType::Array)
        .u32(ValueType::U64.id())
        .u64(1 << 40)
        .zeros(8)
        .0;
    let (_, largest, _) = measured(|| Header::parse(&bytes).unwrap_err());
    assert!(largest < 4096, "allocated {largest} bytes");
    assert_rejects(
        &bytes,
        "metadata[0] `k`: count 1099511627776 of array elements of type uint64 needs at least 8 bytes each, but only 8 bytes remain in the file",
    );
    // Arrays of arrays and of strings count their smallest encodings (12 and 8 bytes).
    let bytes = Raw::header(3, 0, 1)
        .key("k", ValueType::Array)
        .u32(ValueType::Array.id())
        .u64(3)
        .zeros(35)
        .0;
    assert_rejects(
        &bytes,
        "metadata[0] `k`: count 3 of array elements of type array needs at least 12 bytes each, but only 35 bytes remain in the file",
    );
    let bytes = Raw::header(3, 0, 1)
        .key("k", ValueType::Array)
        .u32(ValueType::String.id())
        .u64(5)
        .zeros(39)
        .0;
    assert_rejects(
        &bytes,
        "metadata[0] `k`: count 5 of array elements of type string needs at least 8 bytes each, but only 39 bytes remain in the file",
    );
}

/// A header's counts are checked against the bytes left in the whole file, tensor data
/// included (gigabytes for a real model), so memory reserved from a count before its items are
/// read must stay small: a corrupt header must not allocate several times the file's size.
#[test]
fn claimed_counts_do_not_reserve_memory_ahead_of_the_items() {
    const N: u64 = 100_000;
    const LIMIT: usize = 256 << 10;
    let cases = [
        // N tensor infos claimed, the first malformed.
        (
            Raw::header(3, N, 0)
                .tensor_info("w", &[8], 0, 0)
                .zeros(N as usize * 32)
                .0,
            None,
        ),
        // N pairs claimed, the first value of an unknown type.
        (
            Raw::header(3, 0, N)
                .key("k", ValueType::U8)
                .bytes(&[1])
                .str("k2")
                .u32(13)
                .zeros(N as usize * 13)
                .0,
            Some("metadata[1] `k2`: unknown metadata value type 13"),
        ),
        // N strings claimed, the first one's length past the end.
        (
            Raw::header(3, 0, 1)
                .key("k", ValueType::Array)
                .u32(ValueType::String.id())
                .u64(N)
                .u64(u64::MAX)
                .zeros(N as usize * 8)
                .0,
            None,
        ),
        // N arrays claimed, the first one of an unknown element type.
        (
            Raw::header(3, 0, 1)
                .key("k", ValueType::Array)
                .u32(ValueType::Array.id())
                .u64(N)
                .u32(13)
                .zeros(N as usize * 12)
                .0,
            Some("metadata[0] `k`: unknown metadata value type 13"),
        ),
    ];
    for (i, (bytes, msg)) in cases.iter().enumerate() {
        let (err, largest, _) = measured(|| Header::parse(bytes).unwrap_err());
        if let Some(msg) = msg {
            assert_eq!(format!("{}: {}", err.0, err.1), *msg);
        }
        assert!(
            largest <= LIMIT,
            "case {i}: {largest} bytes reserved in one allocation for a {}-byte file ({err:?})",
            bytes.len()
        );
    }
}

#[test]
fn unknown_value_type() {
    let bytes = Raw::header(3, 0, 1).str("k").u32(13).zeros(8).0;
    let err = assert_rejects(&bytes, "metadata[0] `k`: unknown metadata value type 13");
    assert_eq!(kind(&err), &GgufError::UnknownValueType { id: 13 });
    // As an array's element type.
    let bytes = Raw::header(3, 0, 1)
        .key("k", ValueType::Array)
        .u32(13)
        .u64(0)
        .0;
    assert_rejects(&bytes, "metadata[0] `k`: unknown metadata value type 13");
    let bytes = Raw::header(3, 0, 1).str("k").u32(u32::MAX).zeros(8).0;
    assert_rejects(
        &bytes,
        "metadata[0] `k`: unknown metadata value type 4294967295",
    );
}

fn nested(levels: usize) -> Array {
    let mut a = Array::U8(vec![7]);
    for _ in 1..levels {
        a = Array::Array(vec![a]);
    }
    a
}

#[test]
fn nesting_deeper_than_max_nesting() {
    assert_eq!(MAX_NESTING, 16);
    let mut w = GgufWriter::new();
    w.metadata("deep", Value::Array(nested(16)));
    let header = Header::parse(&w.to_bytes()).unwrap();
    assert_eq!(header.metadata.get("deep"), Some(&Value::Array(nested(16))));

    let mut w = GgufWriter::new();
    w.metadata("ok", Value::U8(1));
    w.metadata("deep", Value::Array(nested(17)));
    let err = assert_rejects(
        &w.to_bytes(),
        "metadata[1] `deep`: arrays nested more than 16 deep",
    );
    assert_eq!(kind(&err), &GgufError::NestedTooDeep { max: 16 });

    // A million levels: rejected at the 17th, no stack overflow.
    let mut raw = Raw::header(3, 0, 1).key("deep", ValueType::Array);
    for _ in 0..1_000_000 {
        raw = raw.u32(ValueType::Array.id()).u64(1);
    }
    let bytes = raw.u32(ValueType::U8.id()).u64(0).0;
    assert_rejects(
        &bytes,
        "metadata[0] `deep`: arrays nested more than 16 deep",
    );
}

#[test]
fn duplicate_key() {
    let mut w = GgufWriter::new();
    w.metadata("a", Value::U8(1));
    w.metadata("b", Value::U8(2));
    w.metadata("a", Value::String("again".into()));
    let err = assert_rejects(&w.to_bytes(), "metadata[2] `a`: appears twice");
    assert_eq!(kind(&err), &GgufError::Duplicate);
}

#[test]
fn invalid_utf8() {
    let bytes = Raw::header(3, 0, 1)
        .u64(2)
        .bytes(&[0xff, 0xfe])
        .u32(ValueType::U8.id())
        .bytes(&[0])
        .0;
    let err = assert_rejects(
        &bytes,
        "metadata[0].key: string at offset 32 is not valid UTF-8",
    );
    assert_eq!(kind(&err), &GgufError::BadUtf8 { at: 32 });
    // In a string value (a lone continuation byte).
    let bytes = Raw::header(3, 0, 1)
        .key("k", ValueType::String)
        .u64(3)
        .bytes(b"a\x80b")
        .0;
    assert_rejects(
        &bytes,
        "metadata[0] `k`: string at offset 45 is not valid UTF-8",
    );
    // In a tensor name (a truncated 3-byte sequence).
    let bytes = Raw::header(3, 1, 0)
        .u64(2)
        .bytes(&[0xe2, 0x82])
        .u32(1)
        .u64(8)
        .u32(0)
        .u64(0)
        .0;
    assert_rejects(
        &bytes,
        "tensor_info[0].name: string at offset 32 is not valid UTF-8",
    );
}

#[test]
fn bad_alignment() {
    for (value, msg) in [
        (0u32, "general.alignment: alignment 0 is not a power of two"),
        (48, "general.alignment: alignment 48 is not a power of two"),
        (
            u32::MAX,
            "general.alignment: alignment 4294967295 is not a power of two",
        ),
    ] {
        let bytes = Raw::header(3, 0, 1)
            .key("general.alignment", ValueType::U32)
            .u32(value)
            .0;
        let err = assert_rejects(&bytes, msg);
        assert_eq!(
            kind(&err),
            &GgufError::BadAlignment {
                value: value.into()
            }
        );
    }
    let bytes = Raw::header(3, 0, 1)
        .key("general.alignment", ValueType::U64)
        .u64(64)
        .0;
    let err = assert_rejects(
        &bytes,
        "general.alignment: has type uint64, expected uint32",
    );
    assert_eq!(
        kind(&err),
        &GgufError::WrongType {
            expected: "uint32",
            found: ValueType::U64
        }
    );
    let bytes = Raw::header(3, 0, 1)
        .key("general.alignment", ValueType::String)
        .str("32")
        .0;
    assert_rejects(
        &bytes,
        "general.alignment: has type string, expected uint32",
    );
    // A large power of two is fine.
    let bytes = Raw::header(3, 0, 1)
        .key("general.alignment", ValueType::U32)
        .u32(1 << 31)
        .0;
    assert_eq!(Header::parse(&bytes).unwrap().alignment, 1 << 31);
}

// ---------------------------------------------------------------------------------------------
// Malformations: tensor infos and data placement.

#[test]
fn truncated_inside_a_tensor_info() {
    // In `ne`: n_dims 2, ne[0] whole, 4 bytes of ne[1].
    let name = "weight.with.long.name";
    let bytes = Raw::header(3, 1, 0)
        .str(name)
        .u32(2)
        .u64(32)
        .bytes(&[1, 0, 0, 0])
        .0;
    assert_eq!(bytes.len(), 69);
    assert_rejects(
        &bytes,
        "tensor_info[0] `weight.with.long.name`.ne: file is truncated: 8 bytes needed at offset 65, the file has 69",
    );
    // In the offset.
    let bytes = Raw::header(3, 1, 0)
        .str("abcd")
        .u32(1)
        .u64(32)
        .u32(0)
        .bytes(&[0; 4])
        .0;
    assert_rejects(
        &bytes,
        "tensor_info[0] `abcd`.offset: file is truncated: 8 bytes needed at offset 52, the file has 56",
    );
    // In the type.
    let bytes = Raw::header(3, 1, 0)
        .str("abcdefghij")
        .u32(1)
        .u64(32)
        .bytes(&[0; 2])
        .0;
    assert_rejects(
        &bytes,
        "tensor_info[0] `abcdefghij`.type: file is truncated: 4 bytes needed at offset 54, the file has 56",
    );
    // In the name.
    let bytes = Raw::header(3, 1, 0).u64(100).zeros(32).0;
    assert_rejects(
        &bytes,
        "tensor_info[0].name: string length 100 at offset 32 runs past the end of the file (64 bytes)",
    );
    // The second tensor info missing entirely.
    let bytes = Raw::header(3, 2, 0)
        .tensor_info("a", &[8], 0, 0)
        .u64(1000)
        .zeros(23)
        .0;
    assert_rejects(
        &bytes,
        "tensor_info[1].name: string length 1000 at offset 65 runs past the end of the file (88 bytes)",
    );
}

#[test]
fn duplicate_tensor_name() {
    let data = [0u8; 32];
    let mut w = GgufWriter::new();
    w.tensor(f32_tensor("w", &[8], &data));
    w.tensor(f32_tensor("v", &[8], &data));
    w.tensor(f32_tensor("w", &[8], &data));
    let err = assert_rejects(&w.to_bytes(), "tensor_info[2] `w`: appears twice");
    assert_eq!(kind(&err), &GgufError::Duplicate);
}

#[test]
fn bad_rank() {
    for (n_dims, msg) in [
        (
            0u32,
            "tensor_info[0] `w`.n_dims: 0 dimensions (ggml tensors have 1 to 4)",
        ),
        (
            5,
            "tensor_info[0] `w`.n_dims: 5 dimensions (ggml tensors have 1 to 4)",
        ),
        (
            u32::MAX,
            "tensor_info[0] `w`.n_dims: 4294967295 dimensions (ggml tensors have 1 to 4)",
        ),
    ] {
        let bytes = Raw::header(3, 1, 0).str("w").u32(n_dims).zeros(64).0;
        let err = assert_rejects(&bytes, msg);
        assert_eq!(kind(&err), &GgufError::BadRank { n_dims });
    }
}

#[test]
fn dimensions_that_overflow() {
    // The element count overflows u64.
    let bytes = Raw::header(3, 1, 0)
        .tensor_info("w", &[1 << 32, 1 << 32], 0, 0)
        .0;
    let err = assert_rejects(
        &bytes,
        "tensor_info[0] `w`.ne: dimensions [4294967296, 4294967296] overflow",
    );
    assert_eq!(
        kind(&err),
        &GgufError::DimsOverflow {
            ne: vec![1 << 32, 1 << 32]
        }
    );
    let bytes = Raw::header(3, 1, 0)
        .tensor_info("w", &[65536, 65536, 65536, 65536], 0, 0)
        .0;
    assert_rejects(
        &bytes,
        "tensor_info[0] `w`.ne: dimensions [65536, 65536, 65536, 65536] overflow",
    );
    // The element count fits, the byte size (×4) does not.
    let bytes = Raw::header(3, 1, 0).tensor_info("w", &[1 << 62], 0, 0).0;
    assert_rejects(
        &bytes,
        "tensor_info[0] `w`.ne: dimensions [4611686018427387904] overflow",
    );
    // The same for a block type: 34 bytes per 32 values, so (2^64 - 2^59) / 32 blocks
    // need 1054 × 2^54 bytes.
    let bytes = Raw::header(3, 1, 0)
        .tensor_info("w", &[0xf800_0000_0000_0000], 8, 0)
        .0;
    assert_rejects(
        &bytes,
        "tensor_info[0] `w`.ne: dimensions [17870283321406128128] overflow",
    );
}

#[test]
fn unknown_and_unsupported_ggml_types() {
    let info = |ty: u32| {
        Raw::header(3, 1, 0)
            .tensor_info("w", &[256], ty, 0)
            .pad_to(32)
            .zeros(1024)
            .0
    };
    let err = assert_rejects(&info(200), "tensor_info[0] `w`.type: unknown ggml type 200");
    assert_eq!(kind(&err), &GgufError::UnknownGgmlType { id: 200 });
    assert_rejects(&info(40), "tensor_info[0] `w`.type: unknown ggml type 40");
    let err = assert_rejects(
        &info(16),
        "tensor_info[0] `w`.type: ggml type IQ2_XXS (id 16) is not supported by this engine",
    );
    assert_eq!(
        kind(&err),
        &GgufError::UnsupportedGgmlType {
            name: "IQ2_XXS",
            id: 16
        }
    );
    assert_rejects(
        &info(4),
        "tensor_info[0] `w`.type: ggml type Q4_2 (removed from ggml) (id 4) is not supported by this engine",
    );
    // Every supported id opens.
    for (id, dtype) in [
        (0, DType::F32),
        (1, DType::F16),
        (2, DType::Q4_0),
        (8, DType::Q8_0),
        (12, DType::Q4_K),
        (13, DType::Q5_K),
        (14, DType::Q6_K),
        (30, DType::BF16),
    ] {
        let header = Header::parse(&info(id)).unwrap();
        assert_eq!(header.tensors[0].dtype, dtype);
    }
}

#[test]
fn partial_block() {
    let bytes = Raw::header(3, 1, 0).tensor_info("w", &[100, 2], 12, 0).0;
    let err = assert_rejects(
        &bytes,
        "tensor_info[0] `w`.ne: row length 100 is not a multiple of Q4_K's block of 256",
    );
    assert_eq!(
        kind(&err),
        &GgufError::PartialBlock {
            ne0: 100,
            dtype: DType::Q4_K,
            block: 256
        }
    );
    let bytes = Raw::header(3, 1, 0).tensor_info("w", &[48], 8, 0).0;
    assert_rejects(
        &bytes,
        "tensor_info[0] `w`.ne: row length 48 is not a multiple of Q8_0's block of 32",
    );
    // A whole number of blocks overall is not enough: each row must be.
    let bytes = Raw::header(3, 1, 0).tensor_info("w", &[128, 2], 12, 0).0;
    assert_rejects(
        &bytes,
        "tensor_info[0] `w`.ne: row length 128 is not a multiple of Q4_K's block of 256",
    );
}

#[test]
fn data_past_the_end() {
    let bytes = small_valid();
    let err = assert_rejects(
        &bytes[..92],
        "tensor_info[0] `w`.offset: data 64..96 runs past the end of the file (92 bytes)",
    );
    assert_eq!(
        kind(&err),
        &GgufError::DataPastEnd {
            start: 64,
            end: 96,
            file_len: 92
        }
    );
    // An offset far past the end.
    let bytes = Raw::header(3, 1, 0)
        .tensor_info("w", &[8], 0, 1 << 40)
        .pad_to(32)
        .zeros(32)
        .0;
    assert_rejects(
        &bytes,
        "tensor_info[0] `w`.offset: data 1099511627840..1099511627872 runs past the end of the file (96 bytes)",
    );
    // An offset whose sum with the data start overflows: rejected, not wrapped.
    let bytes = Raw::header(3, 1, 0)
        .tensor_info("w", &[8], 0, u64::MAX - 31)
        .pad_to(32)
        .zeros(32)
        .0;
    let (_dir, path, result) = open_bytes(&bytes);
    let err = result.unwrap_err();
    assert!(matches!(kind(&err), GgufError::DataPastEnd { .. }), "{err}");
    assert!(
        err.to_string().starts_with(&format!(
            "{}: tensor_info[0] `w`.offset: data ",
            path.display()
        )),
        "{err}"
    );
    // The file ends exactly at the data section: the one-byte-longer tensor does not fit.
    let bytes = Raw::header(3, 1, 0)
        .tensor_info("w", &[1], 0, 0)
        .pad_to(32)
        .0;
    assert_rejects(
        &bytes,
        "tensor_info[0] `w`.offset: data 64..68 runs past the end of the file (64 bytes)",
    );
}

#[test]
fn overlapping_tensors() {
    // a: 64 bytes at 96..160; b: 32 bytes at 128..160.
    let bytes = Raw::header(3, 2, 0)
        .tensor_info("a", &[16], 0, 0)
        .tensor_info("b", &[8], 0, 32)
        .pad_to(32)
        .zeros(64)
        .0;
    let err = assert_rejects(
        &bytes,
        "tensor_info[1] `b`.offset: data 128..160 overlaps tensor `a`",
    );
    assert_eq!(
        kind(&err),
        &GgufError::Overlap {
            start: 128,
            end: 160,
            other: "a".into()
        }
    );
    // Not neighbours in file order: c (listed last) lies inside a (listed first).
    let bytes = Raw::header(3, 3, 0)
        .tensor_info("a", &[32], 0, 0)
        .tensor_info("b", &[8], 0, 160)
        .tensor_info("c", &[8], 0, 64)
        .pad_to(32)
        .zeros(192)
        .0;
    assert_rejects(
        &bytes,
        "tensor_info[2] `c`.offset: data 192..224 overlaps tensor `a`",
    );
    // Touching is not overlapping; neither are empty tensors.
    let bytes = Raw::header(3, 3, 0)
        .tensor_info("a", &[8], 0, 0)
        .tensor_info("b", &[8], 0, 32)
        .tensor_info("empty", &[0], 0, 32)
        .pad_to(32)
        .zeros(64)
        .0;
    let header = Header::parse(&bytes).unwrap();
    assert_eq!(header.tensors[1].range.start, header.tensors[0].range.end);
    assert!(header.tensors[2].range.is_empty());
}

#[test]
fn misaligned_offset() {
    let bytes = Raw::header(3, 1, 0)
        .tensor_info("w", &[8], 0, 16)
        .pad_to(32)
        .zeros(64)
        .0;
    let err = assert_rejects(
        &bytes,
        "tensor_info[0] `w`.offset: data offset 16 is not a multiple of the alignment 32",
    );
    assert_eq!(
        kind(&err),
        &GgufError::Misaligned {
            offset: 16,
            align: 32
        }
    );
    // Against a custom alignment.
    let bytes = Raw::header(3, 1, 1)
        .key("general.alignment", ValueType::U32)
        .u32(64)
        .tensor_info("w", &[8], 0, 32)
        .pad_to(64)
        .zeros(128)
        .0;
    assert_rejects(
        &bytes,
        "tensor_info[0] `w`.offset: data offset 32 is not a multiple of the alignment 64",
    );
}

// ---------------------------------------------------------------------------------------------
// Names in messages.

#[test]
fn control_characters_in_names_are_escaped() {
    let red = "\u{1b}[31mred";
    let data = [0u8; 32];
    let mut w = GgufWriter::new();
    w.tensor(f32_tensor(red, &[8], &data));
    w.tensor(f32_tensor(red, &[8], &data));
    let err = assert_rejects(
        &w.to_bytes(),
        "tensor_info[1] `\\u{1b}[31mred`: appears twice",
    );
    assert!(!err.to_string().contains('\u{1b}'));

    // In a key.
    let bytes = Raw::header(3, 0, 1).str("bad\u{7}key\n").u32(13).zeros(8).0;
    let err = assert_rejects(
        &bytes,
        "metadata[0] `bad\\u{7}key\\n`: unknown metadata value type 13",
    );
    assert!(!err.to_string().chars().any(|c| c.is_control()));

    // As the other tensor of an overlap.
    let bytes = Raw::header(3, 2, 0)
        .tensor_info("\u{1b}]0;title\u{7}", &[16], 0, 0)
        .tensor_info("b", &[8], 0, 32)
        .pad_to(32)
        .zeros(64)
        .0;
    let err = assert_rejects(
        &bytes,
        "tensor_info[1] `b`.offset: data 160..192 overlaps tensor `\\u{1b}]0;title\\u{7}`",
    );
    assert!(!err.to_string().chars().any(|c| c.is_control()));

    // Asking a good file for a missing tensor with such a name.
    let (_dir, path, file) = open_bytes(&small_valid());
    let err = file.unwrap().tensor(red).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("{}: tensor `\\u{{1b}}[31mred` is missing", path.display())
    );
}

#[test]
fn path_is_the_file_opened() {
    let mut bytes = small_valid();
    bytes[4..8].copy_from_slice(&9u32.to_le_bytes());
    let dir = tempfile::tempdir().unwrap();
    let path: &Path = &dir.path().join("model name with spaces.gguf");
    std::fs::write(path, &bytes).unwrap();
    let err = GgufFile::open(path).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "{}: version: GGUF version 9 is not supported (versions 2 and 3 are)",
            path.display()
        )
    );
    match err {
        Error::Gguf {
            path: p,
            field,
            kind,
        } => {
            assert_eq!(p, path);
            assert_eq!(field, "version");
            assert_eq!(kind, GgufError::UnsupportedVersion { version: 9 });
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn streaming_writes_what_to_bytes_writes_and_cleans_up_on_a_short_tensor() {
    let q8: Vec<u8> = (0..68u8).collect(); // two Q8_0 blocks
    let f: Vec<u8> = [1.5f32, -2.0, 0.25]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let mut whole = GgufWriter::new();
    whole.metadata("general.architecture", Value::String("llama".into()));
    let tensors = [
        WriteTensor {
            name: "a".into(),
            dtype: DType::Q8_0,
            shape: Shape::new(vec![64]),
            bytes: &q8,
        },
        WriteTensor {
            name: "b".into(),
            dtype: DType::F32,
            shape: Shape::new(vec![3]),
            bytes: &f,
        },
    ];
    let streamed = whole.clone();
    for t in &tensors {
        whole.tensor(t.clone());
    }
    let specs: Vec<mixtral_tensor::gguf::TensorSpec> = tensors
        .iter()
        .map(|t| mixtral_tensor::gguf::TensorSpec {
            name: t.name.clone(),
            dtype: t.dtype,
            shape: t.shape.clone(),
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.gguf");
    streamed
        .write_streaming(&path, &specs, |i, sink| {
            // In two pieces, as a chunked writer would.
            let (a, b) = tensors[i].bytes.split_at(tensors[i].bytes.len() / 2);
            sink.write(a)?;
            sink.write(b)
        })
        .unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), whole.to_bytes());
    // Refuses an existing file; a tensor written short fails and leaves nothing behind.
    assert!(
        streamed
            .write_streaming(&path, &specs, |_, _| Ok(()))
            .is_err()
    );
    let short = dir.path().join("short.gguf");
    let err = streamed
        .write_streaming(&short, &specs, |_, sink| sink.write(&[0u8; 3]))
        .unwrap_err();
    // The message names the file; its cause says what went wrong.
    let cause = std::error::Error::source(&err).map(|c| c.to_string());
    assert!(err.to_string().contains("short.gguf"), "{err}");
    assert!(
        cause
            .as_deref()
            .is_some_and(|c| c.contains("tensor `a`: 3 bytes written, 68 expected")),
        "{err}: {cause:?}"
    );
    assert!(!short.exists());
}
