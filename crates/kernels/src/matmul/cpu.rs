//! Fast CPU matmul `y = x Wᵀ`: a streaming GEMV for one token (decode) and a cache-blocked,
//! register-tiled GEMM for many (prefill), parallel over output features on the current
//! rayon pool. Twin of [`reference::matmul`](super::reference::matmul).
//!
//! # Design
//! Both paths use one micro-kernel shape, "`M` rows of `x` × `N` rows of `W` along `k`",
//! written once per ISA ([`Tiles`]) and driven by one generic loop nest ([`drive`]):
//! - **GEMV** (`rows == 1`): tiles of 1 × [`NR_GEMV`] over the whole of `k`. Each weight row
//!   is read exactly once, widened to f32 in registers; `x` stays in L1/L2.
//! - **GEMM** (`rows > 1`): blocks of [`MC`] tokens × [`KC`] columns of `x` and [`JB`]
//!   weight rows × [`KC`] columns of `W` are packed into small per-thread buffers (`W`
//!   widened to f32 once per block and reused by every token), then tiles of [`MR`] × [`NR`]
//!   run over them. On x86, calls that did not ask for the batch-invariant order take the
//!   panel GEMM of `panel_avx2.rs` instead (the same blocking, weights transposed so the
//!   lanes run along the output features: 6 tokens × 16 features per tile). Packing matters: unpacked rows 4 KiB apart all map to the same L1 sets
//!   and the tiles thrash (measured: 5× slower). Only these blocks are ever copied, never a
//!   whole matrix.
//!
//! Threads split the output features `n` (never the tokens), so each thread streams its own
//! part of `W` once, and a 1-token decode still uses every core.

use super::{Matmul, Precision};
use crate::isa::Elem;
use crate::threads::{SharedOut, for_each_range};
use crate::{Isa, Weight};
use std::cell::RefCell;
use std::ops::Range;

thread_local! {
    /// Per-thread packing buffers of the GEMM: an `[MC, KC]` block of `x` and a `[JB, KC]`
    /// block of `W` widened to f32. Allocated once per thread (rayon's workers live as long as
    /// the pool), so a forward pass allocates nothing here after the first call.
    static PACKED: RefCell<(Vec<f32>, Vec<f32>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

// The AVX2 micro-kernel sits next to this file (`matmul/avx2.rs`), a child of this module.
#[cfg(target_arch = "x86_64")]
#[path = "avx2.rs"]
mod avx2;
#[cfg(target_arch = "x86_64")]
#[path = "avx512.rs"]
mod avx512;
#[path = "batch.rs"]
mod batch;
#[cfg(target_arch = "aarch64")]
#[path = "bfmmla.rs"]
mod bfmmla;
#[cfg(target_arch = "aarch64")]
#[path = "neon.rs"]
mod neon;
#[cfg(target_arch = "x86_64")]
#[path = "panel_avx2.rs"]
mod panel_avx2;
#[path = "quant.rs"]
mod quant;

pub use batch::{Gemv, MAX_GEMVS, gemv_many};

thread_local! {
    /// Activations rounded to bf16 for ISAs without bf16 arithmetic, reused between calls.
    static ROUNDED: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// `k` columns per GEMM block.
const KC: usize = 256;
/// Weight rows per GEMM block (also the split granularity between threads).
const JB: usize = 16;
/// Tokens per GEMM block (the packed `x` block is `MC · KC` floats, 256 KiB).
const MC: usize = 256;
/// Tokens per GEMM micro-tile.
const MR: usize = 4;
/// Weight rows per GEMM micro-tile: 4 × 2 accumulators plus 4 `x` and 2 `W` vectors fit the
/// 16 AVX2 registers.
const NR: usize = 2;
/// Weight rows per GEMV pass on long rows: eight independent accumulator chains hide the
/// FMA latency.
const NR_GEMV: usize = 8;
/// GEMV chunks per thread: many, since a GEMV chunk costs nothing to start and a finer last
/// chunk ends the region sooner (see `threads::for_each_range`).
pub(crate) const GEMV_CHUNKS: usize = 16;
/// Rows up to this many elements are read one whole row after the other (one sequential
/// stream through the matrix, several accumulators inside the row); longer rows are read
/// [`NR_GEMV`] at a time. Measured on bf16, 2 threads (Zen 4): at `k = 1024` one row at a
/// time reads 25–32 GB/s against 15–20 for eight interleaved rows; at `k = 4096` and
/// `14336` the interleaved rows win (27–29 against 20–23), as `x` no longer stays in L1
/// beside the stream.
const ROW_BY_ROW_MAX_K: usize = 2048;

/// `y[r, j] = Σ_i x[r, i] · W[j, i]`: same contract as
/// [`reference::matmul`](super::reference::matmul), accumulated in f32 (in a different order,
/// so results agree to rounding, not bit for bit).
pub fn matmul(isa: Isa, p: Matmul, x: &[f32], w: Weight<'_>, y: &mut [f32]) {
    matmul_in(isa, Precision::F32, p, x, w, y, Order::Fastest)
}

/// [`matmul`] at [`Precision::Bf16`](super::Precision::Bf16): for bf16 weights the
/// activations are rounded to bf16 first. Same contract as
/// [`reference::matmul_bf16`](super::reference::matmul_bf16). On AVX512-BF16 CPUs this is
/// the `vdpbf16ps` kernel; elsewhere the f32 kernel runs on the rounded activations.
pub fn matmul_bf16(isa: Isa, p: Matmul, x: &[f32], w: Weight<'_>, y: &mut [f32]) {
    matmul_in(isa, Precision::Bf16, p, x, w, y, Order::Fastest)
}

/// [`matmul`] at [`Precision::Int8`](super::Precision::Int8): quantized weights with an
/// integer dot multiply 8-bit activation blocks ([`crate::qdot`]); bf16 weights are
/// [`matmul_bf16`]. Same contract as [`reference::matmul_int8`](super::reference::matmul_int8).
pub fn matmul_int8(isa: Isa, p: Matmul, x: &[f32], w: Weight<'_>, y: &mut [f32]) {
    matmul_in(isa, Precision::Int8, p, x, w, y, Order::Fastest)
}

/// [`matmul`], [`matmul_bf16`] or [`matmul_int8`], as `precision` says.
pub fn matmul_at(
    isa: Isa,
    precision: Precision,
    p: Matmul,
    x: &[f32],
    w: Weight<'_>,
    y: &mut [f32],
) {
    matmul_in(isa, precision, p, x, w, y, Order::Fastest)
}

/// [`matmul_at`], with every row summed in the GEMM's order, a call of one row included:
/// each row's result is the same bits whatever the number of rows in the call, so a
/// sequence batched with others (or its prompt split into other chunks) gets exactly the
/// values it gets alone. The price is one-row calls (decode) without the GEMV's streaming
/// (docs/performance.md measures it).
pub fn matmul_batch_invariant(
    isa: Isa,
    precision: Precision,
    p: Matmul,
    x: &[f32],
    w: Weight<'_>,
    y: &mut [f32],
) {
    matmul_in(isa, precision, p, x, w, y, Order::BatchInvariant)
}

/// Which summation order a matmul may use for a call of one row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Order {
    /// One row takes the GEMV (the fastest for decode); several rows the GEMM. The two sum
    /// in different orders, so a row's result depends (by an ulp) on how many rows share the
    /// call.
    Fastest,
    /// Every row in the GEMM's order, one row included: a row's result is the same bits
    /// whatever the call's row count (see [`matmul_batch_invariant`]).
    BatchInvariant,
}

/// Every public matmul: the shapes checked once, one row to the GEMV when `order` allows,
/// the GEMM of `precision` otherwise.
#[expect(
    clippy::too_many_arguments,
    reason = "matmul_at's arguments plus the summation order"
)]
fn matmul_in(
    isa: Isa,
    precision: Precision,
    p: Matmul,
    x: &[f32],
    w: Weight<'_>,
    y: &mut [f32],
    order: Order,
) {
    p.check(x.len(), w.len(), y.len());
    if p.rows == 1 && order == Order::Fastest {
        return gemv_many(isa, precision, &mut [Gemv { x, w, y }]);
    }
    match precision {
        Precision::F32 => gemm_f32(isa, p, x, w, y, order),
        Precision::Bf16 => gemm_bf16(isa, p, x, w, y, order),
        Precision::Int8 => gemm_int8(isa, p, x, w, y, order),
    }
}

/// The f32 GEMM (weights widened as they are read, quantized ones decoded exactly).
fn gemm_f32(isa: Isa, p: Matmul, x: &[f32], w: Weight<'_>, y: &mut [f32], order: Order) {
    let gemv = order == Order::Fastest;
    match w {
        Weight::F32(w) => run(isa, p, x, w, y, gemv),
        Weight::BF16(w) => run(isa, p, x, w, y, gemv),
        Weight::F16(w) => run(isa, p, x, w, y, gemv),
        Weight::Quant(w) => quant::gemm(isa, p, x, w, y),
    }
}

/// The GEMM at bf16 precision: activations rounded to bf16 for bf16 weights, the f32 GEMM
/// for the others.
fn gemm_bf16(isa: Isa, p: Matmul, x: &[f32], w: Weight<'_>, y: &mut [f32], order: Order) {
    let Weight::BF16(wb) = w else {
        return gemm_f32(isa, p, x, w, y, order);
    };
    match isa {
        // The `vdpbf16ps` GEMM keeps each output in a lane of a packed panel: one row in its
        // order would pay the panel's packing for a single use (a third of the GEMV's
        // decode speed, measured), so the batch-invariant order takes the FMA path on the
        // rounded activations below instead, whose one-row form streams `W` in place.
        #[cfg(target_arch = "x86_64")]
        // SAFETY: an `Isa::Avx512Bf16` exists only after AVX-512 F/BW/VL and AVX512-BF16
        // were detected.
        Isa::Avx512Bf16(_) if order == Order::Fastest => unsafe { avx512::matmul(p, x, wb, y) },
        // The same reasoning for `bfmmla`'s 2×2 tiles.
        #[cfg(target_arch = "aarch64")]
        // SAFETY: an `Isa::I8mm` exists only after NEON and FEAT_BF16 (with dotprod and
        // i8mm) were detected.
        Isa::I8mm(_) if order == Order::Fastest => unsafe { bfmmla::matmul(p, x, wb, y) },
        _ => {
            // Taken, not borrowed, so a job this thread runs while waiting cannot collide.
            let mut rounded = ROUNDED.take();
            rounded.clear();
            rounded.extend(x.iter().map(|&v| super::reference::round_bf16(v)));
            run(isa, p, &rounded, wb, y, order == Order::Fastest);
            ROUNDED.set(rounded);
        }
    }
}

/// The GEMM at int8 precision: integer dots for quantized weights that have them, the
/// bf16-precision GEMM for the others.
fn gemm_int8(isa: Isa, p: Matmul, x: &[f32], w: Weight<'_>, y: &mut [f32], order: Order) {
    match w {
        Weight::Quant(q) if crate::qdot::acts_kind(q.dtype).is_some() => {
            quant::gemm_int8(isa, p, x, q, y)
        }
        _ => gemm_bf16(isa, p, x, w, y, order),
    }
}

/// The GEMM (`rows > 1`; on x86 the panel GEMM when `gemv` allows, else the dot-product
/// tiles; one row goes through [`gemv_many`] unless `gemv` is false, when it
/// takes the GEMM's order too).
fn run<T: Elem>(isa: Isa, p: Matmul, x: &[f32], w: &[T], y: &mut [f32], gemv: bool) {
    if p.k == 0 {
        y.fill(0.0);
        return;
    }
    let out = SharedOut::new(y, p.rows, p.n);
    for_each_range(p.n, JB, p.rows * p.k, 4, |cols| match isa {
        // SAFETY: the scalar tiles use no target features.
        Isa::Scalar => unsafe { drive::<T, Scalar>(p, x, w, &out, cols, gemv) },
        #[cfg(target_arch = "x86_64")]
        // Many rows in the fastest order take the panel GEMM (outputs along the lanes);
        // the batch-invariant order keeps the dot-product tiles its one-row form matches.
        // SAFETY: both x86 SIMD variants exist only after AVX2, FMA and F16C were detected.
        Isa::Avx2Fma(_) | Isa::Avx512Bf16(_) if gemv && p.rows > 1 => unsafe {
            panel_avx2::gemm(p, x, w, &out, cols)
        },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above.
        Isa::Avx2Fma(_) | Isa::Avx512Bf16(_) => unsafe {
            avx2::drive_avx2(p, x, w, &out, cols, gemv)
        },
        #[cfg(target_arch = "aarch64")]
        // SAFETY: every aarch64 SIMD variant exists only after NEON was detected.
        Isa::Neon(_) | Isa::Dotprod(_) | Isa::I8mm(_) => unsafe {
            neon::drive_neon(p, x, w, &out, cols, gemv)
        },
    });
}

/// One ISA's micro-kernel.
pub(crate) trait Tiles {
    /// `r[t][j] = Σ_{i < kc} x[t·ldx + i] · w[j·ldw + i]` for `t < M`, `j < N`.
    ///
    /// # Safety
    /// The ISA's target features must be available. (Slice bounds are checked.)
    unsafe fn tile<T: Elem, const M: usize, const N: usize>(
        x: &[f32],
        ldx: usize,
        w: &[T],
        ldw: usize,
        kc: usize,
    ) -> [[f32; N]; M];

    /// `dst[i] = src[i]` widened to f32.
    ///
    /// # Safety
    /// The ISA's target features must be available.
    unsafe fn widen<T: Elem>(src: &[T], dst: &mut [f32]);

    /// `Σ_{i < k} x[i] · w[i]` with several independent accumulators (one row of a GEMV).
    ///
    /// # Safety
    /// The ISA's target features must be available. (Slice bounds are checked.)
    unsafe fn dot<T: Elem>(x: &[f32], w: &[T]) -> f32;
}

/// Portable tiles: 8 f32 lanes per accumulator in plain arrays, which the compiler
/// vectorises for the baseline target.
pub(crate) struct Scalar;

impl Tiles for Scalar {
    #[inline(always)]
    unsafe fn tile<T: Elem, const M: usize, const N: usize>(
        x: &[f32],
        ldx: usize,
        w: &[T],
        ldw: usize,
        kc: usize,
    ) -> [[f32; N]; M] {
        let xs: [&[f32]; M] = std::array::from_fn(|t| &x[t * ldx..t * ldx + kc]);
        let ws: [&[T]; N] = std::array::from_fn(|j| &w[j * ldw..j * ldw + kc]);
        let mut acc = [[[0f32; 8]; N]; M];
        let k8 = kc / 8 * 8;
        for i in (0..k8).step_by(8) {
            for j in 0..N {
                let wj: &[T; 8] = ws[j][i..i + 8].try_into().expect("8 elements");
                let wv = wj.map(Elem::widen);
                for t in 0..M {
                    let xv: &[f32; 8] = xs[t][i..i + 8].try_into().expect("8 elements");
                    for l in 0..8 {
                        acc[t][j][l] += xv[l] * wv[l];
                    }
                }
            }
        }
        let mut r = [[0f32; N]; M];
        for t in 0..M {
            for j in 0..N {
                r[t][j] = acc[t][j].iter().sum::<f32>()
                    + (k8..kc).map(|i| xs[t][i] * ws[j][i].widen()).sum::<f32>();
            }
        }
        r
    }

    #[inline(always)]
    unsafe fn widen<T: Elem>(src: &[T], dst: &mut [f32]) {
        for (d, &s) in dst.iter_mut().zip(src) {
            *d = s.widen();
        }
    }

    #[inline(always)]
    unsafe fn dot<T: Elem>(x: &[f32], w: &[T]) -> f32 {
        // SAFETY: no target features needed; the 1 × 1 tile checks the bounds.
        unsafe { Self::tile::<T, 1, 1>(x, x.len(), w, w.len(), x.len().min(w.len()))[0][0] }
    }
}

/// Computes the output columns `cols` of every row, with `K`'s micro-kernel. One row takes
/// the GEMV's loops when `gemv` allows, the GEMM's otherwise.
///
/// # Safety
/// `K`'s target features must be available; `out` must wrap `[p.rows, p.n]` and no other
/// thread may write the columns `cols` meanwhile.
#[inline(always)]
pub(crate) unsafe fn drive<T: Elem, K: Tiles>(
    p: Matmul,
    x: &[f32],
    w: &[T],
    out: &SharedOut<'_>,
    cols: Range<usize>,
    gemv: bool,
) {
    let k = p.k;
    if gemv && p.rows == 1 && k <= ROW_BY_ROW_MAX_K {
        // SAFETY: these columns belong to `cols`, which only this call writes.
        let y = unsafe { out.cols(0, cols.clone()) };
        for (yj, j) in y.iter_mut().zip(cols) {
            // SAFETY: features per this function's contract.
            *yj = unsafe { K::dot(x, &w[j * k..(j + 1) * k]) };
        }
        return;
    }
    if gemv && p.rows == 1 {
        let mut j = cols.start;
        while j < cols.end {
            let nr = NR_GEMV.min(cols.end - j);
            let wj = &w[j * k..];
            // SAFETY: features per this function's contract.
            let r = unsafe {
                if nr == NR_GEMV {
                    K::tile::<T, 1, NR_GEMV>(x, k, wj, k, k)[0]
                } else {
                    pad::<1, 1, 1, NR_GEMV>(K::tile::<T, 1, 1>(x, k, wj, k, k))[0]
                }
            };
            let nr = if nr == NR_GEMV { nr } else { 1 };
            // SAFETY: these columns belong to `cols`, which only this call writes.
            unsafe { out.cols(0, j..j + nr) }.copy_from_slice(&r[..nr]);
            j += nr;
        }
        return;
    }
    if p.rows == 1 {
        // SAFETY: features per this function's contract; `cols` is ours to write.
        return unsafe { gemv_in_gemm_order::<T, K>(p, x, w, out, cols) };
    }
    // Taken out of the thread-local rather than borrowed through a closure: a closure does not
    // inherit this function's target features, and its micro-kernels would not inline.
    let (mut xb, mut wb) = PACKED.take();
    xb.resize(MC * KC, 0.0);
    wb.resize(JB * KC, 0.0);
    for k0 in (0..k).step_by(KC) {
        let kc = KC.min(k - k0);
        for tb in (0..p.rows).step_by(MC) {
            let mc = MC.min(p.rows - tb);
            copy_x_block(x, k, tb..tb + mc, k0..k0 + kc, &mut xb);
            for jb in cols.clone().step_by(JB) {
                let jn = JB.min(cols.end - jb);
                // [jn, kc] of W widened to f32 once, reused by all `mc` tokens.
                for j in 0..jn {
                    let src = &w[(jb + j) * k + k0..][..kc];
                    // SAFETY: features per this function's contract.
                    unsafe { K::widen(src, &mut wb[j * kc..(j + 1) * kc]) };
                }
                for t0 in (0..mc).step_by(MR) {
                    let mr = MR.min(mc - t0);
                    for j in (0..jn).step_by(NR) {
                        let nr = NR.min(jn - j);
                        let (xt, wt) = (&xb[t0 * kc..], &wb[j * kc..]);
                        // SAFETY: features per this function's contract.
                        let r = unsafe { tile_dyn::<f32, K>(mr, nr, xt, wt, kc) };
                        for (t, rt) in r.iter().enumerate().take(mr) {
                            let cols = jb + j..jb + j + nr;
                            // SAFETY: these columns lie in `cols`, which only this call
                            // writes.
                            let yt = unsafe { out.cols(tb + t0 + t, cols) };
                            for (y, &v) in yt.iter_mut().zip(rt) {
                                *y = if k0 == 0 { v } else { *y + v };
                            }
                        }
                    }
                }
            }
        }
    }
    PACKED.set((xb, wb));
}

/// Copies columns `cols` of the token rows `rows` of `x` (rows `k` long) into `xb`, rows
/// `cols.len()` apart: unpacked rows a power of two apart would share L1 sets with each other
/// and with the weight block, and the micro-tiles would thrash.
#[inline(always)]
fn copy_x_block(x: &[f32], k: usize, rows: Range<usize>, cols: Range<usize>, xb: &mut [f32]) {
    let kc = cols.len();
    for (t, r) in rows.enumerate() {
        xb[t * kc..(t + 1) * kc].copy_from_slice(&x[r * k + cols.start..r * k + cols.end]);
    }
}

/// An `mr × nr` tile (edges included) through the fixed-size micro-kernels.
///
/// # Safety
/// `K`'s target features must be available.
#[inline(always)]
unsafe fn tile_dyn<T: Elem, K: Tiles>(
    mr: usize,
    nr: usize,
    x: &[f32],
    w: &[T],
    kc: usize,
) -> [[f32; NR]; MR] {
    // Both operands are packed with rows `kc` apart.
    let (ldx, ldw) = (kc, kc);
    // SAFETY: features per this function's contract.
    unsafe {
        match (mr, nr) {
            (4, 2) => K::tile::<T, 4, 2>(x, ldx, w, ldw, kc),
            (3, 2) => pad(K::tile::<T, 3, 2>(x, ldx, w, ldw, kc)),
            (2, 2) => pad(K::tile::<T, 2, 2>(x, ldx, w, ldw, kc)),
            (1, 2) => pad(K::tile::<T, 1, 2>(x, ldx, w, ldw, kc)),
            (4, 1) => pad(K::tile::<T, 4, 1>(x, ldx, w, ldw, kc)),
            (3, 1) => pad(K::tile::<T, 3, 1>(x, ldx, w, ldw, kc)),
            (2, 1) => pad(K::tile::<T, 2, 1>(x, ldx, w, ldw, kc)),
            _ => pad(K::tile::<T, 1, 1>(x, ldx, w, ldw, kc)),
        }
    }
}

/// One row in exactly the GEMM's summation order, at the GEMV's speed: each output sums its
/// block of [`KC`] columns in its own accumulator (the tile the GEMM runs on packed blocks
/// computes every output the same way whatever its `M` and `N`, and widening a weight is
/// exact, so reading `W` in place changes nothing), and the blocks are added in order, as
/// the GEMM adds them into `y`. Tiles of 1 × [`NR_GEMV`] keep enough accumulators in flight;
/// nothing is packed.
///
/// # Safety
/// As [`drive`].
#[inline(always)]
unsafe fn gemv_in_gemm_order<T: Elem, K: Tiles>(
    p: Matmul,
    x: &[f32],
    w: &[T],
    out: &SharedOut<'_>,
    cols: Range<usize>,
) {
    let k = p.k;
    // SAFETY: these columns belong to `cols`, which only this call writes.
    let y = unsafe { out.cols(0, cols.clone()) };
    for k0 in (0..k).step_by(KC) {
        let kc = KC.min(k - k0);
        let mut j = cols.start;
        while j < cols.end {
            let nr = NR_GEMV.min(cols.end - j);
            let wj = &w[j * k + k0..];
            // SAFETY: features per this function's contract.
            let (r, nr) = unsafe {
                if nr == NR_GEMV {
                    (K::tile::<T, 1, NR_GEMV>(&x[k0..], k, wj, k, kc)[0], nr)
                } else {
                    (
                        pad::<1, 1, 1, NR_GEMV>(K::tile::<T, 1, 1>(&x[k0..], k, wj, k, kc))[0],
                        1,
                    )
                }
            };
            let yj = &mut y[j - cols.start..j - cols.start + nr];
            for (a, &v) in yj.iter_mut().zip(&r[..nr]) {
                *a = if k0 == 0 { v } else { *a + v };
            }
            j += nr;
        }
    }
}

/// Copies an `M × N` tile into the top-left of a zeroed `PM × PN` one.
#[inline(always)]
fn pad<const M: usize, const N: usize, const PM: usize, const PN: usize>(
    r: [[f32; N]; M],
) -> [[f32; PN]; PM] {
    let mut o = [[0f32; PN]; PM];
    for (ot, rt) in o.iter_mut().zip(&r) {
        ot[..N].copy_from_slice(rt);
    }
    o
}
