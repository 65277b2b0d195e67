//! Reference matmul: three plain loops, f32 accumulation. The specification for every fast twin.

use super::{Matmul, Precision};
use crate::{Weight, qdot};

/// `y[r, j] = Σ_i x[r, i] · W[j, i]`, accumulated in f32 in index order. Each weight row is
/// widened (or, for a quantized weight, dequantized) once, then used by every row of `x`.
pub fn matmul(p: Matmul, x: &[f32], w: Weight<'_>, y: &mut [f32]) {
    p.check(x.len(), w.len(), y.len());
    let mut wj = vec![0f32; p.k];
    for j in 0..p.n {
        w.row_into(j * p.k, &mut wj);
        for r in 0..p.rows {
            let xr = &x[r * p.k..(r + 1) * p.k];
            let mut acc = 0f32;
            for (&xv, &wv) in xr.iter().zip(&wj) {
                acc += xv * wv;
            }
            y[r * p.n + j] = acc;
        }
    }
}

/// [`matmul`] at [`Precision::Bf16`](super::Precision::Bf16): for bf16 weights, every
/// activation is first rounded to bf16 (nearest even); other weight dtypes are [`matmul`].
pub fn matmul_bf16(p: Matmul, x: &[f32], w: Weight<'_>, y: &mut [f32]) {
    match w {
        Weight::BF16(_) => {
            let rounded: Vec<f32> = x.iter().map(|&v| round_bf16(v)).collect();
            matmul(p, &rounded, w, y)
        }
        _ => matmul(p, x, w, y),
    }
}

/// [`matmul`] at [`Precision::Int8`](super::Precision::Int8): for quantized weights with an
/// integer dot ([`qdot::acts_kind`]), each row of `x` quantized to 8-bit blocks and each
/// output the reference integer dot ([`qdot::reference::dot`]); other weights as
/// [`matmul_bf16`].
pub fn matmul_int8(p: Matmul, x: &[f32], w: Weight<'_>, y: &mut [f32]) {
    let Weight::Quant(q) = w else {
        return matmul_bf16(p, x, w, y);
    };
    let Some(kind) = qdot::acts_kind(q.dtype) else {
        return matmul(p, x, w, y);
    };
    p.check(x.len(), w.len(), y.len());
    let row_bytes = p.k / q.dtype.block_len() * q.dtype.block_bytes();
    let mut acts = qdot::QuantizedActs::default();
    for r in 0..p.rows {
        qdot::reference::quantize(kind, &x[r * p.k..(r + 1) * p.k], &mut acts);
        let yr = &mut y[r * p.n..(r + 1) * p.n];
        if let crate::BlockLayout::Rows8 { .. } = q.layout {
            qdot::interleave::gemv(q.dtype, q.bytes, acts.row(0, p.k), yr);
            continue;
        }
        for (j, yj) in yr.iter_mut().enumerate() {
            let wj = &q.bytes[j * row_bytes..(j + 1) * row_bytes];
            *yj = qdot::reference::dot(q.dtype, wj, acts.row(0, p.k));
        }
    }
}

/// The reference matmul at `precision`.
pub fn matmul_at(precision: Precision, p: Matmul, x: &[f32], w: Weight<'_>, y: &mut [f32]) {
    match precision {
        Precision::F32 => matmul(p, x, w, y),
        Precision::Bf16 => matmul_bf16(p, x, w, y),
        Precision::Int8 => matmul_int8(p, x, w, y),
    }
}

/// `v` rounded to the nearest bf16 (ties to even), as f32.
pub fn round_bf16(v: f32) -> f32 {
    half::bf16::from_f32(v).to_f32()
}

#[cfg(test)]
mod tests {
    use super::*;
    use half::{bf16, f16};

    #[test]
    fn bf16_precision_rounds_activations_only_for_bf16_weights() {
        // bf16 keeps 8 significand bits: its step at 1 is 2^-7, so 1 + 2^-9 rounds to 1.
        let x = [1.0 + 2f32.powi(-9)];
        let p = Matmul {
            rows: 1,
            k: 1,
            n: 1,
        };
        let mut y = [0f32];
        matmul_bf16(p, &x, Weight::BF16(&[bf16::from_f32(2.0)]), &mut y);
        assert_eq!(y, [2.0]);
        matmul_bf16(p, &x, Weight::F32(&[2.0]), &mut y);
        assert_eq!(y, [2.0 + 2f32.powi(-8)]);
        // A tie (1 + 2^-8, halfway between 1 and 1 + 2^-7) goes to the even significand, 1.
        assert_eq!(round_bf16(1.0 + 2f32.powi(-8)), 1.0);
        assert_eq!(round_bf16(1.0 + 3.0 * 2f32.powi(-8)), 1.0 + 2f32.powi(-6));
    }

    #[test]
    fn hand_computed_2x3_by_2x3_transposed() {
        // x = [[1, 2, 3], [4, 5, 6]], W = [[1, 0, -1], [0.5, 0.5, 0.5]]
        let x = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let w = [1.0, 0.0, -1.0, 0.5, 0.5, 0.5];
        let mut y = [0f32; 4];
        matmul(
            Matmul {
                rows: 2,
                k: 3,
                n: 2,
            },
            &x,
            Weight::F32(&w),
            &mut y,
        );
        assert_eq!(y, [-2.0, 3.0, -2.0, 7.5]);
    }

    #[test]
    fn bf16_and_f16_weights_are_widened_exactly() {
        let x = [2.0, -1.0];
        let wb: Vec<bf16> = [0.5f32, 0.25].iter().map(|&v| bf16::from_f32(v)).collect();
        let wh: Vec<f16> = [0.5f32, 0.25].iter().map(|&v| f16::from_f32(v)).collect();
        for w in [Weight::BF16(&wb), Weight::F16(&wh)] {
            let mut y = [0f32; 1];
            matmul(
                Matmul {
                    rows: 1,
                    k: 2,
                    n: 1,
                },
                &x,
                w,
                &mut y,
            );
            assert_eq!(y, [0.75]);
        }
    }
}
