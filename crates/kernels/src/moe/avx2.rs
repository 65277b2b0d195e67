//! AVX2/FMA SiLU·mul for the CPU MoE.

use crate::isa::avx2::exp;
use std::arch::x86_64::*;

/// `gate[i] = gate[i] / (1 + e^(-gate[i])) · up[i]`, 8 lanes at a time.
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn silu_mul(gate: &mut [f32], up: &[f32]) {
    let n = gate.len().min(up.len());
    let (pg, pu) = (gate.as_mut_ptr(), up.as_ptr());
    let mut i = 0;
    // SAFETY: loads and stores cover `i..i + 8 <= n`, inside both slices.
    unsafe {
        let one = _mm256_set1_ps(1.0);
        while i + 8 <= n {
            let g = _mm256_loadu_ps(pg.add(i));
            let e = exp(_mm256_sub_ps(_mm256_setzero_ps(), g));
            let s = _mm256_div_ps(g, _mm256_add_ps(one, e));
            _mm256_storeu_ps(pg.add(i), _mm256_mul_ps(s, _mm256_loadu_ps(pu.add(i))));
            i += 8;
        }
    }
    for j in i..n {
        gate[j] = super::silu(gate[j]) * up[j];
    }
}
