//! Errors of the model crate: each names the file, tensor or config field involved.

use mixtral_tensor::{DType, Shape};
use std::path::PathBuf;

/// Everything that can go wrong loading or running a Mixtral checkpoint.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The directory does not exist or holds no `config.json`.
    #[error("{}: not a model directory (no config.json)", dir.display())]
    NotAModelDir {
        /// The directory given.
        dir: PathBuf,
    },
    /// `config.json` could not be read.
    #[error("{}: cannot read config", path.display())]
    ConfigRead {
        /// The config file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
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
    #[error("{}: {name}: unsupported weight dtype {dtype} (expected F32, F16 or BF16)", path.display())]
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
    /// A forward call was given no tokens.
    #[error("empty input: at least one token is needed")]
    EmptyInput,
    /// Positions given to a forward call do not continue the cache.
    #[error("position {found} given where the cache expects {expected}")]
    PositionMismatch {
        /// The next position the cache holds.
        expected: usize,
        /// The position given.
        found: usize,
    },
    /// The tensor layer failed (I/O, corrupt file, unsupported dtype).
    #[error(transparent)]
    Tensor(#[from] mixtral_tensor::Error),
}

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
