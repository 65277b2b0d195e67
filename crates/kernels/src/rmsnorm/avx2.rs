//! AVX2/FMA row kernel of the CPU RMSNorm.

use crate::isa::{Elem, avx2::hsum};
use std::arch::x86_64::*;

/// One row: `y = w · (x · inv_rms)`, the same products in the same order as the reference,
/// only the sum of squares is reassociated.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn row<T: Elem>(eps: f32, x: &[f32], w: &[T], y: &mut [f32]) {
    let n = x.len();
    assert!(w.len() >= n && y.len() >= n);
    let (px, pw, py) = (x.as_ptr(), w.as_ptr(), y.as_mut_ptr());
    // SAFETY: every access covers `i..i + 8 <= n`, inside all three slices (asserted).
    unsafe {
        let (mut a0, mut a1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        let mut i = 0;
        while i + 16 <= n {
            let (v0, v1) = (_mm256_loadu_ps(px.add(i)), _mm256_loadu_ps(px.add(i + 8)));
            a0 = _mm256_fmadd_ps(v0, v0, a0);
            a1 = _mm256_fmadd_ps(v1, v1, a1);
            i += 16;
        }
        if i + 8 <= n {
            let v = _mm256_loadu_ps(px.add(i));
            a0 = _mm256_fmadd_ps(v, v, a0);
            i += 8;
        }
        let tail: f32 = x[i..].iter().map(|v| v * v).sum();
        let mean_sq = (hsum(_mm256_add_ps(a0, a1)) + tail) / n as f32;
        let inv = 1.0 / (mean_sq + eps).sqrt();
        let vinv = _mm256_set1_ps(inv);
        let mut i = 0;
        while i + 8 <= n {
            let xv = _mm256_mul_ps(_mm256_loadu_ps(px.add(i)), vinv);
            _mm256_storeu_ps(py.add(i), _mm256_mul_ps(T::load8(pw.add(i)), xv));
            i += 8;
        }
        for j in i..n {
            y[j] = w[j].widen() * (x[j] * inv);
        }
    }
}
