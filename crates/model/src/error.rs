//! Errors of the model crate: each names the file, tensor or config field involved.

use mixtral_tensor::{DType, Shape};
use std::path::PathBuf;

/// Everything that can go wrong loading or running a Mixtral checkpoint.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The path is neither a model directory (no `config.json` or `params.json`), nor a GGUF
    /// file, nor a `.safetensors` file with a config beside it.
    #[error(
        "{}: not a model (expected a directory with config.json or params.json, a .gguf file, or a .safetensors file with config.json or params.json beside it)",
        dir.display()
    )]
    NotAModelDir {
        /// The directory given.
        dir: PathBuf,
    },
    /// A single `.safetensors` file was given that is one shard of several (the directory's
    /// index lists others): the checkpoint is the directory.
    #[error(
        "{}: one shard of the checkpoint that {} describes: pass its directory",
        file.display(),
        index.display()
    )]
    OneShard {
        /// The file given.
        file: PathBuf,
        /// The index that lists it among other shards.
        index: PathBuf,
    },
    /// `config.json` is not JSON of the expected form.
    #[error("{}: invalid config", path.display())]
    ConfigParse {
        /// The config file.
        path: PathBuf,
        /// The parser's error (names the line and field).
        #[source]
        source: serde_json::Error,
    },
    /// A config value is out of range or contradicts another.
    #[error("{}: `{field}` = {value}: {reason}", path.display())]
    ConfigValue {
        /// The config file.
        path: PathBuf,
        /// The offending field.
        field: &'static str,
        /// Its value, as written.
        value: String,
        /// Why it cannot be used.
        reason: &'static str,
    },
    /// A GGUF file's metadata lacks a key the model needs, or has a value it cannot use.
    #[error("{}: metadata `{key}`: {reason}", path.display())]
    GgufMetadata {
        /// The GGUF file.
        path: PathBuf,
        /// The key.
        key: String,
        /// What is wrong, with the value found.
        reason: String,
    },
    /// A GGUF file holds a model of another architecture.
    #[error("{}: not a Mixtral: {what}", path.display())]
    NotMixtral {
        /// The GGUF file.
        path: PathBuf,
        /// What it is instead.
        what: String,
    },
    /// A tensor the config implies is not in the checkpoint.
    #[error("{}: tensor `{name}` is missing", path.display())]
    MissingTensor {
        /// The checkpoint (file or directory).
        path: PathBuf,
        /// The tensor.
        name: String,
    },
    /// A tensor's shape contradicts the config.
    #[error("{}: {name}: expected {expected}, found {found}", path.display())]
    WrongShape {
        /// The file holding the tensor.
        path: PathBuf,
        /// The tensor.
        name: String,
        /// The shape the config implies.
        expected: Shape,
        /// The shape in the file.
        found: Shape,
    },
    /// A weight tensor has a dtype the kernels cannot multiply by.
    #[error("{}: {name}: unsupported weight dtype {dtype} (expected a float or block-quantized type)", path.display())]
    WeightDtype {
        /// The file holding the tensor.
        path: PathBuf,
        /// The tensor.
        name: String,
        /// Its dtype.
        dtype: DType,
    },
    /// A token id is not below the vocabulary size.
    #[error("token id {id} at position {index} is out of range for a vocabulary of {vocab}")]
    TokenOutOfRange {
        /// The id.
        id: u32,
        /// Its index in the input.
        index: usize,
        /// The vocabulary size.
        vocab: usize,
    },
    /// The sequence would pass the model's context length.
    #[error("sequence of {len} positions exceeds max_position_embeddings = {max}")]
    ContextOverflow {
        /// Positions needed.
        len: usize,
        /// The model's limit.
        max: usize,
    },
    /// A forward call was given a different number of positions than tokens.
    #[error("{tokens} tokens but {positions} positions: give one position per token")]
    PositionsLength {
        /// Tokens given.
        tokens: usize,
        /// Positions given.
        positions: usize,
    },
    /// A forward call was given no tokens.
    #[error("empty input: at least one token is needed")]
    EmptyInput,
    /// A stoppable forward call ([`crate::Step::stop`]) was stopped on request,
    /// before `layer`; the cache is as it was before the call.
    #[error("stopped on request before layer {layer}")]
    Stopped {
        /// The layer it stopped before.
        layer: usize,
    },
    /// Positions given to a forward call do not continue the cache.
    #[error("position {found} given where the cache expects {expected}")]
    PositionMismatch {
        /// The next position the cache holds.
        expected: usize,
        /// The position given.
        found: usize,
    },
    /// An intervention on the router does not fit the model.
    #[error("intervention: {reason}")]
    Intervention {
        /// Why.
        reason: String,
    },
    /// A KV cache filled under one router intervention was continued under another (its
    /// positions would mix two models' states).
    #[error(
        "the KV cache was filled {} and is being continued {}: start a new cache (or session) for a different intervention",
        if *cached { "under a router intervention" } else { "without intervention" },
        if *asked { "under a different intervention" } else { "without one" }
    )]
    CacheSteering {
        /// Whether the cache was filled under an intervention.
        cached: bool,
        /// Whether this call asks for one.
        asked: bool,
    },
    /// A checkpoint cannot be written in the format asked for.
    #[error("{}: cannot export: {reason}", path.display())]
    Export {
        /// The file being written.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A KV page pool could not be made, or had no page for a cache that needed one.
    #[error("kv pool: {0}")]
    KvPool(&'static str),
    /// The device has no path for an option or call: refused, never ignored.
    #[error("{feature} is not supported on {device}: {reason}")]
    Unsupported {
        /// What was asked for (`precision f32`, `batch invariance`, …).
        feature: String,
        /// The device (`cuda:0`).
        device: String,
        /// What the device does instead, or why it cannot.
        reason: &'static str,
    },
    /// The GPU backend failed (driver, compile, out of memory, a launch's shape check).
    #[error(transparent)]
    Device(#[from] mixtral_kernels::cuda::Error),
    /// The tensor layer failed (I/O, corrupt file, unsupported dtype).
    #[error(transparent)]
    Tensor(#[from] mixtral_tensor::Error),
}

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
