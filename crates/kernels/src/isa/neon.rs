//! NEON building blocks shared by the ops' aarch64 kernels: horizontal sum, a vector `exp`,
//! dot product and axpy over f32 slices. The twin of [`super::avx2`], four lanes wide.
//!
//! Everything here is `#[inline(always)] unsafe fn` without `#[target_feature]`: the bodies
//! are inlined into the ops' `#[target_feature(enable = "neon")]` entry points. Callers must
//! hold an `Isa::Neon` (or a later aarch64 variant).

use std::arch::aarch64::*;

/// The sum of the 4 lanes of `v`.
///
/// # Safety
/// Needs NEON (see the module doc).
#[inline(always)]
pub(crate) unsafe fn hsum(v: float32x4_t) -> f32 {
    // SAFETY: register-only NEON; the caller guarantees NEON.
    unsafe { vaddvq_f32(v) }
}

/// `e^x` lane-wise, the same Cephes `expf` polynomial as the AVX2 `exp` (about 2 ulp), inputs
/// clamped to `[-87.3, 88.7]` so the exponent field never goes subnormal; above about 88.38
/// (where `e^x` nears f32's largest value) the result is +inf.
///
/// # Safety
/// Needs NEON.
#[inline(always)]
pub(crate) unsafe fn exp(x: float32x4_t) -> float32x4_t {
    // SAFETY: register-only NEON intrinsics; the caller guarantees the features.
    unsafe {
        let x = vminq_f32(vmaxq_f32(x, vdupq_n_f32(-87.3)), vdupq_n_f32(88.7));
        // n = round(x / ln 2); r = x - n ln 2 with ln 2 split in two for precision.
        let n = vrndnq_f32(vmulq_f32(x, vdupq_n_f32(std::f32::consts::LOG2_E)));
        let r = vfmsq_f32(x, n, vdupq_n_f32(0.693_359_4));
        let r = vfmsq_f32(r, n, vdupq_n_f32(-2.121_944_4e-4));
        let mut y = vdupq_n_f32(1.987_569_1e-4);
        for c in [1.398_2e-3, 8.333_452e-3, 4.166_579_6e-2, 0.166_666_65, 0.5] {
            y = vfmaq_f32(vdupq_n_f32(c), y, r);
        }
        y = vfmaq_f32(vaddq_f32(r, vdupq_n_f32(1.0)), y, vmulq_f32(r, r));
        // 2^n built directly in the exponent field (n is integral, so the conversion is exact).
        let pow2n = vshlq_n_s32::<23>(vaddq_s32(vcvtq_s32_f32(n), vdupq_n_s32(127)));
        vmulq_f32(y, vreinterpretq_f32_s32(pow2n))
    }
}

/// `Σ a[i] · b[i]` with 4-wide FMAs (four accumulators: NEON cores issue two to four FMAs a
/// cycle at a latency of four) and a scalar tail; `b` is f32, f16 or bf16, widened as it is
/// loaded.
///
/// # Safety
/// Needs NEON.
#[inline(always)]
pub(crate) unsafe fn dot<T: super::Elem>(a: &[f32], b: &[T]) -> f32 {
    let n = a.len().min(b.len());
    let (pa, pb) = (a.as_ptr(), b.as_ptr());
    let mut i = 0;
    // SAFETY: every load reads `i..i + 4` (or up to `+16`) with that end at most `n`, so it
    // stays inside both slices; the caller guarantees NEON.
    unsafe {
        let mut s = [vdupq_n_f32(0.0); 4];
        while i + 16 <= n {
            for (j, sj) in s.iter_mut().enumerate() {
                let o = i + 4 * j;
                *sj = vfmaq_f32(*sj, vld1q_f32(pa.add(o)), T::load4(pb.add(o)));
            }
            i += 16;
        }
        while i + 4 <= n {
            s[0] = vfmaq_f32(s[0], vld1q_f32(pa.add(i)), T::load4(pb.add(i)));
            i += 4;
        }
        let mut total = hsum(vaddq_f32(vaddq_f32(s[0], s[1]), vaddq_f32(s[2], s[3])));
        for j in i..n {
            total += a[j] * b[j].widen();
        }
        total
    }
}

/// `y[i] = y[i] · scale + alpha · x[i]` (an axpy on a rescaled accumulator); `x` is f32, f16
/// or bf16, widened as it is loaded.
///
/// # Safety
/// Needs NEON.
#[inline(always)]
pub(crate) unsafe fn scale_axpy<T: super::Elem>(y: &mut [f32], scale: f32, alpha: f32, x: &[T]) {
    let n = y.len().min(x.len());
    let (py, px) = (y.as_mut_ptr(), x.as_ptr());
    let mut i = 0;
    // SAFETY: loads and stores touch `i..i + 4 <= n`, inside both slices; NEON per the caller.
    unsafe {
        let (s, a) = (vdupq_n_f32(scale), vdupq_n_f32(alpha));
        while i + 4 <= n {
            let yv = vmulq_f32(vld1q_f32(py.add(i)), s);
            vst1q_f32(py.add(i), vfmaq_f32(yv, a, T::load4(px.add(i))));
            i += 4;
        }
    }
    for j in i..n {
        y[j] = y[j] * scale + alpha * x[j].widen();
    }
}
