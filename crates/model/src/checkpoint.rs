//! Opening a checkpoint in any of the formats Mixtral ships in: a Hugging Face directory
//! (`config.json` + safetensors), Mistral's directory (`params.json` +
//! `consolidated*.safetensors`), or a GGUF file.

use crate::names::Layout;
use crate::{Config, Error, Result, Warning, Weights};
use mixtral_tensor::gguf::{GgufFile, has_gguf_magic};
use mixtral_tensor::{TensorFile, TensorStore};
use std::path::{Path, PathBuf};

/// A validated Mixtral checkpoint: its config and its memory-mapped weights.
#[derive(Debug)]
pub struct Checkpoint {
    /// The model directory, or the GGUF file.
    pub dir: PathBuf,
    /// The architecture.
    pub config: Config,
    /// The weights, borrowed from the mapped files.
    pub weights: Weights,
    /// Non-fatal findings (e.g. unused tensors).
    pub warnings: Vec<Warning>,
    /// The format's naming scheme.
    pub layout: Layout,
    store: TensorStore,
}

impl Checkpoint {
    /// Opens a checkpoint and checks every tensor its config implies:
    /// - a directory with `config.json`: Hugging Face, `model.safetensors` or the shards that
    ///   `model.safetensors.index.json` lists;
    /// - a directory with `params.json`: Mistral's format, `consolidated.safetensors` or
    ///   `consolidated.NN.safetensors`;
    /// - a file starting with the GGUF magic: llama.cpp's format, any tensor types;
    /// - a single `.safetensors` file holding every tensor, with the `config.json` (Hugging
    ///   Face names) or `params.json` (Mistral's) of its directory.
    ///
    /// Only headers are read, so this takes milliseconds even for a 93 GB checkpoint.
    pub fn open(path: impl AsRef<Path>) -> Result<Checkpoint> {
        let path = path.as_ref();
        if path.is_file() && has_gguf_magic(path) {
            return Checkpoint::open_gguf(path);
        }
        let not_a_model = || Error::NotAModelDir {
            dir: path.to_path_buf(),
        };
        if path.is_file() && path.extension().is_some_and(|e| e == "safetensors") {
            let dir = match path.parent() {
                Some(p) if !p.as_os_str().is_empty() => p,
                _ => Path::new("."),
            };
            check_not_one_shard(path, dir)?;
            let store = || TensorStore::open_files([path.to_path_buf()]);
            let (config, params) = (dir.join("config.json"), dir.join("params.json"));
            if config.is_file() {
                let config = Config::from_file(&config)?;
                return Checkpoint::assemble(path, config, store()?, Layout::HuggingFace);
            }
            if params.is_file() {
                let config = Config::from_params_file(&params)?;
                return Checkpoint::assemble(path, config, store()?, Layout::Mistral);
            }
            return Err(not_a_model());
        }
        if !path.is_dir() {
            return Err(not_a_model());
        }
        // Present in any form (a FIFO, a device, a dangling link): read it and report what is
        // wrong, rather than call the directory "not a model".
        let present = |p: &Path| std::fs::symlink_metadata(p).is_ok();
        let config_path = path.join("config.json");
        if present(&config_path) {
            let config = Config::from_file(&config_path)?;
            let store = TensorStore::open_dir(path)?;
            return Checkpoint::assemble(path, config, store, Layout::HuggingFace);
        }
        let params = path.join("params.json");
        if present(&params) {
            let config = Config::from_params_file(&params)?;
            let store = TensorStore::open_files(consolidated_files(path)?)?;
            return Checkpoint::assemble(path, config, store, Layout::Mistral);
        }
        Err(not_a_model())
    }

    /// Opens a GGUF file: config from its metadata, weights as views of its tensors.
    pub fn open_gguf(path: &Path) -> Result<Checkpoint> {
        let file = GgufFile::open(path)?;
        let config = Config::from_gguf(&file)?;
        let store = TensorStore::from_files(vec![TensorFile::Gguf(file)]);
        Checkpoint::assemble(path, config, store, Layout::Gguf)
    }

    fn assemble(
        path: &Path,
        config: Config,
        store: TensorStore,
        layout: Layout,
    ) -> Result<Checkpoint> {
        let (weights, mut warnings) = Weights::load(&store, &config, layout)?;
        for file in store.files() {
            if let TensorFile::Safetensors(f) = file
                && f.copies_misaligned_data()
            {
                warnings.push(Warning::AlignedCopy {
                    path: f.path().to_path_buf(),
                });
            }
        }
        Ok(Checkpoint {
            dir: path.to_path_buf(),
            config,
            weights,
            warnings,
            layout,
            store,
        })
    }

    /// The underlying tensor files.
    pub fn store(&self) -> &TensorStore {
        &self.store
    }

    /// The GGUF file, when the checkpoint is one (its metadata carries the tokenizer).
    pub fn gguf(&self) -> Option<&GgufFile> {
        self.store.gguf()
    }
}

/// Mistral's weight files in a directory: `consolidated.safetensors`, or the numbered shards
/// `consolidated.00.safetensors`, … in name order.
/// Refuses a single file that the directory's index lists among other shards: loading it alone
/// would only end in "tensor … is missing".
fn check_not_one_shard(file: &Path, dir: &Path) -> Result<()> {
    let index = dir.join(mixtral_tensor::INDEX_FILE);
    let Ok(text) = mixtral_tensor::read_small_file(&index, 64 << 20) else {
        return Ok(()); // no index (or an unreadable one, which the single file does not need)
    };
    let json: serde_json::Value = serde_json::from_slice(&text).unwrap_or_default();
    let mut shards: Vec<&str> = json["weight_map"]
        .as_object()
        .map(|m| m.values().filter_map(serde_json::Value::as_str).collect())
        .unwrap_or_default();
    shards.sort_unstable();
    shards.dedup();
    let name = file.file_name().and_then(|n| n.to_str());
    match name {
        Some(name) if shards.len() > 1 && shards.contains(&name) => Err(Error::OneShard {
            file: file.to_path_buf(),
            index,
        }),
        _ => Ok(()),
    }
}

fn consolidated_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let single = dir.join("consolidated.safetensors");
    if single.is_file() {
        return Ok(vec![single]);
    }
    let entries = std::fs::read_dir(dir).map_err(|e| mixtral_tensor::Error::Io {
        path: dir.to_path_buf(),
        source: e,
    })?;
    let mut shards: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            let middle = name
                .strip_prefix("consolidated.")
                .and_then(|r| r.strip_suffix(".safetensors"));
            middle.is_some_and(|m| !m.is_empty() && m.bytes().all(|b| b.is_ascii_digit()))
                && p.is_file()
        })
        .collect();
    shards.sort();
    if shards.is_empty() {
        return Err(mixtral_tensor::Error::NoSafetensors {
            dir: dir.to_path_buf(),
        }
        .into());
    }
    Ok(shards)
}
