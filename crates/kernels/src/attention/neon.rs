//! NEON primitives of the CPU attention and its `#[target_feature]` entry point: the twin
//! of `avx2.rs`, four lanes wide.

use super::{Group, HEADS, Lanes, Rows, Scores, accumulate_each, scores_each};
use crate::isa::Elem;
use crate::isa::neon::{dot, exp, hsum, scale_axpy};
use std::arch::aarch64::*;

/// NEON primitives (bodies in [`crate::isa::neon`]).
struct Neon;

impl Lanes for Neon {
    #[inline(always)]
    unsafe fn dot<T: Elem>(a: &[f32], b: &[T]) -> f32 {
        // SAFETY: the caller guarantees NEON.
        unsafe { dot(a, b) }
    }

    #[inline(always)]
    unsafe fn scale_axpy<T: Elem>(y: &mut [f32], scale: f32, alpha: f32, x: &[T]) {
        // SAFETY: the caller guarantees NEON.
        unsafe { scale_axpy(y, scale, alpha, x) }
    }

    #[inline(always)]
    unsafe fn scores<T: Elem>(q: &[f32], k: Rows<'_, T>, scale: f32, sc: &mut Scores) {
        let hn = q.len() / k.dh.max(1);
        if !k.dh.is_multiple_of(4) {
            // SAFETY: the caller guarantees NEON.
            return unsafe { scores_each::<Self, T>(q, k, scale, sc) };
        }
        let mut h = 0;
        // SAFETY: `h + N <= hn` heads of `q`; NEON per the caller.
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
        if !v.dh.is_multiple_of(4) {
            // SAFETY: the caller guarantees NEON.
            return unsafe { accumulate_each::<Self, T>(o, alpha, sc, v) };
        }
        let mut h = 0;
        // SAFETY: `h + N <= hn` heads of `o`; NEON per the caller.
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
            // SAFETY: `prfm` is only a hint and never faults; the address is in `row`. (The
            // `_prefetch` intrinsic is not stable on aarch64.)
            unsafe {
                std::arch::asm!(
                    "prfm pldl1keep, [{p}]",
                    p = in(reg) line.as_ptr(),
                    options(nostack, readonly, preserves_flags)
                )
            };
        }
    }

    #[inline(always)]
    unsafe fn exp_sum(s: &mut [f32], max: f32) -> f32 {
        let n = s.len();
        let mut i = 0;
        let mut total = 0f32;
        // SAFETY: loads and stores cover `i..i + 4 <= n`; NEON per the caller.
        unsafe {
            let m = vdupq_n_f32(max);
            let mut acc = vdupq_n_f32(0.0);
            while i + 4 <= n {
                let e = exp(vsubq_f32(vld1q_f32(s.as_ptr().add(i)), m));
                vst1q_f32(s.as_mut_ptr().add(i), e);
                acc = vaddq_f32(acc, e);
                i += 4;
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

/// [`Group::run`] compiled with NEON.
///
/// # Safety
/// The CPU must support NEON.
#[target_feature(enable = "neon")]
pub(super) unsafe fn run<T: Elem>(job: &Group<'_, T>, o: &mut [f32]) {
    // SAFETY: this function enables the features `Neon` needs.
    unsafe { job.run::<Neon>(o) }
}

/// Scores of `N` heads (`q`: at least `N · Dh`, `sc`: `N` rows) against every row of `k`,
/// `Dh` a multiple of 4: each K row is loaded once for the `N` heads, two accumulators per
/// head so each FMA chain has a partner.
///
/// # Safety
/// Needs NEON.
#[inline(always)]
unsafe fn scores_n<const N: usize, T: Elem>(
    q: &[f32],
    k: Rows<'_, T>,
    scale: f32,
    sc: &mut [[f32; super::BLOCK]],
) {
    let dh = k.dh;
    assert!(q.len() >= N * dh && sc.len() >= N && k.n <= super::BLOCK && dh.is_multiple_of(4));
    // SAFETY: loads read `q[h·Dh + c .. + 4]` (h < N, c + 4 <= Dh, inside `q` as asserted) and
    // K row `i < n` at `c .. c + 4 <= Dh` (in bounds per `Rows::new`); NEON per the caller.
    unsafe {
        let qp = q.as_ptr();
        for i in 0..k.n {
            let kp = k.ptr(i);
            let mut acc = [[vdupq_n_f32(0.0); 2]; N];
            let mut c = 0;
            while c + 8 <= dh {
                let (k0, k1) = (T::load4(kp.add(c)), T::load4(kp.add(c + 4)));
                for (h, a) in acc.iter_mut().enumerate() {
                    a[0] = vfmaq_f32(a[0], k0, vld1q_f32(qp.add(h * dh + c)));
                    a[1] = vfmaq_f32(a[1], k1, vld1q_f32(qp.add(h * dh + c + 4)));
                }
                c += 8;
            }
            if c < dh {
                let k0 = T::load4(kp.add(c));
                for (h, a) in acc.iter_mut().enumerate() {
                    a[0] = vfmaq_f32(a[0], k0, vld1q_f32(qp.add(h * dh + c)));
                }
            }
            for (row, a) in sc.iter_mut().zip(&acc) {
                row[i] = hsum(vaddq_f32(a[0], a[1])) * scale;
            }
        }
    }
}

/// `o_h = o_h · alpha[h] + Σ_i sc[h][i] · v_i` for `N` heads, `Dh` a multiple of 4: per
/// 4-float column (four at a time where `Dh` allows) the `N` accumulators stay in registers
/// across the whole block, and each V load feeds `N` FMAs.
///
/// # Safety
/// Needs NEON.
#[inline(always)]
unsafe fn accumulate_n<const N: usize, T: Elem>(
    o: &mut [f32],
    alpha: &[f32],
    sc: &[[f32; super::BLOCK]],
    v: Rows<'_, T>,
) {
    let dh = v.dh;
    assert!(o.len() >= N * dh && alpha.len() >= N && sc.len() >= N && v.n <= super::BLOCK);
    assert!(dh.is_multiple_of(4));
    let mut c = 0;
    // SAFETY: as `columns` requires: `c + 4·C <= Dh`; NEON per the caller.
    unsafe {
        while c + 16 <= dh {
            columns::<N, 4, T>(o, alpha, sc, v, c);
            c += 16;
        }
        while c < dh {
            columns::<N, 1, T>(o, alpha, sc, v, c);
            c += 4;
        }
    }
}

/// [`accumulate_n`] for the `C` 4-float columns starting at `c`.
///
/// # Safety
/// Needs NEON; `c + 4·C <= Dh`, and the bounds `accumulate_n` asserts.
#[inline(always)]
unsafe fn columns<const N: usize, const C: usize, T: Elem>(
    o: &mut [f32],
    alpha: &[f32],
    sc: &[[f32; super::BLOCK]],
    v: Rows<'_, T>,
    c: usize,
) {
    let dh = v.dh;
    // SAFETY: loads and stores touch `o[h·Dh + c + 4j .. + 4]` (h < N, j < C, inside `o` per
    // the caller's bounds) and V row `i < n` at `c + 4j .. + 4 <= Dh` (in bounds per
    // `Rows::new`); score reads are `sc[h][i]` with `h < N`, `i < n <= BLOCK`.
    unsafe {
        let op = o.as_mut_ptr();
        let mut acc = [[vdupq_n_f32(0.0); C]; N];
        for (h, a) in acc.iter_mut().enumerate() {
            let scale = vdupq_n_f32(alpha[h]);
            for (j, aj) in a.iter_mut().enumerate() {
                *aj = vmulq_f32(vld1q_f32(op.add(h * dh + c + 4 * j)), scale);
            }
        }
        for i in 0..v.n {
            let vp = v.ptr(i).add(c);
            let mut vv = [vdupq_n_f32(0.0); C];
            for (j, x) in vv.iter_mut().enumerate() {
                *x = T::load4(vp.add(4 * j));
            }
            for (h, a) in acc.iter_mut().enumerate() {
                let p = *sc.get_unchecked(h).get_unchecked(i);
                for (aj, x) in a.iter_mut().zip(&vv) {
                    *aj = vfmaq_n_f32(*aj, *x, p);
                }
            }
        }
        for (h, a) in acc.iter().enumerate() {
            for (j, aj) in a.iter().enumerate() {
                vst1q_f32(op.add(h * dh + c + 4 * j), *aj);
            }
        }
    }
}
