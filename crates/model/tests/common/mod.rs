//! Shared by the model crate's integration tests: fixture paths and checkpoint rewriting.
#![allow(dead_code)]

pub mod devices;

use mixtral_tensor::{SafetensorsFile, Tensor, TensorStore};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// A fixture model directory.
pub fn fixture(model: &str) -> PathBuf {
    mixtral_testkit::fixture_model(model)
}

/// A fixture model's reference outputs: `expected.json` and `expected_logits.safetensors`.
pub struct Expected {
    /// `expected.json`.
    pub json: Value,
    /// `expected_logits.safetensors`.
    pub logits: SafetensorsFile,
}

impl Expected {
    /// Reads the reference outputs of fixture `model`.
    pub fn load(model: &str) -> Expected {
        let dir = fixture(model);
        let json =
            serde_json::from_slice(&std::fs::read(dir.join("expected.json")).unwrap()).unwrap();
        let logits = SafetensorsFile::open(dir.join("expected_logits.safetensors")).unwrap();
        Expected { json, logits }
    }

    /// A stored float tensor widened to f32, if the fixture has it.
    pub fn f32s(&self, tensor: &str) -> Option<Vec<f32>> {
        let present = self.logits.infos().contains_key(tensor);
        present.then(|| self.logits.tensor(tensor).unwrap().to_f32_vec().unwrap())
    }

    /// A stored I32 tensor.
    pub fn i32s(&self, tensor: &str) -> Vec<i32> {
        self.logits
            .tensor(tensor)
            .unwrap()
            .as_slice::<i32>()
            .unwrap()
            .to_vec()
    }

    /// The reference prompts.
    pub fn cases(&self) -> &[Value] {
        self.json["cases"].as_array().unwrap()
    }
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
