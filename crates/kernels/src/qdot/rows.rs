//! The loops every SIMD integer dot shares: lengths checked once, then one weight row against
//! one activation row (a GEMV) or against tokens four (or eight) at a time (a GEMM, each
//! weight block unpacked once per group of tokens). An ISA provides only [`BlockDot`], the
//! dot of one weight row's blocks with `M` activation rows.

use super::{Acts, QuantizedActs};
use mixtral_tensor::DType;

/// One ISA's block dot.
pub(crate) trait BlockDot {
    /// Whether the GEMM should take tokens eight at a time (wide registers hold the eight
    /// accumulators), not four.
    const EIGHT_TOKENS: bool;

    /// One weight row (`nb` blocks at `w`) against `M` rows of activations.
    ///
    /// # Safety
    /// The implementation's target features must be available; `w` holds `nb` blocks and the
    /// rows of `a` `nb` blocks each ([`check`]).
    unsafe fn blocks<const M: usize>(
        dtype: DType,
        w: *const u8,
        nb: usize,
        a: &[Acts<'_>; M],
    ) -> [f32; M];
}

/// [`super::dot_rows`] with `D`, lengths checked.
///
/// # Safety
/// `D`'s target features must be available.
#[inline(always)]
pub(crate) unsafe fn dot_rows<D: BlockDot, const M: usize>(
    dtype: DType,
    w: &[u8],
    a: [Acts<'_>; M],
) -> [f32; M] {
    let nb = check(dtype, w.len(), &a);
    // SAFETY: features per this function's contract; lengths checked.
    unsafe { D::blocks::<M>(dtype, w.as_ptr(), nb, &a) }
}

/// `y[t, j] = Σ w_j · a_t` for the rows of `w` and of `acts`, tokens four at a time (each
/// weight block unpacked once per four tokens), lengths checked once.
///
/// # Safety
/// `D`'s target features must be available.
#[inline(always)]
pub(crate) unsafe fn gemm<D: BlockDot>(
    dtype: DType,
    w: &[u8],
    acts: &QuantizedActs,
    k: usize,
    y: &mut [f32],
) {
    let Some((rows, n, rb)) = gemm_shape(dtype, w, acts, k, y) else {
        return;
    };
    let mut t0 = 0;
    // SAFETY: features per the caller's contract; shapes checked above, each `Acts` is
    // checked by `check` inside `tokens`.
    unsafe {
        if D::EIGHT_TOKENS {
            while t0 + 8 <= rows {
                tokens::<D, 8>(dtype, w, rb, acts, k, t0, y, n);
                t0 += 8;
            }
        }
        while t0 + 4 <= rows {
            tokens::<D, 4>(dtype, w, rb, acts, k, t0, y, n);
            t0 += 4;
        }
        match rows - t0 {
            3 => tokens::<D, 3>(dtype, w, rb, acts, k, t0, y, n),
            2 => tokens::<D, 2>(dtype, w, rb, acts, k, t0, y, n),
            1 => tokens::<D, 1>(dtype, w, rb, acts, k, t0, y, n),
            _ => {}
        }
    }
}

/// A GEMM's shape, checked: `(rows of acts, weight rows n, bytes per weight row)`, or `None`
/// (with `y` zeroed) when there is nothing to multiply.
///
/// # Panics
/// If the lengths of `acts`, `y` and `w` disagree with each other and with `k`.
pub(crate) fn gemm_shape(
    dtype: DType,
    w: &[u8],
    acts: &QuantizedActs,
    k: usize,
    y: &mut [f32],
) -> Option<(usize, usize, usize)> {
    if k == 0 || y.is_empty() {
        y.fill(0.0);
        return None;
    }
    let rows = acts.qs.len() / k;
    let n = y.len() / rows.max(1);
    assert!(
        rows * k == acts.qs.len() && rows * n == y.len() && n > 0,
        "gemm {dtype} shape"
    );
    let rb = w.len() / n;
    assert_eq!(rb * n, w.len(), "{dtype}: {} bytes for {n} rows", w.len());
    Some((rows, n, rb))
}

/// Tokens `t0..t0 + M` of [`gemm`] against every weight row.
///
/// # Safety
/// As [`gemm`], whose checks hold.
#[inline(always)]
#[expect(clippy::too_many_arguments, reason = "the GEMM's shape, spelled out")]
unsafe fn tokens<D: BlockDot, const M: usize>(
    dtype: DType,
    w: &[u8],
    rb: usize,
    acts: &QuantizedActs,
    k: usize,
    t0: usize,
    y: &mut [f32],
    n: usize,
) {
    let a = token_rows::<M>(acts, k, t0);
    let nb = check(dtype, rb, &a);
    for j in 0..n {
        // SAFETY: row `j` is `rb` bytes inside `w` (checked by the caller), `nb` blocks.
        let r = unsafe { D::blocks::<M>(dtype, w.as_ptr().add(j * rb), nb, &a) };
        for t in 0..M {
            y[(t0 + t) * n + j] = r[t];
        }
    }
}

/// Activation rows `t0..t0 + M` of `acts` (`k` values each).
#[inline(always)]
pub(crate) fn token_rows<const M: usize>(
    acts: &QuantizedActs,
    k: usize,
    t0: usize,
) -> [Acts<'_>; M] {
    std::array::from_fn(|t| acts.row((t0 + t) * k, k))
}

/// `y[j] = Σ w_j · a` over the rows of `w`, lengths checked once for all rows.
///
/// # Safety
/// `D`'s target features must be available.
#[inline(always)]
pub(crate) unsafe fn gemv<D: BlockDot>(dtype: DType, w: &[u8], a: Acts<'_>, y: &mut [f32]) {
    if y.is_empty() {
        return;
    }
    let rb = w.len() / y.len();
    assert_eq!(
        rb * y.len(),
        w.len(),
        "{dtype}: {} bytes for {} rows",
        w.len(),
        y.len()
    );
    let nb = check(dtype, rb, &[a]);
    for (j, yj) in y.iter_mut().enumerate() {
        // SAFETY: row `j` is `rb` bytes inside `w`, `nb` blocks (checked); features per the
        // caller's contract.
        *yj = unsafe { D::blocks::<1>(dtype, w.as_ptr().add(j * rb), nb, &[a])[0] };
    }
}

/// Checks that `dtype` has a dot, that `row_bytes` are whole blocks and that every row of
/// activations has as many blocks; returns the block count.
#[inline(always)]
pub(crate) fn check<const M: usize>(dtype: DType, row_bytes: usize, a: &[Acts<'_>; M]) -> usize {
    let (bl, bb) = (dtype.block_len(), dtype.block_bytes());
    let kind = super::acts_kind(dtype);
    assert!(kind.is_some(), "{dtype} has no integer dot");
    let nb = row_bytes / bb;
    assert_eq!(nb * bb, row_bytes, "{dtype} row of whole blocks");
    for a in a {
        assert!(Some(a.kind) == kind && a.qs.len() == nb * bl && a.d.len() == nb);
        assert!(a.kind == super::ActsKind::Q8_0 || a.bsums.len() == nb * 16);
    }
    nb
}
