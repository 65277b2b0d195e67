//! Measurements a benchmark reports beside its own figures: the machine's memory read bandwidth
//! (for the decode floor) and the process's peak resident memory.

use crate::Engine;
use mixtral_kernels::threads::for_each_range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// Reads a `bytes`-long buffer (larger than any cache) with the engine's threads, best of
/// `passes`, and returns the read bandwidth in bytes per second.
pub fn read_bandwidth(engine: &Engine, bytes: usize, passes: usize) -> f64 {
    let words = vec![1u64; bytes / 8];
    let mut best = f64::MAX;
    for _ in 0..passes.max(1) {
        let start = Instant::now();
        let sum = AtomicU64::new(0);
        engine.install(|| {
            // The threads and chunk handout the GEMV uses, so the floor is like for like.
            for_each_range(words.len(), 8, 1 << 16, 4, |r| {
                let s = words[r].iter().fold(0u64, |a, &w| a.wrapping_add(w));
                sum.fetch_add(s, Ordering::Relaxed);
            })
        });
        std::hint::black_box(sum.into_inner());
        best = best.min(start.elapsed().as_secs_f64());
    }
    (words.len() * 8) as f64 / best
}

/// The most resident memory this process has used (`VmHWM`), where the OS reports it.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}
