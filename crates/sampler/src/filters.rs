//! The truncation filters, applied in this order: top-k, top-p, min-p.
//!
//! They work on a list of [`Cand`]idates: the tokens whose (penalised) logit is above `-inf`,
//! each with an unnormalised weight `w = exp((logit - max logit) / temperature)`, so the most
//! likely token has `w = 1`. Probabilities are `w / Σw` over the current list, so each filter
//! sees the distribution renormalised over what the previous filters kept (as HF transformers).
//!
//! Ranking: higher logit first, ties to the lower token id. Every filter keeps the top-ranked
//! token, so the list is never emptied.

use std::cmp::Ordering;

/// A candidate token.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Cand {
    /// Token id.
    pub id: u32,
    /// Logit after penalties (finite), before temperature.
    pub logit: f32,
    /// Unnormalised probability after temperature, in `[0, 1]`.
    pub w: f64,
}

/// Rank order: higher logit first, ties to the lower id. A total order (ids are distinct).
pub(crate) fn rank(a: &Cand, b: &Cand) -> Ordering {
    b.logit.total_cmp(&a.logit).then(a.id.cmp(&b.id))
}

/// Keeps the `k` top-ranked candidates (all if `k >= len`), by partial selection
/// (`O(n + k log k)`). Returns whether the list is now sorted by [`rank`].
pub(crate) fn top_k(c: &mut Vec<Cand>, k: usize) -> bool {
    if k >= c.len() {
        return false;
    }
    c.select_nth_unstable_by(k - 1, rank);
    c.truncate(k);
    c.sort_unstable_by(rank);
    true
}

/// Keeps the shortest top-ranked prefix whose mass is `>= p` of the list's total mass (at
/// least one token). Leaves the list sorted by [`rank`].
///
/// When the list is not yet sorted, it avoids a full sort: it selects and sorts the top 64,
/// then the top 512, ..., until the prefix reaches the mass.
pub(crate) fn top_p(c: &mut Vec<Cand>, p: f64, sorted: bool) {
    let total: f64 = c.iter().map(|x| x.w).sum();
    let target = p * total;
    let n = c.len();
    let mut m = if sorted { n } else { n.min(64) };
    loop {
        if !sorted {
            if m < n {
                c.select_nth_unstable_by(m - 1, rank);
            }
            c[..m].sort_unstable_by(rank);
        }
        let mut cum = 0.0;
        for i in 0..m {
            cum += c[i].w;
            if cum >= target {
                c.truncate(i + 1);
                return;
            }
        }
        if m == n {
            return; // rounding kept the mass just short of the target: keep everything
        }
        m = n.min(m * 8);
    }
}

/// Keeps the candidates with `w >= min_p * max w`, i.e. probability `>= min_p * max
/// probability`. Keeps the order.
pub(crate) fn min_p(c: &mut Vec<Cand>, min_p: f64) {
    let w_max = c.iter().map(|x| x.w).fold(0.0, f64::max);
    let threshold = min_p * w_max;
    c.retain(|x| x.w >= threshold);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Candidates with logits `ln(probs)` at temperature 1.
    fn cands(probs: &[f64]) -> Vec<Cand> {
        let lmax = probs.iter().fold(f64::MIN, |a, &b| a.max(b.ln()));
        probs
            .iter()
            .enumerate()
            .map(|(i, &p)| Cand {
                id: i as u32,
                logit: p.ln() as f32,
                w: (p.ln() - lmax).exp(),
            })
            .collect()
    }

    fn ids(c: &[Cand]) -> Vec<u32> {
        c.iter().map(|x| x.id).collect()
    }

    #[test]
    fn top_k_keeps_the_k_largest_sorted() {
        let mut c = cands(&[0.1, 0.4, 0.2, 0.3]);
        assert!(top_k(&mut c, 2));
        assert_eq!(ids(&c), vec![1, 3]);
        let mut c = cands(&[0.1, 0.4, 0.2, 0.3]);
        assert!(!top_k(&mut c, 4));
        assert_eq!(ids(&c), vec![0, 1, 2, 3]);
    }

    #[test]
    fn top_k_ties_go_to_the_lowest_id() {
        let mut c = cands(&[0.3, 0.1, 0.3, 0.3]);
        top_k(&mut c, 1);
        assert_eq!(ids(&c), vec![0]);
        let mut c = cands(&[0.3, 0.1, 0.3, 0.3]);
        top_k(&mut c, 2);
        assert_eq!(ids(&c), vec![0, 2]);
    }

    #[test]
    fn top_p_hand_computed() {
        // probs 0.5, 0.3, 0.2 (ids 2, 0, 1)
        let probs = [0.3, 0.2, 0.5];
        for (p, want) in [
            (0.4, vec![2]),
            (0.49, vec![2]),
            (0.75, vec![2, 0]),
            (0.85, vec![2, 0, 1]),
            (1.0, vec![2, 0, 1]),
        ] {
            let mut c = cands(&probs);
            top_p(&mut c, p, false);
            assert_eq!(ids(&c), want, "top_p {p}");
        }
    }

    #[test]
    fn top_p_on_a_large_unsorted_list_uses_partial_selection_correctly() {
        // 1000 tokens: one token of mass ~0.5, the rest spread out; p = 0.9 needs > 64 tokens.
        let mut probs = vec![0.5 / 999.0; 1000];
        probs[500] = 0.5;
        let mut c = cands(&probs);
        top_p(&mut c, 0.9, false);
        // 0.5 + n * 0.5/999 >= 0.9  =>  n >= 799.2  =>  n = 800, plus the big one.
        assert_eq!(c.len(), 801);
        assert_eq!(c[0].id, 500);
        // The small ones are kept lowest id first (ties).
        assert_eq!(c[1].id, 0);
        assert_eq!(c[800].id, 800);
    }

    #[test]
    fn min_p_hand_computed() {
        let probs = [0.2, 0.5, 0.3];
        let mut c = cands(&probs);
        min_p(&mut c, 0.5); // threshold 0.25
        assert_eq!(ids(&c), vec![1, 2]);
        let mut c = cands(&probs);
        min_p(&mut c, 1.0);
        assert_eq!(ids(&c), vec![1]);
        let mut c = cands(&probs);
        min_p(&mut c, 0.0);
        assert_eq!(ids(&c), vec![0, 1, 2]);
    }
}
