//! Reference matmul: three plain loops, f32 accumulation. The specification for every fast twin.

use super::Matmul;
use crate::Weight;

/// `y[r, j] = Σ_i x[r, i] · W[j, i]`, accumulated in f32 in index order.
pub fn matmul(p: Matmul, x: &[f32], w: Weight<'_>, y: &mut [f32]) {
    p.check(x.len(), w.len(), y.len());
    for r in 0..p.rows {
        let xr = &x[r * p.k..(r + 1) * p.k];
        for j in 0..p.n {
            let mut acc = 0f32;
            for (i, &xv) in xr.iter().enumerate() {
                acc += xv * w.get(j * p.k + i);
            }
            y[r * p.n + j] = acc;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use half::{bf16, f16};

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
