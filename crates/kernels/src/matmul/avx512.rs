//! The AVX512-BF16 matmul at [`Precision::Bf16`](super::Precision::Bf16) for bf16 weights:
//! `vdpbf16ps` multiplies 32 pairs of bf16 and adds them into 16 f32 lanes, twice the f32
//! FMA rate and no widening of the weights.
//!
//! # Design
//! The activations are rounded once per call into rows of bf16 pairs (`xb`, zero-padded to
//! whole vectors; `vcvtneps2bf16` rounds to nearest even). Then:
//! - **GEMV** (`rows == 1`, run by `gemv_many`): every weight row is read once, whole, one row
//!   after the other (one sequential stream through the matrix), 128 elements a step into four
//!   accumulators; the tail is a masked load, so no byte past the row is read.
//! - **GEMM** (`rows > 1`): for each panel of [`NR`] = 32 weight rows and [`KC`] columns, the
//!   weights are packed once as `[KC/2][32]` pairs (the layout `vdpbf16ps` multiplies against
//!   one broadcast activation pair), then tiles of up to [`MR`] tokens × 32 features run over
//!   every token (the activations of each `KC` block packed once per tile, `[KC/2][MR]`): per
//!   pair of columns, two weight vectors and `2·MR` `vdpbf16ps` with the token's pair
//!   broadcast from memory; 24 accumulators stay in registers and no horizontal sum is
//!   needed. The panel (16 KiB) stays in L1 while all tokens pass over it.
//!
//! Threads split the output features, as the f32 path does.

use super::Matmul;
use crate::threads::{SharedOut, for_each_range, for_each_row_mut};
use half::bf16;
use std::arch::x86_64::*;
use std::cell::RefCell;
use std::ops::Range;

/// Weight rows (output features) per GEMM tile: two vectors of 16 f32 accumulators.
const NR: usize = 32;
/// Columns of `W` per packed panel (even, so pairs never straddle panels).
const KC: usize = 256;
/// Most tokens per GEMM tile: 12 × 2 accumulators + 2 weight vectors leave 6 of the 32
/// vector registers for broadcasts (14 rows made LLVM spill accumulators).
const MR: usize = 12;

thread_local! {
    /// Rounded activations of the calling thread's last call, reused so decode allocates nothing.
    static XB: RefCell<Vec<u32>> = const { RefCell::new(Vec::new()) };
    /// Each worker's packed weight panel (`KC/2 · NR` pairs) and activation tiles.
    static PANEL: RefCell<(Vec<u32>, Vec<u32>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

/// Pairs per converted activation row: `k` rounded up to 32 elements, plus 32 more so that
/// rows a power of two apart do not all fall into the same L1 sets.
pub(super) fn pair_stride(k: usize) -> usize {
    (k.div_ceil(32) * 32 + 32) / 2
}

/// The GEMM `y = bf16(x) · Wᵀ` for bf16 `W` (one row goes through `gemv_many`): same contract as
/// [`reference::matmul_bf16`](super::reference::matmul_bf16). Inputs below 2^-126 in
/// magnitude count as zero (the instructions' fixed denormals-are-zero mode).
///
/// # Safety
/// The CPU must support AVX-512 F/BW/VL and AVX512-BF16 (an `Isa::Avx512Bf16` exists).
pub(super) unsafe fn matmul(p: Matmul, x: &[f32], w: &[bf16], y: &mut [f32]) {
    p.check(x.len(), w.len(), y.len());
    if p.k == 0 {
        y.fill(0.0);
        return;
    }
    let stride = pair_stride(p.k);
    // Taken out of the thread-local (not borrowed) for the duration of the call, so a rayon
    // job this thread runs while it waits can never find it borrowed.
    // Every element is rewritten below (`round_row` zero-fills its padding), so a buffer
    // that is already long enough is not cleared first.
    let mut xb = XB.take();
    xb.resize(p.rows * stride, 0);
    let convert = |(r, row): (usize, &mut [u32])| {
        // SAFETY: the features per this function's contract; `row` holds `stride` pairs.
        unsafe { round_row(&x[r * p.k..(r + 1) * p.k], row) }
    };
    for_each_row_mut(&mut xb, stride, p.k, |r, row| convert((r, row)));
    let out = SharedOut::new(y, p.rows, p.n);
    let xb_ref = &xb[..];
    // Few chunks: each packs its own copy of the activations.
    for_each_range(p.n, NR, p.rows * p.k, 4, |cols| {
        PANEL.with_borrow_mut(|panel| {
            // SAFETY: features per our contract; only this call writes `cols`.
            unsafe { gemm(p, (xb_ref, stride), w, &out, cols, panel) }
        })
    });
    XB.set(xb);
}

/// The calling thread's rounded-activation buffer, taken out of its thread-local (so a region
/// this thread serves meanwhile cannot find it borrowed) and emptied; give it back with
/// [`put_buffer`].
pub(super) fn take_buffer() -> Vec<u32> {
    let mut b = XB.take();
    b.clear();
    b
}

/// Returns the buffer [`take_buffer`] lent.
pub(super) fn put_buffer(b: Vec<u32>) {
    XB.set(b);
}

/// Appends `x` rounded to bf16 pairs, padded as [`gemv`] reads it, to `buf`; returns where
/// it starts.
///
/// # Safety
/// The CPU must support AVX-512 F/BW/VL and AVX512-BF16.
pub(super) unsafe fn round_append(x: &[f32], buf: &mut Vec<u32>) -> usize {
    let at = buf.len();
    buf.resize(at + pair_stride(x.len()), 0);
    // SAFETY: features per this function's contract; the new part holds `pair_stride` pairs.
    unsafe { round_row(x, &mut buf[at..]) };
    at
}

/// Rounds `x` to bf16 pairs in `dst` (`x.len() <= 2 · dst.len()`), zero-filling the rest.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
unsafe fn round_row(x: &[f32], dst: &mut [u32]) {
    assert!(x.len() <= 2 * dst.len());
    // The padding, and for odd `x.len()` the last pair, whose upper half no store writes.
    dst[x.len() / 2..].fill(0);
    let (px, pd) = (x.as_ptr(), dst.as_mut_ptr().cast::<u16>());
    let mut i = 0;
    // SAFETY: loads read `x[i..i + 16]` (masked to `x.len()` on the tail) and stores write
    // the same 16 element slots of `dst`, which holds at least `x.len()` halves.
    unsafe {
        while i < x.len() {
            let n = (x.len() - i).min(16);
            let m: __mmask16 = if n == 16 { !0 } else { (1 << n) - 1 };
            let v = _mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(m, px.add(i)));
            let bits: __m256i = std::mem::transmute(v);
            _mm256_mask_storeu_epi16(pd.add(i).cast(), m, bits);
            i += 16;
        }
    }
}

/// A 64-byte vector of 32 bf16 (16 pairs) as `vdpbf16ps` takes it.
///
/// # Safety
/// Needs AVX-512 F (the caller's features).
#[inline(always)]
unsafe fn bh(v: __m512i) -> __m512bh {
    // SAFETY: both are 64-byte plain vectors; the bits are bf16 pairs by construction.
    unsafe { std::mem::transmute::<__m512i, __m512bh>(v) }
}

/// GEMV rows `cols`: `y[j] = Σ_i xb[i] · W[j, i]`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
pub(super) unsafe fn gemv(
    xb: &[u32],
    w: &[bf16],
    k: usize,
    out: &SharedOut<'_>,
    cols: Range<usize>,
) {
    assert!(cols.end * k <= w.len() && xb.len() >= k.div_ceil(32) * 16);
    // SAFETY: only this call writes `cols` (caller's contract).
    let y = unsafe { out.cols(0, cols.clone()) };
    let px = xb.as_ptr().cast::<u16>();
    for (yj, j) in y.iter_mut().zip(cols) {
        let pw = w[j * k..].as_ptr().cast::<u16>();
        let mut i = 0;
        // SAFETY: weight loads cover `j·k + i .. + 32` with `i + 32 <= k` (the tail load is
        // masked to `k`); activation loads cover `i .. i + 32 <= k.div_ceil(32) · 32`, inside
        // the zero-padded row (asserted above).
        unsafe {
            let (mut a0, mut a1) = (_mm512_setzero_ps(), _mm512_setzero_ps());
            let (mut a2, mut a3) = (_mm512_setzero_ps(), _mm512_setzero_ps());
            // Four independent accumulator chains: two left the loop waiting on `vdpbf16ps`
            // latency between rows (measured ~5% slower on the bench-1b shapes).
            while i + 128 <= k {
                let (w0, w1, w2, w3) = (
                    _mm512_loadu_si512(pw.add(i).cast()),
                    _mm512_loadu_si512(pw.add(i + 32).cast()),
                    _mm512_loadu_si512(pw.add(i + 64).cast()),
                    _mm512_loadu_si512(pw.add(i + 96).cast()),
                );
                let (x0, x1, x2, x3) = (
                    _mm512_loadu_si512(px.add(i).cast()),
                    _mm512_loadu_si512(px.add(i + 32).cast()),
                    _mm512_loadu_si512(px.add(i + 64).cast()),
                    _mm512_loadu_si512(px.add(i + 96).cast()),
                );
                a0 = _mm512_dpbf16_ps(a0, bh(w0), bh(x0));
                a1 = _mm512_dpbf16_ps(a1, bh(w1), bh(x1));
                a2 = _mm512_dpbf16_ps(a2, bh(w2), bh(x2));
                a3 = _mm512_dpbf16_ps(a3, bh(w3), bh(x3));
                i += 128;
            }
            a0 = _mm512_add_ps(a0, a2);
            a1 = _mm512_add_ps(a1, a3);
            while i + 64 <= k {
                let (w0, w1) = (
                    _mm512_loadu_si512(pw.add(i).cast()),
                    _mm512_loadu_si512(pw.add(i + 32).cast()),
                );
                let (x0, x1) = (
                    _mm512_loadu_si512(px.add(i).cast()),
                    _mm512_loadu_si512(px.add(i + 32).cast()),
                );
                a0 = _mm512_dpbf16_ps(a0, bh(w0), bh(x0));
                a1 = _mm512_dpbf16_ps(a1, bh(w1), bh(x1));
                i += 64;
            }
            while i < k {
                let n = (k - i).min(32);
                let m: __mmask32 = if n == 32 { !0 } else { (1 << n) - 1 };
                let wv = _mm512_maskz_loadu_epi16(m, pw.add(i).cast());
                let xv = _mm512_loadu_si512(px.add(i).cast());
                a0 = _mm512_dpbf16_ps(a0, bh(wv), bh(xv));
                i += 32;
            }
            *yj = _mm512_reduce_add_ps(_mm512_add_ps(a0, a1));
        }
    }
}

/// GEMM columns `cols` of every token: per block of [`KC`] columns, the activations are
/// packed once into tiles, then each 32-feature weight panel is packed once and every token
/// tile runs over it.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
unsafe fn gemm(
    p: Matmul,
    (xb, stride): (&[u32], usize),
    w: &[bf16],
    out: &SharedOut<'_>,
    cols: Range<usize>,
    (panel, xt): &mut (Vec<u32>, Vec<u32>),
) {
    assert!(xb.len() >= p.rows * stride && 2 * stride >= p.k.div_ceil(32) * 32);
    let tiles = p.rows.div_ceil(MR);
    panel.resize(KC / 2 * NR, 0);
    xt.resize(tiles * KC / 2 * MR, 0);
    for k0 in (0..p.k).step_by(KC) {
        let kc = KC.min(p.k - k0);
        let pairs = kc.div_ceil(2);
        pack_x(xb, stride, p.rows, k0 / 2..k0 / 2 + pairs, xt);
        for jb in cols.clone().step_by(NR) {
            let nj = NR.min(cols.end - jb);
            // SAFETY: features per our contract.
            unsafe { pack(w, p.k, jb..jb + nj, k0..k0 + kc, panel) };
            let tile = Tile {
                pairs,
                cols: jb..jb + nj,
                first: k0 == 0,
            };
            for (ti, x) in xt.chunks_exact(pairs * MR).take(tiles).enumerate() {
                let (t, m) = (ti * MR, MR.min(p.rows - ti * MR));
                // SAFETY: features per our contract; the tile's rows are ours to write.
                unsafe {
                    match m {
                        9.. => tile.run::<MR>(x, panel, out, t, m),
                        5..=8 => tile.run::<8>(x, panel, out, t, m),
                        3..=4 => tile.run::<4>(x, panel, out, t, m),
                        2 => tile.run::<2>(x, panel, out, t, m),
                        _ => tile.run::<1>(x, panel, out, t, m),
                    }
                }
            }
        }
    }
}

/// Packs pairs `qs` of every token row of `xb` into tiles of [`MR`] tokens,
/// `xt[(tile · pairs + q) · MR + m]`, zero rows past the last token: one pointer and
/// constant offsets for the micro-kernel's broadcasts.
fn pack_x(xb: &[u32], stride: usize, rows: usize, qs: Range<usize>, xt: &mut [u32]) {
    let pairs = qs.len();
    for (ti, tile) in xt
        .chunks_exact_mut(pairs * MR)
        .take(rows.div_ceil(MR))
        .enumerate()
    {
        for m in 0..MR {
            let t = ti * MR + m;
            if t < rows {
                let src = &xb[t * stride + qs.start..t * stride + qs.end];
                for (q, &v) in src.iter().enumerate() {
                    tile[q * MR + m] = v;
                }
            } else {
                (0..pairs).for_each(|q| tile[q * MR + m] = 0);
            }
        }
    }
}

/// Packs `W[rows, cols]` as `panel[q · NR + j] = (W[j, 2q], W[j, 2q + 1])`, zeros outside
/// the matrix, in 16 × 16 blocks of pairs: 16 row loads (masked at the edges, so nothing
/// past `W` is read) transposed in registers into 16 panel vectors.
///
/// # Safety
/// AVX-512 F/BW (the caller's features).
#[inline(always)]
unsafe fn pack(w: &[bf16], k: usize, rows: Range<usize>, cols: Range<usize>, panel: &mut [u32]) {
    let pairs = cols.len().div_ceil(2);
    assert!(rows.end * k <= w.len() && cols.end <= k && rows.len() <= NR);
    assert!(panel.len() >= pairs.div_ceil(16) * 16 * NR);
    let pp = panel.as_mut_ptr();
    for q0 in (0..pairs).step_by(16) {
        // bf16 elements of each row in this block: 32, fewer at the end of `cols`.
        let n = (cols.len() - 2 * q0).min(32);
        let m: __mmask32 = if n == 32 { !0 } else { (1 << n) - 1 };
        for half in 0..NR / 16 {
            // SAFETY: a register constant; the caller guarantees AVX-512 F.
            let mut v = [unsafe { _mm512_setzero_si512() }; 16];
            for (r, vr) in v.iter_mut().enumerate() {
                let row = half * 16 + r;
                if row < rows.len() {
                    let at = (rows.start + row) * k + cols.start + 2 * q0;
                    // SAFETY: the masked load reads elements `at .. at + n` of row `row`,
                    // inside `W` (asserted above); masked-out elements are never touched. The
                    // prefetch (of the same line in the next panel's row, packed next) never
                    // faults, so its address may run past `W` and is never dereferenced.
                    unsafe {
                        *vr = _mm512_maskz_loadu_epi16(m, w.as_ptr().add(at).cast());
                        let next = w.as_ptr().wrapping_add(at + NR * k);
                        _mm_prefetch::<_MM_HINT_T0>(next.cast());
                    }
                }
            }
            // SAFETY: register shuffles; the caller guarantees AVX-512 F.
            let t = unsafe { transpose16(v) };
            for (qq, tq) in t.iter().enumerate() {
                // SAFETY: `(q0 + qq) · NR + half · 16 .. + 16` lies inside `panel`: `q0 + qq`
                // is below `pairs` rounded up to 16 (asserted above).
                unsafe { _mm512_storeu_si512(pp.add((q0 + qq) * NR + half * 16).cast(), *tq) };
            }
        }
    }
}

/// Transposes a 16 × 16 matrix of 32-bit elements held as 16 row vectors.
///
/// # Safety
/// Needs AVX-512 F.
#[inline(always)]
unsafe fn transpose16(r: [__m512i; 16]) -> [__m512i; 16] {
    // SAFETY: register-only AVX-512 F intrinsics; the caller guarantees the feature.
    unsafe {
        // Interleave 32-bit elements of row pairs, then 64-bit pairs of row quads: b[4i + c]
        // holds, in each 128-bit lane l, column 4l + c of rows 4i .. 4i + 4. Then two rounds
        // of 128-bit lane shuffles gather the four quads of each column in row order.
        let mut a = [_mm512_setzero_si512(); 16];
        for i in 0..8 {
            a[2 * i] = _mm512_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
            a[2 * i + 1] = _mm512_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
        }
        let mut b = [_mm512_setzero_si512(); 16];
        for i in 0..4 {
            for j in 0..2 {
                let (x, y) = (a[4 * i + j], a[4 * i + j + 2]);
                b[4 * i + 2 * j] = _mm512_unpacklo_epi64(x, y);
                b[4 * i + 2 * j + 1] = _mm512_unpackhi_epi64(x, y);
            }
        }
        let mut c = [_mm512_setzero_si512(); 16];
        for i in 0..2 {
            for j in 0..4 {
                let (x, y) = (b[8 * i + j], b[8 * i + j + 4]);
                c[8 * i + j] = _mm512_shuffle_i32x4::<0b10_00_10_00>(x, y);
                c[8 * i + j + 4] = _mm512_shuffle_i32x4::<0b11_01_11_01>(x, y);
            }
        }
        let mut o = [_mm512_setzero_si512(); 16];
        for j in 0..8 {
            let (x, y) = (c[j], c[j + 8]);
            o[j] = _mm512_shuffle_i32x4::<0b10_00_10_00>(x, y);
            o[j + 8] = _mm512_shuffle_i32x4::<0b11_01_11_01>(x, y);
        }
        o
    }
}

/// One panel's shape for the tiles run over it.
struct Tile {
    /// Column pairs in the panel.
    pairs: usize,
    /// Output features of the panel (at most [`NR`]).
    cols: Range<usize>,
    /// First panel along `k`: store instead of accumulate.
    first: bool,
}

impl Tile {
    /// The first `M` tokens of a packed tile (`x[q · MR + m]`) × the panel's features,
    /// starting at token `t`; writes the first `valid` rows.
    ///
    /// # Safety
    /// AVX-512 F and AVX512-BF16; only this call writes these outputs.
    #[inline(always)]
    unsafe fn run<const M: usize>(
        &self,
        x: &[u32],
        panel: &[u32],
        out: &SharedOut<'_>,
        t: usize,
        valid: usize,
    ) {
        assert!(M <= MR && x.len() >= self.pairs * MR && panel.len() >= self.pairs * NR);
        let (px, pp) = (x.as_ptr(), panel.as_ptr());
        let mut r = [[0f32; NR]; M];
        // SAFETY: activation reads are `q · MR + m` and panel reads `q · NR .. + NR` with
        // `q < pairs`, `m < M <= MR`: inside both slices by the assertion; features per
        // contract.
        unsafe {
            let mut acc = [[_mm512_setzero_ps(); 2]; M];
            for q in 0..self.pairs {
                let b0 = bh(_mm512_loadu_si512(pp.add(q * NR).cast()));
                let b1 = bh(_mm512_loadu_si512(pp.add(q * NR + 16).cast()));
                for (m, acc_m) in acc.iter_mut().enumerate() {
                    let a = bh(_mm512_set1_epi32(*px.add(q * MR + m) as i32));
                    acc_m[0] = _mm512_dpbf16_ps(acc_m[0], a, b0);
                    acc_m[1] = _mm512_dpbf16_ps(acc_m[1], a, b1);
                }
            }
            for (rm, acc_m) in r.iter_mut().zip(&acc) {
                _mm512_storeu_ps(rm.as_mut_ptr(), acc_m[0]);
                _mm512_storeu_ps(rm.as_mut_ptr().add(16), acc_m[1]);
            }
        }
        for (m, rm) in r.iter().enumerate().take(valid) {
            // SAFETY: these outputs belong to this call (contract).
            let y = unsafe { out.cols(t + m, self.cols.clone()) };
            if self.first {
                y.copy_from_slice(&rm[..y.len()]);
            } else {
                y.iter_mut().zip(rm).for_each(|(o, v)| *o += v);
            }
        }
    }
}
