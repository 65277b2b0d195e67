//! AVX2 rotation of one head for the CPU RoPE.

use std::arch::x86_64::*;

/// One head, 8 pairs at a time. Separate multiplies and adds (no FMA), so each value is
/// rounded exactly as in the reference.
///
/// # Safety
/// The CPU must support AVX2.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn rotate(head: &mut [f32], cos: &[f32], sin: &[f32]) {
    let half = cos.len();
    assert!(sin.len() == half && head.len() >= 2 * half);
    let (ph, pc, ps) = (head.as_mut_ptr(), cos.as_ptr(), sin.as_ptr());
    let mut i = 0;
    // SAFETY: accesses cover `i..i + 8 <= half` of cos/sin and the same range plus `half`
    // of `head`, all inside the slices (asserted).
    unsafe {
        while i + 8 <= half {
            let (a, b) = (
                _mm256_loadu_ps(ph.add(i)),
                _mm256_loadu_ps(ph.add(i + half)),
            );
            let (c, s) = (_mm256_loadu_ps(pc.add(i)), _mm256_loadu_ps(ps.add(i)));
            let ra = _mm256_sub_ps(_mm256_mul_ps(a, c), _mm256_mul_ps(b, s));
            let rb = _mm256_add_ps(_mm256_mul_ps(b, c), _mm256_mul_ps(a, s));
            _mm256_storeu_ps(ph.add(i), ra);
            _mm256_storeu_ps(ph.add(i + half), rb);
            i += 8;
        }
    }
    for j in i..half {
        let (x0, x1) = (head[j], head[j + half]);
        head[j] = x0 * cos[j] - x1 * sin[j];
        head[j + half] = x1 * cos[j] + x0 * sin[j];
    }
}
