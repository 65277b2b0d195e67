//! Reference 8-bit activation quantization and integer dot products, transcribed from ggml
//! (`quantize_row_q8_0_ref`, `quantize_row_q8_K_ref` and the generic `ggml_vec_dot_*_q8_*`):
//! plain loops, integer sums per block, one f32 multiply-add per block.

use super::{Acts, ActsKind, QuantizedActs};
use half::f16;
use mixtral_tensor::DType;

/// ggml's `nearest_int`: rounds to nearest, ties to even, through the float-magic trick (exact
/// for |v| < 2²²; activations scaled to ±127 are far inside).
#[inline]
pub(crate) fn nearest_int(v: f32) -> i32 {
    ((v + 12_582_912.0).to_bits() & 0x007f_ffff) as i32 - 0x0040_0000
}

/// `roundf(v)` as i8 for |v| ≤ 127 (`f32::round` is a libm call on the x86-64 baseline):
/// truncate, then step away from zero when the fraction is half or more (exact: `v − trunc`
/// is representable for |v| < 2²³). NaN gives 0, like the saturating cast.
#[inline]
pub(crate) fn round_half_away(v: f32) -> i8 {
    let t = v as i32;
    let frac = v - t as f32;
    let r = if frac >= 0.5 {
        t + 1
    } else if frac <= -0.5 {
        t - 1
    } else {
        t
    };
    r.clamp(-128, 127) as i8
}

/// f16 at byte offset `at` of `b`, widened.
#[inline]
fn f16_at(b: &[u8], at: usize) -> f32 {
    f16::from_bits(u16::from_le_bytes([b[at], b[at + 1]])).to_f32()
}

/// Quantizes `x` (whole blocks of `kind`) into `out`, replacing what it held.
///
/// Q8_0: per block of 32, `d = max|x| / 127` (kept as its f16 value, as ggml stores it) and
/// `q = round(x / d)` half away from zero. Q8_K: per block of 256, `d = −max / 127` for the
/// value of largest magnitude, `q = min(127, nearest(x / d))` ties to even, plus the sums of
/// each 16 `q` (what the K-quants' minimums multiply).
///
/// # Panics
/// If `x` is not a whole number of blocks.
pub fn quantize(kind: ActsKind, x: &[f32], out: &mut QuantizedActs) {
    out.reset(kind, x.len());
    quantize_into(kind, x, &mut out.qs, &mut out.d, &mut out.bsums);
}

/// [`quantize`] into slices: `qs` as long as `x`, one `d` per block, (Q8_K) one sum per 16.
///
/// # Panics
/// If `x` is not a whole number of blocks or a slice has the wrong length.
pub fn quantize_into(kind: ActsKind, x: &[f32], qs: &mut [i8], d: &mut [f32], bsums: &mut [i16]) {
    let qk = kind.block_len();
    let blocks = x.len() / qk;
    let sums = if kind == ActsKind::Q8K {
        x.len() / 16
    } else {
        0
    };
    assert!(
        x.len() == blocks * qk && qs.len() == x.len() && d.len() == blocks && bsums.len() == sums,
        "quantize {kind:?}: {} values into {} quants, {} scales, {} sums",
        x.len(),
        qs.len(),
        d.len(),
        bsums.len()
    );
    for (b, (xb, qs)) in x.chunks_exact(qk).zip(qs.chunks_exact_mut(qk)).enumerate() {
        match kind {
            ActsKind::Q8_0 => {
                let amax = xb.iter().fold(0f32, |m, v| m.max(v.abs()));
                let db = amax / 127.0;
                let id = if db != 0.0 { 1.0 / db } else { 0.0 };
                for (q, &v) in qs.iter_mut().zip(xb) {
                    *q = round_half_away(v * id);
                }
                d[b] = f16::from_f32(db).to_f32();
            }
            ActsKind::Q8K => {
                let (mut amax, mut max) = (0f32, 0f32);
                for &v in xb {
                    if v.abs() > amax {
                        (amax, max) = (v.abs(), v);
                    }
                }
                if amax == 0.0 {
                    qs.fill(0);
                    d[b] = 0.0;
                } else {
                    let iscale = -127.0 / max;
                    for (q, &v) in qs.iter_mut().zip(xb) {
                        *q = nearest_int(iscale * v).clamp(-128, 127) as i8;
                    }
                    d[b] = 1.0 / iscale;
                }
                for (g, s) in bsums[b * 16..(b + 1) * 16].iter_mut().enumerate() {
                    *s = qs[16 * g..16 * (g + 1)].iter().map(|&q| i16::from(q)).sum();
                }
            }
        }
    }
}

/// `Σ w·x` of one weight row (`dtype` blocks) and its quantized activations, as ggml's
/// generic `vec_dot` computes it: exact integer sums per block, scaled in f32.
///
/// # Panics
/// If `dtype` has no integer dot ([`super::acts_kind`]) or the lengths disagree.
pub fn dot(dtype: DType, w: &[u8], a: Acts<'_>) -> f32 {
    let (bl, bb) = (dtype.block_len(), dtype.block_bytes());
    assert_eq!(
        Some(a.kind),
        super::acts_kind(dtype),
        "{dtype} has no dot with {:?}",
        a.kind
    );
    assert_eq!(w.len() / bb * bl, a.qs.len(), "{dtype} row length");
    let mut sum = 0f32;
    for (b, wb) in w.chunks_exact(bb).enumerate() {
        let q = &a.qs[b * bl..(b + 1) * bl];
        let da = a.d[b];
        sum += match dtype {
            DType::Q8_0 => {
                let s: i32 = wb[2..34]
                    .iter()
                    .zip(q)
                    .map(|(&w, &x)| i32::from(w as i8) * i32::from(x))
                    .sum();
                s as f32 * (f16_at(wb, 0) * da)
            }
            DType::Q4_0 => {
                let s: i32 = (0..16)
                    .map(|j| {
                        let v = wb[2 + j];
                        i32::from((v & 0x0F) as i8 - 8) * i32::from(q[j])
                            + i32::from((v >> 4) as i8 - 8) * i32::from(q[j + 16])
                    })
                    .sum();
                s as f32 * (f16_at(wb, 0) * da)
            }
            DType::Q4_K | DType::Q5_K => q45_k(wb, q, &a.bsums[b * 16..], da, dtype == DType::Q5_K),
            DType::Q6_K => q6_k(wb, q, da),
            other => unreachable!("{other} was checked to have a dot"),
        };
    }
    sum
}

/// Scale and min `j` (of 8) of a Q4_K/Q5_K block's 12 packed bytes (`get_scale_min_k4`).
#[inline]
pub(crate) fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0x0F) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// One Q4_K / Q5_K block against one Q8_K block: `d·da·Σ_j sc_j·(Σ q·a) − dmin·da·Σ_j m_j·(Σ a)`.
fn q45_k(wb: &[u8], a: &[i8], bsums: &[i16], da: f32, fifth_bit: bool) -> f32 {
    let (d, dmin) = (f16_at(wb, 0), f16_at(wb, 2));
    let scales = &wb[4..16];
    let (qh, qs) = if fifth_bit {
        (&wb[16..48], &wb[48..176])
    } else {
        (&wb[0..0], &wb[16..144])
    };
    let (mut sumi, mut mins) = (0i32, 0i32);
    for c in 0..4 {
        let (sc1, m1) = scale_min_k4(2 * c, scales);
        let (sc2, m2) = scale_min_k4(2 * c + 1, scales);
        let (mut s1, mut s2) = (0i32, 0i32);
        for l in 0..32 {
            let v = qs[32 * c + l];
            let (mut lo, mut hi) = (i32::from(v & 0x0F), i32::from(v >> 4));
            if fifth_bit {
                lo += i32::from((qh[l] >> (2 * c)) & 1) << 4;
                hi += i32::from((qh[l] >> (2 * c + 1)) & 1) << 4;
            }
            s1 += lo * i32::from(a[64 * c + l]);
            s2 += hi * i32::from(a[64 * c + 32 + l]);
        }
        sumi += i32::from(sc1) * s1 + i32::from(sc2) * s2;
        let sub = |g: usize| i32::from(bsums[g]) + i32::from(bsums[g + 1]);
        mins += i32::from(m1) * sub(4 * c) + i32::from(m2) * sub(4 * c + 2);
    }
    d * da * sumi as f32 - dmin * da * mins as f32
}

/// One Q6_K block against one Q8_K block: `d·da·Σ_g sc_g·Σ (q − 32)·a` over groups of 16.
fn q6_k(wb: &[u8], a: &[i8], da: f32) -> f32 {
    let d = f16_at(wb, 208);
    let mut sumi = 0i32;
    for h in 0..2 {
        let ql = &wb[64 * h..64 * (h + 1)];
        let qh = &wb[128 + 32 * h..128 + 32 * (h + 1)];
        let sc = &wb[192 + 8 * h..192 + 8 * (h + 1)];
        let a = &a[128 * h..128 * (h + 1)];
        let mut groups = [0i32; 8];
        for l in 0..32 {
            let q = [
                (ql[l] & 0x0F) | ((qh[l] & 3) << 4),
                (ql[l + 32] & 0x0F) | (((qh[l] >> 2) & 3) << 4),
                (ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4),
                (ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4),
            ];
            for (i, &q) in q.iter().enumerate() {
                groups[2 * i + l / 16] += (i32::from(q) - 32) * i32::from(a[32 * i + l]);
            }
        }
        sumi += groups
            .iter()
            .zip(sc)
            .map(|(&g, &s)| g * i32::from(s as i8))
            .sum::<i32>();
    }
    d * da * sumi as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_int_rounds_ties_to_even() {
        let got: Vec<i32> = [0.5f32, 1.5, 2.5, -0.5, -1.5, 126.6, -127.0]
            .iter()
            .map(|&v| nearest_int(v))
            .collect();
        assert_eq!(got, [0, 2, 2, 0, -2, 127, -127]);
    }

    #[test]
    fn round_half_away_is_roundf() {
        for v in [
            0.5f32,
            1.5,
            2.5,
            -0.5,
            -2.5,
            0.499_999_97,
            -0.499_999_97,
            126.5,
            3.7,
            -3.2,
        ] {
            assert_eq!(round_half_away(v), v.round() as i8, "{v}");
        }
        assert_eq!(round_half_away(f32::NAN), 0);
    }

    #[test]
    fn q8_0_acts_hand_block() {
        let mut x = [0f32; 32];
        (x[0], x[1], x[2]) = (2.54, -1.27, 0.005);
        let mut acts = QuantizedActs::default();
        quantize(ActsKind::Q8_0, &x, &mut acts);
        // d = 2.54 / 127 = 0.02; 0.005 / 0.02 = 0.25 rounds to 0.
        assert_eq!(&acts.qs[..3], &[127, -64, 0]);
        assert_eq!(acts.d[0], f16::from_f32(0.02).to_f32());
    }

    #[test]
    fn q8_k_acts_scale_by_the_signed_extreme() {
        let mut x = [0f32; 256];
        (x[0], x[17], x[255]) = (-4.0, 2.0, 1.0);
        let mut acts = QuantizedActs::default();
        quantize(ActsKind::Q8K, &x, &mut acts);
        // iscale = -127 / -4 = 31.75: -4 → -127, 2 → 63.5 → 64 (even), 1 → 31.75 → 32.
        assert_eq!((acts.qs[0], acts.qs[17], acts.qs[255]), (-127, 64, 32));
        assert_eq!(acts.d[0], 1.0 / 31.75);
        assert_eq!(
            (acts.bsums[0], acts.bsums[1], acts.bsums[15]),
            (-127, 64, 32)
        );
    }

    #[test]
    fn q8_0_dot_hand_block() {
        let mut w = vec![0u8; 34];
        w[..2].copy_from_slice(&f16::from_f32(0.5).to_bits().to_le_bytes());
        (w[2], w[3]) = (4, (-6i8) as u8);
        let mut x = [0f32; 32];
        (x[0], x[1]) = (127.0, 1.0);
        let mut acts = QuantizedActs::default();
        quantize(ActsKind::Q8_0, &x, &mut acts);
        // d_a = 1, q = [127, 1]: 0.5 · (4·127 − 6) = 251.
        assert_eq!(dot(DType::Q8_0, &w, acts.row(0, 32)), 251.0);
    }
}
