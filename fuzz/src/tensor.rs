//! Checks for `mixtral-tensor`'s file parsers: GGUF headers, safetensors headers and the
//! Hugging Face shard index.

use mixtral_tensor::gguf::Header;
use mixtral_tensor::{INDEX_FILE, SafetensorsFile, TensorStore};
use std::fmt::Write;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

/// Parses `data` as a whole GGUF file; when it parses, renders every metadata value and every
/// tensor info and checks that each tensor's bytes lie in the file and match its shape.
pub fn gguf(data: &[u8]) -> Result<(), String> {
    let header = Header::parse(data).map_err(|(field, e)| format!("{field}: {e}"))?;
    let mut out = String::new();
    for (key, value) in header.metadata.iter() {
        let _ = write!(
            out,
            "{key:?} = {value} ({}, {:?}, {:?}, {:?}, {:?})",
            value.value_type(),
            value.as_u64(),
            value.as_f64(),
            value.as_str(),
            value.as_bool(),
        );
        if let Some(a) = value.as_array() {
            let _ = write!(out, " [{}; {}] {}", a.element_type(), a.len(), a.is_empty());
        }
        let found = header
            .metadata
            .get(key)
            .expect("every key can be looked up");
        assert!(
            std::ptr::eq(found, value),
            "key {key:?} finds another value"
        );
    }
    assert_eq!(header.metadata.len(), header.metadata.iter().count());
    assert!(header.alignment.is_power_of_two());
    assert_eq!(header.data_start % header.alignment, 0);
    for t in &header.tensors {
        let numel = t.shape.checked_numel().expect("the parser checks numel");
        let bytes = t
            .dtype
            .storage_bytes(numel)
            .expect("the parser checks the size");
        assert_eq!(t.range.len(), bytes, "tensor {:?}", t.name);
        assert!(
            t.range.end <= data.len(),
            "tensor {:?} past the end",
            t.name
        );
        let ne: Vec<u64> = t.shape.dims().iter().rev().map(|&d| d as u64).collect();
        assert_eq!(ne, t.ne);
        let _ = write!(
            out,
            "{:?} {} {} ne={:?} offset={} {:?}",
            t.name, t.dtype, t.shape, t.ne, t.offset, t.range
        );
    }
    std::hint::black_box(out);
    Ok(())
}

/// Parses `data` as a whole safetensors file and checks every tensor's byte range.
pub fn safetensors(data: &[u8]) -> Result<(), String> {
    let infos = SafetensorsFile::parse_header(Path::new("fuzz.safetensors"), data)
        .map_err(|e| e.to_string())?;
    let mut out = String::new();
    for (name, info) in &infos {
        assert!(info.range.start <= info.range.end && info.range.end <= data.len());
        let numel = info.shape.checked_numel().expect("the parser checks numel");
        if let Some(dtype) = info.dtype() {
            // What `SafetensorsFile::tensor` then demands of the range.
            assert_eq!(
                dtype.storage_bytes(numel),
                Some(info.range.len()),
                "{name:?}"
            );
        }
        let _ = write!(
            out,
            "{name:?} {} {} {:?}",
            info.dtype, info.shape, info.range
        );
    }
    std::hint::black_box(out);
    Ok(())
}

/// The shards beside the index: file name and bytes (`w`: F32 `[2]`; `v`: BF16 `[1, 2]`).
const SHARDS: [(&str, &[u8]); 2] = [
    (
        "a.safetensors",
        b"@\0\0\0\0\0\0\0{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}          \0\0\x80?\0\0\0@",
    ),
    (
        "b.safetensors",
        b"@\0\0\0\0\0\0\0{\"v\":{\"dtype\":\"BF16\",\"shape\":[1,2],\"data_offsets\":[0,4]}}       \x80?\0@",
    ),
];

/// The folder the index target writes its input to, created once per process with the
/// shards of [`SHARDS`]; locked while an input is written and opened.
fn index_dir() -> &'static Mutex<PathBuf> {
    static DIR: OnceLock<Mutex<PathBuf>> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("mixtral-fuzz-index-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create the index folder");
        for (file, bytes) in SHARDS {
            std::fs::write(dir.join(file), bytes).expect("write a shard");
        }
        Mutex::new(dir)
    })
}

/// Removes the folder [`safetensors_index`] writes to; call it after the last check (the
/// replay tests do; a fuzzer leaves its few hundred bytes behind, as libFuzzer exits without
/// running destructors).
pub fn remove_index_dir() {
    let dir = index_dir().lock().unwrap_or_else(|e| e.into_inner());
    let _ = std::fs::remove_dir_all(&*dir);
}

/// Writes `data` as `model.safetensors.index.json` next to two valid shards and opens it
/// with `TensorStore::open_index`; when it opens, every tensor must be readable.
pub fn safetensors_index(data: &[u8]) -> Result<(), String> {
    let dir = index_dir().lock().unwrap_or_else(|e| e.into_inner());
    let index = dir.join(INDEX_FILE);
    std::fs::write(&index, data).expect("write the index");
    let store = TensorStore::open_index(&index).map_err(|e| e.to_string())?;
    let names: Vec<&str> = store.names().collect();
    assert_eq!(names.len(), store.len());
    for name in names {
        let (info, path) = store.info(name).expect("a listed name has an info");
        let tensor = store.tensor(name).expect("a listed tensor opens");
        assert!(store.maps_address(tensor.as_bytes().as_ptr()) || info.range.is_empty());
        std::hint::black_box((info, path));
    }
    let _ = store.data_bytes();
    Ok(())
}
