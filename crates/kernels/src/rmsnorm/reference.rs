//! Reference RMSNorm, as transformers' `MixtralRMSNorm` computes it in f32.

use super::RmsNorm;
use crate::Weight;

/// `y[r] = x[r] · (1 / sqrt(mean(x[r]²) + eps)) · w`, element by element.
pub fn rms_norm(p: RmsNorm, x: &[f32], w: Weight<'_>, y: &mut [f32]) {
    assert_eq!(x.len(), p.rows * p.cols, "rms_norm: x length for {p:?}");
    assert_eq!(w.len(), p.cols, "rms_norm: w length for {p:?}");
    assert_eq!(y.len(), x.len(), "rms_norm: y length for {p:?}");
    for (xr, yr) in x.chunks_exact(p.cols).zip(y.chunks_exact_mut(p.cols)) {
        let mean_sq = xr.iter().map(|v| v * v).sum::<f32>() / p.cols as f32;
        let inv = 1.0 / (mean_sq + p.eps).sqrt();
        for (i, (o, &v)) in yr.iter_mut().zip(xr).enumerate() {
            *o = w.get(i) * (v * inv);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_computed() {
        // mean([3², 4²]) = 12.5; 1/sqrt(12.5) = 0.28284271
        let mut y = [0f32; 2];
        rms_norm(
            RmsNorm {
                rows: 1,
                cols: 2,
                eps: 0.0,
            },
            &[3.0, 4.0],
            Weight::F32(&[1.0, 2.0]),
            &mut y,
        );
        assert!(
            (y[0] - 0.848_528_1).abs() < 1e-6 && (y[1] - 2.262_741_7).abs() < 1e-6,
            "{y:?}"
        );
    }

    #[test]
    fn eps_keeps_zero_rows_finite() {
        let mut y = [1f32; 3];
        rms_norm(
            RmsNorm {
                rows: 1,
                cols: 3,
                eps: 1e-5,
            },
            &[0.0; 3],
            Weight::F32(&[1.0; 3]),
            &mut y,
        );
        assert_eq!(y, [0.0; 3]);
    }
}
