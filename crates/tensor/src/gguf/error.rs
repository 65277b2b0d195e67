//! What can be wrong with a GGUF file. Each kind is reported inside
//! [`Error::Gguf`](crate::Error::Gguf), which adds the file and the field.

use super::ValueType;

/// One way a GGUF file is malformed or unsupported.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum GgufError {
    /// The first four bytes are not `GGUF`.
    #[error("not a GGUF file: the magic is \"{found}\", expected \"GGUF\"")]
    BadMagic {
        /// The bytes found, escaped.
        found: String,
    },
    /// A version other than 2 or 3.
    #[error("GGUF version {version} is not supported (versions 2 and 3 are)")]
    UnsupportedVersion {
        /// The version field.
        version: u32,
    },
    /// A version that reads as 2 or 3 only with its bytes swapped.
    #[error("big-endian GGUF files are not supported")]
    BigEndian,
    /// The file ends inside a field.
    #[error("file is truncated: {needed} bytes needed at offset {at}, the file has {file_len}")]
    Truncated {
        /// Bytes the field needs.
        needed: u64,
        /// Where the field starts.
        at: u64,
        /// The file's length.
        file_len: u64,
    },
    /// A string length that runs past the end of the file.
    #[error("string length {len} at offset {at} runs past the end of the file ({file_len} bytes)")]
    StringPastEnd {
        /// The length field.
        len: u64,
        /// Where the string's bytes start.
        at: u64,
        /// The file's length.
        file_len: u64,
    },
    /// A count of items that cannot fit in the bytes left (checked before allocating).
    #[error(
        "count {count} of {what} needs at least {min_bytes} bytes each, but only {remaining} bytes remain in the file"
    )]
    CountPastEnd {
        /// The count field.
        count: u64,
        /// What is counted (`array elements of type uint8`, `tensor infos`, …).
        what: String,
        /// Fewest bytes one item takes.
        min_bytes: u64,
        /// Bytes left in the file after the count.
        remaining: u64,
    },
    /// A string that is not UTF-8.
    #[error("string at offset {at} is not valid UTF-8")]
    BadUtf8 {
        /// Where the string's bytes start.
        at: u64,
    },
    /// A value type id GGUF does not define.
    #[error("unknown metadata value type {id}")]
    UnknownValueType {
        /// The id.
        id: u32,
    },
    /// Arrays nested deeper than any real file nests them.
    #[error("arrays nested more than {max} deep")]
    NestedTooDeep {
        /// The deepest nesting accepted.
        max: usize,
    },
    /// A key or tensor name given twice.
    #[error("appears twice")]
    Duplicate,
    /// A metadata value of the wrong type for its key.
    #[error("has type {found}, expected {expected}")]
    WrongType {
        /// The type(s) the key must have.
        expected: &'static str,
        /// The type found.
        found: ValueType,
    },
    /// `general.alignment` is zero or not a power of two.
    #[error("alignment {value} is not a power of two")]
    BadAlignment {
        /// The value.
        value: u64,
    },
    /// More dimensions than ggml's four.
    #[error("{n_dims} dimensions (ggml tensors have 1 to 4)")]
    BadRank {
        /// The `n_dims` field.
        n_dims: u32,
    },
    /// The product of the dimensions, or the byte size, overflows.
    #[error("dimensions {ne:?} overflow")]
    DimsOverflow {
        /// `ne`, innermost first, as in the file.
        ne: Vec<u64>,
    },
    /// A ggml type id ggml does not define.
    #[error("unknown ggml type {id}")]
    UnknownGgmlType {
        /// The id.
        id: u32,
    },
    /// A ggml type this engine does not implement.
    #[error("ggml type {name} (id {id}) is not supported by this engine")]
    UnsupportedGgmlType {
        /// ggml's name for it.
        name: &'static str,
        /// The id.
        id: u32,
    },
    /// The innermost dimension is not a whole number of the type's blocks.
    #[error("row length {ne0} is not a multiple of {dtype}'s block of {block}")]
    PartialBlock {
        /// `ne[0]`.
        ne0: u64,
        /// The type.
        dtype: crate::DType,
        /// Its block length.
        block: usize,
    },
    /// A tensor's data does not start on the file's alignment.
    #[error("data offset {offset} is not a multiple of the alignment {align}")]
    Misaligned {
        /// Offset relative to the data section.
        offset: u64,
        /// `general.alignment` (or 32).
        align: u64,
    },
    /// A tensor's data runs past the end of the file.
    #[error("data {start}..{end} runs past the end of the file ({file_len} bytes)")]
    DataPastEnd {
        /// Absolute start.
        start: u64,
        /// Absolute end.
        end: u64,
        /// The file's length.
        file_len: u64,
    },
    /// Two tensors' data overlap.
    #[error("data {start}..{end} overlaps tensor `{other}`")]
    Overlap {
        /// Absolute start.
        start: u64,
        /// Absolute end.
        end: u64,
        /// The other tensor, escaped.
        other: String,
    },
}
