//! NEON SiLU·mul for the CPU MoE.

use crate::isa::neon::exp;
use std::arch::aarch64::*;

/// `gate[i] = gate[i] / (1 + e^(-gate[i])) · up[i]`, 4 lanes at a time.
///
/// # Safety
/// The CPU must support NEON.
#[target_feature(enable = "neon")]
pub(super) unsafe fn silu_mul(gate: &mut [f32], up: &[f32]) {
    let n = gate.len().min(up.len());
    let (pg, pu) = (gate.as_mut_ptr(), up.as_ptr());
    let mut i = 0;
    // SAFETY: loads and stores cover `i..i + 4 <= n`, inside both slices.
    unsafe {
        let one = vdupq_n_f32(1.0);
        while i + 4 <= n {
            let g = vld1q_f32(pg.add(i));
            let e = exp(vnegq_f32(g));
            let s = vdivq_f32(g, vaddq_f32(one, e));
            vst1q_f32(pg.add(i), vmulq_f32(s, vld1q_f32(pu.add(i))));
            i += 4;
        }
    }
    for j in i..n {
        gate[j] = super::silu(gate[j]) * up[j];
    }
}
