//! Fast CPU attention: one pass over the visible KV rows per (token, KV head) with an online
//! softmax; the query heads of a GQA group share every K and V row load. Twin of
//! [`reference::attention`](super::reference::attention).
//!
//! # Design
//! A task is one token and one KV head `g`; it owns the output rows of the group's query
//! heads (`H/G` heads, contiguous in `out`), so tasks never share memory and run on the
//! caller's threads when there is enough work. Keys are visited in blocks of [`BLOCK`]
//! positions (cut at page ends in a paged cache, so a block's rows are one stride apart): scores for the block (each K row loaded once for the group's heads), then the
//! running max/sum is rescaled once per block (flash-attention's online softmax), then the
//! block's value rows are accumulated into the output with the accumulators in registers
//! across the block ([`Lanes::scores`], [`Lanes::accumulate`]). Nothing is allocated.

use super::{Attention, Kv};
use crate::Isa;
use crate::isa::Elem;
use crate::threads::for_each_row_mut;

#[cfg(target_arch = "x86_64")]
#[path = "avx2.rs"]
mod avx2;
#[cfg(target_arch = "aarch64")]
#[path = "neon.rs"]
mod neon;

/// KV positions per online-softmax step.
const BLOCK: usize = 64;
/// How many KV positions ahead the K rows are prefetched.
const PREFETCH: usize = 32;
/// Query heads scored together (their scores live on the stack).
const HEADS: usize = 8;

/// Same contract as [`reference::attention`](super::reference::attention): `q`, `out`:
/// `[T, H·Dh]`; `k`, `v`: `[S, G·Dh]` with row `s` holding position `s`.
#[expect(
    clippy::too_many_arguments,
    reason = "the reference's six arguments plus the ISA"
)]
pub fn attention(
    isa: Isa,
    p: Attention,
    q: &[f32],
    positions: &[usize],
    k: &[f32],
    v: &[f32],
    out: &mut [f32],
) {
    attention_kv(isa, p, q, positions, Kv::by_position(p, k, v), out)
}

/// [`attention`] over keys and values in any [`Kv`] layout; same contract as
/// [`reference::attention_kv`](super::reference::attention_kv).
pub fn attention_kv<T: Elem>(
    isa: Isa,
    p: Attention,
    q: &[f32],
    positions: &[usize],
    kv: Kv<'_, T>,
    out: &mut [f32],
) {
    let (dh, q_width) = (p.head_dim, p.n_heads * p.head_dim);
    assert_eq!(
        q.len(),
        positions.len() * q_width,
        "attention: q length for {p:?}"
    );
    assert_eq!(out.len(), q.len(), "attention: out length for {p:?}");
    kv.check(p);
    if out.is_empty() {
        return;
    }
    let cached = kv.len;
    for &pos in positions {
        assert!(
            pos < cached,
            "attention: position {pos} is not in the cache of {cached}"
        );
    }
    let chunk = q_width / p.n_kv_heads; // the group's query heads, [H/G · Dh]
    let task = |(i, o): (usize, &mut [f32])| {
        let (t, g) = (i / p.n_kv_heads, i % p.n_kv_heads);
        let pos = positions[t];
        let job = Group {
            p,
            q: &q[i * chunk..(i + 1) * chunk],
            kv,
            g,
            visible: p.first_visible(pos)..pos + 1,
        };
        match isa {
            // SAFETY: the scalar primitives use no target features.
            Isa::Scalar => unsafe { job.run::<Scalar>(o) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: both x86 SIMD variants exist only after AVX2, FMA and F16C were detected.
            Isa::Avx2Fma(_) | Isa::Avx512Bf16(_) => unsafe { avx2::run(&job, o) },
            #[cfg(target_arch = "aarch64")]
            // SAFETY: every aarch64 SIMD variant exists only after NEON was detected.
            Isa::Neon(_) | Isa::Dotprod(_) | Isa::I8mm(_) => unsafe { neon::run(&job, o) },
        }
    };
    let span = positions
        .iter()
        .map(|&s| s + 1 - p.first_visible(s))
        .sum::<usize>();
    let groups = out.len() / chunk.max(1);
    let cost = span * p.n_heads * dh * 2 / groups.max(1);
    for_each_row_mut(out, chunk, cost, |i, o| task((i, o)));
}

/// Vector primitives one ISA provides to [`Group::run`].
pub(crate) trait Lanes {
    /// `Σ a[i] · b[i]`.
    ///
    /// # Safety
    /// The ISA's features must be available.
    unsafe fn dot<T: Elem>(a: &[f32], b: &[T]) -> f32;
    /// `y = y · scale + alpha · x`.
    ///
    /// # Safety
    /// The ISA's features must be available.
    unsafe fn scale_axpy<T: Elem>(y: &mut [f32], scale: f32, alpha: f32, x: &[T]);
    /// `s[i] = e^(s[i] - max)`; returns `Σ s[i]`.
    ///
    /// # Safety
    /// The ISA's features must be available.
    unsafe fn exp_sum(s: &mut [f32], max: f32) -> f32;
    /// `sc[h][i] = scale · (q_h · k_i)` for every head `h` of `q` (`[hn · Dh]`) and row `i`
    /// of the block. Generic version: one dot product per pair.
    ///
    /// # Safety
    /// The ISA's features must be available.
    #[inline(always)]
    unsafe fn scores<T: Elem>(q: &[f32], k: Rows<'_, T>, scale: f32, sc: &mut Scores)
    where
        Self: Sized,
    {
        // SAFETY: features per this function's contract.
        unsafe { scores_each::<Self, T>(q, k, scale, sc) }
    }
    /// `o_h = o_h · alpha[h] + Σ_i sc[h][i] · v_i` for every head `h` of `o` (`[hn · Dh]`).
    /// Generic version: one axpy per pair.
    ///
    /// # Safety
    /// The ISA's features must be available.
    #[inline(always)]
    unsafe fn accumulate<T: Elem>(o: &mut [f32], alpha: &[f32; HEADS], sc: &Scores, v: Rows<'_, T>)
    where
        Self: Sized,
    {
        // SAFETY: features per this function's contract.
        unsafe { accumulate_each::<Self, T>(o, alpha, sc, v) }
    }
    /// Starts loading `row` into the cache. KV rows are `G·Dh` floats apart, a new 4 KiB
    /// page per position at Mixtral's sizes, where hardware prefetchers stop: without this
    /// the decode pass runs at cache-miss latency (measured: 1 GB/s).
    ///
    /// # Safety
    /// The ISA's features must be available.
    unsafe fn prefetch<T: Elem>(row: &[T]);
}

/// [`Lanes::scores`] as one [`Lanes::dot`] per (head, row).
///
/// # Safety
/// `L`'s features must be available.
#[inline(always)]
pub(crate) unsafe fn scores_each<L: Lanes, T: Elem>(
    q: &[f32],
    k: Rows<'_, T>,
    scale: f32,
    sc: &mut Scores,
) {
    for (qh, row) in q.chunks_exact(k.dh).zip(sc.iter_mut()) {
        for (i, s) in row[..k.n].iter_mut().enumerate() {
            // SAFETY: features per this function's contract.
            *s = unsafe { L::dot(qh, k.row(i)) } * scale;
        }
    }
}

/// [`Lanes::accumulate`] as one [`Lanes::scale_axpy`] per (head, row).
///
/// # Safety
/// `L`'s features must be available.
#[inline(always)]
pub(crate) unsafe fn accumulate_each<L: Lanes, T: Elem>(
    o: &mut [f32],
    alpha: &[f32; HEADS],
    sc: &Scores,
    v: Rows<'_, T>,
) {
    for (h, oh) in o.chunks_exact_mut(v.dh).enumerate() {
        oh.iter_mut().for_each(|x| *x *= alpha[h]);
        for (i, &p) in sc[h][..v.n].iter().enumerate() {
            // SAFETY: features per this function's contract.
            unsafe { L::scale_axpy(oh, 1.0, p, v.row(i)) };
        }
    }
}

/// Portable primitives.
pub(crate) struct Scalar;

impl Lanes for Scalar {
    #[inline(always)]
    unsafe fn dot<T: Elem>(a: &[f32], b: &[T]) -> f32 {
        // Eight partial sums, which the compiler keeps in vector lanes.
        let mut acc = [0f32; 8];
        let (ac, bc) = (a.chunks_exact(8), b.chunks_exact(8));
        let tail: f32 = ac
            .remainder()
            .iter()
            .zip(bc.remainder())
            .map(|(x, y)| x * y.widen())
            .sum();
        for (x, y) in ac.zip(bc) {
            for l in 0..8 {
                acc[l] += x[l] * y[l].widen();
            }
        }
        acc.iter().sum::<f32>() + tail
    }

    #[inline(always)]
    unsafe fn scale_axpy<T: Elem>(y: &mut [f32], scale: f32, alpha: f32, x: &[T]) {
        y.iter_mut()
            .zip(x)
            .for_each(|(o, &v)| *o = *o * scale + alpha * v.widen());
    }

    #[inline(always)]
    unsafe fn prefetch<T: Elem>(_row: &[T]) {}

    #[inline(always)]
    unsafe fn exp_sum(s: &mut [f32], max: f32) -> f32 {
        s.iter_mut().fold(0.0, |acc, v| {
            *v = (*v - max).exp();
            acc + *v
        })
    }
}

/// One block's scores (then probabilities) per query head: `[head][position in block]`.
pub(crate) type Scores = [[f32; BLOCK]; HEADS];

/// One KV head's `Dh`-long slices of `n` consecutive cache rows (`k` or `v`) of a block.
#[derive(Clone, Copy)]
pub(crate) struct Rows<'a, T: Elem = f32> {
    m: &'a [T],
    /// Offset of row 0's slice in `m`.
    first: usize,
    /// Floats from one row to the next (`G · Dh`).
    stride: usize,
    pub(crate) n: usize,
    pub(crate) dh: usize,
}

impl<'a, T: Elem> Rows<'a, T> {
    fn new(m: &'a [T], first: usize, stride: usize, n: usize, dh: usize) -> Rows<'a, T> {
        assert!(
            n == 0 || first + (n - 1) * stride + dh <= m.len(),
            "attention: rows out of the cache"
        );
        Rows {
            m,
            first,
            stride,
            n,
            dh,
        }
    }

    /// Row `i`'s slice.
    #[inline(always)]
    pub(crate) fn row(&self, i: usize) -> &'a [T] {
        &self.m[self.first + i * self.stride..][..self.dh]
    }

    /// Row `i`'s first element; rows `0..n` are in bounds (checked in `new`).
    #[inline(always)]
    pub(crate) fn ptr(&self, i: usize) -> *const T {
        debug_assert!(i < self.n);
        self.m[self.first..].as_ptr().wrapping_add(i * self.stride)
    }
}

/// One (token, KV head) task.
pub(crate) struct Group<'a, T: Elem = f32> {
    p: Attention,
    /// The group's query heads, `[H/G · Dh]`.
    q: &'a [f32],
    kv: Kv<'a, T>,
    /// KV head.
    g: usize,
    /// Positions this token sees.
    visible: std::ops::Range<usize>,
}

impl<T: Elem> Group<'_, T> {
    /// This group's `Dh` slice of KV row `s` of `m` (`k` or `v`).
    #[inline(always)]
    fn row<'m>(&self, m: &'m [T], s: usize) -> &'m [T] {
        &m[self.kv.offset(self.g, s)..][..self.p.head_dim]
    }

    /// Writes the group's `[H/G · Dh]` output rows into `o`.
    ///
    /// # Safety
    /// `L`'s features must be available.
    #[inline(always)]
    pub(crate) unsafe fn run<L: Lanes>(&self, o: &mut [f32]) {
        let dh = self.p.head_dim;
        let scale = 1.0 / (dh as f32).sqrt();
        let group = o.len() / dh;
        o.fill(0.0);
        for h0 in (0..group).step_by(HEADS) {
            let hn = HEADS.min(group - h0);
            // SAFETY: features per this function's contract.
            unsafe {
                for s in self.visible.clone().take(PREFETCH) {
                    L::prefetch(self.row(self.kv.k, s));
                }
            }
            let (mut max, mut sum) = ([f32::NEG_INFINITY; HEADS], [0f32; HEADS]);
            let mut scores = [[0f32; BLOCK]; HEADS];
            let heads = h0 * dh..(h0 + hn) * dh;
            let mut s0 = self.visible.start;
            while s0 < self.visible.end {
                // A block never crosses a page: its rows are one stride apart.
                let sn = BLOCK
                    .min(self.visible.end - s0)
                    .min(self.kv.run_end(s0) - s0);
                for s in s0..s0 + sn {
                    // SAFETY: features per this function's contract.
                    unsafe {
                        // This block's V row (read after the scores) and a K row ahead.
                        L::prefetch(self.row(self.kv.v, s));
                        if s + PREFETCH < self.visible.end {
                            L::prefetch(self.row(self.kv.k, s + PREFETCH));
                        }
                    }
                }
                let (first, stride) = (self.kv.offset(self.g, s0), self.kv.row_stride);
                let k = Rows::new(self.kv.k, first, stride, sn, dh);
                // SAFETY: features per this function's contract.
                unsafe { L::scores(&self.q[heads.clone()], k, scale, &mut scores) };
                let mut alpha = [0f32; HEADS];
                for h in 0..hn {
                    let block_max = scores[h][..sn]
                        .iter()
                        .copied()
                        .fold(f32::NEG_INFINITY, f32::max);
                    let new_max = max[h].max(block_max);
                    alpha[h] = (max[h] - new_max).exp();
                    // SAFETY: features per this function's contract.
                    sum[h] =
                        sum[h] * alpha[h] + unsafe { L::exp_sum(&mut scores[h][..sn], new_max) };
                    max[h] = new_max;
                }
                let v = Rows::new(self.kv.v, first, stride, sn, dh);
                // SAFETY: features per this function's contract.
                unsafe { L::accumulate(&mut o[heads.clone()], &alpha, &scores, v) };
                s0 += sn;
            }
            for h in 0..hn {
                let inv = 1.0 / sum[h];
                o[(h0 + h) * dh..][..dh].iter_mut().for_each(|x| *x *= inv);
            }
        }
    }
}
