//! Opening a Hugging Face model directory: `config.json` plus its safetensors weights.

use crate::{Config, Error, Result, Warning, Weights};
use mixtral_tensor::TensorStore;
use std::path::{Path, PathBuf};

/// A validated Mixtral checkpoint: its config and its memory-mapped weights.
#[derive(Debug)]
pub struct Checkpoint {
    /// The model directory.
    pub dir: PathBuf,
    /// The architecture.
    pub config: Config,
    /// The weights, borrowed from the mapped files.
    pub weights: Weights,
    /// Non-fatal findings (e.g. unused tensors).
    pub warnings: Vec<Warning>,
    store: TensorStore,
}

impl Checkpoint {
    /// Opens `dir`: reads `config.json`, maps `model.safetensors` or the shards that
    /// `model.safetensors.index.json` lists, and checks every tensor the config implies.
    ///
    /// Only headers are read, so this takes milliseconds even for a 93 GB checkpoint.
    pub fn open(dir: impl AsRef<Path>) -> Result<Checkpoint> {
        let dir = dir.as_ref();
        let config_path = dir.join("config.json");
        if !config_path.is_file() {
            return Err(Error::NotAModelDir {
                dir: dir.to_path_buf(),
            });
        }
        let config = Config::from_file(&config_path)?;
        let store = TensorStore::open_dir(dir)?;
        let (weights, warnings) = Weights::load(&store, &config)?;
        Ok(Checkpoint {
            dir: dir.to_path_buf(),
            config,
            weights,
            warnings,
            store,
        })
    }

    /// The underlying tensor files.
    pub fn store(&self) -> &TensorStore {
        &self.store
    }
}
