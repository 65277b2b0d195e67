//! Fast CPU MoE: route-first, group each expert's tokens, one GEMM per active expert.
//! Twin of [`reference::moe`](super::reference::moe).
//!
//! # Design
//! The reference runs every (token, expert) pair as three GEMVs, re-reading an expert's
//! weights once per token that chose it. Here the `T·K` (token, expert) pairs are first
//! sorted by expert (a counting sort), each expert's token rows are gathered into a block,
//! and the expert runs once over the block: GEMM `w1` and `w3`, SiLU·mul, GEMM `w2`; the
//! rows are then scattered back into `y`, scaled by their routing weights. Each expert's
//! weights are therefore streamed once per call however many tokens chose it, experts no
//! token chose are never read, and a 1-token decode runs exactly its `K` experts as GEMVs
//! (the GEMM of a 1-row block is the GEMV path).
//!
//! All buffers live in a [`MoeScratch`] that the caller keeps between calls, so decode
//! steps allocate nothing once the first call has sized it.

use super::{Expert, Moe, silu};
use crate::Isa;
use crate::Weight;
use crate::matmul::cpu::{Gemv, MAX_GEMVS, gemv_many, matmul_at, matmul_batch_invariant};
use crate::matmul::{Matmul, Precision};

#[cfg(target_arch = "x86_64")]
#[path = "avx2.rs"]
mod avx2;
#[cfg(target_arch = "aarch64")]
#[path = "neon.rs"]
mod neon;

/// Most token rows one expert GEMM takes at a time: bounds the scratch (about 30 MiB at
/// Mixtral's `F = 14336`) while still giving the GEMM blocks of [`MAX_ROWS`] tokens.
const MAX_ROWS: usize = 256;

/// Buffers reused by [`moe`] across calls; they grow to the largest call and stay there.
#[derive(Debug, Default)]
pub struct MoeScratch {
    /// `E + 1` offsets into `pairs`: expert `e`'s pairs are `starts[e]..starts[e + 1]`.
    starts: Vec<usize>,
    /// Fill cursor per expert while sorting.
    cursor: Vec<usize>,
    /// `(token, routing weight)` of every pair, grouped by expert.
    pairs: Vec<(usize, f32)>,
    /// Gathered token rows `[rows, D]`.
    xs: Vec<f32>,
    /// `w1` output, then `silu(w1 x) ⊙ w3 x`: `[rows, F]`.
    gate: Vec<f32>,
    /// `w3` output `[rows, F]`.
    up: Vec<f32>,
    /// `w2` output `[rows, D]`.
    down: Vec<f32>,
}

impl MoeScratch {
    /// Empty buffers; the first [`moe`] call sizes them.
    pub fn new() -> MoeScratch {
        MoeScratch::default()
    }

    /// Buffers already sized for calls up to `p` with `n_experts` experts (so even the first
    /// call allocates nothing).
    pub fn with_capacity(p: Moe, n_experts: usize) -> MoeScratch {
        let mut s = MoeScratch::new();
        s.reserve(p, n_experts, (p.n_tokens * p.top_k).min(MAX_ROWS));
        s
    }

    fn reserve(&mut self, p: Moe, n_experts: usize, rows: usize) {
        grow(&mut self.starts, n_experts + 1);
        grow(&mut self.cursor, n_experts);
        if self.pairs.len() < p.n_tokens * p.top_k {
            self.pairs.resize(p.n_tokens * p.top_k, (0, 0.0));
        }
        grow(&mut self.xs, rows * p.hidden);
        grow(&mut self.down, rows * p.hidden);
        grow(&mut self.gate, rows * p.ffn);
        grow(&mut self.up, rows * p.ffn);
    }
}

/// Lengthens `v` to at least `n` (never shrinks, so steady-state calls do not allocate).
fn grow(v: &mut Vec<impl Default + Clone>, n: usize) {
    if v.len() < n {
        v.resize(n, Default::default());
    }
}

/// `y[t] = Σ_j weights[t, j] · expert[ids[t, j]](x[t])`: same contract as
/// [`reference::moe`](super::reference::moe) (`x`, `y`: `[T, D]`; `ids`, `weights`:
/// `[T, K]`), with the buffers in `scratch`. Per token, expert outputs are added in expert
/// order rather than `j` order (identical for `K = 2`). At [`Precision::Bf16`] the twin is
/// [`reference::moe_bf16`](super::reference::moe_bf16).
#[expect(
    clippy::too_many_arguments,
    reason = "the reference's six arguments plus the ISA, the precision and the scratch"
)]
pub fn moe(
    isa: Isa,
    precision: Precision,
    p: Moe,
    x: &[f32],
    ids: &[u32],
    weights: &[f32],
    experts: &[Expert<'_>],
    y: &mut [f32],
    scratch: &mut MoeScratch,
) {
    let inputs = (x, ids, weights);
    moe_in(isa, precision, p, inputs, experts, y, scratch, false)
}

/// [`moe`] with every expert's matmuls in the GEMM's order whatever the number of tokens
/// that chose it ([`matmul_batch_invariant`]), and each token's expert outputs summed in
/// expert order whatever the batch: a token's result is the same bits alone or batched.
#[expect(
    clippy::too_many_arguments,
    reason = "the reference's six arguments plus the ISA, the precision and the scratch"
)]
pub fn moe_batch_invariant(
    isa: Isa,
    precision: Precision,
    p: Moe,
    x: &[f32],
    ids: &[u32],
    weights: &[f32],
    experts: &[Expert<'_>],
    y: &mut [f32],
    scratch: &mut MoeScratch,
) {
    let inputs = (x, ids, weights);
    moe_in(isa, precision, p, inputs, experts, y, scratch, true)
}

#[expect(
    clippy::too_many_arguments,
    reason = "moe's arguments plus the summation order"
)]
fn moe_in(
    isa: Isa,
    precision: Precision,
    p: Moe,
    (x, ids, weights): (&[f32], &[u32], &[f32]),
    experts: &[Expert<'_>],
    y: &mut [f32],
    scratch: &mut MoeScratch,
    invariant: bool,
) {
    p.check(x, ids, weights, y);
    let (d, f, n_exp) = (p.hidden, p.ffn, experts.len());
    if p.n_tokens == 1 && 2 * p.top_k <= MAX_GEMVS && !invariant {
        return decode(isa, precision, p, (x, ids, weights), experts, y, scratch);
    }
    let matmul = |p: Matmul, x: &[f32], w: Weight<'_>, y: &mut [f32]| {
        if invariant {
            matmul_batch_invariant(isa, precision, p, x, w, y)
        } else {
            matmul_at(isa, precision, p, x, w, y)
        }
    };
    let s = scratch;
    s.reserve(p, n_exp, 0);
    // Counting sort of the (token, expert) pairs by expert.
    s.starts[..=n_exp].fill(0);
    for &e in ids {
        assert!((e as usize) < n_exp, "moe: expert id {e} of {n_exp}");
        s.starts[e as usize + 1] += 1;
    }
    for e in 0..n_exp {
        s.starts[e + 1] += s.starts[e];
    }
    s.cursor[..n_exp].copy_from_slice(&s.starts[..n_exp]);
    for (i, (&e, &wt)) in ids.iter().zip(weights).enumerate() {
        let c = &mut s.cursor[e as usize];
        s.pairs[*c] = (i / p.top_k, wt);
        *c += 1;
    }
    let largest = (0..n_exp).map(|e| s.starts[e + 1] - s.starts[e]).max();
    let rows_cap = largest.unwrap_or(0).min(MAX_ROWS);
    s.reserve(p, n_exp, rows_cap);
    y.fill(0.0);
    for (e, expert) in experts.iter().enumerate() {
        for start in (s.starts[e]..s.starts[e + 1]).step_by(rows_cap.max(1)) {
            let group = &s.pairs[start..s.starts[e + 1].min(start + rows_cap)];
            let m = group.len();
            let (xs, gate, up, down) = (
                &mut s.xs[..m * d],
                &mut s.gate[..m * f],
                &mut s.up[..m * f],
                &mut s.down[..m * d],
            );
            for (row, &(t, _)) in xs.chunks_exact_mut(d).zip(group) {
                row.copy_from_slice(&x[t * d..(t + 1) * d]);
            }
            let up_p = Matmul {
                rows: m,
                k: d,
                n: f,
            };
            matmul(up_p, xs, expert.w1, gate); // [m, F]
            matmul(up_p, xs, expert.w3, up); // [m, F]
            silu_mul(isa, gate, up);
            matmul(
                Matmul {
                    rows: m,
                    k: f,
                    n: d,
                },
                gate,
                expert.w2,
                down,
            ); // [m, D]
            for (row, &(t, wt)) in down.chunks_exact(d).zip(group) {
                let yt = &mut y[t * d..(t + 1) * d];
                yt.iter_mut().zip(row).for_each(|(o, &v)| *o += wt * v);
            }
        }
    }
}

/// One token: its `K` experts' up projections (`w1`, `w3`) as one parallel region, then their
/// down projections as another, then the weighted sum; only the chosen experts' weights are
/// read.
#[expect(
    clippy::too_many_arguments,
    reason = "moe's arguments, the routing grouped"
)]
fn decode(
    isa: Isa,
    precision: Precision,
    p: Moe,
    (x, ids, weights): (&[f32], &[u32], &[f32]),
    experts: &[Expert<'_>],
    y: &mut [f32],
    s: &mut MoeScratch,
) {
    let (d, f, k) = (p.hidden, p.ffn, p.top_k);
    for &e in ids {
        assert!(
            (e as usize) < experts.len(),
            "moe: expert id {e} of {}",
            experts.len()
        );
    }
    s.reserve(p, experts.len(), k);
    let (gate, up, down) = (
        &mut s.gate[..k * f],
        &mut s.up[..k * f],
        &mut s.down[..k * d],
    );
    let empty = || Gemv {
        x: &[],
        w: Weight::F32(&[]),
        y: &mut [],
    };
    let mut jobs: [Gemv<'_>; MAX_GEMVS] = std::array::from_fn(|_| empty());
    let pairs = gate.chunks_exact_mut(f).zip(up.chunks_exact_mut(f));
    for ((job, &e), (g, u)) in jobs.chunks_exact_mut(2).zip(ids).zip(pairs) {
        let ex = &experts[e as usize];
        job[0] = Gemv { x, w: ex.w1, y: g };
        job[1] = Gemv { x, w: ex.w3, y: u };
    }
    gemv_many(isa, precision, &mut jobs[..2 * k]);
    silu_mul(isa, gate, up);
    let mut jobs: [Gemv<'_>; MAX_GEMVS] = std::array::from_fn(|_| empty());
    let rows = gate.chunks_exact(f).zip(down.chunks_exact_mut(d));
    for ((job, &e), (h, o)) in jobs.iter_mut().zip(ids).zip(rows) {
        *job = Gemv {
            x: h,
            w: experts[e as usize].w2,
            y: o,
        };
    }
    gemv_many(isa, precision, &mut jobs[..k]);
    y.fill(0.0);
    for (row, &wt) in down.chunks_exact(d).zip(weights) {
        y.iter_mut().zip(row).for_each(|(o, &v)| *o += wt * v);
    }
}

/// `gate[i] = silu(gate[i]) · up[i]`, the SwiGLU product between `w1`/`w3` and `w2`.
/// The AVX2 path uses a polynomial `exp` (about 2 ulp), so results agree with
/// [`silu`] to a few ulp.
pub fn silu_mul(isa: Isa, gate: &mut [f32], up: &[f32]) {
    assert_eq!(gate.len(), up.len(), "silu_mul: lengths differ");
    match isa {
        Isa::Scalar => gate
            .iter_mut()
            .zip(up)
            .for_each(|(g, &u)| *g = silu(*g) * u),
        #[cfg(target_arch = "x86_64")]
        // SAFETY: both x86 SIMD variants exist only after AVX2, FMA and F16C were detected.
        Isa::Avx2Fma(_) | Isa::Avx512Bf16(_) => unsafe { avx2::silu_mul(gate, up) },
        #[cfg(target_arch = "aarch64")]
        // SAFETY: every aarch64 SIMD variant exists only after NEON was detected.
        Isa::Neon(_) | Isa::Dotprod(_) | Isa::I8mm(_) => unsafe { neon::silu_mul(gate, up) },
    }
}
