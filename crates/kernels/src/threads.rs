//! How the fast CPU kernels share work between threads: split an index range into chunks on
//! the caller's current rayon pool, and a shared output whose disjoint parts threads write.
//!
//! Kernels never build pools of their own: the caller decides the thread count by running
//! them inside `ThreadPool::install` (or uses rayon's global pool), so nesting never
//! oversubscribes the cores.

use rayon::prelude::*;
use std::marker::PhantomData;
use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Below this many multiply-adds (or comparable units) a call runs on the calling thread:
/// waking the pool costs a few microseconds, as much as this much work.
pub(crate) const MIN_PARALLEL_WORK: usize = 1 << 16;

/// Runs `f` over chunks of `0..n` whose starts are multiples of `align`, in parallel when
/// `n · cost_per_item` is large enough to pay for it, about `per_thread` chunks per thread.
///
/// Chunks are handed out one at a time from a shared counter (not split up front), so a
/// thread that wakes late or runs slower simply takes fewer of them, and the region ends
/// within one chunk of perfect balance. Callers whose chunks carry a fixed cost (the GEMM
/// packs its activations per chunk) ask for few; the GEMV, whose chunks cost nothing extra,
/// asks for many (measured in decode: with 4 per thread the two threads were busy 89% of
/// each GEMV region, mostly waiting for the last chunk).
pub(crate) fn for_each_range(
    n: usize,
    align: usize,
    cost_per_item: usize,
    per_thread: usize,
    f: impl Fn(Range<usize>) + Sync + Send,
) {
    let threads = rayon::current_num_threads();
    if n == 0 {
        return;
    }
    if threads <= 1 || n.saturating_mul(cost_per_item) < MIN_PARALLEL_WORK || n <= align {
        f(0..n);
        return;
    }
    let pieces = (threads * per_thread.max(1)).min(n.div_ceil(align));
    let chunk = n.div_ceil(pieces).div_ceil(align) * align;
    let chunks = n.div_ceil(chunk);
    let next = AtomicUsize::new(0);
    (0..threads.min(chunks)).into_par_iter().for_each(|_| {
        loop {
            let c = next.fetch_add(1, Ordering::Relaxed);
            if c >= chunks {
                break;
            }
            f(c * chunk..n.min((c + 1) * chunk));
        }
    });
}

/// Whether work of `total` units is worth handing to the pool.
pub(crate) fn worth_parallel(total: usize) -> bool {
    total >= MIN_PARALLEL_WORK && rayon::current_num_threads() > 1
}

/// A `[rows, n]` row-major output that several threads write, each a disjoint set of
/// columns (a matmul split over output features writes a strided part of `y`, which
/// `chunks_mut` cannot express).
pub(crate) struct SharedOut<'a> {
    ptr: *mut f32,
    rows: usize,
    n: usize,
    _borrow: PhantomData<&'a mut [f32]>,
}

// SAFETY: `SharedOut` is a `&mut [f32]` split by column; `cols` requires its callers to
// write disjoint columns, so sharing it between threads creates no data race.
unsafe impl Send for SharedOut<'_> {}
// SAFETY: as above: concurrent callers touch disjoint elements.
unsafe impl Sync for SharedOut<'_> {}

impl<'a> SharedOut<'a> {
    /// Wraps `y`, which must hold `rows · n` elements.
    pub(crate) fn new(y: &'a mut [f32], rows: usize, n: usize) -> SharedOut<'a> {
        assert_eq!(y.len(), rows * n, "shared output: length for [{rows}, {n}]");
        SharedOut {
            ptr: y.as_mut_ptr(),
            rows,
            n,
            _borrow: PhantomData,
        }
    }

    /// Columns `cols` of row `row`.
    ///
    /// # Safety
    /// While the returned slice lives, no other call may hand out an overlapping element:
    /// concurrent callers must use disjoint column ranges (or disjoint rows).
    #[allow(clippy::mut_from_ref)] // the whole point: disjoint mutable views of one buffer
    pub(crate) unsafe fn cols(&self, row: usize, cols: Range<usize>) -> &mut [f32] {
        assert!(row < self.rows && cols.start <= cols.end && cols.end <= self.n);
        // SAFETY: the range is inside the `rows · n` buffer borrowed for 'a (asserted above);
        // exclusivity of the elements is the caller's contract.
        unsafe {
            std::slice::from_raw_parts_mut(self.ptr.add(row * self.n + cols.start), cols.len())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[test]
    fn chunks_cover_every_index_once_with_aligned_starts() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(3)
            .build()
            .unwrap();
        for (n, align, per_thread) in [(1000, 8, 16), (1001, 32, 4), (70, 8, 16), (5, 8, 4)] {
            let seen = Mutex::new(vec![0u32; n]);
            pool.install(|| {
                for_each_range(n, align, MIN_PARALLEL_WORK, per_thread, |r| {
                    assert!(r.start.is_multiple_of(align) && r.end <= n, "{r:?}");
                    let mut s = seen.lock().unwrap();
                    r.for_each(|i| s[i] += 1);
                })
            });
            assert!(seen.into_inner().unwrap().iter().all(|&c| c == 1), "n {n}");
        }
    }
}
