//! AVX2/FMA building blocks shared by the ops' AVX2 kernels: horizontal sum, a vector `exp`,
//! dot product and axpy over f32 slices.
//!
//! Everything here is `#[inline(always)] unsafe fn` without `#[target_feature]`: the bodies
//! are inlined into the ops' `#[target_feature(enable = "avx2,fma,f16c")]` entry points and
//! compiled with those features there (memchr's pattern). Callers must hold an
//! `Isa::Avx2Fma`.

use std::arch::x86_64::*;

/// The sum of the 8 lanes of `v`.
///
/// # Safety
/// Needs AVX (see the module doc).
#[inline(always)]
pub(crate) unsafe fn hsum(v: __m256) -> f32 {
    // SAFETY: AVX/SSE intrinsics on register values; the caller guarantees AVX.
    unsafe {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps::<1>(s, s));
        _mm_cvtss_f32(s)
    }
}

/// `e^x` lane-wise, Cephes' `expf` polynomial (about 2 ulp), inputs clamped to
/// `[-87.3, 88.7]` so the exponent field never goes subnormal; above about 88.38 (where `e^x`
/// nears f32's largest value) the result is +inf.
///
/// # Safety
/// Needs AVX2 and FMA.
#[inline(always)]
pub(crate) unsafe fn exp(x: __m256) -> __m256 {
    // SAFETY: register-only AVX2/FMA intrinsics; the caller guarantees the features.
    unsafe {
        let x = _mm256_min_ps(
            _mm256_max_ps(x, _mm256_set1_ps(-87.3)),
            _mm256_set1_ps(88.7),
        );
        // n = round(x / ln 2); r = x - n ln 2 with ln 2 split in two for precision.
        let n = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
            _mm256_mul_ps(x, _mm256_set1_ps(std::f32::consts::LOG2_E)),
        );
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693_359_4), x);
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.121_944_4e-4), r);
        let mut y = _mm256_set1_ps(1.987_569_1e-4);
        for c in [1.398_2e-3, 8.333_452e-3, 4.166_579_6e-2, 0.166_666_65, 0.5] {
            y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(c));
        }
        y = _mm256_fmadd_ps(
            y,
            _mm256_mul_ps(r, r),
            _mm256_add_ps(r, _mm256_set1_ps(1.0)),
        );
        // 2^n built directly in the exponent field.
        let pow2n = _mm256_slli_epi32::<23>(_mm256_add_epi32(
            _mm256_cvtps_epi32(n),
            _mm256_set1_epi32(127),
        ));
        _mm256_mul_ps(y, _mm256_castsi256_ps(pow2n))
    }
}

/// `Σ a[i] · b[i]` with 8-wide FMAs (two accumulators) and a scalar tail; `b` is f32, f16 or
/// bf16, widened as it is loaded.
///
/// # Safety
/// Needs AVX2, FMA and F16C.
#[inline(always)]
pub(crate) unsafe fn dot<T: super::Elem>(a: &[f32], b: &[T]) -> f32 {
    let n = a.len().min(b.len());
    let (pa, pb) = (a.as_ptr(), b.as_ptr());
    let mut i = 0;
    // SAFETY: every load reads `i..i + 8` (or `+16`) with that end at most `n`, so it stays
    // inside both slices; the caller guarantees AVX2/FMA.
    unsafe {
        let (mut s0, mut s1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        while i + 16 <= n {
            s0 = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i)), T::load8(pb.add(i)), s0);
            s1 = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i + 8)), T::load8(pb.add(i + 8)), s1);
            i += 16;
        }
        if i + 8 <= n {
            s0 = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i)), T::load8(pb.add(i)), s0);
            i += 8;
        }
        let mut s = hsum(_mm256_add_ps(s0, s1));
        for j in i..n {
            s += a[j] * b[j].widen();
        }
        s
    }
}

/// `y[i] = y[i] · scale + alpha · x[i]` (an axpy on a rescaled accumulator); `x` is f32, f16
/// or bf16, widened as it is loaded.
///
/// # Safety
/// Needs AVX2, FMA and F16C.
#[inline(always)]
pub(crate) unsafe fn scale_axpy<T: super::Elem>(y: &mut [f32], scale: f32, alpha: f32, x: &[T]) {
    let n = y.len().min(x.len());
    let (py, px) = (y.as_mut_ptr(), x.as_ptr());
    let mut i = 0;
    // SAFETY: loads and stores touch `i..i + 8 <= n`, inside both slices; AVX2/FMA per the
    // caller.
    unsafe {
        let (s, a) = (_mm256_set1_ps(scale), _mm256_set1_ps(alpha));
        while i + 8 <= n {
            let yv = _mm256_mul_ps(_mm256_loadu_ps(py.add(i)), s);
            _mm256_storeu_ps(py.add(i), _mm256_fmadd_ps(a, T::load8(px.add(i)), yv));
            i += 8;
        }
    }
    for j in i..n {
        y[j] = y[j] * scale + alpha * x[j].widen();
    }
}
