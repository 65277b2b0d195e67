//! The aarch64 bf16 GEMM at [`Precision::Bf16`](crate::matmul::Precision::Bf16) for bf16 weights, on
//! CPUs with FEAT_BF16 (`bfmmla`): one instruction multiplies a 2×4 block of two tokens'
//! bf16 activations by a 4×2 block of two weight rows into a 2×2 tile of f32 sums, sixteen
//! products where an f32 `fmla` does four, and the weights are used as stored (no widening).
//!
//! # Design
//! The activations are rounded to bf16 once per call, each row zero-padded to a multiple of 8
//! ([`reference::round_bf16`](crate::matmul::reference::round_bf16), so exactly the reference's
//! rounding). Threads split the output features in blocks of [`JB`], as the f32 path does.
//! A tile is [`MR`] tokens × [`NR`] weight rows over the whole of `k`: per 8 columns, each
//! weight row and token row is loaded once, pairs of rows are interleaved four columns at a
//! time into `bfmmla`'s operands, and eight accumulators (four token pairs × two weight
//! pairs) stay in registers. Weight rows are read where they lie in the mapping; a row's
//! last `k mod 8` columns are copied into a zero-padded buffer so no byte past the matrix is
//! read.
//!
//! Numerics: `bfmmla` without FEAT_EBF16 adds with round-to-odd and flushes denormal inputs
//! and results to zero, so sums agree with the reference (round, then f32 matmul) to f32
//! rounding, not bit for bit, and inputs below 2^-126 count as zero (as on AVX512-BF16).

use super::Matmul;
use crate::matmul::reference::round_bf16;
use crate::threads::{SharedOut, for_each_range, for_each_row_mut};
use half::bf16;
use std::arch::aarch64::*;
use std::cell::RefCell;
use std::ops::Range;

/// Tokens per tile: four `bfmmla` token pairs.
const MR: usize = 8;
/// Weight rows per tile: two `bfmmla` weight pairs.
const NR: usize = 4;
/// Weight rows per thread chunk.
const JB: usize = 16;

thread_local! {
    /// Rounded activations of the calling thread's last call, reused between calls.
    static XB: RefCell<Vec<u16>> = const { RefCell::new(Vec::new()) };
}

/// `y = bf16(x) · Wᵀ` for bf16 `W`: same contract as
/// [`reference::matmul_bf16`](crate::matmul::reference::matmul_bf16), to f32 rounding (see the
/// module doc for denormals).
///
/// # Safety
/// The CPU must support NEON and FEAT_BF16 (an `Isa::I8mm` exists).
pub(super) unsafe fn matmul(p: Matmul, x: &[f32], w: &[bf16], y: &mut [f32]) {
    p.check(x.len(), w.len(), y.len());
    if p.k == 0 {
        y.fill(0.0);
        return;
    }
    let stride = p.k.div_ceil(8) * 8;
    // Taken out of the thread-local (not borrowed), so a job this thread runs while it
    // waits can never find it borrowed.
    let mut xb = XB.take();
    xb.clear();
    xb.resize(p.rows * stride, 0);
    for_each_row_mut(&mut xb, stride, p.k, |r, row| {
        for (d, &v) in row.iter_mut().zip(&x[r * p.k..(r + 1) * p.k]) {
            *d = (round_bf16(v).to_bits() >> 16) as u16;
        }
    });
    let out = SharedOut::new(y, p.rows, p.n);
    let xs = &xb[..];
    for_each_range(p.n, JB, p.rows * p.k, 4, |cols| {
        // SAFETY: features per this function's contract; only this call writes `cols`.
        unsafe { gemm(p, xs, stride, w, &out, cols) }
    });
    XB.set(xb);
}

/// Output features `cols` of every token.
///
/// # Safety
/// NEON and FEAT_BF16; `xb` holds `p.rows` rows of `stride` (a multiple of 8, at least
/// `p.k`) rounded activations; only this call writes `cols` of `out`.
#[target_feature(enable = "neon,bf16")]
unsafe fn gemm(
    p: Matmul,
    xb: &[u16],
    stride: usize,
    w: &[bf16],
    out: &SharedOut<'_>,
    cols: Range<usize>,
) {
    let k = p.k;
    assert!(xb.len() == p.rows * stride && stride >= k && stride.is_multiple_of(8));
    assert!(w.len() == p.n * k && cols.end <= p.n);
    let k8 = k / 8 * 8;
    let w = w.as_ptr().cast::<u16>();
    for j in cols.clone().step_by(NR) {
        let nr = NR.min(cols.end - j);
        // SAFETY: rows `j..j + nr` lie inside `w` (asserted); a short tile repeats its last
        // row, whose results are not written.
        let rows: [*const u16; NR] =
            std::array::from_fn(|i| unsafe { w.add((j + i.min(nr - 1)) * k) });
        let mut tail = [[0u16; 8]; NR];
        for (t, &r) in tail.iter_mut().zip(&rows) {
            // SAFETY: columns `k8..k` of a row inside `w`.
            let src = unsafe { std::slice::from_raw_parts(r.add(k8), k - k8) };
            t[..k - k8].copy_from_slice(src);
        }
        for t0 in (0..p.rows).step_by(MR) {
            let mr = MR.min(p.rows - t0);
            // SAFETY: token rows `t0..t0 + mr` of `xb` (asserted length); a short tile
            // repeats its last row, whose results are not written.
            let toks: [*const u16; MR] =
                std::array::from_fn(|i| unsafe { xb.as_ptr().add((t0 + i.min(mr - 1)) * stride) });
            // SAFETY: `tile`'s bounds: `k8` columns of every row pointer, the padded tail of
            // each token row (`stride >= k8 + 8` when `k8 < k`), and `tail`.
            let r = unsafe { tile(&toks, &rows, k8, (k8 < k).then_some(&tail)) };
            for (t, rt) in r.iter().enumerate().take(mr) {
                // SAFETY: these columns lie in `cols`, which only this call writes.
                unsafe { out.cols(t0 + t, j..j + nr) }.copy_from_slice(&rt[..nr]);
            }
        }
    }
}

/// `r[t][i] = Σ_c x_t[c] · w_i[c]` over `k8` columns read in place and, when `tail` is given,
/// 8 more: columns `k8..k8 + 8` of the (zero-padded) token rows against `tail`.
///
/// # Safety
/// NEON and FEAT_BF16; every pointer in `x` and `w` has `k8` readable elements, and the token
/// rows 8 more when `tail` is given.
#[inline(always)]
unsafe fn tile(
    x: &[*const u16; MR],
    w: &[*const u16; NR],
    k8: usize,
    tail: Option<&[[u16; 8]; NR]>,
) -> [[f32; NR]; MR] {
    // SAFETY: per this function's contract.
    unsafe {
        let mut acc = [[vdupq_n_f32(0.0); NR / 2]; MR / 2];
        for c in (0..k8).step_by(8) {
            step(
                &mut acc,
                x,
                std::array::from_fn(|i| vld1q_u16(w[i].add(c))),
                c,
            );
        }
        if let Some(tail) = tail {
            step(
                &mut acc,
                x,
                std::array::from_fn(|i| vld1q_u16(tail[i].as_ptr())),
                k8,
            );
        }
        let mut r = [[0f32; NR]; MR];
        for (tp, a) in acc.iter().enumerate() {
            for (q, aq) in a.iter().enumerate() {
                let mut lanes = [0f32; 4];
                vst1q_f32(lanes.as_mut_ptr(), *aq);
                // Lanes: [x0·w0, x0·w1, x1·w0, x1·w1] of token pair `tp`, weight pair `q`.
                r[2 * tp][2 * q] = lanes[0];
                r[2 * tp][2 * q + 1] = lanes[1];
                r[2 * tp + 1][2 * q] = lanes[2];
                r[2 * tp + 1][2 * q + 1] = lanes[3];
            }
        }
        r
    }
}

/// One step of [`tile`]: the weight rows' 8 values `wv` against columns `c..c + 8` of every
/// token row. (A function, not a closure: a closure would not inherit the target features.)
///
/// # Safety
/// NEON and FEAT_BF16; every token row has 8 readable elements at `c`.
#[inline(always)]
unsafe fn step(
    acc: &mut [[float32x4_t; NR / 2]; MR / 2],
    x: &[*const u16; MR],
    wv: [uint16x8_t; NR],
    c: usize,
) {
    // SAFETY: per this function's contract.
    unsafe {
        let wp: [(uint16x8_t, uint16x8_t); NR / 2] =
            [interleave(wv[0], wv[1]), interleave(wv[2], wv[3])];
        for (tp, a) in acc.iter_mut().enumerate() {
            let (lo, hi) = interleave(vld1q_u16(x[2 * tp].add(c)), vld1q_u16(x[2 * tp + 1].add(c)));
            for (aq, &(wlo, whi)) in a.iter_mut().zip(&wp) {
                *aq = bfmmla(bfmmla(*aq, lo, wlo), hi, whi);
            }
        }
    }
}

/// Two rows' eight values as `bfmmla`'s 2×4 operands: `(columns 0..4, columns 4..8)`.
#[inline(always)]
unsafe fn interleave(a: uint16x8_t, b: uint16x8_t) -> (uint16x8_t, uint16x8_t) {
    // SAFETY: register-only NEON.
    unsafe {
        let (a, b) = (vreinterpretq_u64_u16(a), vreinterpretq_u64_u16(b));
        (
            vreinterpretq_u16_u64(vzip1q_u64(a, b)),
            vreinterpretq_u16_u64(vzip2q_u64(a, b)),
        )
    }
}

/// `acc + a · bᵀ` for 2×4 bf16 `a` and `b`.
///
/// # Safety
/// The CPU must support FEAT_BF16.
#[inline(always)]
unsafe fn bfmmla(mut acc: float32x4_t, a: uint16x8_t, b: uint16x8_t) -> float32x4_t {
    // SAFETY: `bfmmla` needs FEAT_BF16, which the caller guarantees. Inline assembly because
    // its intrinsic is not stable; it touches registers only.
    unsafe {
        std::arch::asm!(
            "bfmmla {acc:v}.4s, {a:v}.8h, {b:v}.8h",
            acc = inout(vreg) acc,
            a = in(vreg) a,
            b = in(vreg) b,
            options(pure, nomem, nostack, preserves_flags)
        );
    }
    acc
}
