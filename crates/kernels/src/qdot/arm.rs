//! aarch64 integer dot products: the reference's per-block integer sums, sixteen byte products
//! per instruction pair. NEON multiplies two signed operands, so weights are unpacked to signed
//! values (Q4_0 − 8, Q6_K − 32) and no sign trick or offset correction is needed; the K-quants'
//! mins still come from the Q8_K sums, as in the reference.
//!
//! Every block's integer sums are exact and are scaled and added in the reference's order, so
//! these kernels return the reference's bits, not merely its value to rounding.
//!
//! Two [`Dot16`]s: base NEON (`smull`/`smull2` into i16, `sadalp` into i32: a product is at most
//! 128 · 128 = 16 384 in magnitude, so nothing saturates) and the dot-product extension (`sdot`, four products per
//! i32 lane in one instruction).

use super::rows::{self, BlockDot};
use super::{Acts, QuantizedActs, scales_mins_k4};
use mixtral_tensor::DType;
use std::arch::aarch64::*;

/// Sixteen `i8 · i8` products added into four i32 lanes (which lane holds which product is
/// the implementation's business: callers only use the lanes' total).
pub(crate) trait Dot16 {
    /// `acc + Σ w·a`, spread over the lanes.
    ///
    /// # Safety
    /// The implementation's target features must be available.
    unsafe fn dot(acc: int32x4_t, w: int8x16_t, a: int8x16_t) -> int32x4_t;
}

/// Base NEON: widening multiplies and pairwise widening adds.
pub(crate) struct Smull;

impl Dot16 for Smull {
    #[inline(always)]
    unsafe fn dot(acc: int32x4_t, w: int8x16_t, a: int8x16_t) -> int32x4_t {
        // SAFETY: NEON per the caller's contract.
        unsafe {
            let lo = vmull_s8(vget_low_s8(w), vget_low_s8(a));
            let hi = vmull_high_s8(w, a);
            vpadalq_s16(vpadalq_s16(acc, lo), hi)
        }
    }
}

/// The dot-product extension.
pub(crate) struct Sdot;

impl Dot16 for Sdot {
    #[inline(always)]
    unsafe fn dot(mut acc: int32x4_t, w: int8x16_t, a: int8x16_t) -> int32x4_t {
        // SAFETY: `sdot` needs the dot-product extension, which the caller guarantees. Inline
        // assembly because `vdotq_s32` is not a stable intrinsic; it touches registers only.
        unsafe {
            std::arch::asm!(
                "sdot {acc:v}.4s, {w:v}.16b, {a:v}.16b",
                acc = inout(vreg) acc,
                w = in(vreg) w,
                a = in(vreg) a,
                options(pure, nomem, nostack, preserves_flags)
            );
        }
        acc
    }
}

impl BlockDot for Smull {
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

impl BlockDot for Sdot {
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

/// [`super::dot_rows`] with base NEON.
///
/// # Safety
/// The CPU must support NEON.
#[target_feature(enable = "neon")]
pub(crate) unsafe fn dot_rows_neon<const M: usize>(
    dtype: DType,
    w: &[u8],
    a: [Acts<'_>; M],
) -> [f32; M] {
    // SAFETY: features per this function's contract.
    unsafe { rows::dot_rows::<Smull, M>(dtype, w, a) }
}

/// [`super::dot_rows`] with `sdot`.
///
/// # Safety
/// The CPU must support NEON and the dot-product extension.
#[target_feature(enable = "neon,dotprod")]
pub(crate) unsafe fn dot_rows_sdot<const M: usize>(
    dtype: DType,
    w: &[u8],
    a: [Acts<'_>; M],
) -> [f32; M] {
    // SAFETY: features per this function's contract.
    unsafe { rows::dot_rows::<Sdot, M>(dtype, w, a) }
}

/// [`super::gemv`] with base NEON.
///
/// # Safety
/// The CPU must support NEON.
#[target_feature(enable = "neon")]
pub(crate) unsafe fn gemv_neon(dtype: DType, w: &[u8], a: Acts<'_>, y: &mut [f32]) {
    // SAFETY: features per this function's contract.
    unsafe { rows::gemv::<Smull>(dtype, w, a, y) }
}

/// [`super::gemv`] with `sdot`.
///
/// # Safety
/// The CPU must support NEON and the dot-product extension.
#[target_feature(enable = "neon,dotprod")]
pub(crate) unsafe fn gemv_sdot(dtype: DType, w: &[u8], a: Acts<'_>, y: &mut [f32]) {
    // SAFETY: features per this function's contract.
    unsafe { rows::gemv::<Sdot>(dtype, w, a, y) }
}

/// [`super::gemm`] with base NEON.
///
/// # Safety
/// The CPU must support NEON.
#[target_feature(enable = "neon")]
pub(crate) unsafe fn gemm_neon(
    dtype: DType,
    w: &[u8],
    acts: &QuantizedActs,
    k: usize,
    y: &mut [f32],
) {
    // SAFETY: features per this function's contract.
    unsafe { rows::gemm::<Smull>(dtype, w, acts, k, y) }
}

/// [`super::gemm`] with `sdot`.
///
/// # Safety
/// The CPU must support NEON and the dot-product extension.
#[target_feature(enable = "neon,dotprod")]
pub(crate) unsafe fn gemm_sdot(
    dtype: DType,
    w: &[u8],
    acts: &QuantizedActs,
    k: usize,
    y: &mut [f32],
) {
    // SAFETY: features per this function's contract.
    unsafe { rows::gemm::<Sdot>(dtype, w, acts, k, y) }
}

/// One weight row (`nb` blocks at `w`) against `M` rows of activations.
///
/// # Safety
/// `D`'s target features and NEON must be available; `w` holds `nb` blocks and the rows of
/// `a` `nb` blocks each ([`rows::check`]).
#[inline(always)]
unsafe fn dot_blocks<D: Dot16, const M: usize>(
    dtype: DType,
    w: *const u8,
    nb: usize,
    a: &[Acts<'_>; M],
) -> [f32; M] {
    // SAFETY: per this function's contract.
    unsafe {
        match dtype {
            DType::Q8_0 => q8_0::<D, M>(w, nb, a),
            DType::Q4_0 => q4_0::<D, M>(w, nb, a),
            DType::Q4_K => q45_k::<D, M, false>(w, nb, a),
            DType::Q5_K => q45_k::<D, M, true>(w, nb, a),
            DType::Q6_K => q6_k::<D, M>(w, nb, a),
            _ => unreachable!("checked by `rows::check`"),
        }
    }
}

/// The f16 at `p`, widened.
///
/// # Safety
/// Two bytes at `p` must be readable.
#[inline(always)]
pub(super) unsafe fn f16_at(p: *const u8) -> f32 {
    // SAFETY: the caller guarantees 2 readable bytes.
    half::f16::from_bits(u16::from_le_bytes(unsafe { [*p, *p.add(1)] })).to_f32()
}

/// Sixteen quants of activation row `a` at value `at`.
///
/// # Safety
/// Values `at..at + 16` must lie in the row.
#[inline(always)]
unsafe fn quants(a: &Acts<'_>, at: usize) -> int8x16_t {
    // SAFETY: per this function's contract.
    unsafe { vld1q_s8(a.qs.as_ptr().add(at)) }
}

/// The total of the four lanes.
#[inline(always)]
unsafe fn total(v: int32x4_t) -> i32 {
    // SAFETY: NEON per the caller's contract.
    unsafe { vaddvq_s32(v) }
}

/// 32 signed weight values (two halves) against each row's block `b`, scaled by `dw` and the
/// row's scale: the reference's `Σ w·a as f32 · (dw · da)`.
#[inline(always)]
unsafe fn signed_block<D: Dot16, const M: usize>(
    sum: &mut [f32; M],
    a: &[Acts<'_>; M],
    b: usize,
    wq: [int8x16_t; 2],
    dw: f32,
) {
    // SAFETY: the caller checked that block `b` exists in every row; features per contract.
    unsafe {
        for t in 0..M {
            let z = vdupq_n_s32(0);
            let lanes = D::dot(
                D::dot(z, wq[0], quants(&a[t], 32 * b)),
                wq[1],
                quants(&a[t], 32 * b + 16),
            );
            sum[t] += total(lanes) as f32 * (dw * *a[t].d.get_unchecked(b));
        }
    }
}

/// Q8_0 (34 bytes: `d` f16, 32 i8) against Q8_0 activations.
#[inline(always)]
unsafe fn q8_0<D: Dot16, const M: usize>(w: *const u8, nb: usize, a: &[Acts<'_>; M]) -> [f32; M] {
    let mut sum = [0f32; M];
    // SAFETY: `nb` whole blocks in `w` and in every row (checked by the caller).
    unsafe {
        for b in 0..nb {
            let p = w.add(34 * b);
            let wq = [vld1q_s8(p.add(2).cast()), vld1q_s8(p.add(18).cast())];
            signed_block::<D, M>(&mut sum, a, b, wq, f16_at(p));
        }
    }
    sum
}

/// Q4_0 (18 bytes: `d` f16, 16 bytes of nibbles: low = values 0..16, high = 16..32; value − 8).
#[inline(always)]
unsafe fn q4_0<D: Dot16, const M: usize>(w: *const u8, nb: usize, a: &[Acts<'_>; M]) -> [f32; M] {
    let mut sum = [0f32; M];
    // SAFETY: `nb` whole blocks in `w` and in every row (checked by the caller).
    unsafe {
        let (m4, eight) = (vdupq_n_u8(0x0F), vdupq_n_s8(8));
        for b in 0..nb {
            let p = w.add(18 * b);
            let q = vld1q_u8(p.add(2));
            let lo = vsubq_s8(vreinterpretq_s8_u8(vandq_u8(q, m4)), eight);
            let hi = vsubq_s8(vreinterpretq_s8_u8(vshrq_n_u8::<4>(q)), eight);
            signed_block::<D, M>(&mut sum, a, b, [lo, hi], f16_at(p));
        }
    }
    sum
}

/// `Σ_j m_j · (bsums[2j] + bsums[2j+1])` of one Q8_K block against a Q4_K/Q5_K block's packed
/// mins (byte `j` of `mins` is `m_j`).
///
/// # Safety
/// 16 readable i16 at `bsums`; NEON.
#[inline(always)]
pub(super) unsafe fn mins_total(mins: u64, bsums: *const i16) -> i32 {
    // SAFETY: 16 readable i16 at `bsums`; NEON per the caller's contract.
    unsafe {
        let pairs = vpaddq_s16(vld1q_s16(bsums), vld1q_s16(bsums.add(8)));
        let m = vreinterpretq_s16_u16(vmovl_u8(vcreate_u8(mins)));
        let prod = vmlal_s16(
            vmull_s16(vget_low_s16(pairs), vget_low_s16(m)),
            vget_high_s16(pairs),
            vget_high_s16(m),
        );
        vaddvq_s32(prod)
    }
}

/// Q4_K and (`FIFTH`) Q5_K: chunk `c` of 32 quant bytes holds values `64c..64c+32` in its low
/// nibbles (scale `2c`) and `64c+32..64c+64` in its high nibbles (scale `2c+1`); Q5_K's fifth
/// bits are bit `2c` (low) and `2c+1` (high) of the 32 `qh` bytes.
#[inline(always)]
unsafe fn q45_k<D: Dot16, const M: usize, const FIFTH: bool>(
    w: *const u8,
    nb: usize,
    a: &[Acts<'_>; M],
) -> [f32; M] {
    let bb = if FIFTH { 176 } else { 144 };
    let mut sum = [0f32; M];
    // SAFETY: `nb` whole blocks in `w` and in every row (checked by the caller).
    unsafe {
        for b in 0..nb {
            let p = w.add(bb * b);
            let (d, dmin) = (f16_at(p), f16_at(p.add(2)));
            let (scales, mins) = scales_mins_k4(&*p.add(4).cast());
            let mut sumi = [0i32; M];
            for c in 0..4 {
                let (lo, hi) = q45_k_chunk::<FIFTH>(p, c);
                let (s_lo, s_hi) = (i32::from(scales[2 * c]), i32::from(scales[2 * c + 1]));
                for t in 0..M {
                    let x = 256 * b + 64 * c;
                    let z = vdupq_n_s32(0);
                    let l = D::dot(
                        D::dot(z, lo[0], quants(&a[t], x)),
                        lo[1],
                        quants(&a[t], x + 16),
                    );
                    let h = D::dot(
                        D::dot(z, hi[0], quants(&a[t], x + 32)),
                        hi[1],
                        quants(&a[t], x + 48),
                    );
                    sumi[t] += s_lo * total(l) + s_hi * total(h);
                }
            }
            for t in 0..M {
                let da = *a[t].d.get_unchecked(b);
                let m = mins_total(mins, a[t].bsums.as_ptr().add(16 * b));
                sum[t] += d * da * sumi[t] as f32 - dmin * da * m as f32;
            }
        }
    }
    sum
}

/// Q6_K (210 bytes: 128 bytes of low nibbles, 64 of high 2-bit pairs, 16 i8 scales, `d` f16
/// last), unpacked to signed `q − 32` sixteen values at a time, one scale per sixteen.
#[inline(always)]
unsafe fn q6_k<D: Dot16, const M: usize>(w: *const u8, nb: usize, a: &[Acts<'_>; M]) -> [f32; M] {
    let mut sum = [0f32; M];
    // SAFETY: `nb` whole blocks in `w` and in every row (checked by the caller).
    unsafe {
        for b in 0..nb {
            let p = w.add(210 * b);
            let d = f16_at(p.add(208));
            let sc: &[i8; 16] = &*p.add(192).cast();
            let mut sumi = [0i32; M];
            for h in 0..2 {
                for l in 0..2 {
                    let q = q6_k_quarter(p, h, l);
                    for (i, &v) in q.iter().enumerate() {
                        let s = i32::from(sc[8 * h + 2 * i + l]);
                        for t in 0..M {
                            let x = 256 * b + 128 * h + 32 * i + 16 * l;
                            sumi[t] += s * total(D::dot(vdupq_n_s32(0), v, quants(&a[t], x)));
                        }
                    }
                }
            }
            for t in 0..M {
                sum[t] += d * *a[t].d.get_unchecked(b) * sumi[t] as f32;
            }
        }
    }
    sum
}

/// Chunk `c` of a Q4_K (`FIFTH = false`) or Q5_K block at `p`: values `64c..64c+32` (the low
/// nibbles of its 32 quant bytes, scale `2c`) and `64c+32..64c+64` (the high nibbles, scale
/// `2c+1`), sixteen at a time, with Q5_K's fifth bits (bit `2c` and `2c+1` of the 32 `qh`
/// bytes) in place. Values are 0..32, so they read as i8 unchanged.
///
/// # Safety
/// A whole block at `p`; NEON.
#[inline(always)]
pub(super) unsafe fn q45_k_chunk<const FIFTH: bool>(
    p: *const u8,
    c: usize,
) -> ([int8x16_t; 2], [int8x16_t; 2]) {
    // SAFETY: per this function's contract (quants at 16 or 48, `qh` at 16..48 for Q5_K).
    unsafe {
        let qs = p.add(if FIFTH { 48 } else { 16 });
        let m4 = vdupq_n_u8(0x0F);
        let (mut lo, mut hi) = ([vdupq_n_s8(0); 2], [vdupq_n_s8(0); 2]);
        for h in 0..2 {
            let q = vld1q_u8(qs.add(32 * c + 16 * h));
            let (mut l, mut u) = (vandq_u8(q, m4), vshrq_n_u8::<4>(q));
            if FIFTH {
                let bits = vshlq_u8(vld1q_u8(p.add(16 + 16 * h)), vdupq_n_s8(-2 * c as i8));
                l = vorrq_u8(l, vshlq_n_u8::<4>(vandq_u8(bits, vdupq_n_u8(1))));
                u = vorrq_u8(u, vshlq_n_u8::<3>(vandq_u8(bits, vdupq_n_u8(2))));
            }
            lo[h] = vreinterpretq_s8_u8(l);
            hi[h] = vreinterpretq_s8_u8(u);
        }
        (lo, hi)
    }
}

/// A quarter of the Q6_K block at `p`: for `i` in 0..4, the signed values `q − 32` at
/// `128h + 32i + 16l ..+16` (group `8h + 2i + l`, one scale each): low nibbles of `ql[64h +
/// 16l..]` (i = 0) and `ql[64h + 32 + 16l..]` (i = 1), their high nibbles (i = 2, 3), each
/// with two bits of `qh[32h + 16l..]` on top.
///
/// # Safety
/// 210 bytes at `p`; NEON.
#[inline(always)]
pub(super) unsafe fn q6_k_quarter(p: *const u8, h: usize, l: usize) -> [int8x16_t; 4] {
    // SAFETY: per this function's contract; every load lies in the block's first 160 bytes.
    unsafe {
        let (m4, m3) = (vdupq_n_u8(0x0F), vdupq_n_u8(3));
        let ql0 = vld1q_u8(p.add(64 * h + 16 * l));
        let ql1 = vld1q_u8(p.add(64 * h + 32 + 16 * l));
        let qh = vld1q_u8(p.add(128 + 32 * h + 16 * l));
        let high = |shift: i8| vshlq_n_u8::<4>(vandq_u8(vshlq_u8(qh, vdupq_n_s8(-shift)), m3));
        let q = [
            vorrq_u8(vandq_u8(ql0, m4), high(0)),
            vorrq_u8(vandq_u8(ql1, m4), high(2)),
            vorrq_u8(vshrq_n_u8::<4>(ql0), high(4)),
            vorrq_u8(vshrq_n_u8::<4>(ql1), high(6)),
        ];
        q.map(|v| vsubq_s8(vreinterpretq_s8_u8(v), vdupq_n_s8(32)))
    }
}
