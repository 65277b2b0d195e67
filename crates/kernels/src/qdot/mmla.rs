//! The prefill GEMM of quantized weights with the int8 matrix multiply (`smmla`, aarch64's
//! `i8mm`): one instruction multiplies a 2×8 block of two tokens' quants by an 8×2 block of two
//! weight rows' values into a 2×2 tile of i32 sums, sixteen products per output lane pair
//! where `sdot` gives four. llama.cpp's ARM kernels use it the same way.
//!
//! Each weight block of a pair of rows is unpacked once into signed values sixteen at a time
//! (Q4_0 − 8, Q6_K − 32, nibbles and fifth bits as they are), with one integer scale per
//! sixteen values; every pair of tokens in the group then runs over it. The integer sums are
//! exact and scaled in the reference's order, so the results are the reference's bits. A last
//! odd token or weight row takes the `sdot` kernel.

use super::arm::{Sdot, f16_at, mins_total, q6_k_quarter, q45_k_chunk};
use super::rows::{self, BlockDot};
use super::{QuantizedActs, scales_mins_k4};
use mixtral_tensor::DType;
use std::arch::aarch64::*;

/// Tokens per pass over a pair of weight rows (two `smmla` token pairs).
const TOKENS: usize = 4;

/// One weight block unpacked: up to sixteen pieces of sixteen signed values, an integer scale
/// per piece, and the block's float scales.
struct Unpacked {
    v: [int8x16_t; 16],
    sc: [i32; 16],
    d: f32,
    dmin: f32,
    /// Q4_K/Q5_K: the packed mins (byte `j` is `m_j`).
    mins: u64,
}

/// A weight type's block layout.
trait Kind {
    /// Bytes per block.
    const BYTES: usize;
    /// Sixteen-value pieces per block.
    const PIECES: usize;
    /// How a block's integer sum becomes a float (see [`scaled`]).
    const SCALING: Scaling;

    /// Unpacks the block at `p`.
    ///
    /// # Safety
    /// `Self::BYTES` must be readable at `p`; NEON must be available.
    unsafe fn unpack(p: *const u8, u: &mut Unpacked);
}

/// How a block's sum turns into the reference's float.
#[derive(PartialEq, Eq)]
enum Scaling {
    /// `sumi · (d · da)` (Q8_0, Q4_0; every piece's integer scale is 1).
    Block,
    /// `d · da · sumi − dmin · da · mins` (Q4_K, Q5_K).
    Mins,
    /// `d · da · sumi` (Q6_K).
    Super,
}

struct Q80;
impl Kind for Q80 {
    const BYTES: usize = 34;
    const PIECES: usize = 2;
    const SCALING: Scaling = Scaling::Block;

    #[inline(always)]
    unsafe fn unpack(p: *const u8, u: &mut Unpacked) {
        // SAFETY: 34 bytes at `p` per the contract.
        unsafe {
            u.d = f16_at(p);
            u.v[0] = vld1q_s8(p.add(2).cast());
            u.v[1] = vld1q_s8(p.add(18).cast());
        }
    }
}

struct Q40;
impl Kind for Q40 {
    const BYTES: usize = 18;
    const PIECES: usize = 2;
    const SCALING: Scaling = Scaling::Block;

    #[inline(always)]
    unsafe fn unpack(p: *const u8, u: &mut Unpacked) {
        // SAFETY: 18 bytes at `p` per the contract.
        unsafe {
            u.d = f16_at(p);
            let q = vld1q_u8(p.add(2));
            let eight = vdupq_n_s8(8);
            u.v[0] = vsubq_s8(vreinterpretq_s8_u8(vandq_u8(q, vdupq_n_u8(0x0F))), eight);
            u.v[1] = vsubq_s8(vreinterpretq_s8_u8(vshrq_n_u8::<4>(q)), eight);
        }
    }
}

/// Q4_K (`FIFTH = false`) and Q5_K.
struct Q45K<const FIFTH: bool>;
impl<const FIFTH: bool> Kind for Q45K<FIFTH> {
    const BYTES: usize = if FIFTH { 176 } else { 144 };
    const PIECES: usize = 16;
    const SCALING: Scaling = Scaling::Mins;

    #[inline(always)]
    unsafe fn unpack(p: *const u8, u: &mut Unpacked) {
        // SAFETY: a whole block at `p` per the contract.
        unsafe {
            u.d = f16_at(p);
            u.dmin = f16_at(p.add(2));
            let (scales, mins) = scales_mins_k4(&*p.add(4).cast());
            u.mins = mins;
            for c in 0..4 {
                // Low nibbles are values 64c + 16h.., high nibbles 64c + 32 + 16h...
                let (lo, hi) = q45_k_chunk::<FIFTH>(p, c);
                for h in 0..2 {
                    u.v[4 * c + h] = lo[h];
                    u.v[4 * c + 2 + h] = hi[h];
                    u.sc[4 * c + h] = i32::from(scales[2 * c]);
                    u.sc[4 * c + 2 + h] = i32::from(scales[2 * c + 1]);
                }
            }
        }
    }
}

struct Q6K;
impl Kind for Q6K {
    const BYTES: usize = 210;
    const PIECES: usize = 16;
    const SCALING: Scaling = Scaling::Super;

    #[inline(always)]
    unsafe fn unpack(p: *const u8, u: &mut Unpacked) {
        // SAFETY: 210 bytes at `p` per the contract.
        unsafe {
            u.d = f16_at(p.add(208));
            for h in 0..2 {
                for l in 0..2 {
                    for (i, v) in q6_k_quarter(p, h, l).into_iter().enumerate() {
                        // Values 128h + 32i + 16l..: piece 8h + 2i + l, its own scale.
                        let piece = 8 * h + 2 * i + l;
                        u.v[piece] = v;
                        u.sc[piece] = i32::from(*p.add(192 + piece).cast::<i8>());
                    }
                }
            }
        }
    }
}

/// `acc + a · wᵀ` for 2×8 `a` and `w` (row-major, eight bytes per row): lanes
/// `[a0·w0, a0·w1, a1·w0, a1·w1]`.
///
/// # Safety
/// The CPU must support i8mm.
#[inline(always)]
unsafe fn smmla(mut acc: int32x4_t, a: int8x16_t, w: int8x16_t) -> int32x4_t {
    // SAFETY: `smmla` needs i8mm, which the caller guarantees. Inline assembly because
    // `vmmlaq_s32` is not a stable intrinsic; it touches registers only.
    unsafe {
        std::arch::asm!(
            "smmla {acc:v}.4s, {a:v}.16b, {w:v}.16b",
            acc = inout(vreg) acc,
            a = in(vreg) a,
            w = in(vreg) w,
            options(pure, nomem, nostack, preserves_flags)
        );
    }
    acc
}

/// `[lo half of x, lo half of y]` and `[hi half of x, hi half of y]`: two rows' sixteen values
/// as the two 2×8 operands `smmla` takes.
#[inline(always)]
unsafe fn pair(x: int8x16_t, y: int8x16_t) -> (int8x16_t, int8x16_t) {
    // SAFETY: register-only NEON.
    unsafe {
        let (x, y) = (vreinterpretq_s64_s8(x), vreinterpretq_s64_s8(y));
        (
            vreinterpretq_s8_s64(vzip1q_s64(x, y)),
            vreinterpretq_s8_s64(vzip2q_s64(x, y)),
        )
    }
}

/// [`super::gemm`] with `smmla`.
///
/// # Safety
/// The CPU must support NEON, the dot-product extension and i8mm.
#[target_feature(enable = "neon,dotprod,i8mm")]
pub(crate) unsafe fn gemm_i8mm(
    dtype: DType,
    w: &[u8],
    acts: &QuantizedActs,
    k: usize,
    y: &mut [f32],
) {
    // SAFETY: features per this function's contract.
    unsafe {
        match dtype {
            DType::Q8_0 => gemm::<Q80>(dtype, w, acts, k, y),
            DType::Q4_0 => gemm::<Q40>(dtype, w, acts, k, y),
            DType::Q4_K => gemm::<Q45K<false>>(dtype, w, acts, k, y),
            DType::Q5_K => gemm::<Q45K<true>>(dtype, w, acts, k, y),
            DType::Q6_K => gemm::<Q6K>(dtype, w, acts, k, y),
            // `rows::check` panics with the reason.
            _ => rows::gemm::<Sdot>(dtype, w, acts, k, y),
        }
    }
}

/// `y[t, j] = Σ w_j · a_t`: pairs of weight rows against groups of [`TOKENS`] tokens, the
/// odd last row and token by `sdot`.
///
/// # Safety
/// NEON, the dot-product extension and i8mm must be available.
#[inline(always)]
unsafe fn gemm<K: Kind>(dtype: DType, w: &[u8], acts: &QuantizedActs, k: usize, y: &mut [f32]) {
    let Some((rows, n, rb)) = rows::gemm_shape(dtype, w, acts, k, y) else {
        return;
    };
    let row = |t: usize| acts.row(t * k, k);
    for t in 0..rows {
        rows::check(dtype, rb, &[row(t)]);
    }
    let nb = rb / K::BYTES;
    let even_rows = rows / 2 * 2;
    for j in (0..n / 2 * 2).step_by(2) {
        for t0 in (0..even_rows).step_by(TOKENS) {
            let tn = TOKENS.min(even_rows - t0);
            let group: [_; TOKENS] = std::array::from_fn(|i| row(t0 + i.min(tn - 1)));
            // SAFETY: rows `j` and `j + 1` are `nb` blocks each (checked), and so are the
            // token rows of `group` (checked); features per the contract.
            let r = unsafe { pairs::<K>(w.as_ptr().add(j * rb), rb, nb, &group[..tn]) };
            for (t, rt) in r.iter().enumerate().take(tn) {
                y[(t0 + t) * n + j..][..2].copy_from_slice(rt);
            }
        }
    }
    // The last odd token against every row, and the last odd row against every token.
    // (Loops, not a closure: a closure would not inherit the target features `sdot` needs.)
    let odd_cols = if n % 2 == 1 { n - 1..n } else { n..n };
    for t in 0..rows {
        let cols = if t < even_rows {
            odd_cols.clone()
        } else {
            0..n
        };
        for j in cols {
            // SAFETY: row `j` is `nb` blocks (checked), and so is token row `t`; features per
            // the contract.
            y[t * n + j] =
                unsafe { Sdot::blocks::<1>(dtype, w.as_ptr().add(j * rb), nb, &[row(t)])[0] };
        }
    }
}

/// Weight rows `w` and `w + rb` (`nb` blocks each) against `a` (an even number of token rows,
/// at most [`TOKENS`]): `r[t] = [row 0, row 1]`.
///
/// # Safety
/// As [`gemm`], which checked the lengths.
#[inline(always)]
unsafe fn pairs<K: Kind>(
    w: *const u8,
    rb: usize,
    nb: usize,
    a: &[super::Acts<'_>],
) -> [[f32; 2]; TOKENS] {
    let mut sum = [[0f32; 2]; TOKENS];
    let blank = || Unpacked {
        // SAFETY: register-only NEON.
        v: [unsafe { vdupq_n_s8(0) }; 16],
        sc: [1; 16],
        d: 0.0,
        dmin: 0.0,
        mins: 0,
    };
    let (mut u0, mut u1) = (blank(), blank());
    let bl = 16 * K::PIECES;
    // SAFETY: per this function's contract.
    unsafe {
        for b in 0..nb {
            K::unpack(w.add(b * K::BYTES), &mut u0);
            K::unpack(w.add(rb + b * K::BYTES), &mut u1);
            for tp in (0..a.len()).step_by(2) {
                let (a0, a1) = (&a[tp], &a[tp + 1]);
                let mut sumi = vdupq_n_s32(0);
                for p in 0..K::PIECES {
                    let at = b * bl + 16 * p;
                    let (xl, xh) = pair(
                        vld1q_s8(a0.qs.as_ptr().add(at)),
                        vld1q_s8(a1.qs.as_ptr().add(at)),
                    );
                    let (wl, wh) = pair(u0.v[p], u1.v[p]);
                    let piece = smmla(smmla(vdupq_n_s32(0), xl, wl), xh, wh);
                    sumi = if K::SCALING == Scaling::Block {
                        vaddq_s32(sumi, piece)
                    } else {
                        let s = [u0.sc[p], u1.sc[p], u0.sc[p], u1.sc[p]];
                        vmlaq_s32(sumi, piece, vld1q_s32(s.as_ptr()))
                    };
                }
                let mut si = [0i32; 4];
                vst1q_s32(si.as_mut_ptr(), sumi);
                for (l, &s) in si.iter().enumerate() {
                    let (t, u) = (l / 2, if l % 2 == 0 { &u0 } else { &u1 });
                    let at = if t == 0 { a0 } else { a1 };
                    let da = *at.d.get_unchecked(b);
                    sum[tp + t][l % 2] += match K::SCALING {
                        Scaling::Block => s as f32 * (u.d * da),
                        Scaling::Mins => {
                            let m = mins_total(u.mins, at.bsums.as_ptr().add(16 * b));
                            u.d * da * s as f32 - u.dmin * da * m as f32
                        }
                        Scaling::Super => u.d * da * s as f32,
                    };
                }
            }
        }
    }
    sum
}
