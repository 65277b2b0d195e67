//! Repetition (HF-style), presence and frequency (OpenAI-style) penalties on raw logits.

use crate::config::SamplerConfig;
use crate::error::{Error, Result};

/// Checks that every history token indexes into a vocabulary of `vocab` entries.
pub(crate) fn check_history(history: &[u32], vocab: usize) -> Result<()> {
    match history.iter().find(|&&t| t as usize >= vocab) {
        Some(&token) => Err(Error::TokenOutOfRange { token, vocab }),
        None => Ok(()),
    }
}

/// Applies the penalties of `cfg` in place, once per distinct token of `history`.
///
/// For a token seen `c > 0` times, with logit `l`:
/// 1. repetition (HF `RepetitionPenaltyLogitsProcessor`): `l / r` if `l > 0`, else `l * r`;
/// 2. then presence and frequency (OpenAI): `l - presence - frequency * c`.
///
/// The arithmetic is done in `f64`; a result beyond `f32`'s range becomes `-inf` (the token is
/// masked) or `f32::MAX`. A `-inf` logit stays `-inf`.
///
/// `counts` is scratch with `counts.len() == logits.len()`, all zero on entry; it is left all
/// zero. History tokens must already be in range (see [`check_history`]).
pub(crate) fn apply_penalties(
    logits: &mut [f32],
    history: &[u32],
    cfg: &SamplerConfig,
    counts: &mut [u32],
) {
    debug_assert_eq!(logits.len(), counts.len());
    for &t in history {
        counts[t as usize] = counts[t as usize].saturating_add(1);
    }
    let r = f64::from(cfg.repetition_penalty);
    let presence = f64::from(cfg.presence_penalty);
    let frequency = f64::from(cfg.frequency_penalty);
    for &t in history {
        let t = t as usize;
        let c = counts[t];
        if c == 0 {
            continue; // already penalised
        }
        counts[t] = 0;
        let mut x = f64::from(logits[t]);
        if r != 1.0 {
            x = if x > 0.0 { x / r } else { x * r };
        }
        x -= presence + frequency * f64::from(c);
        let y = x as f32;
        logits[t] = if y == f32::INFINITY { f32::MAX } else { y };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(logits: &[f32], history: &[u32], cfg: &SamplerConfig) -> Vec<f32> {
        let mut l = logits.to_vec();
        let mut counts = vec![0u32; l.len()];
        check_history(history, l.len()).unwrap();
        apply_penalties(&mut l, history, cfg, &mut counts);
        assert!(
            counts.iter().all(|&c| c == 0),
            "scratch must be left zeroed"
        );
        l
    }

    #[test]
    fn repetition_divides_positive_and_multiplies_negative() {
        let cfg = SamplerConfig {
            repetition_penalty: 2.0,
            ..Default::default()
        };
        // token 0: 2 -> 1; token 1 (seen twice, penalised once): -1 -> -2; 2 and 3 unseen.
        let out = run(&[2.0, -1.0, 0.5, 3.0], &[0, 1, 1], &cfg);
        assert_eq!(out, vec![1.0, -2.0, 0.5, 3.0]);
        // Zero stays zero.
        assert_eq!(run(&[0.0, 1.0], &[0], &cfg), vec![0.0, 1.0]);
        // A penalty below 1 encourages repetition.
        let cfg = SamplerConfig {
            repetition_penalty: 0.5,
            ..Default::default()
        };
        assert_eq!(run(&[2.0, -1.0], &[0, 1], &cfg), vec![4.0, -0.5]);
    }

    #[test]
    fn presence_and_frequency_subtract() {
        let cfg = SamplerConfig {
            presence_penalty: 0.5,
            frequency_penalty: 0.25,
            ..Default::default()
        };
        // token 0 seen once: 1 - 0.5 - 0.25 = 0.25; token 1 seen 3 times: 1 - 0.5 - 0.75 = -0.25.
        let out = run(&[1.0, 1.0, 1.0], &[1, 0, 1, 1], &cfg);
        assert_eq!(out, vec![0.25, -0.25, 1.0]);
    }

    #[test]
    fn repetition_comes_before_presence_and_frequency() {
        let cfg = SamplerConfig {
            repetition_penalty: 2.0,
            presence_penalty: 1.0,
            frequency_penalty: 0.5,
            ..Default::default()
        };
        // token 0 seen twice: 4 / 2 - 1 - 0.5 * 2 = 0; token 1 seen once: -1 * 2 - 1 - 0.5 = -3.5.
        let out = run(&[4.0, -1.0, 7.0], &[0, 1, 0], &cfg);
        assert_eq!(out, vec![0.0, -3.5, 7.0]);
    }

    #[test]
    fn masked_stays_masked_and_overflow_is_clamped() {
        let cfg = SamplerConfig {
            repetition_penalty: 2.0,
            frequency_penalty: -3.0e38,
            ..Default::default()
        };
        let out = run(&[f32::NEG_INFINITY, 3.0e38], &[0, 1, 1], &cfg);
        assert_eq!(out[0], f32::NEG_INFINITY);
        assert_eq!(out[1], f32::MAX);
    }

    #[test]
    fn out_of_range_history_is_an_error() {
        let e = check_history(&[0, 5], 5).unwrap_err();
        assert_eq!(
            e.to_string(),
            "history tokens must be below the vocabulary size 5, got 5"
        );
    }
}
