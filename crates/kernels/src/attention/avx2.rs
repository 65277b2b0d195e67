//! AVX2/FMA primitives of the CPU attention and its `#[target_feature]` entry point.

use super::{Group, HEADS, Lanes, Rows, Scores, accumulate_each, scores_each};
use crate::isa::Elem;
use crate::isa::avx2::{dot, exp, hsum, scale_axpy};
use std::arch::x86_64::*;

/// AVX2 primitives (bodies in [`crate::isa::avx2`]).
struct Avx2;

impl Lanes for Avx2 {
    #[inline(always)]
    unsafe fn dot<T: Elem>(a: &[f32], b: &[T]) -> f32 {
        // SAFETY: the caller guarantees AVX2/FMA/F16C.
        unsafe { dot(a, b) }
    }

    #[inline(always)]
    unsafe fn scale_axpy<T: Elem>(y: &mut [f32], scale: f32, alpha: f32, x: &[T]) {
        // SAFETY: the caller guarantees AVX2/FMA/F16C.
        unsafe { scale_axpy(y, scale, alpha, x) }
    }

    #[inline(always)]
    unsafe fn scores<T: Elem>(q: &[f32], k: Rows<'_, T>, scale: f32, sc: &mut Scores) {
        let hn = q.len() / k.dh.max(1);
        if !k.dh.is_multiple_of(8) {
            // SAFETY: the caller guarantees AVX2/FMA.
            return unsafe { scores_each::<Self, T>(q, k, scale, sc) };
        }
        let mut h = 0;
        // SAFETY: `h + N <= hn` heads of `q`; AVX2/FMA per the caller.
        unsafe {
            while h + 4 <= hn {
                scores_n::<4, T>(&q[h * k.dh..], k, scale, &mut sc[h..h + 4]);
                h += 4;
            }
            while h < hn {
                scores_n::<1, T>(&q[h * k.dh..], k, scale, &mut sc[h..h + 1]);
                h += 1;
            }
        }
    }

    #[inline(always)]
    unsafe fn accumulate<T: Elem>(
        o: &mut [f32],
        alpha: &[f32; HEADS],
        sc: &Scores,
        v: Rows<'_, T>,
    ) {
        let hn = o.len() / v.dh.max(1);
        if !v.dh.is_multiple_of(8) {
            // SAFETY: the caller guarantees AVX2/FMA.
            return unsafe { accumulate_each::<Self, T>(o, alpha, sc, v) };
        }
        let mut h = 0;
        // SAFETY: `h + N <= hn` heads of `o`; AVX2/FMA per the caller.
        unsafe {
            while h + 4 <= hn {
                accumulate_n::<4, T>(&mut o[h * v.dh..], &alpha[h..], &sc[h..], v);
                h += 4;
            }
            while h < hn {
                accumulate_n::<1, T>(&mut o[h * v.dh..], &alpha[h..], &sc[h..], v);
                h += 1;
            }
        }
    }

    #[inline(always)]
    unsafe fn prefetch<T: Elem>(row: &[T]) {
        for line in row.chunks(64 / std::mem::size_of::<T>()) {
            // SAFETY: a prefetch is only a hint and never faults; the address is in `row`.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(line.as_ptr().cast::<i8>()) };
        }
    }

    #[inline(always)]
    unsafe fn exp_sum(s: &mut [f32], max: f32) -> f32 {
        let n = s.len();
        let mut i = 0;
        let mut total = 0f32;
        // SAFETY: loads and stores cover `i..i + 8 <= n`; AVX2/FMA per the caller.
        unsafe {
            let m = _mm256_set1_ps(max);
            let mut acc = _mm256_setzero_ps();
            while i + 8 <= n {
                let e = exp(_mm256_sub_ps(_mm256_loadu_ps(s.as_ptr().add(i)), m));
                _mm256_storeu_ps(s.as_mut_ptr().add(i), e);
                acc = _mm256_add_ps(acc, e);
                i += 8;
            }
            total += hsum(acc);
        }
        for v in &mut s[i..] {
            *v = (*v - max).exp();
            total += *v;
        }
        total
    }
}

/// [`Group::run`] compiled with AVX2 and FMA.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn run<T: Elem>(job: &Group<'_, T>, o: &mut [f32]) {
    // SAFETY: this function enables the features `Avx2` needs.
    unsafe { job.run::<Avx2>(o) }
}

/// Scores of `N` heads (`q`: at least `N · Dh`, `sc`: `N` rows) against every row of `k`,
/// `Dh` a multiple of 8: each K row is loaded once for the `N` heads, and for `N = 4` the four
/// dot products are reduced together (three `hadd`s instead of four horizontal sums).
///
/// # Safety
/// Needs AVX2 and FMA.
#[inline(always)]
unsafe fn scores_n<const N: usize, T: Elem>(
    q: &[f32],
    k: Rows<'_, T>,
    scale: f32,
    sc: &mut [[f32; super::BLOCK]],
) {
    let dh = k.dh;
    assert!(q.len() >= N * dh && sc.len() >= N && k.n <= super::BLOCK && dh.is_multiple_of(8));
    // SAFETY: loads read `q[h·Dh + c .. + 8]` (h < N, c + 8 <= Dh, inside `q` as asserted) and
    // K row `i < n` at `c .. c + 8 <= Dh` (in bounds per `Rows::new`); AVX2/FMA per the
    // caller.
    unsafe {
        let qp = q.as_ptr();
        for i in 0..k.n {
            let kp = k.ptr(i);
            let mut acc = [_mm256_setzero_ps(); N];
            for c in (0..dh).step_by(8) {
                let kv = T::load8(kp.add(c));
                for (h, a) in acc.iter_mut().enumerate() {
                    *a = _mm256_fmadd_ps(kv, _mm256_loadu_ps(qp.add(h * dh + c)), *a);
                }
            }
            if N == 4 {
                let t = _mm256_hadd_ps(
                    _mm256_hadd_ps(acc[0], acc[1]),
                    _mm256_hadd_ps(acc[2], acc[3]),
                );
                let r = _mm_add_ps(_mm256_castps256_ps128(t), _mm256_extractf128_ps::<1>(t));
                let mut out = [0f32; 4];
                _mm_storeu_ps(out.as_mut_ptr(), _mm_mul_ps(r, _mm_set1_ps(scale)));
                for (row, &o) in sc.iter_mut().zip(&out) {
                    row[i] = o;
                }
            } else {
                for (row, a) in sc.iter_mut().zip(&acc) {
                    row[i] = hsum(*a) * scale;
                }
            }
        }
    }
}

/// `o_h = o_h · alpha[h] + Σ_i sc[h][i] · v_i` for `N` heads, `Dh` a multiple of 8: per
/// 8-float column (two at a time where `Dh` allows, so each accumulator's FMA chain has a
/// partner to hide its latency behind) the `N` accumulators stay in registers across the
/// whole block, and each V load feeds `N` FMAs.
///
/// # Safety
/// Needs AVX2 and FMA.
#[inline(always)]
unsafe fn accumulate_n<const N: usize, T: Elem>(
    o: &mut [f32],
    alpha: &[f32],
    sc: &[[f32; super::BLOCK]],
    v: Rows<'_, T>,
) {
    let dh = v.dh;
    assert!(o.len() >= N * dh && alpha.len() >= N && sc.len() >= N && v.n <= super::BLOCK);
    assert!(dh.is_multiple_of(8));
    let mut c = 0;
    // SAFETY: as `columns` requires: `c + 8·C <= Dh`; AVX2/FMA per the caller.
    unsafe {
        while c + 16 <= dh {
            columns::<N, 2, T>(o, alpha, sc, v, c);
            c += 16;
        }
        if c < dh {
            columns::<N, 1, T>(o, alpha, sc, v, c);
        }
    }
}

/// [`accumulate_n`] for the `C` 8-float columns starting at `c`.
///
/// # Safety
/// Needs AVX2 and FMA; `c + 8·C <= Dh`, and the bounds `accumulate_n` asserts.
#[inline(always)]
unsafe fn columns<const N: usize, const C: usize, T: Elem>(
    o: &mut [f32],
    alpha: &[f32],
    sc: &[[f32; super::BLOCK]],
    v: Rows<'_, T>,
    c: usize,
) {
    let dh = v.dh;
    // SAFETY: loads and stores touch `o[h·Dh + c + 8j .. + 8]` (h < N, j < C, inside `o` per
    // the caller's bounds) and V row `i < n` at `c + 8j .. + 8 <= Dh` (in bounds per
    // `Rows::new`); score reads are `sc[h][i]` with `h < N`, `i < n <= BLOCK`.
    unsafe {
        let op = o.as_mut_ptr();
        let mut acc = [[_mm256_setzero_ps(); C]; N];
        for (h, a) in acc.iter_mut().enumerate() {
            let scale = _mm256_set1_ps(alpha[h]);
            for (j, aj) in a.iter_mut().enumerate() {
                *aj = _mm256_mul_ps(_mm256_loadu_ps(op.add(h * dh + c + 8 * j)), scale);
            }
        }
        for i in 0..v.n {
            let vp = v.ptr(i).add(c);
            let mut vv = [_mm256_setzero_ps(); C];
            for (j, x) in vv.iter_mut().enumerate() {
                *x = T::load8(vp.add(8 * j));
            }
            for (h, a) in acc.iter_mut().enumerate() {
                let p = _mm256_set1_ps(*sc.get_unchecked(h).get_unchecked(i));
                for (aj, x) in a.iter_mut().zip(&vv) {
                    *aj = _mm256_fmadd_ps(p, *x, *aj);
                }
            }
        }
        for (h, a) in acc.iter().enumerate() {
            for (j, aj) in a.iter().enumerate() {
                _mm256_storeu_ps(op.add(h * dh + c + 8 * j), *aj);
            }
        }
    }
}
