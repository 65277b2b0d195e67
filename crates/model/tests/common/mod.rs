//! Shared by the model crate's integration tests: fixture paths and checkpoint rewriting.
#![allow(dead_code)]

use mixtral_tensor::{Tensor, TensorStore};
use std::path::{Path, PathBuf};

/// A fixture model directory.
pub fn fixture(model: &str) -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/models"
    ))
    .join(model)
}

/// Copies fixture `model` into `dst` as one `model.safetensors`, passing every tensor through
/// `edit` (which returns the tensors to write in its place) and the config through `edit_config`.
pub fn rewrite(
    model: &str,
    dst: &Path,
    mut edit: impl FnMut(&str, Tensor) -> Vec<(String, Tensor)>,
    edit_config: impl FnOnce(&mut serde_json::Value),
) {
    let src = fixture(model);
    let store = TensorStore::open_dir(&src).unwrap();
    let mut out = Vec::new();
    for name in store.names() {
        out.extend(edit(name, store.tensor(name).unwrap()));
    }
    mixtral_tensor::save(dst.join("model.safetensors"), &out).unwrap();
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(src.join("config.json")).unwrap()).unwrap();
    edit_config(&mut config);
    std::fs::write(
        dst.join("config.json"),
        serde_json::to_vec(&config).unwrap(),
    )
    .unwrap();
}

/// Keeps a tensor as it is.
pub fn keep(name: &str, t: Tensor) -> Vec<(String, Tensor)> {
    vec![(name.to_string(), t)]
}
