//! 512-bit kernels of the K-quants for CPUs with AVX-512 (F, BW, VL) and AVX512-VNNI: one
//! `vpdpbusd` multiplies 64 weight quants by 64 activation quants, so a Q4_K block (256
//! values) takes four, against eight 256-bit ones. A decode GEMV on these types is bound by
//! instructions per weight byte, not by memory, so halving them is what moves it toward the
//! bandwidth floor.
//!
//! Layout facts these kernels rely on (see the reference): a Q4_K/Q5_K chunk of 32 quant bytes
//! holds values `64c..64c+32` in its low nibbles and `64c+32..64c+64` in its high nibbles, so
//! one chunk broadcast to both halves of a 512-bit register and shifted by 0 and 4 per half is
//! 64 consecutive values; a Q6_K half-block's 64 low-nibble bytes are values `0..64` (low
//! nibbles) and `64..128` (high nibbles), each with two bits from one 32-byte `qh` run.

use super::Acts;
use super::scales_mins_k4;
use super::x86::{f16_at, hsum, load32, mins_lanes};
use std::arch::x86_64::*;

/// The sum of the sixteen lanes.
#[inline(always)]
unsafe fn hsum512(v: __m512) -> f32 {
    // SAFETY: AVX-512 F per the caller's contract.
    unsafe {
        let lo = _mm512_castps512_ps256(v);
        let hi = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1));
        hsum(_mm256_add_ps(lo, hi))
    }
}

/// Asks for the cache lines [`PREFETCH_AHEAD`] bytes past `p` (a prefetch past the end of
/// the row is harmless: it never faults).
#[inline(always)]
unsafe fn prefetch(p: *const u8) {
    // SAFETY: a prefetch reads nothing architecturally; `wrapping_add` keeps the pointer
    // arithmetic defined past the end of the allocation.
    unsafe {
        _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(PREFETCH_AHEAD).cast());
        _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(PREFETCH_AHEAD + 64).cast());
        _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(PREFETCH_AHEAD + 128).cast());
    }
}

/// How far ahead of the block being multiplied its successors are prefetched.
const PREFETCH_AHEAD: usize = 1024;

/// 64 bytes at `p`.
#[inline(always)]
unsafe fn load64<T>(p: *const T) -> __m512i {
    // SAFETY: the caller guarantees 64 readable bytes.
    unsafe { _mm512_loadu_si512(p.cast()) }
}

/// 32 bytes at `p` in both halves.
#[inline(always)]
unsafe fn broadcast32(p: *const u8) -> __m512i {
    // SAFETY: the caller guarantees 32 readable bytes and AVX-512 F.
    unsafe { _mm512_broadcast_i64x4(load32(p)) }
}

/// Sixteen i16 lanes of `lo` then sixteen of `hi` (per-half shift counts).
#[inline(always)]
unsafe fn halves16(lo: i16, hi: i16) -> __m512i {
    // SAFETY: AVX-512 F per the caller's contract.
    unsafe { _mm512_inserti64x4(_mm512_set1_epi16(lo), _mm256_set1_epi16(hi), 1) }
}

/// i16 lane indices `first` ×`run`, `first + 1` ×`run`, … (32 lanes), for `vpermw`.
#[inline(always)]
unsafe fn runs16(first: i16, run: i16) -> __m512i {
    // SAFETY: AVX-512 BW per the caller's contract.
    unsafe {
        let lane = _mm512_set_epi16(
            31, 30, 29, 28, 27, 26, 25, 24, 23, 22, 21, 20, 19, 18, 17, 16, 15, 14, 13, 12, 11, 10,
            9, 8, 7, 6, 5, 4, 3, 2, 1, 0,
        );
        let step = match run {
            8 => _mm512_srli_epi16(lane, 3),
            _ => _mm512_srli_epi16(lane, 4),
        };
        _mm512_add_epi16(step, _mm512_set1_epi16(first))
    }
}

/// `acc + Σ₄ u·x · scale` per i32 lane, with the scale per pair of products (`scale`'s i16
/// lanes): `vpmaddubsw` to i16 pairs (no saturation: u < 64, |x| ≤ 127), then `vpdpwssd`
/// multiplies by the scales and accumulates in one instruction. Two instructions per 64
/// quants, against three for `vpdpbusd` + `vpmulld` + `vpaddd`.
#[inline(always)]
unsafe fn scaled_dot(acc: __m512i, u: __m512i, x: __m512i, scale: __m512i) -> __m512i {
    // SAFETY: AVX-512 BW and VNNI per the caller's contract.
    unsafe { _mm512_dpwssd_epi32(acc, _mm512_maddubs_epi16(u, x), scale) }
}

/// Q4_K and (`FIFTH`) Q5_K against Q8_K activations.
///
/// # Safety
/// AVX-512 F/BW/VL/VNNI, AVX2, FMA and F16C must be available; `w` holds `nb` blocks and
/// every row of `a` `nb` blocks (quants, scales and sums).
#[inline(always)]
pub(super) unsafe fn q45_k<const M: usize, const FIFTH: bool>(
    w: *const u8,
    nb: usize,
    a: &[Acts<'_>; M],
) -> [f32; M] {
    let bb = if FIFTH { 176 } else { 144 };
    // SAFETY: per this function's contract.
    unsafe {
        let mut acc = [_mm512_setzero_ps(); M];
        let mut acc_min = [_mm256_setzero_ps(); M];
        let m4 = _mm512_set1_epi8(0x0F);
        let one = _mm512_set1_epi8(1);
        let nibble_shift = halves16(0, 4);
        for b in 0..nb {
            let p = w.add(bb * b);
            prefetch(p);
            let (d, dmin) = (f16_at(p), f16_at(p.add(2)));
            let (scales, mins) = scales_mins_k4(&*p.add(4).cast());
            let sc = _mm512_cvtepu8_epi16(_mm256_castsi128_si256(_mm_set_epi64x(
                0,
                i64::from_le_bytes(scales),
            )));
            let qs = p.add(if FIFTH { 48 } else { 16 });
            let qh = if FIFTH {
                broadcast32(p.add(16))
            } else {
                _mm512_setzero_si512()
            };
            let mut lanes = [_mm512_setzero_si512(); M];
            for c in 0..4 {
                let q = broadcast32(qs.add(32 * c));
                let mut u = _mm512_and_si512(_mm512_srlv_epi16(q, nibble_shift), m4);
                if FIFTH {
                    let shift = halves16(2 * c as i16, 2 * c as i16 + 1);
                    let h = _mm512_and_si512(_mm512_srlv_epi16(qh, shift), one);
                    u = _mm512_or_si512(u, _mm512_slli_epi16(h, 4));
                }
                let scale = _mm512_permutexvar_epi16(runs16(2 * c as i16, 16), sc);
                for t in 0..M {
                    let x = load64(a[t].qs.as_ptr().add(256 * b + 64 * c));
                    lanes[t] = scaled_dot(lanes[t], u, x, scale);
                }
            }
            for t in 0..M {
                let da = *a[t].d.get_unchecked(b);
                let m = mins_lanes(mins, a[t].bsums.as_ptr().add(16 * b));
                acc[t] =
                    _mm512_fmadd_ps(_mm512_set1_ps(d * da), _mm512_cvtepi32_ps(lanes[t]), acc[t]);
                acc_min[t] =
                    _mm256_fmadd_ps(_mm256_set1_ps(dmin * da), _mm256_cvtepi32_ps(m), acc_min[t]);
            }
        }
        let mut out = [0f32; M];
        for t in 0..M {
            out[t] = hsum512(acc[t]) - hsum(acc_min[t]);
        }
        out
    }
}

/// The 2-bit pairs of `qh` at per-half `shifts`, moved to bits 4..6 of each byte. (A
/// function, not a closure: closures do not inherit target features.)
#[inline(always)]
unsafe fn high_bits(qh: __m512i, shifts: __m512i, m2: __m512i) -> __m512i {
    // SAFETY: AVX-512 BW per the caller's contract.
    unsafe { _mm512_slli_epi16(_mm512_and_si512(_mm512_srlv_epi16(qh, shifts), m2), 4) }
}

/// Q6_K against Q8_K activations: values `q − 32`, the `−32` taken out once per block
/// through the activations' sums of 16.
///
/// # Safety
/// As [`q45_k`].
#[inline(always)]
pub(super) unsafe fn q6_k<const M: usize>(w: *const u8, nb: usize, a: &[Acts<'_>; M]) -> [f32; M] {
    // SAFETY: per this function's contract.
    unsafe {
        let mut acc = [_mm512_setzero_ps(); M];
        let mut acc_off = [_mm256_setzero_ps(); M];
        let (m4, m2) = (_mm512_set1_epi8(0x0F), _mm512_set1_epi8(3));
        let (low_pairs, high_pairs) = (halves16(0, 2), halves16(4, 6));
        for b in 0..nb {
            let p = w.add(210 * b);
            prefetch(p);
            let d = f16_at(p.add(208));
            let sc_bytes = _mm_loadu_si128(p.add(192).cast());
            let sc = _mm512_cvtepi8_epi16(_mm256_castsi128_si256(sc_bytes));
            let mut lanes = [_mm512_setzero_si512(); M];
            for h in 0..2 {
                let ql = load64(p.add(64 * h));
                let qh = broadcast32(p.add(128 + 32 * h));
                let u = [
                    _mm512_or_si512(_mm512_and_si512(ql, m4), high_bits(qh, low_pairs, m2)),
                    _mm512_or_si512(
                        _mm512_and_si512(_mm512_srli_epi16(ql, 4), m4),
                        high_bits(qh, high_pairs, m2),
                    ),
                ];
                for (i, &ui) in u.iter().enumerate() {
                    let scale =
                        _mm512_permutexvar_epi16(runs16(8 * h as i16 + 4 * i as i16, 8), sc);
                    for t in 0..M {
                        let x = load64(a[t].qs.as_ptr().add(256 * b + 128 * h + 64 * i));
                        lanes[t] = scaled_dot(lanes[t], ui, x, scale);
                    }
                }
            }
            let sc16 = _mm256_cvtepi8_epi16(sc_bytes);
            for t in 0..M {
                let dd = d * *a[t].d.get_unchecked(b);
                let bsums = load32(a[t].bsums.as_ptr().add(16 * b));
                let off = _mm256_madd_epi16(bsums, sc16);
                acc[t] = _mm512_fmadd_ps(_mm512_set1_ps(dd), _mm512_cvtepi32_ps(lanes[t]), acc[t]);
                acc_off[t] = _mm256_fmadd_ps(
                    _mm256_set1_ps(32.0 * dd),
                    _mm256_cvtepi32_ps(off),
                    acc_off[t],
                );
            }
        }
        let mut out = [0f32; M];
        for t in 0..M {
            out[t] = hsum512(acc[t]) - hsum(acc_off[t]);
        }
        out
    }
}

/// Q8_0 against Q8_0 activations ([`signed_blocks`] of [`Q8`]).
///
/// # Safety
/// As [`q45_k`].
#[inline(always)]
pub(super) unsafe fn q8_0<const M: usize>(w: *const u8, nb: usize, a: &[Acts<'_>; M]) -> [f32; M] {
    // SAFETY: per this function's contract.
    unsafe { signed_blocks::<Q8, M>(w, nb, a) }
}

/// Q4_0 against Q8_0 activations ([`signed_blocks`] of [`Q4`]).
///
/// # Safety
/// As [`q45_k`].
#[inline(always)]
pub(super) unsafe fn q4_0<const M: usize>(w: *const u8, nb: usize, a: &[Acts<'_>; M]) -> [f32; M] {
    // SAFETY: per this function's contract.
    unsafe { signed_blocks::<Q4, M>(w, nb, a) }
}

/// A weight type of 32-value blocks with an f16 scale first and signed values: how to read a
/// block's values.
trait SignedBlock {
    /// Bytes per block.
    const BYTES: usize;

    /// The 32 signed values of the block at `p`.
    ///
    /// # Safety
    /// `p` holds a whole block; AVX2 per the caller's contract.
    unsafe fn values(p: *const u8) -> __m256i;
}

/// Q8_0: `d` f16, 32 i8.
struct Q8;

impl SignedBlock for Q8 {
    const BYTES: usize = 34;

    #[inline(always)]
    unsafe fn values(p: *const u8) -> __m256i {
        // SAFETY: per this function's contract.
        unsafe { load32(p.add(2)) }
    }
}

/// Q4_0: `d` f16, 16 bytes of nibbles (low = values 0..16, high = 16..32), value − 8.
struct Q4;

impl SignedBlock for Q4 {
    const BYTES: usize = 18;

    #[inline(always)]
    unsafe fn values(p: *const u8) -> __m256i {
        // SAFETY: per this function's contract.
        unsafe {
            let q = _mm_loadu_si128(p.add(2).cast());
            let nibbles = _mm256_and_si256(
                _mm256_setr_m128i(q, _mm_srli_epi16(q, 4)),
                _mm256_set1_epi8(0x0F),
            );
            _mm256_sub_epi8(nibbles, _mm256_set1_epi8(8))
        }
    }
}

/// Signed 32-value blocks against Q8_0 activations, two blocks per 512-bit register: the
/// weights' sign moves onto the activations (`vpdpbusd` takes one unsigned operand) with a
/// mask, as AVX-512 has no `vpsignb`; an odd last block goes through a 256-bit register.
///
/// # Safety
/// As [`q45_k`].
#[inline(always)]
unsafe fn signed_blocks<Q: SignedBlock, const M: usize>(
    w: *const u8,
    nb: usize,
    a: &[Acts<'_>; M],
) -> [f32; M] {
    // SAFETY: per this function's contract.
    unsafe {
        let mut acc = [_mm512_setzero_ps(); M];
        let halves = _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1);
        let mut b = 0;
        while b + 2 <= nb {
            let p = w.add(Q::BYTES * b);
            prefetch(p);
            let p1 = p.add(Q::BYTES);
            let wq = _mm512_inserti64x4(_mm512_castsi256_si512(Q::values(p)), Q::values(p1), 1);
            let u = _mm512_abs_epi8(wq);
            let negative = _mm512_movepi8_mask(wq);
            let dw = _mm_cvtph_ps(_mm_insert_epi16(
                _mm_cvtsi32_si128(i32::from(read_u16(p))),
                i32::from(read_u16(p1)),
                1,
            ));
            for t in 0..M {
                let x = load64(a[t].qs.as_ptr().add(32 * b));
                let s = _mm512_mask_sub_epi8(x, negative, _mm512_setzero_si512(), x);
                let sums = _mm512_dpbusd_epi32(_mm512_setzero_si512(), u, s);
                let da = _mm_castpd_ps(_mm_load_sd(a[t].d.as_ptr().add(b).cast()));
                let scale =
                    _mm512_permutexvar_ps(halves, _mm512_castps128_ps512(_mm_mul_ps(dw, da)));
                acc[t] = _mm512_fmadd_ps(scale, _mm512_cvtepi32_ps(sums), acc[t]);
            }
            b += 2;
        }
        let mut out = [0f32; M];
        for t in 0..M {
            out[t] = hsum512(acc[t]);
        }
        if b < nb {
            let p = w.add(Q::BYTES * b);
            let wq = Q::values(p);
            let u = _mm256_abs_epi8(wq);
            let dw = f16_at(p);
            for t in 0..M {
                let s = _mm256_sign_epi8(load32(a[t].qs.as_ptr().add(32 * b)), wq);
                let sums = _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, s);
                let v = _mm256_mul_ps(
                    _mm256_set1_ps(dw * *a[t].d.get_unchecked(b)),
                    _mm256_cvtepi32_ps(sums),
                );
                out[t] += hsum(v);
            }
        }
        out
    }
}

/// The little-endian u16 at `p`.
#[inline(always)]
unsafe fn read_u16(p: *const u8) -> u16 {
    // SAFETY: the caller guarantees 2 readable bytes.
    unsafe { u16::from_le_bytes([*p, *p.add(1)]) }
}
