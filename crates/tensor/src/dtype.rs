//! Element types of stored tensors and the Rust types that view them.

use half::{bf16, f16};
use std::fmt;

/// The element type of a tensor's bytes.
///
/// Float types hold weights and activations; the integer types hold index outputs such as the
/// router's chosen experts. Quantized block types (several values sharing a scale) will join
/// this enum later: [`DType::storage_bytes`] is already written in terms of blocks so that
/// callers never assume one element is a whole number of bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DType {
    /// IEEE 754 single precision.
    F32,
    /// IEEE 754 half precision.
    F16,
    /// bfloat16: the upper 16 bits of an f32.
    BF16,
    /// Signed 32-bit integer.
    I32,
    /// Signed 64-bit integer.
    I64,
}

impl DType {
    /// Elements per storage block (1 for every plain type).
    pub fn block_len(self) -> usize {
        1
    }

    /// Bytes per storage block.
    pub fn block_bytes(self) -> usize {
        match self {
            DType::F32 | DType::I32 => 4,
            DType::F16 | DType::BF16 => 2,
            DType::I64 => 8,
        }
    }

    /// Bytes needed to store `n_elements` values, or `None` when `n_elements` is not a whole
    /// number of blocks or the size overflows.
    pub fn storage_bytes(self, n_elements: usize) -> Option<usize> {
        if !n_elements.is_multiple_of(self.block_len()) {
            return None;
        }
        (n_elements / self.block_len()).checked_mul(self.block_bytes())
    }

    /// True for the floating-point types a weight may have.
    pub fn is_float(self) -> bool {
        matches!(self, DType::F32 | DType::F16 | DType::BF16)
    }

    /// The name used by safetensors and by `config.json`'s `torch_dtype` (e.g. `BF16`).
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "F32",
            DType::F16 => "F16",
            DType::BF16 => "BF16",
            DType::I32 => "I32",
            DType::I64 => "I64",
        }
    }

    pub(crate) fn from_safetensors(d: safetensors::Dtype) -> Option<DType> {
        use safetensors::Dtype as S;
        Some(match d {
            S::F32 => DType::F32,
            S::F16 => DType::F16,
            S::BF16 => DType::BF16,
            S::I32 => DType::I32,
            S::I64 => DType::I64,
            _ => return None,
        })
    }

    pub(crate) fn to_safetensors(self) -> safetensors::Dtype {
        use safetensors::Dtype as S;
        match self {
            DType::F32 => S::F32,
            DType::F16 => S::F16,
            DType::BF16 => S::BF16,
            DType::I32 => S::I32,
            DType::I64 => S::I64,
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A Rust type that can view a tensor's bytes: one per plain [`DType`].
pub trait Element: bytemuck::Pod {
    /// The dtype whose bytes this type reads.
    const DTYPE: DType;
}

impl Element for f32 {
    const DTYPE: DType = DType::F32;
}
impl Element for f16 {
    const DTYPE: DType = DType::F16;
}
impl Element for bf16 {
    const DTYPE: DType = DType::BF16;
}
impl Element for i32 {
    const DTYPE: DType = DType::I32;
}
impl Element for i64 {
    const DTYPE: DType = DType::I64;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_bytes_counts_blocks_and_catches_overflow() {
        assert_eq!(DType::BF16.storage_bytes(3), Some(6));
        assert_eq!(DType::I64.storage_bytes(2), Some(16));
        assert_eq!(DType::F32.storage_bytes(usize::MAX), None);
    }

    #[test]
    fn safetensors_names_round_trip() {
        for d in [DType::F32, DType::F16, DType::BF16, DType::I32, DType::I64] {
            assert_eq!(DType::from_safetensors(d.to_safetensors()), Some(d));
            assert_eq!(d.to_safetensors().to_string(), d.name());
        }
        assert_eq!(DType::from_safetensors(safetensors::Dtype::U8), None);
    }
}
