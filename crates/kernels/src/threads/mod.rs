//! How the fast CPU kernels share work between threads: split an index range into chunks,
//! and a shared output whose disjoint parts threads write.
//!
//! Kernels never build pools of their own: the caller decides the threads by calling them
//! inside [`Team::run`] (what the engine does: helpers that stay awake between the short
//! regions of a decode step) or inside a rayon `ThreadPool::install` (or rayon's global pool).
//! A region started from inside another region's chunk runs serially, so nesting never
//! oversubscribes the cores.

mod team;

pub use team::Team;
use team::{Dispatch, dispatch};

use rayon::prelude::*;
use std::marker::PhantomData;
use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Below this many multiply-adds (or comparable units) a call runs on the calling thread:
/// waking the pool costs a few microseconds, as much as this much work.
pub(crate) const MIN_PARALLEL_WORK: usize = 1 << 16;

/// The least work worth a chunk of its own: handing out a chunk costs an atomic increment on
/// a cache line both cores write (~0.1 µs), as much as ~10 µs of work split 100 ways.
const MIN_CHUNK_WORK: usize = 1 << 15;

/// Runs `f` over chunks of `0..n` whose starts are multiples of `align`, in parallel when
/// `n · cost_per_item` is large enough to pay for it, about `per_thread` chunks per thread.
///
/// Chunks are handed out one at a time from a shared counter (not split up front), so a
/// thread that wakes late or runs slower simply takes fewer of them, and the region ends
/// within one chunk of perfect balance. Callers whose chunks carry a fixed cost (the GEMM
/// packs its activations per chunk) ask for few; the GEMV, whose chunks cost nothing extra,
/// asks for many (measured in decode: with 4 per thread the two threads were busy 89% of
/// each GEMV region, mostly waiting for the last chunk).
pub fn for_each_range(
    n: usize,
    align: usize,
    cost_per_item: usize,
    per_thread: usize,
    f: impl Fn(Range<usize>) + Sync + Send,
) {
    let (how, threads) = dispatch();
    if n == 0 {
        return;
    }
    let total = n.saturating_mul(cost_per_item);
    if threads <= 1 || total < MIN_PARALLEL_WORK || n <= align {
        f(0..n);
        return;
    }
    let pieces = (threads * per_thread.max(1))
        .min(n.div_ceil(align))
        .min((total / MIN_CHUNK_WORK).max(threads));
    let chunk = n.div_ceil(pieces).div_ceil(align) * align;
    let chunks = n.div_ceil(chunk);
    let range = |c: usize| c * chunk..n.min((c + 1) * chunk);
    match how {
        Dispatch::Serial => (0..chunks).for_each(|c| f(range(c))),
        Dispatch::Team(team) => team.for_each_chunk(chunks, &|c| f(range(c))),
        Dispatch::Rayon => on_rayon(chunks, threads, |c| f(range(c))),
    }
}

/// Hands `chunks` out from a shared counter to `threads` rayon jobs.
fn on_rayon(chunks: usize, threads: usize, f: impl Fn(usize) + Sync + Send) {
    let next = AtomicUsize::new(0);
    (0..threads.min(chunks)).into_par_iter().for_each(|_| {
        loop {
            let c = next.fetch_add(1, Ordering::Relaxed);
            if c >= chunks {
                break;
            }
            f(c);
        }
    });
}

/// Runs `f(i, row)` for every `width`-long row of `data` (the last may be shorter), rows
/// spread over the threads when `rows · cost_per_row` is worth it.
pub(crate) fn for_each_row_mut<T: Send>(
    data: &mut [T],
    width: usize,
    cost_per_row: usize,
    f: impl Fn(usize, &mut [T]) + Sync + Send,
) {
    if width == 0 {
        return;
    }
    let rows = data.len().div_ceil(width);
    let len = data.len();
    let base = SendPtr(data.as_mut_ptr());
    for_each_range(rows, 1, cost_per_row, 4, |range| {
        let base = &base;
        for i in range {
            let start = i * width;
            let end = len.min(start + width);
            // SAFETY: `start..end` lies inside `data`, which is borrowed mutably for this
            // call, and each row index is handed to exactly one chunk, so the rows that run
            // at the same time are disjoint.
            let row = unsafe { std::slice::from_raw_parts_mut(base.0.add(start), end - start) };
            f(i, row);
        }
    });
}

/// A pointer the row closure may carry across threads (see [`for_each_row_mut`]).
struct SendPtr<T>(*mut T);
// SAFETY: only used to rebuild disjoint `&mut [T]` rows of a slice of `T: Send`.
unsafe impl<T: Send> Sync for SendPtr<T> {}
// SAFETY: as above.
unsafe impl<T: Send> Send for SendPtr<T> {}

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
    use std::collections::HashSet;
    use std::sync::Mutex;
    use std::time::Duration;

    const CASES: [(usize, usize, usize); 4] =
        [(1000, 8, 16), (1001, 32, 4), (70, 8, 16), (5, 8, 4)];

    /// Runs every case once and checks each index was visited exactly once, at aligned starts.
    fn cover_every_index_once() {
        for (n, align, per_thread) in CASES {
            let seen = Mutex::new(vec![0u32; n]);
            for_each_range(n, align, MIN_PARALLEL_WORK, per_thread, |r| {
                assert!(r.start.is_multiple_of(align) && r.end <= n, "{r:?}");
                let mut s = seen.lock().unwrap();
                r.for_each(|i| s[i] += 1);
            });
            assert!(seen.into_inner().unwrap().iter().all(|&c| c == 1), "n {n}");
        }
    }

    #[test]
    fn chunks_cover_every_index_once_on_a_rayon_pool() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(3)
            .build()
            .unwrap();
        pool.install(cover_every_index_once);
    }

    #[test]
    fn chunks_cover_every_index_once_on_a_team() {
        let team = Team::new(3).unwrap();
        team.run(|| {
            // Many regions back to back (helpers spinning), then one after they went to sleep.
            for _ in 0..200 {
                cover_every_index_once();
            }
            std::thread::sleep(Duration::from_millis(20));
            cover_every_index_once();
        });
        // And a second leader turn on the same team.
        team.run(cover_every_index_once);
    }

    #[test]
    fn a_team_region_runs_on_several_threads() {
        let team = Team::new(3).unwrap();
        let threads = Mutex::new(HashSet::new());
        team.run(|| {
            for_each_range(60, 1, MIN_PARALLEL_WORK, 20, |_| {
                threads.lock().unwrap().insert(std::thread::current().id());
                std::thread::sleep(Duration::from_millis(1));
            })
        });
        let n = threads.into_inner().unwrap().len();
        assert!(n >= 2, "60 chunks of 1 ms ran on {n} thread(s)");
    }

    #[test]
    fn a_region_inside_a_chunk_runs_serially_and_completely() {
        let team = Team::new(2).unwrap();
        let total = AtomicUsize::new(0);
        team.run(|| {
            for_each_range(8, 1, MIN_PARALLEL_WORK, 4, |outer| {
                let me = std::thread::current().id();
                for _ in outer {
                    for_each_range(100, 1, MIN_PARALLEL_WORK, 4, |inner| {
                        assert_eq!(
                            std::thread::current().id(),
                            me,
                            "nested region left its thread"
                        );
                        total.fetch_add(inner.len(), Ordering::Relaxed);
                    });
                }
            })
        });
        assert_eq!(total.into_inner(), 800);
    }

    #[test]
    fn a_panic_in_a_region_reaches_the_leader_and_the_team_still_works() {
        let team = Team::new(2).unwrap();
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            team.run(|| {
                for_each_range(64, 1, MIN_PARALLEL_WORK, 16, |r| {
                    std::thread::sleep(Duration::from_micros(200));
                    assert!(!r.contains(&40), "chunk with 40");
                })
            })
        }));
        assert!(caught.is_err());
        team.run(cover_every_index_once);
    }

    #[test]
    fn rows_are_handed_out_whole_with_their_index() {
        let team = Team::new(2).unwrap();
        let mut data = vec![0usize; 10 * 7 + 3];
        team.run(|| {
            for_each_row_mut(&mut data, 7, MIN_PARALLEL_WORK, |i, row| {
                assert_eq!(row.len(), if i == 10 { 3 } else { 7 });
                row.iter_mut().for_each(|v| *v = i + 1);
            })
        });
        assert!(data.iter().enumerate().all(|(j, &v)| v == j / 7 + 1));
    }
}
