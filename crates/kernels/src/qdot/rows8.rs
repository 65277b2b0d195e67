//! AVX2 integer dots on the interleaved layout ([`super::interleave`]; Q8_0, Q4_K, Q6_K): eight weight rows per
//! register, four activation quants broadcast to every lane, each i32 lane one row. A tile is
//! eight rows by `M` tokens (up to four), so each weight register is unpacked once for `M`
//! tokens and each activation broadcast serves eight rows; results leave as one vector of
//! eight outputs per token, with the block scales applied as vectors.
//!
//! Overflow: Q4_K quants are below 16 and activations within ±127, so a `vpmaddubsw` lane is
//! at most 2 · 15 · 127 = 3810 and eight of them (a 32-value sub-block) at most 30 480: they
//! add in i16, and one `vpmaddwd` by the sub-block's scale per eight (the row-major kernel
//! pays one per register). Q8_0 takes the sign trick and widens every product pair.

use super::interleave::ROWS;
use super::x86::load32;
use super::{Acts, QuantizedActs};
use mixtral_tensor::DType;
use std::arch::x86_64::*;

/// `y[j] = Σ w_j · a` for the interleaved rows of `w` (`y.len()` rows, a multiple of eight).
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
///
/// # Panics
/// If `dtype` has no interleaved layout or a length disagrees.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn gemv_avx2(dtype: DType, w: &[u8], a: Acts<'_>, y: &mut [f32]) {
    if y.is_empty() {
        return;
    }
    let n = y.len();
    let rb = w.len() / n;
    assert!(
        rb * n == w.len() && n.is_multiple_of(ROWS),
        "{dtype} interleaved shape"
    );
    let nb = super::rows::check(dtype, rb, &[a]);
    assert!(
        super::interleave::interleaves(dtype),
        "{dtype} is not interleaved"
    );
    for (g, yg) in y.chunks_exact_mut(ROWS).enumerate() {
        // SAFETY: group `g` is `8 · rb` bytes inside `w`, `nb` blocks a row (checked).
        let acc = unsafe { group::<1>(dtype, w.as_ptr().add(g * ROWS * rb), nb, &[a]) };
        // SAFETY: `yg` holds eight floats.
        unsafe { _mm256_storeu_ps(yg.as_mut_ptr(), acc[0]) };
    }
}

/// `y[t, j] = Σ w_j · a_t` for the interleaved rows of `w` and the rows of `acts` (`k` values
/// each): tiles of eight rows by four tokens.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
///
/// # Panics
/// If `dtype` has no interleaved layout or a length disagrees.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn gemm_avx2(
    dtype: DType,
    w: &[u8],
    acts: &QuantizedActs,
    k: usize,
    y: &mut [f32],
) {
    let Some((rows, n, rb)) = super::rows::gemm_shape(dtype, w, acts, k, y) else {
        return;
    };
    assert!(
        n.is_multiple_of(ROWS) && super::interleave::interleaves(dtype),
        "{dtype} interleaved shape"
    );
    let mut t0 = 0;
    // SAFETY: features per this function's contract; shapes checked above and in `tokens`.
    unsafe {
        while t0 + 4 <= rows {
            tokens::<4>(dtype, w, rb, acts, k, t0, y, n);
            t0 += 4;
        }
        match rows - t0 {
            3 => tokens::<3>(dtype, w, rb, acts, k, t0, y, n),
            2 => tokens::<2>(dtype, w, rb, acts, k, t0, y, n),
            1 => tokens::<1>(dtype, w, rb, acts, k, t0, y, n),
            _ => {}
        }
    }
}

/// Tokens `t0..t0 + M` of [`gemm_avx2`] against every group of rows.
///
/// # Safety
/// As [`gemm_avx2`], whose checks hold.
#[inline(always)]
#[expect(clippy::too_many_arguments, reason = "the GEMM's shape, spelled out")]
unsafe fn tokens<const M: usize>(
    dtype: DType,
    w: &[u8],
    rb: usize,
    acts: &QuantizedActs,
    k: usize,
    t0: usize,
    y: &mut [f32],
    n: usize,
) {
    let a = super::rows::token_rows::<M>(acts, k, t0);
    let nb = super::rows::check(dtype, rb, &a);
    for g in 0..n / ROWS {
        // SAFETY: group `g` is `8 · rb` bytes inside `w`, `nb` blocks a row (checked by the
        // caller and above); features per the caller's contract.
        unsafe {
            let acc = group::<M>(dtype, w.as_ptr().add(g * ROWS * rb), nb, &a);
            for (t, acc) in acc.into_iter().enumerate() {
                _mm256_storeu_ps(y.as_mut_ptr().add((t0 + t) * n + g * ROWS), acc);
            }
        }
    }
}

/// One group of eight rows (`nb` blocks each, interleaved at `g`) against `M` token rows:
/// lane `r` of result `t` is row `r`'s dot with token `t`.
///
/// # Safety
/// AVX2, FMA and F16C must be available; `g` holds `8 · nb` blocks and every row of `a` `nb`.
#[inline(always)]
unsafe fn group<const M: usize>(
    dtype: DType,
    g: *const u8,
    nb: usize,
    a: &[Acts<'_>; M],
) -> [__m256; M] {
    // SAFETY: per this function's contract.
    unsafe {
        match dtype {
            DType::Q8_0 => q8_0::<M>(g, nb, a),
            DType::Q4_K => q4_k::<M>(g, nb, a),
            DType::Q6_K => q6_k::<M>(g, nb, a),
            other => unreachable!("{other} was checked to interleave"),
        }
    }
}

/// Four activation quants at `p`, in every i32 lane.
#[inline(always)]
unsafe fn broadcast4(p: *const i8) -> __m256i {
    // SAFETY: the caller guarantees 4 readable bytes.
    unsafe { _mm256_set1_epi32(p.cast::<i32>().read_unaligned()) }
}

/// Q8_0: per block run, eight f16 scales and eight registers of 8 rows × 4 quants.
#[inline(always)]
unsafe fn q8_0<const M: usize>(g: *const u8, nb: usize, a: &[Acts<'_>; M]) -> [__m256; M] {
    // SAFETY: `nb` runs of 272 bytes at `g`, `nb` blocks in every row of `a`.
    unsafe {
        let mut acc = [_mm256_setzero_ps(); M];
        let ones = _mm256_set1_epi16(1);
        for b in 0..nb {
            let p = g.add(272 * b);
            let dw = _mm256_cvtph_ps(_mm_loadu_si128(p.cast()));
            let mut lanes = [_mm256_setzero_si256(); M];
            for i in 0..8 {
                let wq = load32(p.add(16 + 32 * i));
                let u = _mm256_sign_epi8(wq, wq);
                for t in 0..M {
                    let x = broadcast4(a[t].qs.as_ptr().add(32 * b + 4 * i));
                    let pairs = _mm256_maddubs_epi16(u, _mm256_sign_epi8(x, wq));
                    lanes[t] = _mm256_add_epi32(lanes[t], _mm256_madd_epi16(pairs, ones));
                }
            }
            for t in 0..M {
                let d = _mm256_mul_ps(dw, _mm256_set1_ps(*a[t].d.get_unchecked(b)));
                acc[t] = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(lanes[t]), acc[t]);
            }
        }
        acc
    }
}

/// `pshufb` control putting byte `s` of each i32 lane into both i16 halves of that lane
/// (zero-extended): the lane's row's value `s` as a `vpmaddwd` pair.
#[inline(always)]
unsafe fn pair_of_byte(s: i8) -> __m256i {
    // SAFETY: AVX per the caller's contract.
    unsafe {
        let z = -128i8; // a set top bit: zero
        let lane = |l: i8| [4 * l + s, z, 4 * l + s, z];
        let (l0, l1, l2, l3) = (lane(0), lane(1), lane(2), lane(3));
        let half = _mm_setr_epi8(
            l0[0], l0[1], l0[2], l0[3], l1[0], l1[1], l1[2], l1[3], l2[0], l2[1], l2[2], l2[3],
            l3[0], l3[1], l3[2], l3[3],
        );
        _mm256_setr_m128i(half, half)
    }
}

/// Q4_K: per block run, the eight rows' `d` and `dmin`, their scales and mins unpacked from
/// the three scale words with ggml's masks (eight rows per vector), then four chunks of
/// eight registers, each holding two sub-blocks (low and high nibbles).
#[inline(always)]
unsafe fn q4_k<const M: usize>(g: *const u8, nb: usize, a: &[Acts<'_>; M]) -> [__m256; M] {
    // SAFETY: `nb` runs of 1152 bytes at `g`, `nb` blocks (quants and sums) in every row of `a`.
    unsafe {
        let mut acc = [_mm256_setzero_ps(); M];
        let m4 = _mm256_set1_epi8(0x0F);
        let (k1, k2, k3) = (
            _mm256_set1_epi32(0x3f3f_3f3f),
            _mm256_set1_epi32(0x0f0f_0f0f),
            _mm256_set1_epi32(0x0303_0303),
        );
        let pick: [__m256i; 4] = [
            pair_of_byte(0),
            pair_of_byte(1),
            pair_of_byte(2),
            pair_of_byte(3),
        ];
        for b in 0..nb {
            let p = g.add(1152 * b);
            let d = _mm256_cvtph_ps(_mm_loadu_si128(p.cast()));
            let dmin = _mm256_cvtph_ps(_mm_loadu_si128(p.add(16).cast()));
            let (u0, u1, u2) = (load32(p.add(32)), load32(p.add(64)), load32(p.add(96)));
            // Lane r: bytes 0..4 = scales (mins) 0..4 of row r, and 4..8 in the `hi` words.
            let sc_lo = _mm256_and_si256(u0, k1);
            let sc_hi = _mm256_or_si256(
                _mm256_and_si256(u2, k2),
                _mm256_slli_epi32(_mm256_and_si256(_mm256_srli_epi32(u0, 6), k3), 4),
            );
            let m_lo = _mm256_and_si256(u1, k1);
            let m_hi = _mm256_or_si256(
                _mm256_and_si256(_mm256_srli_epi32(u2, 4), k2),
                _mm256_slli_epi32(_mm256_and_si256(_mm256_srli_epi32(u1, 6), k3), 4),
            );
            let mut lanes = [_mm256_setzero_si256(); M];
            for c in 0..4 {
                let qs = p.add(128 + 256 * c);
                for half in 0..2 {
                    let mut sums = [_mm256_setzero_si256(); M];
                    for i in 0..8 {
                        let q = load32(qs.add(32 * i));
                        let u = if half == 0 {
                            _mm256_and_si256(q, m4)
                        } else {
                            _mm256_and_si256(_mm256_srli_epi16(q, 4), m4)
                        };
                        for t in 0..M {
                            let x = broadcast4(
                                a[t].qs.as_ptr().add(256 * b + 64 * c + 32 * half + 4 * i),
                            );
                            sums[t] = _mm256_add_epi16(sums[t], _mm256_maddubs_epi16(u, x));
                        }
                    }
                    let s = 2 * c + half;
                    let sc = _mm256_shuffle_epi8(if s < 4 { sc_lo } else { sc_hi }, pick[s % 4]);
                    for t in 0..M {
                        lanes[t] = _mm256_add_epi32(lanes[t], _mm256_madd_epi16(sums[t], sc));
                    }
                }
            }
            for t in 0..M {
                // Σ_s min_s · (sum of the sub-block's 32 activation quants), as pairs of
                // 16-value sums against the min twice.
                let bsums = a[t].bsums.as_ptr().add(16 * b);
                let mut mins = _mm256_setzero_si256();
                for s in 0..8 {
                    let src = if s < 4 { m_lo } else { m_hi };
                    let m = _mm256_shuffle_epi8(src, pick[s % 4]);
                    let pair = _mm256_set1_epi32(bsums.add(2 * s).cast::<i32>().read_unaligned());
                    mins = _mm256_add_epi32(mins, _mm256_madd_epi16(m, pair));
                }
                let da = _mm256_set1_ps(*a[t].d.get_unchecked(b));
                acc[t] =
                    _mm256_fmadd_ps(_mm256_mul_ps(d, da), _mm256_cvtepi32_ps(lanes[t]), acc[t]);
                acc[t] =
                    _mm256_fnmadd_ps(_mm256_mul_ps(dmin, da), _mm256_cvtepi32_ps(mins), acc[t]);
            }
        }
        acc
    }
}

/// `pshufb` control copying the i16 at byte `first` of each i32 lane into both of its
/// halves: one scale of a pair, as a `vpmaddwd` pair.
#[inline(always)]
unsafe fn dup_i16(first: i8) -> __m256i {
    // SAFETY: AVX per the caller's contract.
    unsafe {
        let (a, b) = (first, first + 1);
        let half = _mm_setr_epi8(
            a,
            b,
            a,
            b,
            4 + a,
            4 + b,
            4 + a,
            4 + b,
            8 + a,
            8 + b,
            8 + a,
            8 + b,
            12 + a,
            12 + b,
            12 + a,
            12 + b,
        );
        _mm256_setr_m128i(half, half)
    }
}

/// Q6_K: per block run, the eight `d`, the scale pairs, then per half (128 values) and
/// quarter `j` (32 values: two sub-blocks of 16) the 6-bit values of registers rebuilt from
/// one low-nibble and one high-pair register. Values are unsigned (`q`, not `q − 32`):
/// products stay within `vpmaddubsw`'s operands, two registers add in i16 (2 · 2 · 63 · 127
/// = 32 004), and the `−32` comes off once per block through the activation sums.
#[inline(always)]
unsafe fn q6_k<const M: usize>(g: *const u8, nb: usize, a: &[Acts<'_>; M]) -> [__m256; M] {
    // SAFETY: `nb` runs of 1680 bytes at `g`, `nb` blocks (quants and sums) in every row of `a`.
    unsafe {
        let mut acc = [_mm256_setzero_ps(); M];
        let (m4, m30) = (_mm256_set1_epi8(0x0F), _mm256_set1_epi8(0x30));
        let dup = [dup_i16(0), dup_i16(2)];
        for b in 0..nb {
            let p = g.add(1680 * b);
            let d = _mm256_cvtph_ps(_mm_loadu_si128(p.cast()));
            let pairs = p.add(16);
            let mut lanes = [_mm256_setzero_si256(); M];
            if M == 1 {
                // The run is read in three interleaved streams (low nibbles twice, high
                // pairs), which the hardware prefetcher follows late: fetch the next run
                // (one run ahead measured best of 1, 2 and 4). A prefetch never faults, so
                // the address may pass the matrix.
                for l in 0..1680 / 64 + 1 {
                    let ahead = p.wrapping_add(1680 + 64 * l);
                    _mm_prefetch::<_MM_HINT_T0>(ahead.cast());
                }
                lanes[0] = q6_k_one(p, &a[0].qs[256 * b..256 * (b + 1)], &dup, m4, m30);
            }
            for h in 0..2 * usize::from(M > 1) {
                let (ql, qh) = (p.add(144 + 512 * h), p.add(1168 + 256 * h));
                for is in 0..2 {
                    for j in 0..4 {
                        // Sub-block `8h + is + 2j`: values `128h + 32j + 16is..+16`.
                        let s = 8 * h + is + 2 * j;
                        let pv =
                            _mm256_cvtepi8_epi16(_mm_loadu_si128(pairs.add(16 * (s / 2)).cast()));
                        let sc = _mm256_shuffle_epi8(pv, dup[s % 2]);
                        let mut sums = [_mm256_setzero_si256(); M];
                        for ii in 0..4 {
                            let i = 4 * is + ii;
                            let lo = load32(ql.add(32 * (i + 8 * (j % 2))));
                            let hb = load32(qh.add(32 * i));
                            let nib = if j < 2 {
                                _mm256_and_si256(lo, m4)
                            } else {
                                _mm256_and_si256(_mm256_srli_epi16(lo, 4), m4)
                            };
                            let high = match j {
                                0 => _mm256_slli_epi16(hb, 4),
                                1 => _mm256_slli_epi16(hb, 2),
                                2 => hb,
                                _ => _mm256_srli_epi16(hb, 2),
                            };
                            let v = _mm256_or_si256(nib, _mm256_and_si256(high, m30));
                            for t in 0..M {
                                let at = 256 * b + 128 * h + 32 * j + 4 * i;
                                let x = broadcast4(a[t].qs.as_ptr().add(at));
                                sums[t] = _mm256_add_epi16(sums[t], _mm256_maddubs_epi16(v, x));
                            }
                            if ii % 2 == 1 {
                                for t in 0..M {
                                    lanes[t] =
                                        _mm256_add_epi32(lanes[t], _mm256_madd_epi16(sums[t], sc));
                                    sums[t] = _mm256_setzero_si256();
                                }
                            }
                        }
                    }
                }
            }
            for t in 0..M {
                // 32 · Σ_s scale_s · (sum of sub-block s's 16 activation quants).
                let bsums = a[t].bsums.as_ptr().add(16 * b);
                let mut offset = _mm256_setzero_si256();
                for q in 0..8 {
                    let pv = _mm256_cvtepi8_epi16(_mm_loadu_si128(pairs.add(16 * q).cast()));
                    let sums = _mm256_set1_epi32(bsums.add(2 * q).cast::<i32>().read_unaligned());
                    offset = _mm256_add_epi32(offset, _mm256_madd_epi16(pv, sums));
                }
                let l = _mm256_sub_epi32(lanes[t], _mm256_slli_epi32(offset, 5));
                let da = _mm256_set1_ps(*a[t].d.get_unchecked(b));
                acc[t] = _mm256_fmadd_ps(_mm256_mul_ps(d, da), _mm256_cvtepi32_ps(l), acc[t]);
            }
        }
        acc
    }
}

/// One token's integer lanes of one Q6_K block run at `p` (the GEMV): each register pair is
/// loaded and unpacked once into its four quarters' values, each multiplied and scaled at
/// once (the GEMM's quarter-outer order would unpack every register four times for one
/// token).
///
/// # Safety
/// AVX2 must be available; `p` holds one 1680-byte block run and `x` is 256 quants.
#[inline(always)]
unsafe fn q6_k_one(
    p: *const u8,
    x: &[i8],
    dup: &[__m256i; 2],
    m4: __m256i,
    m30: __m256i,
) -> __m256i {
    // SAFETY: per this function's contract.
    unsafe {
        let pairs = p.add(16);
        let mut lanes = _mm256_setzero_si256();
        for h in 0..2 {
            let (ql, qh) = (p.add(144 + 512 * h), p.add(1168 + 256 * h));
            for is in 0..2 {
                // The four sub-blocks' scales, held for four registers each; every register
                // takes its scale in its own `vpmaddwd` (no i16 sums: four more live
                // registers would spill).
                let mut sc = [_mm256_setzero_si256(); 4];
                for (j, sc) in sc.iter_mut().enumerate() {
                    let s = 8 * h + is + 2 * j;
                    let pv = _mm256_cvtepi8_epi16(_mm_loadu_si128(pairs.add(16 * (s / 2)).cast()));
                    *sc = _mm256_shuffle_epi8(pv, dup[s % 2]);
                }
                for ii in 0..4 {
                    let i = 4 * is + ii;
                    let (qa, qb, hb) = (
                        load32(ql.add(32 * i)),
                        load32(ql.add(32 * (i + 8))),
                        load32(qh.add(32 * i)),
                    );
                    let v = [
                        _mm256_or_si256(
                            _mm256_and_si256(qa, m4),
                            _mm256_and_si256(_mm256_slli_epi16(hb, 4), m30),
                        ),
                        _mm256_or_si256(
                            _mm256_and_si256(qb, m4),
                            _mm256_and_si256(_mm256_slli_epi16(hb, 2), m30),
                        ),
                        _mm256_or_si256(
                            _mm256_and_si256(_mm256_srli_epi16(qa, 4), m4),
                            _mm256_and_si256(hb, m30),
                        ),
                        _mm256_or_si256(
                            _mm256_and_si256(_mm256_srli_epi16(qb, 4), m4),
                            _mm256_and_si256(_mm256_srli_epi16(hb, 2), m30),
                        ),
                    ];
                    for j in 0..4 {
                        let xb = broadcast4(x.as_ptr().add(128 * h + 32 * j + 4 * i));
                        let pairs = _mm256_maddubs_epi16(v[j], xb);
                        lanes = _mm256_add_epi32(lanes, _mm256_madd_epi16(pairs, sc[j]));
                    }
                }
            }
        }
        lanes
    }
}
