//! Measurements a benchmark reports beside its own figures: the machine's memory read bandwidth
//! (for the decode floor) and the process's peak resident memory.

use crate::Engine;
use rayon::prelude::*;
use std::time::Instant;

/// Reads a `bytes`-long buffer (larger than any cache) with the engine's threads, best of
/// `passes`, and returns the read bandwidth in bytes per second.
pub fn read_bandwidth(engine: &Engine, bytes: usize, passes: usize) -> f64 {
    let words = vec![1u64; bytes / 8];
    let chunk = words.len().div_ceil(engine.threads() * 4).max(1);
    let mut best = f64::MAX;
    for _ in 0..passes.max(1) {
        let start = Instant::now();
        let sum: u64 = engine.install(|| {
            words
                .par_chunks(chunk)
                .map(|c| c.iter().fold(0u64, |a, &w| a.wrapping_add(w)))
                .sum()
        });
        std::hint::black_box(sum);
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
