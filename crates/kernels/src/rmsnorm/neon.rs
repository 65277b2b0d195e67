//! NEON row kernel of the CPU RMSNorm.

use crate::isa::{Elem, neon::hsum};
use std::arch::aarch64::*;

/// One row: `y = w · (x · inv_rms)`, the same products in the same order as the reference,
/// only the sum of squares is reassociated.
///
/// # Safety
/// The CPU must support NEON.
#[target_feature(enable = "neon")]
pub(super) unsafe fn row<T: Elem>(eps: f32, x: &[f32], w: &[T], y: &mut [f32]) {
    let n = x.len();
    assert!(w.len() >= n && y.len() >= n);
    let (px, pw, py) = (x.as_ptr(), w.as_ptr(), y.as_mut_ptr());
    // SAFETY: every access covers `i..i + 4 <= n` (or `+8`), inside all three slices
    // (asserted).
    unsafe {
        let (mut a0, mut a1) = (vdupq_n_f32(0.0), vdupq_n_f32(0.0));
        let mut i = 0;
        while i + 8 <= n {
            let (v0, v1) = (vld1q_f32(px.add(i)), vld1q_f32(px.add(i + 4)));
            a0 = vfmaq_f32(a0, v0, v0);
            a1 = vfmaq_f32(a1, v1, v1);
            i += 8;
        }
        if i + 4 <= n {
            let v = vld1q_f32(px.add(i));
            a0 = vfmaq_f32(a0, v, v);
            i += 4;
        }
        let tail: f32 = x[i..].iter().map(|v| v * v).sum();
        let mean_sq = (hsum(vaddq_f32(a0, a1)) + tail) / n as f32;
        let inv = 1.0 / (mean_sq + eps).sqrt();
        let vinv = vdupq_n_f32(inv);
        let mut i = 0;
        while i + 4 <= n {
            let xv = vmulq_f32(vld1q_f32(px.add(i)), vinv);
            vst1q_f32(py.add(i), vmulq_f32(T::load4(pw.add(i)), xv));
            i += 4;
        }
        for j in i..n {
            y[j] = w[j].widen() * (x[j] * inv);
        }
    }
}
