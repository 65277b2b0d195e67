//! Element types of stored tensors and the Rust types that view them.

use half::{bf16, f16};
use std::fmt;

/// The element type of a tensor's bytes.
///
/// Float types hold weights and activations; the integer types hold index outputs such as the
/// router's chosen experts; the block-quantized types are ggml's (llama.cpp's GGUF files):
/// a block of 32 or 256 values shares one or two f16 scales, and a tensor's rows are whole
/// blocks. Their byte layouts are ggml's exactly (`ggml-common.h`); the dequantization
/// kernels live in the kernels crate. [`DType::storage_bytes`] counts in blocks, so callers
/// never assume one element is a whole number of bytes.
///
/// The quantized variants keep ggml's spelling (`Q4_K`, not `Q4K`): it is what every GGUF
/// tool and model card prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
#[allow(non_camel_case_types)]
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
    /// 32 values: f16 scale `d`, 32 × i8. `x = d·q`.
    Q8_0,
    /// 32 values: f16 `d`, 16 bytes of 4-bit quants. `x = d·(q − 8)`.
    Q4_0,
    /// 32 values: f16 `d`, f16 min `m`, 4-bit quants. `x = d·q + m`.
    Q4_1,
    /// 32 values: f16 `d`, 32 high bits, 4-bit low quants. `x = d·(q − 16)`.
    Q5_0,
    /// 32 values: f16 `d`, f16 `m`, 32 high bits, 4-bit low quants. `x = d·q + m`.
    Q5_1,
    /// 256 values in 16 sub-blocks with 4-bit scales and mins, 2-bit quants.
    Q2_K,
    /// 256 values in 16 sub-blocks with 6-bit scales, 3-bit quants (2 low bits + a high mask).
    Q3_K,
    /// 256 values in 8 sub-blocks with 6-bit scales and mins, 4-bit quants.
    Q4_K,
    /// 256 values in 8 sub-blocks with 6-bit scales and mins, 5-bit quants.
    Q5_K,
    /// 256 values in 16 sub-blocks with 8-bit scales, 6-bit quants.
    Q6_K,
}

/// Every dtype, plain ones first.
pub const ALL_DTYPES: [DType; 15] = [
    DType::F32,
    DType::F16,
    DType::BF16,
    DType::I32,
    DType::I64,
    DType::Q8_0,
    DType::Q4_0,
    DType::Q4_1,
    DType::Q5_0,
    DType::Q5_1,
    DType::Q2_K,
    DType::Q3_K,
    DType::Q4_K,
    DType::Q5_K,
    DType::Q6_K,
];

impl DType {
    /// Elements per storage block (1 for every plain type, 32 or 256 for quantized ones).
    pub fn block_len(self) -> usize {
        match self {
            DType::F32 | DType::F16 | DType::BF16 | DType::I32 | DType::I64 => 1,
            DType::Q8_0 | DType::Q4_0 | DType::Q4_1 | DType::Q5_0 | DType::Q5_1 => 32,
            DType::Q2_K | DType::Q3_K | DType::Q4_K | DType::Q5_K | DType::Q6_K => 256,
        }
    }

    /// Bytes per storage block (ggml's `type_size`).
    pub fn block_bytes(self) -> usize {
        match self {
            DType::F32 | DType::I32 => 4,
            DType::F16 | DType::BF16 => 2,
            DType::I64 => 8,
            DType::Q8_0 => 34,
            DType::Q4_0 => 18,
            DType::Q4_1 => 20,
            DType::Q5_0 => 22,
            DType::Q5_1 => 24,
            DType::Q2_K => 84,
            DType::Q3_K => 110,
            DType::Q4_K => 144,
            DType::Q5_K => 176,
            DType::Q6_K => 210,
        }
    }

    /// True for the block-quantized types.
    pub fn is_quantized(self) -> bool {
        self.block_len() > 1
    }

    /// Bits of storage per value (e.g. 4.5 for Q4_K, 8.5 for Q8_0).
    pub fn bits_per_value(self) -> f64 {
        (self.block_bytes() * 8) as f64 / self.block_len() as f64
    }

    /// Bytes needed to store `n_elements` values, or `None` when `n_elements` is not a whole
    /// number of blocks or the size overflows.
    pub fn storage_bytes(self, n_elements: usize) -> Option<usize> {
        if !n_elements.is_multiple_of(self.block_len()) {
            return None;
        }
        (n_elements / self.block_len()).checked_mul(self.block_bytes())
    }

    /// True for the floating-point types a weight may have (quantized types included: they
    /// hold real numbers, stored in blocks).
    pub fn is_float(self) -> bool {
        !matches!(self, DType::I32 | DType::I64)
    }

    /// The name used by safetensors and by `config.json`'s `torch_dtype` (e.g. `BF16`).
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "F32",
            DType::F16 => "F16",
            DType::BF16 => "BF16",
            DType::I32 => "I32",
            DType::I64 => "I64",
            DType::Q8_0 => "Q8_0",
            DType::Q4_0 => "Q4_0",
            DType::Q4_1 => "Q4_1",
            DType::Q5_0 => "Q5_0",
            DType::Q5_1 => "Q5_1",
            DType::Q2_K => "Q2_K",
            DType::Q3_K => "Q3_K",
            DType::Q4_K => "Q4_K",
            DType::Q5_K => "Q5_K",
            DType::Q6_K => "Q6_K",
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

    /// The safetensors dtype, for the plain types (safetensors has no block types).
    pub(crate) fn to_safetensors(self) -> Option<safetensors::Dtype> {
        use safetensors::Dtype as S;
        Some(match self {
            DType::F32 => S::F32,
            DType::F16 => S::F16,
            DType::BF16 => S::BF16,
            DType::I32 => S::I32,
            DType::I64 => S::I64,
            _ => return None,
        })
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
        // ggml's sizes: Q4_K_M's Q4_K is 4.5 bits per weight, Q8_0 8.5, Q6_K 6.5625.
        assert_eq!(DType::Q4_K.storage_bytes(512), Some(288));
        assert_eq!(DType::Q4_K.storage_bytes(100), None);
        assert_eq!(DType::Q4_K.bits_per_value(), 4.5);
        assert_eq!(DType::Q8_0.bits_per_value(), 8.5);
        assert_eq!(DType::Q6_K.bits_per_value(), 6.5625);
        assert!(
            ALL_DTYPES
                .iter()
                .all(|d| d.is_quantized() == (d.block_len() > 1))
        );
    }

    #[test]
    fn safetensors_names_round_trip() {
        for d in [DType::F32, DType::F16, DType::BF16, DType::I32, DType::I64] {
            let st = d.to_safetensors().unwrap();
            assert_eq!(DType::from_safetensors(st), Some(d));
            assert_eq!(st.to_string(), d.name());
        }
        assert_eq!(DType::Q4_K.to_safetensors(), None);
        assert_eq!(DType::from_safetensors(safetensors::Dtype::U8), None);
    }
}
