//! NEON rotation of one head for the CPU RoPE.

use std::arch::aarch64::*;

/// One head, 4 pairs at a time. Separate multiplies and adds (no FMA), so each value is
/// rounded exactly as in the reference.
///
/// # Safety
/// The CPU must support NEON.
#[target_feature(enable = "neon")]
pub(super) unsafe fn rotate(head: &mut [f32], cos: &[f32], sin: &[f32]) {
    let half = cos.len();
    assert!(sin.len() == half && head.len() >= 2 * half);
    let (ph, pc, ps) = (head.as_mut_ptr(), cos.as_ptr(), sin.as_ptr());
    let mut i = 0;
    // SAFETY: accesses cover `i..i + 4 <= half` of cos/sin and the same range plus `half`
    // of `head`, all inside the slices (asserted).
    unsafe {
        while i + 4 <= half {
            let (a, b) = (vld1q_f32(ph.add(i)), vld1q_f32(ph.add(i + half)));
            let (c, s) = (vld1q_f32(pc.add(i)), vld1q_f32(ps.add(i)));
            let ra = vsubq_f32(vmulq_f32(a, c), vmulq_f32(b, s));
            let rb = vaddq_f32(vmulq_f32(b, c), vmulq_f32(a, s));
            vst1q_f32(ph.add(i), ra);
            vst1q_f32(ph.add(i + half), rb);
            i += 4;
        }
    }
    for j in i..half {
        let (x0, x1) = (head[j], head[j + half]);
        head[j] = x0 * cos[j] - x1 * sin[j];
        head[j + half] = x1 * cos[j] + x0 * sin[j];
    }
}
