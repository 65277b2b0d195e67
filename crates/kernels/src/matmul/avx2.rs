//! The AVX2/FMA/F16C micro-kernel of the CPU matmul and its `#[target_feature]` entry point.

use super::{Tiles, drive};
use crate::isa::{Elem, avx2::hsum};
use crate::matmul::Matmul;
use crate::threads::SharedOut;
use std::arch::x86_64::*;
use std::ops::Range;

/// AVX2 tiles: one 8-lane FMA accumulator per (token, weight row).
pub(super) struct Avx2;

impl Tiles for Avx2 {
    #[inline(always)]
    unsafe fn tile<T: Elem, const M: usize, const N: usize>(
        x: &[f32],
        ldx: usize,
        w: &[T],
        ldw: usize,
        kc: usize,
    ) -> [[f32; N]; M] {
        assert!(x.len() >= (M - 1) * ldx + kc && w.len() >= (N - 1) * ldw + kc);
        let (px, pw) = (x.as_ptr(), w.as_ptr());
        let mut r = [[0f32; N]; M];
        let mut i = 0;
        // SAFETY: every load reads `row · ld + i .. + 8` with `i + 8 <= kc`, inside the slices
        // by the assertion above; the caller guarantees AVX2/FMA/F16C.
        unsafe {
            let mut acc = [[_mm256_setzero_ps(); N]; M];
            while i + 8 <= kc {
                // GEMV (one token) streams each weight row once: fetch the next group of N
                // rows at the same offset a group ahead, so page-crossing row starts do not
                // wait for the hardware prefetcher to ramp up again. A prefetch never faults,
                // so the address may run past the matrix (`wrapping_add`, never dereferenced).
                if M == 1 && (i * std::mem::size_of::<T>()).is_multiple_of(64) {
                    for j in 0..N {
                        let ahead = pw.wrapping_add((N + j) * ldw + i);
                        _mm_prefetch::<_MM_HINT_T0>(ahead as *const i8);
                    }
                }
                let mut wv = [_mm256_setzero_ps(); N];
                for (j, v) in wv.iter_mut().enumerate() {
                    *v = T::load8(pw.add(j * ldw + i));
                }
                for (t, acc_t) in acc.iter_mut().enumerate() {
                    let xv = _mm256_loadu_ps(px.add(t * ldx + i));
                    for (a, &v) in acc_t.iter_mut().zip(&wv) {
                        *a = _mm256_fmadd_ps(xv, v, *a);
                    }
                }
                i += 8;
            }
            for (rt, acc_t) in r.iter_mut().zip(&acc) {
                for (rv, &a) in rt.iter_mut().zip(acc_t) {
                    *rv = hsum(a);
                }
            }
        }
        for (t, rt) in r.iter_mut().enumerate() {
            for (j, rv) in rt.iter_mut().enumerate() {
                for ii in i..kc {
                    *rv += x[t * ldx + ii] * w[j * ldw + ii].widen();
                }
            }
        }
        r
    }

    #[inline(always)]
    unsafe fn widen<T: Elem>(src: &[T], dst: &mut [f32]) {
        let n = src.len().min(dst.len());
        let mut i = 0;
        // SAFETY: loads and stores cover `i..i + 8 <= n`, inside both slices; the caller
        // guarantees the features.
        unsafe {
            while i + 8 <= n {
                _mm256_storeu_ps(dst.as_mut_ptr().add(i), T::load8(src.as_ptr().add(i)));
                i += 8;
            }
        }
        for j in i..n {
            dst[j] = src[j].widen();
        }
    }

    #[inline(always)]
    unsafe fn dot<T: Elem>(x: &[f32], w: &[T]) -> f32 {
        // SAFETY: the caller guarantees the features.
        unsafe { Self::dot4(x, w) }
    }
}

impl Avx2 {
    /// The `dot` of [`Tiles`]: four 8-lane accumulators over one row, 32 elements a step.
    #[inline(always)]
    unsafe fn dot4<T: Elem>(x: &[f32], w: &[T]) -> f32 {
        let k = x.len().min(w.len());
        let (px, pw) = (x.as_ptr(), w.as_ptr());
        let mut i = 0;
        let mut s;
        // SAFETY: every load reads `i .. i + 32 <= k` (or `i + 8 <= k`), inside both slices;
        // the caller guarantees AVX2/FMA/F16C.
        unsafe {
            let mut acc = [_mm256_setzero_ps(); 4];
            while i + 32 <= k {
                for (r, a) in acc.iter_mut().enumerate() {
                    let (xv, wv) = (
                        _mm256_loadu_ps(px.add(i + 8 * r)),
                        T::load8(pw.add(i + 8 * r)),
                    );
                    *a = _mm256_fmadd_ps(xv, wv, *a);
                }
                i += 32;
            }
            while i + 8 <= k {
                let (xv, wv) = (_mm256_loadu_ps(px.add(i)), T::load8(pw.add(i)));
                acc[0] = _mm256_fmadd_ps(xv, wv, acc[0]);
                i += 8;
            }
            let pair = |a: __m256, b: __m256| _mm256_add_ps(a, b);
            s = hsum(pair(pair(acc[0], acc[1]), pair(acc[2], acc[3])));
        }
        for j in i..k {
            s += x[j] * w[j].widen();
        }
        s
    }
}

/// [`drive`] compiled with AVX2, FMA and F16C.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C; `out` and `cols` as for [`drive`].
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn drive_avx2<T: Elem>(
    p: Matmul,
    x: &[f32],
    w: &[T],
    out: &SharedOut<'_>,
    cols: Range<usize>,
    gemv: bool,
) {
    // SAFETY: this function's features are those `Avx2` needs; `out`/`cols` per our contract.
    unsafe { drive::<T, Avx2>(p, x, w, out, cols, gemv) }
}
