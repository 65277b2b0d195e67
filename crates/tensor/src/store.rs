//! A set of tensor files seen as one name → tensor map: a single safetensors file, the shards a
//! Hugging Face `model.safetensors.index.json` lists, or a GGUF file.

use crate::gguf::GgufFile;
use crate::{Error, Result, SafetensorsFile, Tensor, TensorInfo};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// One memory-mapped tensor file of either format.
#[derive(Debug)]
pub enum TensorFile {
    /// A safetensors file.
    Safetensors(SafetensorsFile),
    /// A GGUF file.
    Gguf(GgufFile),
}

impl TensorFile {
    /// The file's path.
    pub fn path(&self) -> &Path {
        match self {
            TensorFile::Safetensors(f) => f.path(),
            TensorFile::Gguf(f) => f.path(),
        }
    }

    /// Every tensor the file holds, by name.
    pub fn infos(&self) -> &BTreeMap<String, TensorInfo> {
        match self {
            TensorFile::Safetensors(f) => f.infos(),
            TensorFile::Gguf(f) => f.infos(),
        }
    }

    /// The tensor `name`, borrowing the mapping.
    pub fn tensor(&self, name: &str) -> Result<Tensor> {
        match self {
            TensorFile::Safetensors(f) => f.tensor(name),
            TensorFile::Gguf(f) => f.tensor(name),
        }
    }

    /// The address range of the whole mapping.
    pub fn mapped_range(&self) -> Range<usize> {
        match self {
            TensorFile::Safetensors(f) => f.mapped_range(),
            TensorFile::Gguf(f) => f.mapped_range(),
        }
    }
}

/// The single-file checkpoint name transformers writes.
pub const SINGLE_FILE: &str = "model.safetensors";
/// The shard index name transformers writes.
pub const INDEX_FILE: &str = "model.safetensors.index.json";
/// The largest shard index read (Mixtral-8x7B's is 92 KiB).
pub const MAX_INDEX_BYTES: u64 = 64 << 20;

/// True for a name that can only mean a file directly in a directory: not empty, not `.` or
/// `..`, no path separator, no NUL.
fn is_plain_file_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\\', '\0'])
}

/// Tensors gathered from one or more memory-mapped tensor files.
#[derive(Debug)]
pub struct TensorStore {
    files: Vec<TensorFile>,
    /// Tensor name → index into `files`.
    by_name: BTreeMap<String, usize>,
}

#[derive(Deserialize)]
struct Index {
    weight_map: BTreeMap<String, String>,
}

impl TensorStore {
    /// Opens the checkpoint in a Hugging Face model directory: `model.safetensors.index.json`
    /// and its shards if the index exists, else `model.safetensors`.
    pub fn open_dir(dir: impl AsRef<Path>) -> Result<TensorStore> {
        let dir = dir.as_ref();
        let index = dir.join(INDEX_FILE);
        if index.is_file() {
            return TensorStore::open_index(&index);
        }
        let single = dir.join(SINGLE_FILE);
        if single.is_file() {
            return TensorStore::open_files([single]);
        }
        Err(Error::NoSafetensors {
            dir: dir.to_path_buf(),
        })
    }

    /// Opens the shards listed by an index file; every tensor it names must be in its shard.
    ///
    /// Shard names must be plain file names: the shards are files of the index's own directory
    /// (a symbolic link there is followed, as the Hugging Face cache needs), never a path that
    /// leaves it.
    pub fn open_index(index: &Path) -> Result<TensorStore> {
        let text = crate::read_small_file(index, MAX_INDEX_BYTES)?;
        let parsed: Index =
            serde_json::from_slice(&text).map_err(|source| Error::CorruptIndex {
                path: index.into(),
                source,
            })?;
        if parsed.weight_map.is_empty() {
            return Err(Error::EmptyIndex {
                index: index.into(),
            });
        }
        let dir = index.parent().unwrap_or(Path::new("."));
        let mut shards: Vec<&String> = parsed.weight_map.values().collect();
        shards.sort();
        shards.dedup();
        let mut paths = Vec::with_capacity(shards.len());
        for shard in &shards {
            if !is_plain_file_name(shard) {
                return Err(Error::BadShardName {
                    index: index.into(),
                    shard: crate::escape(shard),
                });
            }
            let path = dir.join(shard);
            if !path.is_file() {
                return Err(Error::MissingShard {
                    index: index.into(),
                    shard: crate::escape(shard),
                });
            }
            paths.push(path);
        }
        let mut store = TensorStore::open_files(paths)?;
        // The index decides which shard a tensor comes from, even if another shard has a
        // tensor of the same name.
        for (name, shard) in &parsed.weight_map {
            let i = shards
                .binary_search(&shard)
                .expect("every shard was listed");
            if !store.files[i].infos().contains_key(name) {
                return Err(Error::NotInShard {
                    path: store.files[i].path().to_path_buf(),
                    name: crate::escape(name),
                });
            }
            store.by_name.insert(name.clone(), i);
        }
        Ok(store)
    }

    /// Opens the given safetensors files; a tensor name found in several files is taken from
    /// the last.
    pub fn open_files(paths: impl IntoIterator<Item = PathBuf>) -> Result<TensorStore> {
        let files = paths
            .into_iter()
            .map(|p| SafetensorsFile::open(&p).map(TensorFile::Safetensors))
            .collect::<Result<Vec<_>>>()?;
        Ok(TensorStore::from_files(files))
    }

    /// One GGUF file.
    pub fn open_gguf(path: &Path) -> Result<TensorStore> {
        Ok(TensorStore::from_files(vec![TensorFile::Gguf(
            GgufFile::open(path)?,
        )]))
    }

    /// Opened files; a tensor name found in several files is taken from the last.
    pub fn from_files(files: Vec<TensorFile>) -> TensorStore {
        let mut by_name = BTreeMap::new();
        for (i, file) in files.iter().enumerate() {
            for name in file.infos().keys() {
                by_name.insert(name.clone(), i);
            }
        }
        TensorStore { files, by_name }
    }

    /// The files, in the order they were opened.
    pub fn files(&self) -> &[TensorFile] {
        &self.files
    }

    /// The GGUF file, when the store is one.
    pub fn gguf(&self) -> Option<&GgufFile> {
        match self.files.as_slice() {
            [TensorFile::Gguf(f)] => Some(f),
            _ => None,
        }
    }

    /// Every tensor name, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.by_name.keys().map(String::as_str)
    }

    /// Number of tensors.
    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    /// True when no file holds a tensor.
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    /// The header entry of `name` and the file that holds it.
    pub fn info(&self, name: &str) -> Option<(&TensorInfo, &Path)> {
        let file = &self.files[*self.by_name.get(name)?];
        Some((&file.infos()[name], file.path()))
    }

    /// The tensor `name`, borrowing its file's mapping.
    pub fn tensor(&self, name: &str) -> Result<Tensor> {
        match self.by_name.get(name) {
            Some(&i) => self.files[i].tensor(name),
            None => Err(Error::MissingTensor {
                path: self.describe(),
                name: crate::escape(name),
            }),
        }
    }

    /// True when `ptr` lies inside one of the mapped files.
    pub fn maps_address(&self, ptr: *const u8) -> bool {
        self.files
            .iter()
            .any(|f| f.mapped_range().contains(&(ptr as usize)))
    }

    /// Total bytes of tensor data across files.
    pub fn data_bytes(&self) -> u64 {
        self.files
            .iter()
            .flat_map(|f| f.infos().values())
            .map(|i| i.range.len() as u64)
            .sum()
    }

    /// A path naming the store in messages: its only file, or the folder of its shards.
    fn describe(&self) -> PathBuf {
        match self.files.as_slice() {
            [one] => one.path().to_path_buf(),
            [first, ..] => first
                .path()
                .parent()
                .unwrap_or(Path::new("."))
                .to_path_buf(),
            [] => PathBuf::new(),
        }
    }
}
