//! `Weights`: a borrowed, typed view of a weight matrix in any float dtype the kernels accept.

use half::{bf16, f16};
use mixtral_tensor::{DType, Tensor};

/// The elements of a weight tensor, in the dtype the checkpoint stores.
///
/// Kernels widen each element to f32 as they read it; nothing is converted ahead of time, so
/// bf16 weights stay bf16 in memory.
#[derive(Clone, Copy, Debug)]
pub enum Weight<'a> {
    /// f32 elements.
    F32(&'a [f32]),
    /// bf16 elements.
    BF16(&'a [bf16]),
    /// f16 elements.
    F16(&'a [f16]),
}

impl<'a> Weight<'a> {
    /// A view of `t`'s elements; fails for integer dtypes or misaligned bytes.
    pub fn new(t: &'a Tensor) -> mixtral_tensor::Result<Weight<'a>> {
        Ok(match t.dtype() {
            DType::BF16 => Weight::BF16(t.as_slice()?),
            DType::F16 => Weight::F16(t.as_slice()?),
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
        }
    }

    /// True when there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Element `i` widened to f32.
    #[inline]
    pub fn get(&self, i: usize) -> f32 {
        match self {
            Weight::F32(w) => w[i],
            Weight::BF16(w) => w[i].to_f32(),
            Weight::F16(w) => w[i].to_f32(),
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
        }
    }
}
