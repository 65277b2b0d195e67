//! `Weight`: a borrowed, typed view of a weight matrix in any dtype the kernels accept.

use crate::dequant::{MAX_BLOCK, dequantize_block};
use crate::qdot::interleave::{self, MAX_BLOCK_BYTES, ROWS};
use half::{bf16, f16};
use mixtral_tensor::{DType, Layout, Tensor};

/// The blocks of a block-quantized weight (ggml's types): `bytes` holds whole blocks of `dtype`.
#[derive(Clone, Copy, Debug)]
pub struct QuantBlocks<'a> {
    /// The block type ([`DType::is_quantized`]).
    pub dtype: DType,
    /// The blocks.
    pub bytes: &'a [u8],
    /// Their order.
    pub layout: BlockLayout,
}

/// The order of a quantized weight's blocks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum BlockLayout {
    /// As files store them: row after row.
    #[default]
    Rows,
    /// Rows interleaved eight at a time, block by block ([`crate::qdot::interleave`]), made
    /// at load for the CPU's integer kernels; rows of `blocks` blocks.
    Rows8 {
        /// Blocks per row.
        blocks: usize,
    },
}

impl<'a> QuantBlocks<'a> {
    /// Blocks as files store them, row after row.
    pub fn new(dtype: DType, bytes: &'a [u8]) -> QuantBlocks<'a> {
        QuantBlocks {
            dtype,
            bytes,
            layout: BlockLayout::Rows,
        }
    }
}

impl QuantBlocks<'_> {
    /// Number of values.
    pub fn len(&self) -> usize {
        self.bytes.len() / self.dtype.block_bytes() * self.dtype.block_len()
    }

    /// True when there are no values.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// Values `start..start + out.len()` decoded into `out`, block by block (any range; the
    /// blocks it touches are decoded whole).
    pub fn decode_into(&self, start: usize, out: &mut [f32]) {
        let (bl, bb) = (self.dtype.block_len(), self.dtype.block_bytes());
        let mut buf = [0f32; MAX_BLOCK];
        let (mut at, end) = (start, start + out.len());
        assert!(end <= self.len(), "{} values of {}", end, self.len());
        let mut put_back = [0u8; MAX_BLOCK_BYTES];
        while at < end {
            let (block, within) = (at / bl, at % bl);
            let n = (bl - within).min(end - at);
            let dst = &mut out[at - start..at - start + n];
            let stored = match self.layout {
                BlockLayout::Rows => &self.bytes[block * bb..][..bb],
                BlockLayout::Rows8 { blocks } => {
                    let (row, b) = (block / blocks, block % blocks);
                    let group =
                        &self.bytes[(row / ROWS) * ROWS * blocks * bb..][..ROWS * blocks * bb];
                    interleave::block_of(self.dtype, group, row % ROWS, b, &mut put_back[..bb]);
                    &put_back[..bb]
                }
            };
            if within == 0 && n == bl {
                dequantize_block(self.dtype, stored, dst);
            } else {
                dequantize_block(self.dtype, stored, &mut buf[..bl]);
                dst.copy_from_slice(&buf[within..within + n]);
            }
            at += n;
        }
    }
}

/// The elements of a weight tensor, in the dtype the checkpoint stores.
///
/// Kernels widen each element to f32 as they read it; nothing is converted ahead of time, so
/// bf16 weights stay bf16 in memory and quantized weights stay in their blocks (decoded a block
/// at a time as a kernel streams them).
#[derive(Clone, Copy, Debug)]
pub enum Weight<'a> {
    /// f32 elements.
    F32(&'a [f32]),
    /// bf16 elements.
    BF16(&'a [bf16]),
    /// f16 elements.
    F16(&'a [f16]),
    /// Block-quantized elements.
    Quant(QuantBlocks<'a>),
}

impl<'a> Weight<'a> {
    /// A view of `t`'s elements; fails for integer dtypes or misaligned bytes.
    pub fn new(t: &'a Tensor) -> mixtral_tensor::Result<Weight<'a>> {
        Ok(match t.dtype() {
            DType::BF16 => Weight::BF16(t.as_slice()?),
            DType::F16 => Weight::F16(t.as_slice()?),
            d if d.is_quantized() => Weight::Quant(QuantBlocks {
                layout: match t.layout() {
                    Layout::RowMajor => BlockLayout::Rows,
                    // `Tensor::relaid` admits only matrices of whole rows here.
                    Layout::Rows8 => BlockLayout::Rows8 {
                        blocks: t.dims().last().copied().unwrap_or(0) / d.block_len(),
                    },
                },
                ..QuantBlocks::new(d, t.as_bytes())
            }),
            // Asking for f32 reports the dtype mismatch for integer tensors.
            _ => Weight::F32(t.as_slice()?),
        })
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            Weight::F32(w) => w.len(),
            Weight::BF16(w) => w.len(),
            Weight::F16(w) => w.len(),
            Weight::Quant(q) => q.len(),
        }
    }

    /// The stored dtype.
    pub fn dtype(&self) -> DType {
        match self {
            Weight::F32(_) => DType::F32,
            Weight::BF16(_) => DType::BF16,
            Weight::F16(_) => DType::F16,
            Weight::Quant(q) => q.dtype,
        }
    }

    /// True when there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Element `i` widened to f32 (for a quantized weight, its block is decoded: read rows
    /// with [`Weight::row_into`] instead).
    #[inline]
    pub fn get(&self, i: usize) -> f32 {
        match self {
            Weight::F32(w) => w[i],
            Weight::BF16(w) => w[i].to_f32(),
            Weight::F16(w) => w[i].to_f32(),
            Weight::Quant(q) => {
                let mut v = [0f32];
                q.decode_into(i, &mut v);
                v[0]
            }
        }
    }

    /// Elements `start..start + len`, widened to f32, written into `out`.
    pub fn row_into(&self, start: usize, out: &mut [f32]) {
        let end = start + out.len();
        match self {
            Weight::F32(w) => out.copy_from_slice(&w[start..end]),
            Weight::BF16(w) => out
                .iter_mut()
                .zip(&w[start..end])
                .for_each(|(o, v)| *o = v.to_f32()),
            Weight::F16(w) => out
                .iter_mut()
                .zip(&w[start..end])
                .for_each(|(o, v)| *o = v.to_f32()),
            Weight::Quant(q) => q.decode_into(start, out),
        }
    }
}
