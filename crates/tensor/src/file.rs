//! One safetensors file, memory-mapped: its header parsed and checked, its tensors borrowed.

use crate::{AlignedBytes, DType, Error, Result, Shape, Storage, Tensor};
use memmap2::Mmap;
use std::collections::BTreeMap;
use std::fs::File;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The largest header accepted: 16 MiB. Real headers are far smaller (Mixtral-8x7B's largest
/// shard: 30 KB; a shard of a 256-expert model: about 1 MB); parsing costs about 15 bytes of
/// memory per header byte, so the `safetensors` crate's own 100 MB limit let a crafted header
/// of empty tensors take 1.3 GB and seconds before anything was checked.
pub const MAX_HEADER_BYTES: u64 = 16 << 20;

/// A tensor's dtype as a file states it: one this engine knows, or another (named as the
/// file names it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FileDType {
    /// A dtype this engine computes with.
    Known(DType),
    /// A dtype it does not (e.g. safetensors `F8_E4M3`).
    Unsupported(String),
}

impl std::fmt::Display for FileDType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FileDType::Known(d) => write!(f, "{d}"),
            FileDType::Unsupported(name) => f.write_str(name),
        }
    }
}

/// What a file's header says about one tensor.
#[derive(Clone, Debug)]
pub struct TensorInfo {
    /// The dtype as the file states it.
    pub dtype: FileDType,
    /// The shape, outermost first.
    pub shape: Shape,
    /// Absolute byte range within the file.
    pub range: Range<usize>,
}

impl TensorInfo {
    /// The dtype, if this engine supports it.
    pub fn dtype(&self) -> Option<DType> {
        match self.dtype {
            FileDType::Known(d) => Some(d),
            FileDType::Unsupported(_) => None,
        }
    }
}

/// A memory-mapped safetensors file.
///
/// Opening reads only the header; tensor bytes stay in the page cache until a kernel reads
/// them. Tensors handed out borrow the mapping (through an `Arc`), so no weight is ever copied.
#[derive(Debug)]
pub struct SafetensorsFile {
    path: PathBuf,
    map: Arc<Mmap>,
    tensors: BTreeMap<String, TensorInfo>,
}

impl SafetensorsFile {
    /// Maps `path` and validates its header against the file's length.
    pub fn open(path: impl AsRef<Path>) -> Result<SafetensorsFile> {
        let path = path.as_ref();
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        // SAFETY: the mapping is read-only and we never hand out `&mut` into it. The one hazard
        // left is another process truncating or rewriting the file while it is mapped, which
        // memory-mapped model loaders (safetensors, llama.cpp) all accept and document: do not
        // modify a checkpoint while an engine has it open.
        let map = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        // Ask for 2 MiB pages: a decode step streams every weight once, and with 4 KiB pages
        // the TLB misses cost more than a third of the bandwidth (bench-1b decode: 65 vs
        // 105 tokens/s with the same file cached in small or in 2 MiB folios). Pages the
        // kernel reads in for this mapping then come as 2 MiB folios mapped whole; a kernel
        // without transparent huge pages refuses, and nothing changes.
        #[cfg(target_os = "linux")]
        let _ = map.advise(memmap2::Advice::HugePage);
        let tensors = parse_header(path, &map)?;
        Ok(SafetensorsFile {
            path: path.to_path_buf(),
            map: Arc::new(map),
            tensors,
        })
    }

    /// Validates a whole safetensors file's `bytes` (header length, JSON header, tensor
    /// placement, data ending where the file does) without mapping it; `path` is used in error
    /// messages only. Used by fuzzing.
    pub fn parse_header(path: &Path, bytes: &[u8]) -> Result<BTreeMap<String, TensorInfo>> {
        parse_header(path, bytes)
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every tensor the header lists, by name.
    pub fn infos(&self) -> &BTreeMap<String, TensorInfo> {
        &self.tensors
    }

    /// The address range of the whole mapping (to prove tensors borrow it).
    pub fn mapped_range(&self) -> Range<usize> {
        let start = self.map.as_ptr() as usize;
        start..start + self.map.len()
    }

    /// The tensor `name`, borrowing the mapped bytes.
    pub fn tensor(&self, name: &str) -> Result<Tensor> {
        let info = self.tensors.get(name).ok_or_else(|| Error::MissingTensor {
            path: self.path.clone(),
            name: crate::escape(name),
        })?;
        let dtype = info.dtype().ok_or_else(|| Error::UnsupportedDtype {
            path: self.path.clone(),
            name: crate::escape(name),
            dtype: info.dtype.to_string(),
        })?;
        let mapped = Storage::Mapped {
            map: Arc::clone(&self.map),
            range: info.range.clone(),
        };
        // The format lets a header's length be any number, so data can start off its dtype's
        // alignment (mappings start on a page); such a tensor is read through an aligned copy.
        let storage = if info.range.start % dtype.block_bytes().min(8) == 0 {
            mapped
        } else {
            let mut buf = AlignedBytes::zeroed(info.range.len());
            buf.as_bytes_mut().copy_from_slice(mapped.bytes());
            Storage::Owned(Arc::new(buf))
        };
        Tensor::from_storage(dtype, info.shape.clone(), storage)
    }

    /// True when some tensor's data starts off its dtype's alignment (the header length is not
    /// a multiple of 8): such tensors are copied to aligned memory rather than borrowed.
    pub fn copies_misaligned_data(&self) -> bool {
        self.tensors.values().any(|i| match i.dtype() {
            Some(d) => i.range.start % d.block_bytes().min(8) != 0,
            None => false,
        })
    }
}

/// Reads the 8-byte length, the JSON header, and checks that the data ends where the file does.
fn parse_header(path: &Path, bytes: &[u8]) -> Result<BTreeMap<String, TensorInfo>> {
    let file_len = bytes.len() as u64;
    let truncated = |what, expected| Error::Truncated {
        path: path.into(),
        what,
        expected,
        found: file_len,
    };
    let len_bytes: [u8; 8] = bytes
        .get(..8)
        .ok_or(truncated("header length", 8))?
        .try_into()
        .expect("8 bytes");
    let header_len = u64::from_le_bytes(len_bytes);
    if header_len > MAX_HEADER_BYTES {
        return Err(Error::HeaderTooLarge {
            path: path.into(),
            len: header_len,
            max: MAX_HEADER_BYTES,
        });
    }
    let data_start = 8 + header_len as usize;
    let header = bytes
        .get(8..data_start)
        .ok_or(truncated("header", data_start as u64))?;
    let corrupt = |source: Box<dyn std::error::Error + Send + Sync>| Error::CorruptHeader {
        path: path.into(),
        source,
    };
    // `safetensors::tensor::Metadata` checks that offsets are contiguous, ordered and that each
    // byte length matches dtype × shape.
    let meta: safetensors::tensor::Metadata = serde_json::from_slice(header)
        // Its messages quote tensor names (`invalid offset for tensor …`) from the file.
        .map_err(|e| corrupt(crate::escape(&e.to_string()).into()))?;
    let data_len = meta.data_len();
    let expected = data_start as u64 + data_len as u64;
    if expected > file_len {
        return Err(truncated("tensor data", expected));
    }
    if expected < file_len {
        return Err(Error::TrailingBytes {
            path: path.into(),
            expected,
            found: file_len,
        });
    }
    let mut tensors = BTreeMap::new();
    for (name, info) in meta.tensors() {
        let shape = Shape::new(info.shape.clone());
        if shape.checked_numel().is_none() {
            return Err(corrupt(
                format!("tensor `{}`: shape {shape} overflows", crate::escape(&name)).into(),
            ));
        }
        let (start, end) = info.data_offsets;
        tensors.insert(
            name,
            TensorInfo {
                dtype: match DType::from_safetensors(info.dtype) {
                    Some(d) => FileDType::Known(d),
                    None => FileDType::Unsupported(info.dtype.to_string()),
                },
                shape,
                range: data_start + start..data_start + end,
            },
        );
    }
    Ok(tensors)
}
