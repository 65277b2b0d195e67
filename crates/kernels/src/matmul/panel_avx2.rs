//! The AVX2/FMA GEMM on packed weight panels: the f32 GEMM of many tokens (prefill, an
//! expert's share of a prompt) for f32, bf16 and f16 weights, in the summation order that
//! does not promise batch invariance (`Order::Fastest`).
//!
//! # Design
//! The tiles of [`Tiles`](super::Tiles) keep one 8-lane accumulator per (token, weight row)
//! along `k` and pay a horizontal sum per output and block; a 4 × 2 tile loads six vectors per
//! eight FMAs and has just the eight chains in flight that FMA latency needs (measured: ~45%
//! of the f32 FMA peak at the 8x7B expert shape). Here, as BLIS does, the lanes run along the
//! output features instead:
//! - per block of [`KC`] columns and [`NR`] = 16 weight rows, the weights are widened to f32
//!   once and packed as `[kc][16]` (a panel, 16 KiB, which stays in L1);
//! - the tokens' activations of the block are copied into rows `kc` apart (unpacked rows a
//!   power of two apart would share L1 sets with the panel);
//! - a tile of up to [`MR`] = 6 tokens × 16 features keeps 12 accumulators in registers; per
//!   column it loads two panel vectors, broadcasts each token's activation and issues 12
//!   FMAs. The accumulators are the outputs themselves: no horizontal sum.
//!
//! Each output sums its columns in order within a block and the blocks are added in order, a
//! different order from the dot-product tiles'. The batch-invariant order needs every row to
//! sum as a call of one row does (`gemv_in_gemm_order`, which streams `W` in place with the
//! dot-product tiles; a one-row panel would pay its packing for a single use), so this path
//! serves only calls that did not ask for that order.

use super::{KC, MC, PACKED, copy_x_block};
use crate::isa::Elem;
use crate::matmul::Matmul;
use crate::threads::SharedOut;
use std::arch::x86_64::*;
use std::ops::Range;

/// Weight rows (output features) per panel: two 8-lane vectors.
pub(super) const NR: usize = 16;
/// Most tokens per tile: 6 × 2 accumulators, two panel vectors and a broadcast use 15 of the
/// 16 vector registers.
const MR: usize = 6;

/// GEMM output columns `cols` of every token: `y[t, j] = Σ_i x[t, i] · W[j, i]`.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C; `out` must wrap `[p.rows, p.n]` and no other
/// thread may write the columns `cols` meanwhile.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn gemm<T: Elem>(
    p: Matmul,
    x: &[f32],
    w: &[T],
    out: &SharedOut<'_>,
    cols: Range<usize>,
) {
    let k = p.k;
    assert!(x.len() >= p.rows * k && w.len() >= cols.end * k && cols.end <= p.n);
    // The dot-product GEMM's per-thread buffers (the same sizes: `JB · KC == KC · NR`; the two
    // never nest), taken out of the thread-local rather than borrowed through a closure: a
    // closure does not inherit this function's target features, and the micro-kernel would
    // not inline.
    let (mut xb, mut panel) = PACKED.take();
    xb.resize(MC * KC, 0.0);
    panel.resize(KC * NR, 0.0);
    for k0 in (0..k).step_by(KC) {
        let kc = KC.min(k - k0);
        for tb in (0..p.rows).step_by(MC) {
            let mc = MC.min(p.rows - tb);
            copy_x_block(x, k, tb..tb + mc, k0..k0 + kc, &mut xb);
            for jb in cols.clone().step_by(NR) {
                let nj = NR.min(cols.end - jb);
                // SAFETY: features per this function's contract.
                unsafe { pack(w, k, jb..jb + nj, k0..k0 + kc, &mut panel) };
                let block = Block {
                    kc,
                    cols: jb..jb + nj,
                    first: k0 == 0,
                };
                for t0 in (0..mc).step_by(MR) {
                    let (xt, m, row) = (&xb[t0 * kc..mc * kc], MR.min(mc - t0), tb + t0);
                    // SAFETY: features per this function's contract; the tile's outputs lie
                    // in `cols`, which only this call writes.
                    unsafe {
                        match m {
                            6 => block.run::<6>(xt, &panel, out, row),
                            5 => block.run::<5>(xt, &panel, out, row),
                            4 => block.run::<4>(xt, &panel, out, row),
                            3 => block.run::<3>(xt, &panel, out, row),
                            2 => block.run::<2>(xt, &panel, out, row),
                            _ => block.run::<1>(xt, &panel, out, row),
                        }
                    }
                }
            }
        }
    }
    PACKED.set((xb, panel));
}

/// Packs `W[rows, cols]` widened to f32 as `panel[i · NR + j] = W[rows.start + j, cols.start
/// + i]`, zeros for the rows past `rows.len()`.
///
/// # Safety
/// AVX2, FMA and F16C (the caller's features).
#[inline(always)]
unsafe fn pack<T: Elem>(
    w: &[T],
    k: usize,
    rows: Range<usize>,
    cols: Range<usize>,
    panel: &mut [f32],
) {
    let kc = cols.len();
    assert!(rows.len() <= NR && rows.end * k <= w.len() && cols.end <= k);
    assert!(panel.len() >= kc * NR);
    let nj = rows.len();
    if nj < NR {
        panel[..kc * NR].fill(0.0);
    }
    let mut i = 0;
    // Eight rows by eight columns at a time: eight widened row loads, transposed in registers
    // into eight half-panel stores.
    // SAFETY: row loads read `W[r, cols.start + i .. + 8]` with `i + 8 <= kc` and
    // `r < rows.end`, inside `w` (asserted); vector stores write `panel[(i + c) · NR + j0 ..
    // + 8]` with `j0 + 8 <= nj <= NR` and the scalar ones `panel[(i + c) · NR + j]` with
    // `j < nj`, both with `i + c < kc`, inside `kc · NR` (asserted).
    unsafe {
        let (pw, pp) = (w.as_ptr(), panel.as_mut_ptr());
        while i + 8 <= kc {
            let mut j0 = 0;
            while j0 + 8 <= nj {
                let r: [__m256; 8] = std::array::from_fn(|r| {
                    T::load8(pw.add((rows.start + j0 + r) * k + cols.start + i))
                });
                let c = transpose8(r);
                for (ci, v) in c.iter().enumerate() {
                    _mm256_storeu_ps(pp.add((i + ci) * NR + j0), *v);
                }
                j0 += 8;
            }
            for j in j0..nj {
                let row = &w[(rows.start + j) * k + cols.start + i..][..8];
                for (ci, v) in row.iter().enumerate() {
                    *pp.add((i + ci) * NR + j) = v.widen();
                }
            }
            i += 8;
        }
    }
    for j in 0..nj {
        let row = &w[(rows.start + j) * k + cols.start..][..kc];
        for ii in i..kc {
            panel[ii * NR + j] = row[ii].widen();
        }
    }
}

/// The 8 × 8 transpose of eight f32 vectors (`out[c][r] = rows[r][c]`).
///
/// # Safety
/// AVX (the caller's features).
#[inline(always)]
unsafe fn transpose8(rows: [__m256; 8]) -> [__m256; 8] {
    // SAFETY: register shuffles only; the caller guarantees AVX.
    unsafe {
        let [r0, r1, r2, r3, r4, r5, r6, r7] = rows;
        let (t0, t1) = (_mm256_unpacklo_ps(r0, r1), _mm256_unpackhi_ps(r0, r1));
        let (t2, t3) = (_mm256_unpacklo_ps(r2, r3), _mm256_unpackhi_ps(r2, r3));
        let (t4, t5) = (_mm256_unpacklo_ps(r4, r5), _mm256_unpackhi_ps(r4, r5));
        let (t6, t7) = (_mm256_unpacklo_ps(r6, r7), _mm256_unpackhi_ps(r6, r7));
        let s0 = _mm256_shuffle_ps::<0x44>(t0, t2);
        let s1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
        let s2 = _mm256_shuffle_ps::<0x44>(t1, t3);
        let s3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
        let s4 = _mm256_shuffle_ps::<0x44>(t4, t6);
        let s5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
        let s6 = _mm256_shuffle_ps::<0x44>(t5, t7);
        let s7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
        [
            _mm256_permute2f128_ps::<0x20>(s0, s4),
            _mm256_permute2f128_ps::<0x20>(s1, s5),
            _mm256_permute2f128_ps::<0x20>(s2, s6),
            _mm256_permute2f128_ps::<0x20>(s3, s7),
            _mm256_permute2f128_ps::<0x31>(s0, s4),
            _mm256_permute2f128_ps::<0x31>(s1, s5),
            _mm256_permute2f128_ps::<0x31>(s2, s6),
            _mm256_permute2f128_ps::<0x31>(s3, s7),
        ]
    }
}

/// One packed block: its `kc` columns, the output features its panel holds, and whether it
/// is the first block (whose sums are stored rather than added).
struct Block {
    kc: usize,
    cols: Range<usize>,
    first: bool,
}

impl Block {
    /// Tokens `row .. row + M` (their copied activations at the start of `x`, rows `kc`
    /// apart) against the panel, into `y[row + t, cols]`.
    ///
    /// # Safety
    /// AVX2 and FMA (the caller's features); the outputs `cols` of these rows are the
    /// caller's alone to write.
    #[inline(always)]
    unsafe fn run<const M: usize>(
        &self,
        x: &[f32],
        panel: &[f32],
        out: &SharedOut<'_>,
        row: usize,
    ) {
        let kc = self.kc;
        assert!(x.len() >= M * kc && panel.len() >= kc * NR);
        let (px, pp) = (x.as_ptr(), panel.as_ptr());
        // SAFETY: panel loads read `i · NR .. + 16` with `i < kc`, activation broadcasts
        // `t · kc + i` with `t < M`, both inside the slices (asserted); AVX2/FMA per contract.
        let acc = unsafe {
            let mut acc = [[_mm256_setzero_ps(); 2]; M];
            for i in 0..kc {
                let w0 = _mm256_loadu_ps(pp.add(i * NR));
                let w1 = _mm256_loadu_ps(pp.add(i * NR + 8));
                for (t, a) in acc.iter_mut().enumerate() {
                    let xv = _mm256_broadcast_ss(&*px.add(t * kc + i));
                    a[0] = _mm256_fmadd_ps(xv, w0, a[0]);
                    a[1] = _mm256_fmadd_ps(xv, w1, a[1]);
                }
            }
            acc
        };
        for (t, a) in acc.iter().enumerate() {
            // SAFETY: these outputs lie in `cols`, the caller's alone to write.
            let y = unsafe { out.cols(row + t, self.cols.clone()) };
            if y.len() == NR {
                // SAFETY: `y` holds 16 floats; AVX per contract.
                unsafe {
                    let py = y.as_mut_ptr();
                    for (h, &v) in a.iter().enumerate() {
                        let v = if self.first {
                            v
                        } else {
                            _mm256_add_ps(_mm256_loadu_ps(py.add(8 * h)), v)
                        };
                        _mm256_storeu_ps(py.add(8 * h), v);
                    }
                }
            } else {
                let mut lanes = [0f32; NR];
                // SAFETY: `lanes` holds 16 floats; AVX per contract.
                unsafe {
                    _mm256_storeu_ps(lanes.as_mut_ptr(), a[0]);
                    _mm256_storeu_ps(lanes.as_mut_ptr().add(8), a[1]);
                }
                for (yj, &v) in y.iter_mut().zip(&lanes) {
                    *yj = if self.first { v } else { *yj + v };
                }
            }
        }
    }
}
