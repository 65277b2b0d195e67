//! Matmuls on block-quantized weights (ggml's types): each weight row is decoded a block at a
//! time into f32 scratch as the kernel reaches it, then multiplied with the f32 kernels' own
//! micro-kernels. Nothing is decoded ahead of time or kept: a decode step reads every
//! quantized byte once. The numerics are the reference's (exactly dequantized weights times
//! f32 activations, accumulated in f32), so results match
//! [`reference::matmul`](super::super::reference::matmul) to f32 rounding.
//!
//! This is the correct path, not yet the fast one: it decodes with the scalar reference
//! decoder and pays an f32 round trip through L1/L2 per row. Integer dot products on the
//! blocks themselves are the next step.

use super::{Matmul, Scalar, Tiles, drive};
use crate::qdot::interleave::ROWS;
use crate::qdot::{self, QuantizedActs};
use crate::threads::{SharedOut, for_each_range};
use crate::{BlockLayout, Isa, QuantBlocks};
use std::cell::RefCell;
use std::ops::Range;

thread_local! {
    /// Decoded weight rows and, for the GEMM, its `[rows, panel]` output, reused per thread.
    /// Taken out for the duration of a call (not borrowed through a closure: a closure does not
    /// inherit its function's target features, and the SIMD micro-kernels would not inline).
    static DECODED: RefCell<Buffers> = RefCell::new(Buffers::default());
}

/// Per-thread scratch of the quantized matmuls.
#[derive(Default)]
struct Buffers {
    rows: Vec<f32>,
    part: Vec<f32>,
}

/// Runs `f` with this thread's buffers, taken out of the thread-local and put back after.
fn with_buffers<R>(f: impl FnOnce(&mut Buffers) -> R) -> R {
    let mut b = DECODED.take();
    let r = f(&mut b);
    DECODED.set(b);
    r
}

/// Floats of decoded weights one GEMM panel holds (256 KiB: stays in L2 while every token
/// passes over it).
const PANEL_FLOATS: usize = 1 << 16;

/// Output rows `cols` of the GEMV `y = W x` (`W`: `[n, k]` quantized).
pub(super) fn gemv_rows(
    isa: Isa,
    x: &[f32],
    w: QuantBlocks<'_>,
    out: &SharedOut<'_>,
    cols: Range<usize>,
) {
    with_buffers(|b| match isa {
        // SAFETY: the scalar tiles use no target features; only this chunk writes `cols`.
        Isa::Scalar => unsafe { gemv_with::<Scalar>(x, w, out, cols, &mut b.rows) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: both x86 SIMD variants exist only after AVX2, FMA and F16C were detected.
        Isa::Avx2Fma(_) | Isa::Avx512Bf16(_) => unsafe { gemv_avx2(x, w, out, cols, &mut b.rows) },
        #[cfg(target_arch = "aarch64")]
        // SAFETY: every aarch64 SIMD variant exists only after NEON was detected.
        Isa::Neon(_) | Isa::Dotprod(_) | Isa::I8mm(_) => unsafe {
            gemv_neon(x, w, out, cols, &mut b.rows)
        },
    })
}

/// [`gemv_with`] compiled with AVX2, FMA and F16C.
///
/// # Safety
/// The CPU must support them; only this call writes `cols` of `out`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn gemv_avx2(
    x: &[f32],
    w: QuantBlocks<'_>,
    out: &SharedOut<'_>,
    cols: Range<usize>,
    row: &mut Vec<f32>,
) {
    // SAFETY: per this function's contract.
    unsafe { gemv_with::<super::avx2::Avx2>(x, w, out, cols, row) }
}

/// [`gemv_with`] compiled with NEON.
///
/// # Safety
/// The CPU must support it; only this call writes `cols` of `out`.
#[cfg(target_arch = "aarch64")]
#[target_feature(enable = "neon")]
unsafe fn gemv_neon(
    x: &[f32],
    w: QuantBlocks<'_>,
    out: &SharedOut<'_>,
    cols: Range<usize>,
    row: &mut Vec<f32>,
) {
    // SAFETY: per this function's contract.
    unsafe { gemv_with::<super::neon::Neon>(x, w, out, cols, row) }
}

/// # Safety
/// `K`'s target features must be available; only this call writes `cols` of `out`.
#[inline(always)]
unsafe fn gemv_with<K: Tiles>(
    x: &[f32],
    w: QuantBlocks<'_>,
    out: &SharedOut<'_>,
    cols: Range<usize>,
    row: &mut Vec<f32>,
) {
    let k = x.len();
    row.resize(k, 0.0);
    // SAFETY: these columns belong to `cols`, which only this call writes.
    let y = unsafe { out.cols(0, cols.clone()) };
    for (yj, j) in y.iter_mut().zip(cols) {
        w.decode_into(j * k, row);
        // SAFETY: features per this function's contract.
        *yj = unsafe { K::dot(x, row) };
    }
}

/// `y = x Wᵀ` for `rows > 1` tokens: panels of weight rows decoded into f32, each multiplied
/// by every token with the f32 GEMM.
pub(super) fn gemm(isa: Isa, p: Matmul, x: &[f32], w: QuantBlocks<'_>, y: &mut [f32]) {
    if p.k == 0 {
        y.fill(0.0);
        return;
    }
    let out = SharedOut::new(y, p.rows, p.n);
    let panel = (PANEL_FLOATS / p.k).clamp(2, 64);
    for_each_range(p.n, panel, p.rows * p.k, 4, |cols| {
        with_buffers(|b| {
            for start in cols.clone().step_by(panel) {
                let part = start..(start + panel).min(cols.end);
                match isa {
                    // SAFETY: the scalar tiles use no target features; only this chunk writes
                    // `part`.
                    Isa::Scalar => unsafe { panel_with::<Scalar>(p, x, w, &out, part, b) },
                    #[cfg(target_arch = "x86_64")]
                    // SAFETY: both x86 SIMD variants exist only after AVX2, FMA and F16C were
                    // detected; only this chunk writes `part`.
                    Isa::Avx2Fma(_) | Isa::Avx512Bf16(_) => unsafe {
                        panel_avx2(p, x, w, &out, part, b)
                    },
                    #[cfg(target_arch = "aarch64")]
                    // SAFETY: every aarch64 SIMD variant exists only after NEON was detected;
                    // only this chunk writes `part`.
                    Isa::Neon(_) | Isa::Dotprod(_) | Isa::I8mm(_) => unsafe {
                        panel_neon(p, x, w, &out, part, b)
                    },
                }
            }
        })
    });
}

/// [`panel_with`] compiled with AVX2, FMA and F16C.
///
/// # Safety
/// The CPU must support them; only this call writes `cols` of `out`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn panel_avx2(
    p: Matmul,
    x: &[f32],
    w: QuantBlocks<'_>,
    out: &SharedOut<'_>,
    cols: Range<usize>,
    b: &mut Buffers,
) {
    // SAFETY: per this function's contract.
    unsafe { panel_with::<super::avx2::Avx2>(p, x, w, out, cols, b) }
}

/// [`panel_with`] compiled with NEON.
///
/// # Safety
/// The CPU must support it; only this call writes `cols` of `out`.
#[cfg(target_arch = "aarch64")]
#[target_feature(enable = "neon")]
unsafe fn panel_neon(
    p: Matmul,
    x: &[f32],
    w: QuantBlocks<'_>,
    out: &SharedOut<'_>,
    cols: Range<usize>,
    b: &mut Buffers,
) {
    // SAFETY: per this function's contract.
    unsafe { panel_with::<super::neon::Neon>(p, x, w, out, cols, b) }
}

/// Output columns `cols` of every row: the weight rows `cols` decoded, then the f32 GEMM.
///
/// # Safety
/// `K`'s target features must be available; only this call writes `cols` of `out`.
#[inline(always)]
unsafe fn panel_with<K: Tiles>(
    p: Matmul,
    x: &[f32],
    w: QuantBlocks<'_>,
    out: &SharedOut<'_>,
    cols: Range<usize>,
    b: &mut Buffers,
) {
    let (k, jn) = (p.k, cols.len());
    let Buffers { rows: panel, part } = b;
    panel.resize(jn * k, 0.0);
    w.decode_into(cols.start * k, panel);
    part.resize(p.rows * jn, 0.0);
    let sub = Matmul {
        rows: p.rows,
        k,
        n: jn,
    };
    let part_out = SharedOut::new(part, p.rows, jn);
    // SAFETY: features per this function's contract; `part_out` is this call's own. The
    // GEMM's order even for one row: this is the GEMM (a one-row call reaches it only from
    // the batch-invariant matmul).
    unsafe { drive::<f32, K>(sub, x, panel, &part_out, 0..jn, false) };
    for (t, row) in part.chunks_exact(jn).enumerate() {
        // SAFETY: these columns belong to `cols`, which only this call writes.
        unsafe { out.cols(t, cols.clone()) }.copy_from_slice(row);
    }
}

thread_local! {
    /// The GEMM's quantized activations ([`gemm_int8`]), reused between calls.
    static GEMM_ACTS: RefCell<QuantizedActs> = RefCell::new(QuantizedActs::default());
    /// One panel's `[rows, panel]` output of [`gemm_int8`], per thread.
    static GEMM_PART: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Weight rows per [`gemm_int8`] panel: 16 rows of 4096 Q8_0 values are 68 KiB, which stay in
/// L2 while every group of tokens passes over them.
const INT8_PANEL_ROWS: usize = 16;

/// Bytes of one weight row of `k` values.
fn row_bytes(w: QuantBlocks<'_>, k: usize) -> usize {
    k / w.dtype.block_len() * w.dtype.block_bytes()
}

/// Output rows `cols` of the GEMV `y = W x` with `x` quantized to 8-bit blocks (`acts`, one
/// row) and integer dots ([`Precision::Int8`](super::Precision::Int8)).
pub(super) fn gemv_rows_int8(
    isa: Isa,
    acts: &QuantizedActs,
    w: QuantBlocks<'_>,
    out: &SharedOut<'_>,
    cols: Range<usize>,
) {
    let k = acts.qs.len();
    let (rb, a) = (row_bytes(w, k), acts.row(0, k));
    // SAFETY: these columns belong to `cols`, which only this call writes.
    let y = unsafe { out.cols(0, cols.clone()) };
    let wr = &w.bytes[cols.start * rb..cols.end * rb];
    match w.layout {
        BlockLayout::Rows => qdot::gemv(isa, w.dtype, wr, a, y),
        BlockLayout::Rows8 { .. } => {
            assert!(whole_groups(&cols), "{cols:?}: interleaved rows split");
            qdot::gemv_interleaved(isa, w.dtype, wr, a, y)
        }
    }
}

// The GEMV's row tile and the GEMM's panel keep every chunk on whole groups of interleaved
// rows (`whole_groups` checks it at run time too).
const _: () = assert!(super::NR_GEMV.is_multiple_of(ROWS) && INT8_PANEL_ROWS.is_multiple_of(ROWS));

/// Whether `cols` are whole groups of interleaved rows: the GEMV's chunks start on multiples
/// of its row tile (8) and end on one or at the weight's last row (a multiple of 8 too).
fn whole_groups(cols: &Range<usize>) -> bool {
    cols.start.is_multiple_of(ROWS) && cols.end.is_multiple_of(ROWS)
}

/// `y = x Wᵀ` for `rows > 1` tokens with 8-bit activations: every row of `x` quantized once
/// (in parallel), then panels of weight rows, each block unpacked once per four tokens.
pub(super) fn gemm_int8(isa: Isa, p: Matmul, x: &[f32], w: QuantBlocks<'_>, y: &mut [f32]) {
    let kind = qdot::acts_kind(w.dtype).expect("gemm_int8 is called for types with a dot");
    if p.k == 0 {
        y.fill(0.0);
        return;
    }
    // Taken, not borrowed: a job this thread runs while it waits must not find it borrowed.
    let mut acts = GEMM_ACTS.take();
    acts.quantize_rows(kind, x, p.k);
    let out = SharedOut::new(y, p.rows, p.n);
    let rb = row_bytes(w, p.k);
    for_each_range(p.n, INT8_PANEL_ROWS, p.rows * p.k, 4, |cols| {
        let mut part = GEMM_PART.take();
        for j0 in cols.clone().step_by(INT8_PANEL_ROWS) {
            let panel = j0..(j0 + INT8_PANEL_ROWS).min(cols.end);
            part.resize(p.rows * panel.len(), 0.0);
            let wp = &w.bytes[panel.start * rb..panel.end * rb];
            match w.layout {
                BlockLayout::Rows => qdot::gemm(isa, w.dtype, wp, &acts, p.k, &mut part),
                BlockLayout::Rows8 { .. } => {
                    assert!(whole_groups(&panel), "{panel:?}: interleaved rows split");
                    qdot::gemm_interleaved(isa, w.dtype, wp, &acts, p.k, &mut part)
                }
            }
            for (t, row) in part.chunks_exact(panel.len()).enumerate() {
                // SAFETY: the columns `panel` lie in `cols`, which only this chunk writes.
                unsafe { out.cols(t, panel.clone()) }.copy_from_slice(row);
            }
        }
        GEMM_PART.set(part);
    });
    GEMM_ACTS.set(acts);
}
