//! AVX2/FMA primitives of the CPU attention and its `#[target_feature]` entry point.

use super::{Group, Lanes};
use crate::isa::avx2::{dot, exp, hsum, scale_axpy};
use std::arch::x86_64::*;

/// AVX2 primitives (bodies in [`crate::isa::avx2`]).
struct Avx2;

impl Lanes for Avx2 {
    #[inline(always)]
    unsafe fn dot(a: &[f32], b: &[f32]) -> f32 {
        // SAFETY: the caller guarantees AVX2/FMA.
        unsafe { dot(a, b) }
    }

    #[inline(always)]
    unsafe fn scale_axpy(y: &mut [f32], scale: f32, alpha: f32, x: &[f32]) {
        // SAFETY: the caller guarantees AVX2/FMA.
        unsafe { scale_axpy(y, scale, alpha, x) }
    }

    #[inline(always)]
    unsafe fn prefetch(row: &[f32]) {
        for line in row.chunks(16) {
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
pub(super) unsafe fn run(job: &Group<'_>, o: &mut [f32]) {
    // SAFETY: this function enables the features `Avx2` needs.
    unsafe { job.run::<Avx2>(o) }
}
