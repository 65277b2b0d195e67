//! The tensor: a dtype, a shape and the storage holding its contiguous row-major bytes.

use crate::{AlignedBytes, DType, Element, Error, Result, Shape, Storage};
use std::sync::Arc;

/// A contiguous, row-major n-dimensional array on the host.
///
/// There is no autograd, no broadcasting and no strides: an inference engine reads weights
/// whole and writes activations whole. Typed access is checked: asking for the wrong element
/// type or reading misaligned bytes is an [`Error`], never undefined behaviour.
///
/// ```
/// use mixtral_tensor::{DType, Tensor};
/// let t = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0], [2, 2]).unwrap();
/// assert_eq!(t.dtype(), DType::F32);
/// assert_eq!(t.as_slice::<f32>().unwrap()[3], 4.0);
/// assert!(t.as_slice::<half::bf16>().is_err());
/// ```
#[derive(Clone, Debug)]
pub struct Tensor {
    dtype: DType,
    shape: Shape,
    storage: Storage,
    layout: Layout,
}

/// The order of a tensor's bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Layout {
    /// Row-major: the order every file stores.
    #[default]
    RowMajor,
    /// A block-quantized matrix whose rows are interleaved eight at a time, block by block:
    /// the CPU kernels' layout made at load (`mixtral_kernels::qdot::interleave`). Same bytes
    /// and size; only the kernels read it, so row views and conversions refuse it.
    Rows8,
}

impl Tensor {
    /// An owned tensor holding `data` (copied into 8-byte aligned storage).
    pub fn from_vec<T: Element>(data: Vec<T>, shape: impl Into<Shape>) -> Result<Tensor> {
        Tensor::from_slice(&data, shape)
    }

    /// An owned tensor holding a copy of `data`.
    pub fn from_slice<T: Element>(data: &[T], shape: impl Into<Shape>) -> Result<Tensor> {
        let shape = shape.into();
        check_len(T::DTYPE, &shape, data.len())?;
        let bytes: &[u8] = bytemuck::cast_slice(data);
        let mut buf = AlignedBytes::zeroed(bytes.len());
        buf.as_bytes_mut().copy_from_slice(bytes);
        Ok(Tensor {
            dtype: T::DTYPE,
            shape,
            storage: Storage::Owned(Arc::new(buf)),
            layout: Layout::RowMajor,
        })
    }

    /// An owned tensor of zeros.
    pub fn zeros(dtype: DType, shape: impl Into<Shape>) -> Result<Tensor> {
        let shape = shape.into();
        let n = shape.checked_numel().and_then(|n| dtype.storage_bytes(n));
        let bytes = n.ok_or(Error::LengthMismatch {
            dtype,
            expected: usize::MAX,
            found: 0,
            shape: shape.clone(),
        })?;
        Ok(Tensor {
            dtype,
            shape,
            storage: Storage::Owned(Arc::new(AlignedBytes::zeroed(bytes))),
            layout: Layout::RowMajor,
        })
    }

    /// A tensor over existing storage; the storage must hold exactly the shape's bytes.
    pub fn from_storage(dtype: DType, shape: Shape, storage: Storage) -> Result<Tensor> {
        let expected = shape.checked_numel().and_then(|n| dtype.storage_bytes(n));
        let found = storage.bytes().len();
        if expected != Some(found) {
            return Err(Error::LengthMismatch {
                dtype,
                shape,
                expected: expected.unwrap_or(usize::MAX),
                found: found / dtype.block_bytes(),
            });
        }
        Ok(Tensor {
            dtype,
            shape,
            storage,
            layout: Layout::RowMajor,
        })
    }

    /// This tensor's shape and dtype over `storage` (its bytes in `layout`), which must be
    /// the same size. A [`Layout::Rows8`] tensor must be a block-quantized matrix of a
    /// multiple of eight rows.
    pub fn relaid(&self, storage: Storage, layout: Layout) -> Result<Tensor> {
        let mut t = Tensor::from_storage(self.dtype, self.shape.clone(), storage)?;
        if layout == Layout::Rows8 {
            let dims = self.dims();
            if !self.dtype.is_quantized() || dims.len() != 2 || !dims[0].is_multiple_of(8) {
                return Err(Error::Relayout {
                    dtype: self.dtype,
                    shape: self.shape.clone(),
                });
            }
        }
        t.layout = layout;
        Ok(t)
    }

    /// The order of the bytes.
    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// The element type.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The shape.
    pub fn shape(&self) -> &Shape {
        &self.shape
    }

    /// The dimensions, outermost first.
    pub fn dims(&self) -> &[usize] {
        self.shape.dims()
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.shape.numel()
    }

    /// The storage behind the tensor.
    pub fn storage(&self) -> &Storage {
        &self.storage
    }

    /// True when the bytes are borrowed from a memory-mapped file.
    pub fn is_mapped(&self) -> bool {
        matches!(self.storage, Storage::Mapped { .. })
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8] {
        self.storage.bytes()
    }

    /// The elements as `&[T]`; fails if `T` is not this tensor's dtype or the bytes are misaligned.
    pub fn as_slice<T: Element>(&self) -> Result<&[T]> {
        if T::DTYPE != self.dtype {
            return Err(Error::DtypeMismatch {
                expected: T::DTYPE,
                found: self.dtype,
            });
        }
        bytemuck::try_cast_slice(self.as_bytes()).map_err(|_| Error::Misaligned {
            dtype: self.dtype,
            offset: self.storage.offset(),
            align: std::mem::align_of::<T>(),
        })
    }

    /// The elements as `&mut [T]`; only for owned, unshared storage.
    pub fn as_mut_slice<T: Element>(&mut self) -> Result<&mut [T]> {
        if T::DTYPE != self.dtype {
            return Err(Error::DtypeMismatch {
                expected: T::DTYPE,
                found: self.dtype,
            });
        }
        match &mut self.storage {
            Storage::Owned(buf) => {
                let buf = Arc::get_mut(buf).ok_or(Error::NotWritable)?;
                // Owned buffers are 8-byte aligned and sized by `storage_bytes`, so this cast
                // cannot fail for any `Element`.
                bytemuck::try_cast_slice_mut(buf.as_bytes_mut()).map_err(|_| Error::NotWritable)
            }
            Storage::Mapped { .. } => Err(Error::NotWritable),
        }
    }

    /// Rows `start..start + len` of the outermost dimension. A mapped tensor's rows borrow the
    /// same mapping; an owned tensor's rows are copied.
    pub fn narrow_outer(&self, start: usize, len: usize) -> Result<Tensor> {
        if self.layout != Layout::RowMajor {
            return Err(Error::Relayout {
                dtype: self.dtype,
                shape: self.shape.clone(),
            });
        }
        let dims = self.dims();
        let outer = dims.first().copied().unwrap_or(1);
        if dims.is_empty() || start.checked_add(len).is_none_or(|end| end > outer) {
            return Err(Error::OutOfBounds {
                shape: self.shape.clone(),
                start,
                len,
            });
        }
        let row_elems: usize = dims[1..].iter().product();
        let row_bytes = self
            .dtype
            .storage_bytes(row_elems)
            .expect("row of a valid tensor");
        let mut new_dims = dims.to_vec();
        new_dims[0] = len;
        let storage = self
            .storage
            .sub_range(start * row_bytes..(start + len) * row_bytes);
        Tensor::from_storage(self.dtype, Shape::new(new_dims), storage)
    }

    /// Entry `i` of the outermost dimension, as a tensor of one rank less (borrowed when mapped).
    pub fn index_outer(&self, i: usize) -> Result<Tensor> {
        let row = self.narrow_outer(i, 1)?;
        let shape = Shape::new(self.dims()[1..].to_vec());
        Tensor::from_storage(self.dtype, shape, row.storage)
    }

    /// The elements widened to f32 (a copy), for float tensors.
    pub fn to_f32_vec(&self) -> Result<Vec<f32>> {
        Ok(match self.dtype {
            DType::F32 => self.as_slice::<f32>()?.to_vec(),
            DType::BF16 => self
                .as_slice::<half::bf16>()?
                .iter()
                .map(|v| v.to_f32())
                .collect(),
            DType::F16 => self
                .as_slice::<half::f16>()?
                .iter()
                .map(|v| v.to_f32())
                .collect(),
            other => {
                return Err(Error::DtypeMismatch {
                    expected: DType::F32,
                    found: other,
                });
            }
        })
    }
}

fn check_len(dtype: DType, shape: &Shape, found: usize) -> Result<()> {
    match shape.checked_numel() {
        Some(expected) if expected == found => Ok(()),
        expected => Err(Error::LengthMismatch {
            dtype,
            shape: shape.clone(),
            expected: expected.unwrap_or(usize::MAX),
            found,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use half::bf16;

    #[test]
    fn wrong_dtype_is_an_error() {
        let t = Tensor::from_vec(vec![bf16::ONE; 4], [4]).unwrap();
        assert!(matches!(
            t.as_slice::<f32>(),
            Err(Error::DtypeMismatch {
                expected: DType::F32,
                found: DType::BF16
            })
        ));
    }

    #[test]
    fn wrong_length_is_an_error() {
        let err = Tensor::from_vec(vec![0f32; 5], [2, 3]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "F32 tensor of shape [2, 3]: expected 6 elements, found 5"
        );
    }

    #[test]
    fn owned_tensor_is_writable_until_shared() {
        let mut t = Tensor::zeros(DType::F32, [3]).unwrap();
        t.as_mut_slice::<f32>().unwrap()[1] = 2.5;
        assert_eq!(t.as_slice::<f32>().unwrap(), &[0.0, 2.5, 0.0]);
        let shared = t.clone();
        assert!(matches!(t.as_mut_slice::<f32>(), Err(Error::NotWritable)));
        drop(shared);
        assert!(t.as_mut_slice::<f32>().is_ok());
    }

    #[test]
    fn narrowing_shares_storage_and_checks_bounds() {
        let t = Tensor::from_vec((0..24).map(|v| v as f32).collect(), [2, 3, 4]).unwrap();
        let e1 = t.index_outer(1).unwrap();
        assert_eq!(e1.dims(), &[3, 4]);
        let rows = e1.narrow_outer(1, 2).unwrap();
        assert_eq!(rows.dims(), &[2, 4]);
        assert_eq!(
            rows.as_slice::<f32>().unwrap(),
            &(16..24).map(|v| v as f32).collect::<Vec<_>>()[..]
        );
        assert!(matches!(
            t.narrow_outer(1, 2),
            Err(Error::OutOfBounds { .. })
        ));
        assert!(matches!(t.index_outer(2), Err(Error::OutOfBounds { .. })));
    }

    #[test]
    fn bf16_widens_exactly() {
        let t = Tensor::from_vec(vec![bf16::from_f32(1.5), bf16::from_f32(-2.0)], [2]).unwrap();
        assert_eq!(t.to_f32_vec().unwrap(), vec![1.5, -2.0]);
    }
}
