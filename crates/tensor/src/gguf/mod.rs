//! GGUF, llama.cpp's file format: a header of typed key/value metadata and tensor infos,
//! then aligned tensor data. Read zero-copy like safetensors: the file is memory-mapped and
//! each tensor is a view of its bytes (quantized blocks included), nothing dequantized.
//!
//! The format (ggml `gguf.h`, gguf-py `gguf/constants.py`): little-endian; magic `GGUF`,
//! version (2 or 3), tensor count (u64), key/value count (u64); the key/value pairs (key:
//! u64-length UTF-8; value type u32; value); the tensor infos (name; `n_dims` u32; `ne[n_dims]`
//! u64, innermost first; ggml type u32; offset u64 from the data section); padding to
//! `general.alignment` (default 32); the data.
//!
//! Every length in the header is checked against the bytes that remain before anything is
//! allocated from it, sizes use checked arithmetic, and each malformation is an
//! [`Error::Gguf`](crate::Error::Gguf) naming the file, the field and what is wrong.

mod error;
mod ggml_type;
mod parse;
mod value;
mod write;

pub use error::GgufError;
pub use ggml_type::{GgmlType, ggml_type, ggml_type_id};
pub use parse::{
    ALIGNMENT_KEY, DEFAULT_ALIGNMENT, GgufTensorInfo, Header, MAGIC, MAX_DIMS, MAX_NESTING,
};
pub use value::{Array, Value, ValueType};
pub use write::{GgufWriter, TensorSink, TensorSpec, WriteTensor};

pub(crate) use crate::escape;

use crate::{Error, FileDType, Result, Storage, Tensor, TensorInfo};
use memmap2::Mmap;
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The key/value metadata of a GGUF file, in file order.
#[derive(Clone, Debug, Default)]
pub struct Metadata {
    entries: Vec<(String, Value)>,
    by_key: HashMap<String, usize>,
}

impl Metadata {
    /// Empty, with room for `n` pairs.
    pub fn with_capacity(n: usize) -> Metadata {
        Metadata {
            entries: Vec::with_capacity(n),
            by_key: HashMap::with_capacity(n),
        }
    }

    /// Adds a pair; false (and nothing changed) if the key is already there.
    pub fn insert(&mut self, key: String, value: Value) -> bool {
        if self.by_key.contains_key(&key) {
            return false;
        }
        self.by_key.insert(key.clone(), self.entries.len());
        self.entries.push((key, value));
        true
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.by_key.get(key).map(|&i| &self.entries[i].1)
    }

    /// Every pair, in file order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// Number of pairs.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// A memory-mapped GGUF file.
///
/// ```
/// use mixtral_tensor::{DType, gguf::GgufFile};
/// let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/quant/tiny-q/Q4_K_M.gguf");
/// let file = GgufFile::open(path)?;
/// let arch = file.metadata().get("general.architecture").and_then(|v| v.as_str());
/// assert_eq!(arch, Some("llama"));
/// let w = file.tensor("blk.0.ffn_gate_exps.weight")?; // [E, F, D], Q4_K blocks along D
/// assert_eq!((w.dtype(), w.dims()), (DType::Q4_K, &[8usize, 512, 256][..]));
/// assert!(w.is_mapped());
/// # Ok::<(), mixtral_tensor::Error>(())
/// ```
#[derive(Debug)]
pub struct GgufFile {
    path: PathBuf,
    map: Arc<Mmap>,
    header: Header,
    infos: BTreeMap<String, TensorInfo>,
}

impl GgufFile {
    /// Maps `path` and validates its header and the placement of every tensor's data.
    pub fn open(path: impl AsRef<Path>) -> Result<GgufFile> {
        let path = path.as_ref();
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        // SAFETY: as for safetensors (`SafetensorsFile::open`): read-only, never `&mut`; the
        // file must not be truncated or rewritten while mapped.
        let map = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        #[cfg(target_os = "linux")]
        let _ = map.advise(memmap2::Advice::HugePage);
        let header = Header::parse(&map).map_err(|(field, kind)| Error::Gguf {
            path: path.to_path_buf(),
            field,
            kind,
        })?;
        let infos = header
            .tensors
            .iter()
            .map(|t| {
                let info = TensorInfo {
                    dtype: FileDType::Known(t.dtype),
                    shape: t.shape.clone(),
                    range: t.range.clone(),
                };
                (t.name.clone(), info)
            })
            .collect();
        Ok(GgufFile {
            path: path.to_path_buf(),
            map: Arc::new(map),
            header,
            infos,
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The GGUF version (2 or 3).
    pub fn version(&self) -> u32 {
        self.header.version
    }

    /// The key/value metadata.
    pub fn metadata(&self) -> &Metadata {
        &self.header.metadata
    }

    /// The parsed header (tensor infos in file order, alignment, data offset).
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Every tensor, by name.
    pub fn infos(&self) -> &BTreeMap<String, TensorInfo> {
        &self.infos
    }

    /// The address range of the whole mapping (to prove tensors borrow it).
    pub fn mapped_range(&self) -> Range<usize> {
        let start = self.map.as_ptr() as usize;
        start..start + self.map.len()
    }

    /// The tensor `name`, borrowing the mapped bytes.
    pub fn tensor(&self, name: &str) -> Result<Tensor> {
        let info = self.infos.get(name).ok_or_else(|| Error::MissingTensor {
            path: self.path.clone(),
            name: escape(name),
        })?;
        let FileDType::Known(dtype) = info.dtype else {
            unreachable!("GGUF tensors are opened with known dtypes")
        };
        let storage = Storage::Mapped {
            map: Arc::clone(&self.map),
            range: info.range.clone(),
        };
        Tensor::from_storage(dtype, info.shape.clone(), storage)
    }
}

/// True when `path`'s first four bytes are the GGUF magic.
pub fn has_gguf_magic(path: &Path) -> bool {
    use std::io::Read;
    let mut magic = [0u8; 4];
    File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok_and(|()| u32::from_le_bytes(magic) == MAGIC)
}
