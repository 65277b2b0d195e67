//! Reference router, as transformers' Mixtral computes it: softmax in f32 over all `E` logits,
//! the `K` largest probabilities (ties go to the lower expert index), divided by their sum.

use super::Router;

/// Writes each token's chosen experts (`ids`, `[T, K]`, most probable first) and their weights
/// (`weights`, `[T, K]`).
pub fn router_top_k(p: Router, logits: &[f32], ids: &mut [u32], weights: &mut [f32]) {
    assert!(p.top_k <= p.n_experts, "router: {p:?}");
    assert_eq!(
        logits.len(),
        p.n_tokens * p.n_experts,
        "router: logits length for {p:?}"
    );
    assert_eq!(
        ids.len(),
        p.n_tokens * p.top_k,
        "router: ids length for {p:?}"
    );
    assert_eq!(weights.len(), ids.len(), "router: weights length for {p:?}");
    let mut probs = vec![0f32; p.n_experts];
    for t in 0..p.n_tokens {
        softmax(&logits[t * p.n_experts..(t + 1) * p.n_experts], &mut probs);
        let (ids, weights) = (
            &mut ids[t * p.top_k..(t + 1) * p.top_k],
            &mut weights[t * p.top_k..(t + 1) * p.top_k],
        );
        for j in 0..p.top_k {
            // The largest probability not yet taken; strict `>` keeps the lowest index on ties.
            let mut best: Option<usize> = None;
            for (e, &pr) in probs.iter().enumerate() {
                let taken = ids[..j].contains(&(e as u32));
                if !taken && best.is_none_or(|b| pr > probs[b]) {
                    best = Some(e);
                }
            }
            let e = best.expect("top_k <= n_experts");
            ids[j] = e as u32;
            weights[j] = probs[e];
        }
        if p.norm_topk_prob {
            let sum: f32 = weights.iter().sum();
            weights.iter_mut().for_each(|w| *w /= sum);
        }
    }
}

/// Numerically stable softmax in f32.
fn softmax(x: &[f32], out: &mut [f32]) {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0f32;
    for (o, &v) in out.iter_mut().zip(x) {
        *o = (v - max).exp();
        sum += *o;
    }
    out.iter_mut().for_each(|o| *o /= sum);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(logits: &[f32], top_k: usize, norm: bool) -> (Vec<u32>, Vec<f32>) {
        let p = Router {
            n_tokens: 1,
            n_experts: logits.len(),
            top_k,
            norm_topk_prob: norm,
        };
        let (mut ids, mut w) = (vec![0; top_k], vec![0.0; top_k]);
        router_top_k(p, logits, &mut ids, &mut w);
        (ids, w)
    }

    #[test]
    fn hand_computed_top2_is_softmax_of_the_two_logits() {
        let (ids, w) = route(&[0.0, 2.0, 1.0, -1.0], 2, true);
        assert_eq!(ids, [1, 2]);
        // e² / (e² + e¹) = 1 / (1 + e⁻¹)
        let w0 = 1.0 / (1.0 + (-1f32).exp());
        assert!(
            (w[0] - w0).abs() < 1e-6 && (w[1] - (1.0 - w0)).abs() < 1e-6,
            "{w:?}"
        );
    }

    #[test]
    fn router_tie_prefers_lower_index() {
        let (ids, w) = route(&[1.0, 3.0, 3.0, 3.0], 2, true);
        assert_eq!(ids, [1, 2]);
        assert_eq!(w, [0.5, 0.5]);
    }

    #[test]
    fn without_renormalisation_weights_are_the_full_softmax() {
        let (_, w) = route(&[0.0, 0.0, 0.0, 0.0], 2, false);
        assert_eq!(w, [0.25, 0.25]);
    }

    #[test]
    fn top_k_equal_to_n_experts_takes_all_in_order() {
        let (ids, w) = route(&[0.5, -1.0, 2.0], 3, true);
        assert_eq!(ids, [2, 0, 1]);
        assert!((w.iter().sum::<f32>() - 1.0).abs() < 1e-6);
    }
}
