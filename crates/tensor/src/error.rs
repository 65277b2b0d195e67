//! Errors of the tensor crate: typed, naming the file and tensor involved.

use crate::DType;
use std::path::PathBuf;

/// Everything that can go wrong opening safetensors files or viewing tensor bytes.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The operating system refused to open, map or write a file.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The file ends before the data its header promises.
    #[error("{}: file is truncated: {what} needs {expected} bytes, the file has {found}", path.display())]
    Truncated {
        /// The file involved.
        path: PathBuf,
        /// What was being read (`header length`, `header`, `tensor data`).
        what: &'static str,
        /// Bytes the file should have.
        expected: u64,
        /// Bytes it has.
        found: u64,
    },
    /// The file is longer than its header says (a sign of a corrupt header or a bad copy).
    #[error("{}: {found} bytes but the header accounts for {expected}", path.display())]
    TrailingBytes {
        /// The file involved.
        path: PathBuf,
        /// Bytes the header accounts for.
        expected: u64,
        /// Bytes the file has.
        found: u64,
    },
    /// The header length field is implausibly large.
    #[error("{}: safetensors header of {len} bytes exceeds the limit of {max}", path.display())]
    HeaderTooLarge {
        /// The file involved.
        path: PathBuf,
        /// The length the file claims.
        len: u64,
        /// The largest header accepted.
        max: u64,
    },
    /// The header is not valid UTF-8 JSON describing tensors with consistent offsets.
    #[error("{}: corrupt safetensors header", path.display())]
    CorruptHeader {
        /// The file involved.
        path: PathBuf,
        /// What the parser found wrong.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A tensor has a dtype this engine cannot compute with.
    #[error("{}: tensor `{name}` has unsupported dtype {dtype}", path.display())]
    UnsupportedDtype {
        /// The file involved.
        path: PathBuf,
        /// The tensor.
        name: String,
        /// The dtype as the file spells it.
        dtype: String,
    },
    /// A tensor was asked for that no file holds.
    #[error("{}: tensor `{name}` is missing", path.display())]
    MissingTensor {
        /// The file (or index) that should have held it.
        path: PathBuf,
        /// The tensor.
        name: String,
    },
    /// A shard index lists a file that does not exist.
    #[error("{}: names shard `{shard}`, which does not exist", index.display())]
    MissingShard {
        /// The `model.safetensors.index.json` file.
        index: PathBuf,
        /// The shard file name it gives.
        shard: String,
    },
    /// A shard index names a shard by something other than a plain file name.
    #[error("{}: names shard `{shard}`: shard names must be plain file names inside the model directory (no `/`, no `..`, not absolute)", index.display())]
    BadShardName {
        /// The `model.safetensors.index.json` file.
        index: PathBuf,
        /// The shard name it gives, escaped.
        shard: String,
    },
    /// A shard index maps no tensor.
    #[error("{}: the index's weight_map is empty: it names no tensor and no shard", index.display())]
    EmptyIndex {
        /// The `model.safetensors.index.json` file.
        index: PathBuf,
    },
    /// A tensor the index assigns to a shard is not in that shard.
    #[error("{}: tensor `{name}` is missing, though the index lists it in this shard", path.display())]
    NotInShard {
        /// The shard.
        path: PathBuf,
        /// The tensor, escaped.
        name: String,
    },
    /// A small side file (JSON config, index) is larger than any real one.
    #[error("{}: {len} bytes, more than the {max} accepted for this file", path.display())]
    FileTooLarge {
        /// The file.
        path: PathBuf,
        /// Its size.
        len: u64,
        /// The limit.
        max: u64,
    },
    /// A shard index is not the JSON that transformers writes.
    #[error("{}: corrupt shard index", path.display())]
    CorruptIndex {
        /// The index file.
        path: PathBuf,
        /// What the parser found wrong.
        #[source]
        source: serde_json::Error,
    },
    /// A directory holds neither `model.safetensors` nor `model.safetensors.index.json`.
    #[error("{}: no model.safetensors or model.safetensors.index.json", dir.display())]
    NoSafetensors {
        /// The directory searched.
        dir: PathBuf,
    },
    /// A typed view asked for one dtype and the tensor holds another.
    #[error("dtype mismatch: asked for {expected}, tensor holds {found}")]
    DtypeMismatch {
        /// The dtype of the requested view.
        expected: DType,
        /// The tensor's dtype.
        found: DType,
    },
    /// The tensor's bytes are not aligned for the requested element type.
    #[error("tensor bytes at offset {offset} are not aligned to {align} bytes for {dtype}")]
    Misaligned {
        /// The tensor's dtype.
        dtype: DType,
        /// Its byte offset in the file or buffer.
        offset: usize,
        /// The alignment its element type needs.
        align: usize,
    },
    /// Data of one length was given for a shape that needs another.
    #[error("{dtype} tensor of shape {shape}: expected {expected} elements, found {found}")]
    LengthMismatch {
        /// The tensor's dtype.
        dtype: DType,
        /// The shape asked for.
        shape: crate::Shape,
        /// Elements the shape needs.
        expected: usize,
        /// Elements given.
        found: usize,
    },
    /// A slice of the outermost dimension reaches past its end.
    #[error("rows {start}..{start}+{len} are out of bounds for shape {shape}")]
    OutOfBounds {
        /// The tensor's shape.
        shape: crate::Shape,
        /// First row asked for.
        start: usize,
        /// Rows asked for.
        len: usize,
    },
    /// A GGUF file is malformed, or holds something this engine does not support.
    #[error("{}: {field}: {kind}", path.display())]
    Gguf {
        /// The file involved.
        path: PathBuf,
        /// The field (`version`, ``metadata[3] `general.alignment` ``, ``tensor_info[5] `…`.ne``).
        field: String,
        /// What is wrong with it.
        kind: crate::gguf::GgufError,
    },
    /// An output path names something other than a regular file.
    #[error("{}: is a {what}; refusing to write over it (give the path of a regular file or of a new one)", path.display())]
    NotARegularFile {
        /// The path.
        path: PathBuf,
        /// What is there.
        what: &'static str,
    },
    /// A mutable view was asked of a tensor whose storage is shared or read-only.
    #[error("tensor storage is shared or memory-mapped and cannot be written")]
    NotWritable,
    /// A tensor's bytes cannot take (or, interleaved, give views in) another layout.
    #[error("a {dtype} tensor of shape {shape} has no rows-interleaved layout or views of one")]
    Relayout {
        /// The tensor's dtype.
        dtype: DType,
        /// Its shape.
        shape: crate::Shape,
    },
}

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> Error {
        Error::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}
