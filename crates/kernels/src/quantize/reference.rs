//! Reference quantization of f32 rows into ggml's blocks, transcribed from ggml's
//! `quantize_row_*_ref` (what `llama-quantize` runs when it has no importance matrix):
//! Q8_0 and Q4_0 scale by the block's extreme value; the K-quants search each sub-block's
//! scale (and, for Q4_K/Q5_K, minimum) for the least weighted squared error
//! (`make_qkx2_quants` / `make_qx_quants`), then quantize those scales to 6 or 8 bits.

use crate::qdot::reference::{nearest_int, round_half_away};
use half::f16;
use mixtral_tensor::DType;

/// ggml's threshold under which a group counts as all zeros.
const GROUP_MAX_EPS: f32 = 1e-15;

/// The value an f32 takes once stored as f16 (ggml keeps block scales in f16).
fn via_f16(v: f32) -> f32 {
    f16::from_f32(v).to_f32()
}

fn put_f16(out: &mut [u8], at: usize, v: f32) {
    out[at..at + 2].copy_from_slice(&f16::from_f32(v).to_bits().to_le_bytes());
}

/// The types [`quantize_row`] writes.
pub const QUANTIZABLE: [DType; 5] = [
    DType::Q8_0,
    DType::Q4_0,
    DType::Q4_K,
    DType::Q5_K,
    DType::Q6_K,
];

/// Quantizes `x` (whole blocks of `dtype`) into `out` (`x.len() / block_len` blocks).
///
/// # Panics
/// If `dtype` is not in [`QUANTIZABLE`] or the lengths do not describe whole blocks.
pub fn quantize_row(dtype: DType, x: &[f32], out: &mut [u8]) {
    let (bl, bb) = (dtype.block_len(), dtype.block_bytes());
    assert!(
        x.len().is_multiple_of(bl) && out.len() == x.len() / bl * bb,
        "quantize {dtype}: {} values into {} bytes",
        x.len(),
        out.len()
    );
    for (xb, ob) in x.chunks_exact(bl).zip(out.chunks_exact_mut(bb)) {
        match dtype {
            DType::Q8_0 => q8_0(xb, ob),
            DType::Q4_0 => q4_0(xb, ob),
            DType::Q4_K => q45_k(xb, ob, false),
            DType::Q5_K => q45_k(xb, ob, true),
            DType::Q6_K => q6_k(xb, ob),
            other => panic!("quantizing to {other} is not supported"),
        }
    }
}

/// `d = max|x| / 127` (f16), `q = roundf(x / d)`.
fn q8_0(x: &[f32], out: &mut [u8]) {
    let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    put_f16(out, 0, d);
    for (q, &v) in out[2..34].iter_mut().zip(x) {
        *q = round_half_away(v * id) as u8;
    }
}

/// `d = max / −8` for the value of largest magnitude, `q = min(15, trunc(x / d + 8.5))`.
fn q4_0(x: &[f32], out: &mut [u8]) {
    let (mut amax, mut max) = (0f32, 0f32);
    for &v in x {
        if amax < v.abs() {
            (amax, max) = (v.abs(), v);
        }
    }
    let d = max / -8.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    put_f16(out, 0, d);
    for j in 0..16 {
        // C's `(int8_t)(x + 8.5f)` truncates; the values lie in 0.5..16.5.
        let q0 = ((x[j] * id + 8.5) as i8).min(15) as u8;
        let q1 = ((x[j + 16] * id + 8.5) as i8).min(15) as u8;
        out[2 + j] = q0 | (q1 << 4);
    }
}

/// ggml's `make_qkx2_quants`: the scale and minimum (returned as `(scale, −min)`) of `x` on
/// `0..=nmax` that minimise the `w`-weighted squared error, from a grid of `nstep + 1`
/// candidate scales around `nmax / (max − min)`; `l` receives the chosen levels.
#[expect(
    clippy::too_many_arguments,
    reason = "ggml's search parameters, as named there"
)]
fn make_qkx2_quants(
    nmax: i32,
    x: &[f32],
    w: &[f32],
    l: &mut [u8],
    aux: &mut [u8],
    rmin: f32,
    rdelta: f32,
    nstep: i32,
) -> (f32, f32) {
    let n = x.len();
    let (mut min, mut max) = (x[0], x[0]);
    let mut sum_w = w[0];
    let mut sum_x = sum_w * x[0];
    for i in 1..n {
        min = min.min(x[i]);
        max = max.max(x[i]);
        sum_w += w[i];
        sum_x += w[i] * x[i];
    }
    if min > 0.0 {
        min = 0.0;
    }
    if max == min {
        l.fill(0);
        return (0.0, -min);
    }
    let mut iscale = nmax as f32 / (max - min);
    let mut scale = 1.0 / iscale;
    let mut best_error = 0f32;
    for i in 0..n {
        let q = nearest_int(iscale * (x[i] - min)).clamp(0, nmax);
        l[i] = q as u8;
        let diff = scale * q as f32 + min - x[i];
        best_error += w[i] * (diff * diff);
    }
    for is in 0..=nstep {
        iscale = (rmin + rdelta * is as f32 + nmax as f32) / (max - min);
        let (mut sum_l, mut sum_l2, mut sum_xl) = (0f32, 0f32, 0f32);
        for i in 0..n {
            let q = nearest_int(iscale * (x[i] - min)).clamp(0, nmax);
            aux[i] = q as u8;
            let q = q as f32;
            sum_l += w[i] * q;
            sum_l2 += w[i] * q * q;
            sum_xl += w[i] * q * x[i];
        }
        let det = sum_w * sum_l2 - sum_l * sum_l;
        if det > 0.0 {
            let mut this_scale = (sum_w * sum_xl - sum_x * sum_l) / det;
            let mut this_min = (sum_l2 * sum_x - sum_l * sum_xl) / det;
            if this_min > 0.0 {
                this_min = 0.0;
                this_scale = sum_xl / sum_l2;
            }
            let mut cur_error = 0f32;
            for i in 0..n {
                let diff = this_scale * aux[i] as f32 + this_min - x[i];
                cur_error += w[i] * (diff * diff);
            }
            if cur_error < best_error {
                l[..n].copy_from_slice(&aux[..n]);
                best_error = cur_error;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    (scale, -min)
}

/// Q4_K (`fifth_bit` false: levels 0..=15) and Q5_K (0..=31): eight sub-blocks of 32, each
/// with a searched scale and minimum, both quantized to 6 bits against the block's largest.
fn q45_k(x: &[f32], out: &mut [u8], fifth_bit: bool) {
    let nmax = if fifth_bit { 31 } else { 15 };
    let (rmin, nstep) = if fifth_bit { (-0.5, 15) } else { (-1.0, 20) };
    let mut levels = [0u8; 256];
    let mut aux = [0u8; 32];
    let (mut scales, mut mins) = ([0f32; 8], [0f32; 8]);
    let (mut max_scale, mut max_min) = (0f32, 0f32);
    for j in 0..8 {
        let xs = &x[32 * j..32 * (j + 1)];
        let sum_x2: f32 = xs.iter().map(|v| v * v).sum();
        let av_x = (sum_x2 / 32.0).sqrt();
        let w: [f32; 32] = std::array::from_fn(|l| av_x + xs[l].abs());
        let l = &mut levels[32 * j..32 * (j + 1)];
        (scales[j], mins[j]) = make_qkx2_quants(nmax, xs, &w, l, &mut aux, rmin, 0.1, nstep);
        max_scale = max_scale.max(scales[j]);
        max_min = max_min.max(mins[j]);
    }
    let inv_scale = if max_scale > 0.0 {
        63.0 / max_scale
    } else {
        0.0
    };
    let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
    let mut packed = [0u8; 12];
    for j in 0..8 {
        // C stores the int in a `uint8_t` first (these are 0..=63 already), then caps at 63.
        let ls = (nearest_int(inv_scale * scales[j]) as u8).min(63);
        let lm = (nearest_int(inv_min * mins[j]) as u8).min(63);
        if j < 4 {
            packed[j] = ls;
            packed[j + 4] = lm;
        } else {
            packed[j + 4] = (ls & 0x0F) | ((lm & 0x0F) << 4);
            packed[j - 4] |= (ls >> 4) << 6;
            packed[j] |= (lm >> 4) << 6;
        }
    }
    let (d, dmin) = (max_scale / 63.0, max_min / 63.0);
    put_f16(out, 0, d);
    put_f16(out, 2, dmin);
    out[4..16].copy_from_slice(&packed);
    let (d, dmin) = (via_f16(d), via_f16(dmin));
    for j in 0..8 {
        let (sc, m) = crate::qdot::reference::scale_min_k4(j, &packed);
        let dj = d * f32::from(sc);
        if dj == 0.0 {
            continue; // the sub-block keeps the levels of the search
        }
        let dm = dmin * f32::from(m);
        for i in 0..32 {
            let q = nearest_int((x[32 * j + i] + dm) / dj).clamp(0, nmax);
            levels[32 * j + i] = q as u8;
        }
    }
    let (qh, qs) = if fifth_bit {
        let (qh, qs) = out[16..176].split_at_mut(32);
        (Some(qh), qs)
    } else {
        (None, &mut out[16..144])
    };
    let mut qh = qh;
    if let Some(h) = qh.as_deref_mut() {
        h.fill(0);
    }
    for c in 0..4 {
        for i in 0..32 {
            let (mut lo, mut hi) = (levels[64 * c + i], levels[64 * c + 32 + i]);
            if let Some(h) = qh.as_deref_mut() {
                if lo > 15 {
                    lo -= 16;
                    h[i] |= 1 << (2 * c);
                }
                if hi > 15 {
                    hi -= 16;
                    h[i] |= 2 << (2 * c);
                }
            }
            qs[32 * c + i] = lo | (hi << 4);
        }
    }
}

/// ggml's `make_qx_quants` with `rmse_type` 1 (weights `x²`) and no importance: the signed
/// scale of `x` on levels `−nmax..nmax−1` (stored `+ nmax` in `l`), searched over 19
/// candidates around `−nmax / max`.
fn make_qx_quants(nmax: i32, x: &[f32], l: &mut [u8]) -> f32 {
    let (mut amax, mut max) = (0f32, 0f32);
    for &v in x {
        if v.abs() > amax {
            (amax, max) = (v.abs(), v);
        }
    }
    if amax < GROUP_MAX_EPS {
        l.fill(0);
        return 0.0;
    }
    let level = |iscale: f32, v: f32| nearest_int(iscale * v).clamp(-nmax, nmax - 1);
    let sums = |iscale: f32| {
        let (mut sumlx, mut suml2) = (0f32, 0f32);
        for &v in x {
            let q = level(iscale, v) as f32;
            let w = v * v;
            sumlx += w * v * q;
            suml2 += w * q * q;
        }
        (sumlx, suml2)
    };
    let mut iscale = -(nmax as f32) / max;
    for (li, &v) in l.iter_mut().zip(x) {
        *li = (level(iscale, v) + nmax) as u8;
    }
    let (sumlx, suml2) = sums(iscale);
    let mut scale = if suml2 != 0.0 { sumlx / suml2 } else { 0.0 };
    let mut best = scale * sumlx;
    for is in -9..=9 {
        if is == 0 {
            continue;
        }
        iscale = -(nmax as f32 + 0.1 * is as f32) / max;
        let (sumlx, suml2) = sums(iscale);
        if suml2 > 0.0 && sumlx * sumlx > best * suml2 {
            for (li, &v) in l.iter_mut().zip(x) {
                *li = (level(iscale, v) + nmax) as u8;
            }
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    scale
}

/// Q6_K: sixteen groups of 16 with searched signed scales, quantized to i8 against the
/// largest; levels −32..31.
fn q6_k(x: &[f32], out: &mut [u8]) {
    let mut levels = [0u8; 256];
    let mut scales = [0f32; 16];
    let (mut max_scale, mut max_abs_scale) = (0f32, 0f32);
    for g in 0..16 {
        scales[g] = make_qx_quants(
            32,
            &x[16 * g..16 * (g + 1)],
            &mut levels[16 * g..16 * (g + 1)],
        );
        if scales[g].abs() > max_abs_scale {
            (max_abs_scale, max_scale) = (scales[g].abs(), scales[g]);
        }
    }
    if max_abs_scale < GROUP_MAX_EPS {
        out.fill(0);
        return;
    }
    let iscale = -128.0 / max_scale;
    put_f16(out, 208, 1.0 / iscale);
    let d = via_f16(1.0 / iscale);
    for g in 0..16 {
        let sc = nearest_int(iscale * scales[g]).min(127) as i8;
        out[192 + g] = sc as u8;
        let dg = d * f32::from(sc);
        if dg == 0.0 {
            continue; // the group keeps the levels of the search
        }
        for i in 0..16 {
            let q = nearest_int(x[16 * g + i] / dg).clamp(-32, 31);
            levels[16 * g + i] = (q + 32) as u8;
        }
    }
    for h in 0..2 {
        let lv = &levels[128 * h..128 * (h + 1)];
        for i in 0..32 {
            let q = [lv[i], lv[i + 32], lv[i + 64], lv[i + 96]];
            out[64 * h + i] = (q[0] & 0x0F) | ((q[2] & 0x0F) << 4);
            out[64 * h + 32 + i] = (q[1] & 0x0F) | ((q[3] & 0x0F) << 4);
            out[128 + 32 * h + i] =
                (q[0] >> 4) | ((q[1] >> 4) << 2) | ((q[2] >> 4) << 4) | ((q[3] >> 4) << 6);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dequant::dequantize;

    /// Quantizes and dequantizes `x`; returns the RMSE relative to the RMS of `x`.
    fn round_trip(dtype: DType, x: &[f32]) -> f32 {
        let mut q = vec![0u8; x.len() / dtype.block_len() * dtype.block_bytes()];
        quantize_row(dtype, x, &mut q);
        let mut y = vec![0f32; x.len()];
        dequantize(dtype, &q, &mut y);
        let err: f32 = x.iter().zip(&y).map(|(a, b)| (a - b) * (a - b)).sum();
        let rms: f32 = x.iter().map(|a| a * a).sum();
        (err / rms).sqrt()
    }

    #[test]
    fn round_trips_lose_what_the_bits_allow() {
        // A smooth pseudo-random row: each type's relative error sits near its bits' step.
        let x: Vec<f32> = (0..1024)
            .map(|i| ((i * 7919 % 1000) as f32 / 500.0 - 1.0) * 0.05)
            .collect();
        for (dtype, bound) in [
            (DType::Q8_0, 0.006),
            (DType::Q6_K, 0.02),
            (DType::Q5_K, 0.04),
            (DType::Q4_K, 0.08),
            (DType::Q4_0, 0.12),
        ] {
            let e = round_trip(dtype, &x);
            assert!(e < bound, "{dtype}: relative RMSE {e}");
        }
    }

    #[test]
    fn non_finite_and_extreme_values_never_panic() {
        // A checkpoint from a stranger may hold NaN, infinities or values near f32::MAX.
        let mut x = vec![1e-3f32; 512];
        (x[0], x[7], x[100], x[300]) = (f32::NAN, f32::INFINITY, f32::NEG_INFINITY, f32::MAX);
        x[400] = f32::MIN_POSITIVE;
        for dtype in QUANTIZABLE {
            let mut q = vec![0u8; 512 / dtype.block_len() * dtype.block_bytes()];
            quantize_row(dtype, &x, &mut q);
            let mut y = vec![0f32; 512];
            dequantize(dtype, &q, &mut y);
        }
    }

    #[test]
    fn zero_rows_quantize_to_zero() {
        for dtype in QUANTIZABLE {
            let mut q = vec![0xAAu8; 256 / dtype.block_len() * dtype.block_bytes()];
            quantize_row(dtype, &[0.0; 256], &mut q);
            let mut y = vec![1f32; 256];
            dequantize(dtype, &q, &mut y);
            assert!(y.iter().all(|&v| v == 0.0), "{dtype}: {y:?}");
        }
    }
}
