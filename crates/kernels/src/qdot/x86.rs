//! x86 integer dot products: the reference's per-block integer sums with 32 byte products per
//! instruction. Unsigned weight quants (nibbles, 5- and 6-bit values) multiply signed
//! activation quants directly; signed weights (Q8_0, Q4_0 − 8) go through the sign trick
//! (`|w| · sign(a, w)`), as `vpmaddubsw` and `vpdpbusd` take one unsigned operand.
//!
//! No sum saturates: `vpmaddubsw` adds two products into an i16, at most 2 · 128 · 127 =
//! 32 512 here (activations are within ±127, unsigned weights below 64, |Q8_0| ≤ 128).
//!
//! One generic kernel per weight type over [`Dot8`]: AVX2 (`vpmaddubsw` + `vpmaddwd`) and
//! AVX512-VNNI (`vpdpbusd` on 256-bit vectors). Each kernel takes `M` activation rows, so a
//! prefill GEMM unpacks each weight block once for `M` tokens.

use super::rows::{self, BlockDot};
use super::{Acts, QuantizedActs, scales_mins_k4};
use mixtral_tensor::DType;
use std::arch::x86_64::*;

/// Four adjacent `u8 · i8` products summed into each i32 lane.
pub(crate) trait Dot8 {
    /// Whether AVX-512 (F, BW, VL, VNNI) is available too: Q8_0, Q4_0 and the K-quants then
    /// take the 512-bit kernels of [`super::zmm`].
    const AVX512: bool;

    /// A pair of scales (one per 16-byte half) in the form [`Dot8::dot_scaled`] takes.
    type Scale: Copy;

    /// `acc + Σ₄ u·s` per i32 lane.
    ///
    /// # Safety
    /// The implementation's target features must be available.
    unsafe fn dot(acc: __m256i, u: __m256i, s: __m256i) -> __m256i;

    /// The scale `lo` for the lanes of bytes 0..16 and `hi` for bytes 16..32.
    ///
    /// # Safety
    /// The implementation's target features must be available.
    unsafe fn scale(lo: i16, hi: i16) -> Self::Scale;

    /// `acc + scale · Σ₄ u·s` per i32 lane.
    ///
    /// # Safety
    /// The implementation's target features must be available.
    unsafe fn dot_scaled(acc: __m256i, u: __m256i, s: __m256i, scale: Self::Scale) -> __m256i;
}

/// AVX2: `vpmaddubsw` to i16 pairs, then `vpmaddwd` by ones (or by the scale) to i32.
pub(crate) struct Avx2;

impl Dot8 for Avx2 {
    const AVX512: bool = false;
    type Scale = __m256i;

    #[inline(always)]
    unsafe fn dot(acc: __m256i, u: __m256i, s: __m256i) -> __m256i {
        // SAFETY: AVX2 per the caller's contract.
        unsafe {
            let pairs = _mm256_maddubs_epi16(u, s);
            _mm256_add_epi32(acc, _mm256_madd_epi16(pairs, _mm256_set1_epi16(1)))
        }
    }

    #[inline(always)]
    unsafe fn scale(lo: i16, hi: i16) -> __m256i {
        // SAFETY: AVX per the caller's contract.
        unsafe { _mm256_setr_m128i(_mm_set1_epi16(lo), _mm_set1_epi16(hi)) }
    }

    #[inline(always)]
    unsafe fn dot_scaled(acc: __m256i, u: __m256i, s: __m256i, scale: __m256i) -> __m256i {
        // SAFETY: AVX2 per the caller's contract.
        unsafe { _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), scale)) }
    }
}

/// AVX512-VNNI on 256-bit vectors: `vpdpbusd` multiplies and accumulates in one instruction.
pub(crate) struct Vnni;

impl Dot8 for Vnni {
    const AVX512: bool = true;
    type Scale = __m256i;

    #[inline(always)]
    unsafe fn dot(acc: __m256i, u: __m256i, s: __m256i) -> __m256i {
        // SAFETY: AVX512-VNNI and AVX512-VL per the caller's contract.
        unsafe { _mm256_dpbusd_epi32(acc, u, s) }
    }

    #[inline(always)]
    unsafe fn scale(lo: i16, hi: i16) -> __m256i {
        // SAFETY: AVX per the caller's contract.
        unsafe { _mm256_setr_m128i(_mm_set1_epi32(lo.into()), _mm_set1_epi32(hi.into())) }
    }

    #[inline(always)]
    unsafe fn dot_scaled(acc: __m256i, u: __m256i, s: __m256i, scale: __m256i) -> __m256i {
        // SAFETY: AVX512-VNNI, AVX512-VL and AVX2 per the caller's contract.
        unsafe {
            let sums = _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, s);
            _mm256_add_epi32(acc, _mm256_mullo_epi32(sums, scale))
        }
    }
}

/// [`super::dot_rows`] with AVX2.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn dot_rows_avx2<const M: usize>(
    dtype: DType,
    w: &[u8],
    a: [Acts<'_>; M],
) -> [f32; M] {
    // SAFETY: features per this function's contract.
    unsafe { rows::dot_rows::<Avx2, M>(dtype, w, a) }
}

/// [`super::dot_rows`] with AVX512-VNNI.
///
/// # Safety
/// The CPU must support AVX2, FMA, F16C, AVX-512 F/BW/VL and AVX512-VNNI.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(crate) unsafe fn dot_rows_vnni<const M: usize>(
    dtype: DType,
    w: &[u8],
    a: [Acts<'_>; M],
) -> [f32; M] {
    // SAFETY: features per this function's contract.
    unsafe { rows::dot_rows::<Vnni, M>(dtype, w, a) }
}

/// [`super::gemv`] with AVX2.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn gemv_avx2(dtype: DType, w: &[u8], a: Acts<'_>, y: &mut [f32]) {
    // SAFETY: features per this function's contract.
    unsafe { rows::gemv::<Avx2>(dtype, w, a, y) }
}

/// [`super::gemv`] with AVX512-VNNI.
///
/// # Safety
/// The CPU must support AVX2, FMA, F16C, AVX-512 F/BW/VL and AVX512-VNNI.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(crate) unsafe fn gemv_vnni(dtype: DType, w: &[u8], a: Acts<'_>, y: &mut [f32]) {
    // SAFETY: features per this function's contract.
    unsafe { rows::gemv::<Vnni>(dtype, w, a, y) }
}

/// [`super::gemm`] with AVX2.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn gemm_avx2(
    dtype: DType,
    w: &[u8],
    acts: &QuantizedActs,
    k: usize,
    y: &mut [f32],
) {
    // SAFETY: features per this function's contract.
    unsafe { rows::gemm::<Avx2>(dtype, w, acts, k, y) }
}

/// [`super::gemm`] with AVX512-VNNI.
///
/// # Safety
/// The CPU must support AVX2, FMA, F16C, AVX-512 F/BW/VL and AVX512-VNNI.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(crate) unsafe fn gemm_vnni(
    dtype: DType,
    w: &[u8],
    acts: &QuantizedActs,
    k: usize,
    y: &mut [f32],
) {
    // SAFETY: features per this function's contract.
    unsafe { rows::gemm::<Vnni>(dtype, w, acts, k, y) }
}

impl BlockDot for Avx2 {
    const EIGHT_TOKENS: bool = false;

    #[inline(always)]
    unsafe fn blocks<const M: usize>(
        dtype: DType,
        w: *const u8,
        nb: usize,
        a: &[Acts<'_>; M],
    ) -> [f32; M] {
        // SAFETY: per the trait's contract.
        unsafe { dot_blocks::<Self, M>(dtype, w, nb, a) }
    }
}

impl BlockDot for Vnni {
    const EIGHT_TOKENS: bool = true;

    #[inline(always)]
    unsafe fn blocks<const M: usize>(
        dtype: DType,
        w: *const u8,
        nb: usize,
        a: &[Acts<'_>; M],
    ) -> [f32; M] {
        // SAFETY: per the trait's contract.
        unsafe { dot_blocks::<Self, M>(dtype, w, nb, a) }
    }
}

/// One weight row (`nb` blocks at `w`) against `M` rows of activations.
///
/// # Safety
/// `D`'s target features and AVX2, FMA, F16C must be available; `w` holds `nb` blocks and
/// the rows of `a` `nb` blocks each ([`rows::check`]).
#[inline(always)]
unsafe fn dot_blocks<D: Dot8, const M: usize>(
    dtype: DType,
    w: *const u8,
    nb: usize,
    a: &[Acts<'_>; M],
) -> [f32; M] {
    // SAFETY: per this function's contract.
    unsafe {
        if D::AVX512 {
            match dtype {
                DType::Q4_K => return super::zmm::q45_k::<M, false>(w, nb, a),
                DType::Q5_K => return super::zmm::q45_k::<M, true>(w, nb, a),
                DType::Q6_K => return super::zmm::q6_k::<M>(w, nb, a),
                DType::Q8_0 => return super::zmm::q8_0::<M>(w, nb, a),
                DType::Q4_0 => return super::zmm::q4_0::<M>(w, nb, a),
                _ => {}
            }
        }
        let acc = match dtype {
            DType::Q8_0 => q8_0::<D, M>(w, nb, a),
            DType::Q4_0 => q4_0::<D, M>(w, nb, a),
            DType::Q4_K => q45_k::<D, M, false>(w, nb, a),
            DType::Q5_K => q45_k::<D, M, true>(w, nb, a),
            DType::Q6_K => q6_k::<D, M>(w, nb, a),
            _ => unreachable!("checked by `rows::check`"),
        };
        // A loop, not `map`: a closure would not inherit the target features.
        let mut out = [0f32; M];
        for t in 0..M {
            out[t] = hsum(acc[t]);
        }
        out
    }
}

/// f16 at `p`, widened.
#[inline(always)]
pub(super) unsafe fn f16_at(p: *const u8) -> f32 {
    // SAFETY: the caller guarantees 2 readable bytes and F16C.
    unsafe {
        let bits = u16::from_le_bytes([*p, *p.add(1)]);
        _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(bits.into())))
    }
}

/// 32 bytes at `p`.
#[inline(always)]
pub(super) unsafe fn load32<T>(p: *const T) -> __m256i {
    // SAFETY: the caller guarantees 32 readable bytes.
    unsafe { _mm256_loadu_si256(p.cast()) }
}

/// The sum of the eight lanes.
#[inline(always)]
pub(super) unsafe fn hsum(v: __m256) -> f32 {
    // SAFETY: AVX per the caller's contract.
    unsafe {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)))
    }
}

/// `acc + d · lanes` (the block's integer lanes, scaled).
#[inline(always)]
pub(super) unsafe fn scale_add(acc: __m256, d: f32, lanes: __m256i) -> __m256 {
    // SAFETY: AVX and FMA per the caller's contract.
    unsafe { _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(lanes), acc) }
}

/// Signed weight quants `wq` against each row's quants at `off` of block `b`: the sign trick.
#[inline(always)]
unsafe fn signed_blocks<D: Dot8, const M: usize>(
    acc: &mut [__m256; M],
    a: &[Acts<'_>; M],
    b: usize,
    wq: __m256i,
    dw: f32,
) {
    // SAFETY: the caller checked that block `b` exists in every row; features per contract.
    unsafe {
        let u = _mm256_sign_epi8(wq, wq);
        for t in 0..M {
            let s = _mm256_sign_epi8(load32(a[t].qs.as_ptr().add(32 * b)), wq);
            let lanes = D::dot(_mm256_setzero_si256(), u, s);
            acc[t] = scale_add(acc[t], dw * *a[t].d.get_unchecked(b), lanes);
        }
    }
}

/// Q8_0 (34 bytes: `d` f16, 32 i8) against Q8_0 activations.
#[inline(always)]
unsafe fn q8_0<D: Dot8, const M: usize>(w: *const u8, nb: usize, a: &[Acts<'_>; M]) -> [__m256; M] {
    // SAFETY: `nb` whole blocks in `w` and in every row (checked by the caller).
    unsafe {
        let mut acc = [_mm256_setzero_ps(); M];
        for b in 0..nb {
            let p = w.add(34 * b);
            signed_blocks::<D, M>(&mut acc, a, b, load32(p.add(2)), f16_at(p));
        }
        acc
    }
}

/// Q4_0 (18 bytes: `d` f16, 16 bytes of nibbles: low = values 0..16, high = 16..32; value − 8).
#[inline(always)]
unsafe fn q4_0<D: Dot8, const M: usize>(w: *const u8, nb: usize, a: &[Acts<'_>; M]) -> [__m256; M] {
    // SAFETY: `nb` whole blocks in `w` and in every row (checked by the caller).
    unsafe {
        let mut acc = [_mm256_setzero_ps(); M];
        let m4 = _mm_set1_epi8(0x0F);
        for b in 0..nb {
            let p = w.add(18 * b);
            let q = _mm_loadu_si128(p.add(2).cast());
            let lo = _mm_and_si128(q, m4);
            let hi = _mm_and_si128(_mm_srli_epi16(q, 4), m4);
            let wq = _mm256_sub_epi8(_mm256_setr_m128i(lo, hi), _mm256_set1_epi8(8));
            signed_blocks::<D, M>(&mut acc, a, b, wq, f16_at(p));
        }
        acc
    }
}

/// `Σ_j m_j · (bsums[2j] + bsums[2j+1])` lanes of one Q8_K block against packed mins.
#[inline(always)]
pub(super) unsafe fn mins_lanes(mins: u64, bsums: *const i16) -> __m256i {
    // SAFETY: 16 readable i16 at `bsums`; AVX2 per the caller's contract.
    unsafe {
        let m = _mm_set1_epi64x(mins as i64);
        let pairs = _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(m, m));
        _mm256_madd_epi16(load32(bsums), pairs)
    }
}

/// Q4_K and (`FIFTH`) Q5_K: chunk `c` of 32 quant bytes holds values `64c..64c+32` in its low
/// nibbles (scale `2c`) and `64c+32..64c+64` in its high nibbles (scale `2c+1`).
#[inline(always)]
unsafe fn q45_k<D: Dot8, const M: usize, const FIFTH: bool>(
    w: *const u8,
    nb: usize,
    a: &[Acts<'_>; M],
) -> [__m256; M] {
    let bb = if FIFTH { 176 } else { 144 };
    // SAFETY: `nb` whole blocks in `w` and in every row (checked by the caller).
    unsafe {
        let mut acc = [_mm256_setzero_ps(); M];
        let (m4, one) = (_mm256_set1_epi8(0x0F), _mm256_set1_epi8(1));
        for b in 0..nb {
            let p = w.add(bb * b);
            let (d, dmin) = (f16_at(p), f16_at(p.add(2)));
            let packed: &[u8; 12] = &*p.add(4).cast();
            let (scales, mins) = scales_mins_k4(packed);
            let qs = p.add(if FIFTH { 48 } else { 16 });
            let qh = if FIFTH {
                load32(p.add(16))
            } else {
                _mm256_setzero_si256()
            };
            let mut lanes = [_mm256_setzero_si256(); M];
            for c in 0..4 {
                let q = load32(qs.add(32 * c));
                let mut lo = _mm256_and_si256(q, m4);
                let mut hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
                if FIFTH {
                    let bits = _mm256_srl_epi16(qh, _mm_cvtsi32_si128(2 * c as i32));
                    let h_lo = _mm256_slli_epi16(_mm256_and_si256(bits, one), 4);
                    let h_hi =
                        _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(bits, 1), one), 4);
                    lo = _mm256_or_si256(lo, h_lo);
                    hi = _mm256_or_si256(hi, h_hi);
                }
                let (s_lo, s_hi) = (scales[2 * c].into(), scales[2 * c + 1].into());
                let (s_lo, s_hi) = (D::scale(s_lo, s_lo), D::scale(s_hi, s_hi));
                for t in 0..M {
                    let x = a[t].qs.as_ptr().add(256 * b + 64 * c);
                    lanes[t] = D::dot_scaled(lanes[t], lo, load32(x), s_lo);
                    lanes[t] = D::dot_scaled(lanes[t], hi, load32(x.add(32)), s_hi);
                }
            }
            for t in 0..M {
                let da = *a[t].d.get_unchecked(b);
                let mins = mins_lanes(mins, a[t].bsums.as_ptr().add(16 * b));
                acc[t] = scale_add(acc[t], d * da, lanes[t]);
                acc[t] = scale_add(acc[t], -(dmin * da), mins);
            }
        }
        acc
    }
}

/// Bits `shift..shift + 2` of each byte of `qh`, moved to bits 4..6. (A function, not a
/// closure: closures do not inherit target features, and the intrinsics would not inline.)
#[inline(always)]
unsafe fn high_pair(qh: __m256i, shift: i32, m2: __m256i) -> __m256i {
    // SAFETY: AVX2 per the caller's contract.
    unsafe {
        let bits = _mm256_srl_epi16(qh, _mm_cvtsi32_si128(shift));
        _mm256_slli_epi16(_mm256_and_si256(bits, m2), 4)
    }
}

/// Q6_K (210 bytes: 128 bytes of low nibbles, 64 of high 2-bit pairs, 16 i8 scales, `d` f16
/// last). Values are `q − 32`: the `−32` is taken out once per block through the Q8_K sums.
#[inline(always)]
unsafe fn q6_k<D: Dot8, const M: usize>(w: *const u8, nb: usize, a: &[Acts<'_>; M]) -> [__m256; M] {
    // SAFETY: `nb` whole blocks in `w` and in every row (checked by the caller).
    unsafe {
        let mut acc = [_mm256_setzero_ps(); M];
        let (m4, m2) = (_mm256_set1_epi8(0x0F), _mm256_set1_epi8(3));
        for b in 0..nb {
            let p = w.add(210 * b);
            let d = f16_at(p.add(208));
            let sc: &[i8; 16] = &*p.add(192).cast();
            let mut lanes = [_mm256_setzero_si256(); M];
            for h in 0..2 {
                let ql0 = load32(p.add(64 * h));
                let ql1 = load32(p.add(64 * h + 32));
                let qh = load32(p.add(128 + 32 * h));
                let q = [
                    _mm256_or_si256(_mm256_and_si256(ql0, m4), high_pair(qh, 0, m2)),
                    _mm256_or_si256(_mm256_and_si256(ql1, m4), high_pair(qh, 2, m2)),
                    _mm256_or_si256(
                        _mm256_and_si256(_mm256_srli_epi16(ql0, 4), m4),
                        high_pair(qh, 4, m2),
                    ),
                    _mm256_or_si256(
                        _mm256_and_si256(_mm256_srli_epi16(ql1, 4), m4),
                        high_pair(qh, 6, m2),
                    ),
                ];
                for (i, &qi) in q.iter().enumerate() {
                    let g = 8 * h + 2 * i;
                    let s = D::scale(sc[g].into(), sc[g + 1].into());
                    for t in 0..M {
                        let x = a[t].qs.as_ptr().add(256 * b + 128 * h + 32 * i);
                        lanes[t] = D::dot_scaled(lanes[t], qi, load32(x), s);
                    }
                }
            }
            let sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128(sc.as_ptr().cast()));
            for t in 0..M {
                let bsums = load32(a[t].bsums.as_ptr().add(16 * b));
                let offset = _mm256_slli_epi32(_mm256_madd_epi16(bsums, sc16), 5);
                let lanes = _mm256_sub_epi32(lanes[t], offset);
                acc[t] = scale_add(acc[t], d * *a[t].d.get_unchecked(b), lanes);
            }
        }
        acc
    }
}
