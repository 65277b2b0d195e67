//! Where a tensor's bytes live: owned, aligned host memory or a range of a memory-mapped file.

use memmap2::Mmap;
use std::ops::Range;
use std::sync::Arc;

/// The bytes behind a tensor.
///
/// Cloning is cheap: both variants share their buffer through an `Arc`. A mapped tensor
/// borrows its bytes from the file's pages, so opening a 93 GB checkpoint costs no memory
/// beyond the pages later touched. Device memory joins this enum with the CUDA backend.
#[derive(Clone, Debug)]
pub enum Storage {
    /// Host memory owned by the tensor, 8-byte aligned.
    Owned(Arc<AlignedBytes>),
    /// A byte range of a read-only memory-mapped file.
    Mapped {
        /// The whole mapped file.
        map: Arc<Mmap>,
        /// The tensor's bytes within it.
        range: Range<usize>,
    },
}

impl Storage {
    /// The bytes.
    pub fn bytes(&self) -> &[u8] {
        match self {
            Storage::Owned(b) => b.as_bytes(),
            Storage::Mapped { map, range } => &map[range.clone()],
        }
    }

    /// A sub-range of these bytes sharing the same buffer (`range` relative to [`Storage::bytes`]).
    pub(crate) fn sub_range(&self, range: Range<usize>) -> Storage {
        match self {
            Storage::Owned(b) => {
                // Owned buffers cannot share a sub-range without an offset field; copy the slice.
                // Only small owned tensors (tests, activations) take this path.
                let mut buf = AlignedBytes::zeroed(range.len());
                buf.as_bytes_mut().copy_from_slice(&b.as_bytes()[range]);
                Storage::Owned(Arc::new(buf))
            }
            Storage::Mapped { map, range: r } => Storage::Mapped {
                map: Arc::clone(map),
                range: r.start + range.start..r.start + range.end,
            },
        }
    }

    /// Hands a mapped range's whole pages back to the kernel (`madvise(MADV_DONTNEED)`):
    /// they leave this process's resident memory, and a later read faults them in again from
    /// the file. For a tensor whose bytes were copied elsewhere (the CPU's load-time
    /// layout), so that the copy does not double the weights' footprint. Owned storage, and
    /// any error (the advice is only advice), are a no-op.
    pub fn release_pages(&self) {
        let Storage::Mapped { map, range } = self else {
            return;
        };
        // 4 KiB pages; with larger ones the kernel rounds the start down (memmap2 aligns it)
        // and may drop a neighbour's partial page too, which only costs it a refault.
        const PAGE: usize = 4096;
        let (start, end) = (range.start.next_multiple_of(PAGE), range.end / PAGE * PAGE);
        if start >= end {
            return;
        }
        #[cfg(unix)]
        // SAFETY: the map is read-only and file-backed: after MADV_DONTNEED a read faults the
        // same bytes back in from the file, so every outstanding `&[u8]` into it (other tensors
        // sharing these pages included) still reads what it read before. The range lies inside
        // the map (a sub-range of a tensor's bytes, rounded inwards to pages).
        let _ = unsafe {
            map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, start, end - start)
        };
    }

    /// Byte offset of the data within its buffer (for error messages).
    pub(crate) fn offset(&self) -> usize {
        match self {
            Storage::Owned(_) => 0,
            Storage::Mapped { range, .. } => range.start,
        }
    }
}

/// A heap buffer of bytes aligned to 8, so any [`crate::Element`] can view it.
#[derive(Debug, Clone)]
pub struct AlignedBytes {
    words: Vec<u64>,
    len: usize,
}

impl AlignedBytes {
    /// `len` zero bytes.
    pub fn zeroed(len: usize) -> AlignedBytes {
        AlignedBytes {
            words: vec![0; len.div_ceil(8)],
            len,
        }
    }

    /// The bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &bytemuck::cast_slice(&self.words)[..self.len]
    }

    /// The bytes, writable.
    pub fn as_bytes_mut(&mut self) -> &mut [u8] {
        &mut bytemuck::cast_slice_mut(&mut self.words)[..self.len]
    }
}
