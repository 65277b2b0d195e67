//! Reference RoPE. Angles are `position × inv_freq` computed in f64 from the integer position,
//! then cos/sin rounded to f32: exact at any context length (a bf16 or f32 position loses
//! integers long before 32k; transformers' f32 product differs from this by under 1e-7 relative
//! at the fixtures' positions).

use super::Rope;

/// Rotates each head of each row of `x` (`[T, n_heads · head_dim]`) by its row's position.
pub fn rope(p: Rope, positions: &[usize], x: &mut [f32]) {
    let width = p.n_heads * p.head_dim;
    assert_eq!(x.len(), positions.len() * width, "rope: x length for {p:?}");
    let half = p.head_dim / 2;
    for (row, &pos) in x.chunks_exact_mut(width).zip(positions) {
        for i in 0..half {
            let angle = pos as f64 * p.inv_freq(i);
            let (sin, cos) = (angle.sin() as f32, angle.cos() as f32);
            let (ia, ib) = if p.interleaved {
                (2 * i, 2 * i + 1)
            } else {
                (i, i + half)
            };
            for head in row.chunks_exact_mut(p.head_dim) {
                let (a, b) = (head[ia], head[ib]);
                head[ia] = a * cos - b * sin;
                head[ib] = b * cos + a * sin;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn position_zero_is_identity() {
        let mut x = [1.0, 2.0, 3.0, 4.0];
        rope(
            Rope {
                n_heads: 1,
                head_dim: 4,
                theta: 1e6,
                interleaved: false,
            },
            &[0],
            &mut x,
        );
        assert_eq!(x, [1.0, 2.0, 3.0, 4.0]);
    }

    #[test]
    fn hand_computed_rotation() {
        // Dh = 2, theta irrelevant for i = 0 (inv_freq = 1): rotate (1, 0) by 1 radian.
        let mut x = [1.0, 0.0];
        rope(
            Rope {
                n_heads: 1,
                head_dim: 2,
                theta: 1e6,
                interleaved: false,
            },
            &[1],
            &mut x,
        );
        assert!(
            (x[0] - 1f32.cos()).abs() < 1e-7 && (x[1] - 1f32.sin()).abs() < 1e-7,
            "{x:?}"
        );
        // Dh = 4, i = 1: inv_freq = 100^(-2/4) = 0.1; pairs (x1, x3) rotated by 0.1·pos.
        let mut x = [0.0, 1.0, 0.0, 0.0];
        rope(
            Rope {
                n_heads: 1,
                head_dim: 4,
                theta: 100.0,
                interleaved: false,
            },
            &[5],
            &mut x,
        );
        assert!(
            (x[1] - 0.5f32.cos()).abs() < 1e-7 && (x[3] - 0.5f32.sin()).abs() < 1e-7,
            "{x:?}"
        );
    }

    #[test]
    fn interleaved_pairs_are_the_half_split_pairs_moved() {
        // Dh = 4: interleaved pair 1 is (x2, x3); in half-split order it is (x1, x3).
        let p = Rope {
            n_heads: 1,
            head_dim: 4,
            theta: 100.0,
            interleaved: true,
        };
        let mut x = [0.0, 0.0, 1.0, 0.0];
        rope(p, &[5], &mut x);
        assert!(
            (x[2] - 0.5f32.cos()).abs() < 1e-7 && (x[3] - 0.5f32.sin()).abs() < 1e-7,
            "{x:?}"
        );
        // Permuting a head from half-split to interleaved order commutes with RoPE.
        let half_split: Vec<f32> = (0..8).map(|i| (i as f32 * 0.7).sin()).collect();
        let to_pairs = |h: &[f32]| -> Vec<f32> { (0..8).map(|j| h[(j % 2) * 4 + j / 2]).collect() };
        let mut a = half_split.clone();
        rope(
            Rope {
                head_dim: 8,
                interleaved: false,
                ..p
            },
            &[3],
            &mut a,
        );
        let mut b = to_pairs(&half_split);
        rope(Rope { head_dim: 8, ..p }, &[3], &mut b);
        assert_eq!(to_pairs(&a), b);
    }

    #[test]
    fn rope_position_past_4096_keeps_the_norm() {
        let mut x: Vec<f32> = (0..128).map(|i| (i as f32 * 0.37).sin()).collect();
        let before: f32 = x.iter().map(|v| v * v).sum();
        rope(
            Rope {
                n_heads: 1,
                head_dim: 128,
                theta: 1e6,
                interleaved: false,
            },
            &[32_000],
            &mut x,
        );
        let after: f32 = x.iter().map(|v| v * v).sum();
        assert!((before - after).abs() < 1e-4 * before);
    }
}
