//! Reference attention: for each query row and head, scores against every visible cached key,
//! an f32 softmax, and the weighted sum of values.

use super::{Attention, Kv};
use crate::isa::Elem;

/// `out[t, h] = Σ_s softmax_s(q[t, h] · k[s, g] / sqrt(Dh)) · v[s, g]` over the positions
/// `s` visible from `positions[t]` (causal, within the window), with `g = h / (H / G)`.
///
/// `q`, `out`: `[T, H·Dh]`; `k`, `v`: `[S, G·Dh]` where row `s` holds position `s`.
pub fn attention(
    p: Attention,
    q: &[f32],
    positions: &[usize],
    k: &[f32],
    v: &[f32],
    out: &mut [f32],
) {
    attention_kv(p, q, positions, Kv::by_position(p, k, v), out)
}

/// [`attention`] over keys and values in any [`Kv`] layout.
pub fn attention_kv<T: Elem>(
    p: Attention,
    q: &[f32],
    positions: &[usize],
    kv: Kv<'_, T>,
    out: &mut [f32],
) {
    let (dh, q_width) = (p.head_dim, p.n_heads * p.head_dim);
    let (k, v) = (kv.k, kv.v);
    assert_eq!(
        q.len(),
        positions.len() * q_width,
        "attention: q length for {p:?}"
    );
    assert_eq!(out.len(), q.len(), "attention: out length for {p:?}");
    kv.check(p);
    let cached = kv.len;
    let group = p.n_heads / p.n_kv_heads;
    let scale = 1.0 / (dh as f32).sqrt();
    let mut scores = Vec::new();
    for (t, &pos) in positions.iter().enumerate() {
        assert!(
            pos < cached,
            "attention: position {pos} is not in the cache of {cached}"
        );
        let visible = p.first_visible(pos)..=pos;
        for h in 0..p.n_heads {
            let g = h / group;
            let qh = &q[t * q_width + h * dh..][..dh];
            scores.clear();
            for s in visible.clone() {
                let kh = &k[kv.offset(g, s)..][..dh];
                scores.push(qh.iter().zip(kh).map(|(a, b)| a * b.widen()).sum::<f32>() * scale);
            }
            let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            scores.iter_mut().for_each(|s| *s = (*s - max).exp());
            let sum: f32 = scores.iter().sum();
            let oh = &mut out[t * q_width + h * dh..][..dh];
            oh.fill(0.0);
            for (s, &w) in visible.clone().zip(&scores) {
                let vh = &v[kv.offset(g, s)..][..dh];
                oh.iter_mut()
                    .zip(vh)
                    .for_each(|(o, &x)| *o += (w / sum) * x.widen());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ONE_HEAD: Attention = Attention {
        n_heads: 1,
        n_kv_heads: 1,
        head_dim: 1,
        window: None,
    };

    #[test]
    fn first_position_returns_its_own_value() {
        let mut out = [0f32];
        attention(ONE_HEAD, &[3.0], &[0], &[1.0, 5.0], &[7.0, -9.0], &mut out);
        assert_eq!(out, [7.0]);
    }

    #[test]
    fn hand_computed_two_positions() {
        // q·k = 0 and 1 (Dh = 1, scale 1): weights 1/(1+e), e/(1+e).
        let mut out = [0f32];
        attention(ONE_HEAD, &[1.0], &[1], &[0.0, 1.0], &[2.0, 4.0], &mut out);
        let e = 1f32.exp();
        assert!((out[0] - (2.0 + 4.0 * e) / (1.0 + e)).abs() < 1e-6);
    }

    #[test]
    fn attention_window_edge() {
        // Window 2: position 2 sees positions 1 and 2 only; position 0's huge value is masked.
        let p = Attention {
            window: Some(2),
            ..ONE_HEAD
        };
        let mut out = [0f32];
        attention(
            p,
            &[0.0],
            &[2],
            &[0.0, 0.0, 0.0],
            &[1000.0, 1.0, 3.0],
            &mut out,
        );
        assert!((out[0] - 2.0).abs() < 1e-6, "{out:?}");
        assert_eq!(p.first_visible(1), 0);
        assert_eq!(p.first_visible(2), 1);
    }

    #[test]
    fn query_heads_share_their_groups_kv_head() {
        // H = 2, G = 1, Dh = 1: both heads read the one KV head.
        let p = Attention {
            n_heads: 2,
            n_kv_heads: 1,
            head_dim: 1,
            window: None,
        };
        let mut out = [0f32; 2];
        attention(p, &[1.0, -1.0], &[0], &[0.5], &[6.0], &mut out);
        assert_eq!(out, [6.0, 6.0]);
    }
}
