//! Log-probabilities: the log-softmax of the penalised logits, and the top-n alternatives.
//!
//! The reported distribution is the model's, after penalties and before temperature and the
//! truncation filters (so a log-probability does not change when only the temperature or
//! top-k/top-p/min-p change). `-inf` logits have log-probability `-inf`.

use crate::filters::{Cand, rank};

/// The normaliser of the log-softmax, `ln Σ exp(x) = max + ln_sum`, kept in two parts so
/// that `l - max` is exact even for huge logits.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LogNorm {
    /// The largest logit.
    max: f64,
    /// `ln Σ exp(x - max)`.
    ln_sum: f64,
}

impl LogNorm {
    /// Computes the normaliser over the entries above `-inf`, stably: differences to the max
    /// in `f64`, `exp` in `f32` (ample for an `f32` result, and much faster on a 32k-entry
    /// row), the sum in `f64`.
    ///
    /// Callers guarantee at least one entry above `-inf` and none NaN or `+inf`.
    pub(crate) fn new(x: &[f32]) -> Self {
        let max = f64::from(x.iter().copied().fold(f32::NEG_INFINITY, f32::max));
        let sum: f64 = x
            .iter()
            .filter(|&&l| l > f32::NEG_INFINITY)
            .map(|&l| f64::from(((f64::from(l) - max) as f32).exp()))
            .sum();
        LogNorm {
            max,
            ln_sum: sum.ln(),
        }
    }

    /// The log-probability of a token with logit `l`.
    pub(crate) fn logprob(self, l: f32) -> f32 {
        ((f64::from(l) - self.max) - self.ln_sum) as f32
    }
}

/// The `n` most likely tokens of `x` (ranked by logit, ties to the lower id) with their
/// log-probabilities, most likely first. Tokens at `-inf` are never listed, so fewer
/// than `n` come back when fewer are above `-inf`. `scratch` is reused to avoid allocating
/// anything but the returned vector.
pub(crate) fn top_n(
    x: &[f32],
    norm: LogNorm,
    n: usize,
    scratch: &mut Vec<Cand>,
) -> Vec<(u32, f32)> {
    if n == 0 {
        return Vec::new();
    }
    scratch.clear();
    scratch.extend(
        x.iter()
            .enumerate()
            .filter(|&(_, &l)| l > f32::NEG_INFINITY)
            .map(|(i, &l)| Cand {
                id: i as u32,
                logit: l,
                w: 0.0,
            }),
    );
    let n = n.min(scratch.len());
    if n < scratch.len() {
        scratch.select_nth_unstable_by(n - 1, rank);
        scratch.truncate(n);
    }
    scratch.sort_unstable_by(rank);
    scratch
        .iter()
        .map(|c| (c.id, norm.logprob(c.logit)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_computed_log_softmax() {
        // logits 0 and ln 3: probabilities 1/4 and 3/4.
        let x = [0.0f32, 3f32.ln(), f32::NEG_INFINITY];
        let norm = LogNorm::new(&x);
        assert!((norm.max + norm.ln_sum - 4f64.ln()).abs() < 1e-6);
        assert!((norm.logprob(x[1]) - 0.75f32.ln()).abs() < 1e-6);
        assert!((norm.logprob(x[0]) - 0.25f32.ln()).abs() < 1e-6);
        assert_eq!(norm.logprob(x[2]), f32::NEG_INFINITY);
        let mut s = Vec::new();
        let top = top_n(&x, norm, 5, &mut s);
        assert_eq!(top.len(), 2, "-inf tokens are not listed");
        assert_eq!(top[0].0, 1);
        assert_eq!(top[1].0, 0);
        let top1 = top_n(&x, norm, 1, &mut s);
        assert_eq!(top1, vec![top[0]]);
        assert!(top_n(&x, norm, 0, &mut s).is_empty());
    }

    #[test]
    fn large_logits_do_not_overflow() {
        let x = [1.0e30f32, 1.0e30, -1.0e30];
        let norm = LogNorm::new(&x);
        assert!((norm.logprob(x[0]) - 0.5f32.ln()).abs() < 1e-6);
        let mut s = Vec::new();
        let top = top_n(&x, norm, 2, &mut s);
        assert_eq!((top[0].0, top[1].0), (0, 1), "ties go to the lower id");
    }
}
