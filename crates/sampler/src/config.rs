//! The sampler's configuration, [`SamplerConfig`], and its validation.

use crate::error::{Error, Result};

/// How to choose the next token. Validated once, by [`crate::Sampler::new`].
///
/// [`Default`] is plain greedy decoding: temperature 0, no filters, no
/// penalties, seed 0, no alternatives reported. Set `temperature > 0` to sample.
///
/// Each filter has an "off" value: `top_k: None`, `top_p: 1.0`, `min_p: 0.0`,
/// `repetition_penalty: 1.0`, `presence_penalty: 0.0`, `frequency_penalty: 0.0`.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplerConfig {
    /// Softmax temperature, `>= 0` and finite. `0` means greedy (argmax, ties to the lowest id).
    pub temperature: f32,
    /// Keep only the `k` most likely tokens (ties to the lowest id); `None` = off. Must be `>= 1`.
    pub top_k: Option<usize>,
    /// Nucleus sampling: keep the smallest set of most likely tokens whose mass is `>= top_p`.
    /// In `(0, 1]`; `1` = off.
    pub top_p: f32,
    /// Keep tokens whose probability is `>= min_p * (max probability)`. In `[0, 1]`; `0` = off.
    pub min_p: f32,
    /// HF-style repetition penalty over tokens in the history: positive logits are divided by
    /// it, negative ones multiplied. Finite and `> 0`; `1` = off.
    pub repetition_penalty: f32,
    /// OpenAI-style presence penalty: subtracted once from the logit of every token in the
    /// history. Finite; `0` = off.
    pub presence_penalty: f32,
    /// OpenAI-style frequency penalty: subtracted `count` times from the logit of a token that
    /// occurs `count` times in the history. Finite; `0` = off.
    pub frequency_penalty: f32,
    /// Seed of the random number generator; the same seed and inputs give the same tokens.
    pub seed: u64,
    /// How many top alternatives (with log-probabilities) to report per token; `0` = none.
    pub top_logprobs: usize,
    /// OpenAI's `logit_bias`: `(token, bias)` pairs, each bias added to that token's logit
    /// after the penalties (so `-100` all but bans a token and `+100` all but forces it).
    /// Biases must be finite; a token listed twice gets both. Empty = off.
    pub logit_bias: Vec<(u32, f32)>,
}

impl Default for SamplerConfig {
    fn default() -> Self {
        SamplerConfig {
            temperature: 0.0,
            top_k: None,
            top_p: 1.0,
            min_p: 0.0,
            repetition_penalty: 1.0,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            seed: 0,
            top_logprobs: 0,
            logit_bias: Vec::new(),
        }
    }
}

impl SamplerConfig {
    /// Checks every parameter's range; the error names the first bad parameter and its value.
    pub fn validate(&self) -> Result<()> {
        let t = self.temperature;
        if !(t.is_finite() && t >= 0.0) {
            return Err(Error::param("temperature", "finite and >= 0", t));
        }
        if let Some(k) = self.top_k
            && k == 0
        {
            return Err(Error::param(
                "top_k",
                "at least 1 (use None to turn it off)",
                k,
            ));
        }
        let p = self.top_p;
        if !(p > 0.0 && p <= 1.0) {
            return Err(Error::param("top_p", "in (0, 1]", p));
        }
        let m = self.min_p;
        if !(0.0..=1.0).contains(&m) {
            return Err(Error::param("min_p", "in [0, 1]", m));
        }
        let r = self.repetition_penalty;
        if !(r.is_finite() && r > 0.0) {
            return Err(Error::param("repetition_penalty", "finite and > 0", r));
        }
        if !self.presence_penalty.is_finite() {
            return Err(Error::param(
                "presence_penalty",
                "finite",
                self.presence_penalty,
            ));
        }
        if !self.frequency_penalty.is_finite() {
            return Err(Error::param(
                "frequency_penalty",
                "finite",
                self.frequency_penalty,
            ));
        }
        if let Some(&(token, bias)) = self.logit_bias.iter().find(|(_, b)| !b.is_finite()) {
            return Err(Error::param(
                "logit_bias",
                "finite",
                format!("{bias} for token {token}"),
            ));
        }
        Ok(())
    }

    /// Whether any of the three penalties is on.
    pub(crate) fn has_penalties(&self) -> bool {
        self.repetition_penalty != 1.0
            || self.presence_penalty != 0.0
            || self.frequency_penalty != 0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(cfg: SamplerConfig) -> String {
        cfg.validate().unwrap_err().to_string()
    }

    #[test]
    fn default_is_valid_and_greedy() {
        let c = SamplerConfig::default();
        c.validate().unwrap();
        assert_eq!(c.temperature, 0.0);
        assert!(!c.has_penalties());
    }

    #[test]
    fn messages_name_parameter_and_value() {
        let d = SamplerConfig::default;
        assert_eq!(
            msg(SamplerConfig { top_p: 1.5, ..d() }),
            "top_p must be in (0, 1], got 1.5"
        );
        assert_eq!(
            msg(SamplerConfig { top_p: 0.0, ..d() }),
            "top_p must be in (0, 1], got 0"
        );
        assert_eq!(
            msg(SamplerConfig {
                top_p: f32::NAN,
                ..d()
            }),
            "top_p must be in (0, 1], got NaN"
        );
        assert_eq!(
            msg(SamplerConfig {
                temperature: -1.0,
                ..d()
            }),
            "temperature must be finite and >= 0, got -1"
        );
        assert_eq!(
            msg(SamplerConfig {
                temperature: f32::INFINITY,
                ..d()
            }),
            "temperature must be finite and >= 0, got inf"
        );
        assert_eq!(
            msg(SamplerConfig {
                top_k: Some(0),
                ..d()
            }),
            "top_k must be at least 1 (use None to turn it off), got 0"
        );
        assert_eq!(
            msg(SamplerConfig { min_p: 1.25, ..d() }),
            "min_p must be in [0, 1], got 1.25"
        );
        assert_eq!(
            msg(SamplerConfig {
                repetition_penalty: 0.0,
                ..d()
            }),
            "repetition_penalty must be finite and > 0, got 0"
        );
        assert_eq!(
            msg(SamplerConfig {
                presence_penalty: f32::NAN,
                ..d()
            }),
            "presence_penalty must be finite, got NaN"
        );
        assert_eq!(
            msg(SamplerConfig {
                frequency_penalty: f32::NEG_INFINITY,
                ..d()
            }),
            "frequency_penalty must be finite, got -inf"
        );
    }

    #[test]
    fn boundary_values_are_accepted() {
        let d = SamplerConfig::default;
        for c in [
            SamplerConfig { top_p: 1.0, ..d() },
            SamplerConfig { top_p: 1e-6, ..d() },
            SamplerConfig { min_p: 0.0, ..d() },
            SamplerConfig { min_p: 1.0, ..d() },
            SamplerConfig {
                top_k: Some(1),
                ..d()
            },
            SamplerConfig {
                temperature: 1e-30,
                ..d()
            },
            SamplerConfig {
                presence_penalty: -2.0,
                frequency_penalty: 2.0,
                ..d()
            },
        ] {
            c.validate().unwrap();
        }
    }
}
