//! Opening the reference fixture checkpoints: names, shapes, dtypes and bytes, borrowed not copied.

use mixtral_tensor::{DType, SafetensorsFile, TensorStore};
use std::path::PathBuf;

fn fixture(model: &str) -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/models"
    ))
    .join(model)
}

/// Reads a tensor's bytes the slow, independent way: the whole file into memory, header parsed
/// with serde_json.
fn read_independently(file: &std::path::Path, name: &str) -> (String, Vec<usize>, Vec<u8>) {
    let bytes = std::fs::read(file).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let entry = &header[name];
    let offsets: Vec<usize> = entry["data_offsets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as usize)
        .collect();
    let shape = entry["shape"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as usize)
        .collect();
    let data = bytes[8 + n + offsets[0]..8 + n + offsets[1]].to_vec();
    (entry["dtype"].as_str().unwrap().to_string(), shape, data)
}

#[test]
fn tiny_f32_tensors_match_an_independent_read() {
    let path = fixture("tiny-f32").join("model.safetensors");
    let file = SafetensorsFile::open(&path).unwrap();
    // 2 layers × (4 attention + 2 norms + 1 router + 8 experts × 3) + embed + norm + lm_head.
    assert_eq!(file.infos().len(), 2 * (4 + 2 + 1 + 24) + 3);
    for name in [
        "model.embed_tokens.weight",
        "model.layers.1.block_sparse_moe.experts.7.w2.weight",
        "lm_head.weight",
    ] {
        let t = file.tensor(name).unwrap();
        let (dtype, shape, data) = read_independently(&path, name);
        assert_eq!(t.dtype().name(), dtype);
        assert_eq!(t.dims(), shape.as_slice());
        assert_eq!(t.as_bytes(), data.as_slice(), "{name}");
    }
    let embed = file.tensor("model.embed_tokens.weight").unwrap();
    assert_eq!(embed.dims(), &[1024, 64]);
    let w2 = file
        .tensor("model.layers.1.block_sparse_moe.experts.7.w2.weight")
        .unwrap();
    assert_eq!(w2.dims(), &[64, 128]);
    assert_eq!(w2.as_slice::<f32>().unwrap().len(), 64 * 128);
}

#[test]
fn loaded_tensors_borrow_the_mapping() {
    let store = TensorStore::open_dir(fixture("tiny-f32")).unwrap();
    let t = store
        .tensor("model.layers.0.self_attn.q_proj.weight")
        .unwrap();
    assert!(t.is_mapped());
    let ptr = t.as_slice::<f32>().unwrap().as_ptr() as *const u8;
    assert!(
        store.maps_address(ptr),
        "tensor data is not inside the mapped file"
    );
    let range = store.files()[0].mapped_range();
    let row = t.narrow_outer(3, 2).unwrap();
    assert!(row.is_mapped());
    assert_eq!(
        row.as_bytes().as_ptr() as usize,
        ptr as usize + 3 * t.dims()[1] * 4
    );
    assert!(
        range.contains(&(ptr as usize)) && range.contains(&(ptr as usize + t.as_bytes().len() - 1))
    );
}

#[test]
fn sharded_bf16_checkpoint_opens_through_its_index() {
    let dir = fixture("tiny-bf16");
    let store = TensorStore::open_dir(&dir).unwrap();
    assert_eq!(store.files().len(), 2);
    assert_eq!(store.len(), 2 * (4 + 2 + 1 + 24) + 3);
    let (info, path) = store.info("lm_head.weight").unwrap();
    assert!(path.ends_with("model-00001-of-00002.safetensors"));
    assert_eq!(info.dtype(), Some(DType::BF16));
    let q = store
        .tensor("model.layers.0.self_attn.q_proj.weight")
        .unwrap();
    // Explicit head_dim 128 × 2 heads = 256 rows over hidden 128.
    assert_eq!(q.dims(), &[256, 128]);
    let (_, _, data) = read_independently(
        &dir.join("model-00002-of-00002.safetensors"),
        "model.layers.0.self_attn.q_proj.weight",
    );
    assert_eq!(q.as_bytes(), data.as_slice());
    let values = q.as_slice::<half::bf16>().unwrap();
    let first = half::bf16::from_le_bytes([data[0], data[1]]);
    assert_eq!(values[0], first);
    assert!(store.maps_address(values.as_ptr() as *const u8));
    assert_eq!(store.data_bytes(), 19_928_320); // the index's metadata.total_size
}
