//! The [`Sampler`]: penalties, temperature, filters and the seeded draw, plus [`Sampled`].

use crate::config::SamplerConfig;
use crate::error::{Error, Result};
use crate::filters::{self, Cand, rank};
use crate::logprobs::{LogNorm, top_n};
use crate::penalties::{apply_penalties, check_history};
use crate::rng::Rng;

/// The chosen token and its log-probabilities.
#[derive(Debug, Clone, PartialEq)]
pub struct Sampled {
    /// The chosen token id.
    pub token: u32,
    /// Its log-probability under the model's distribution after penalties (log-softmax of the
    /// penalised logits, before temperature and filters).
    pub logprob: f32,
    /// The [`SamplerConfig::top_logprobs`] most likely tokens under that same distribution,
    /// most likely first (ties to the lower id), as `(token, logprob)`. It may or may not
    /// contain [`Sampled::token`]. Empty when `top_logprobs` is 0.
    pub top: Vec<(u32, f32)>,
}

/// Chooses tokens from rows of logits. See the [crate docs](crate) for the order of operations.
///
/// Holds its own random number generator, so a sampler's choices depend only on its seed and
/// on the sequence of calls made on it (not on threads or timing). Each call with
/// `temperature > 0` advances the generator by exactly one draw; greedy calls draw nothing.
///
/// Scratch buffers are kept between calls, so after the first call on a vocabulary the greedy
/// path does not allocate (unless `top_logprobs > 0`, which returns a vector).
#[derive(Debug, Clone)]
pub struct Sampler {
    cfg: SamplerConfig,
    rng: Rng,
    /// Penalised copy of the logits (used only when penalties are on).
    work: Vec<f32>,
    /// Per-token occurrence counts for penalties; all zero between calls.
    counts: Vec<u32>,
    /// Candidates for filtering and top-n selection.
    cands: Vec<Cand>,
}

impl Sampler {
    /// Validates `cfg` and builds a sampler seeded with `cfg.seed`.
    pub fn new(cfg: SamplerConfig) -> Result<Self> {
        cfg.validate()?;
        Ok(Sampler {
            rng: Rng::seed_from_u64(cfg.seed),
            cfg,
            work: Vec::new(),
            counts: Vec::new(),
            cands: Vec::new(),
        })
    }

    /// The configuration this sampler was built with.
    pub fn config(&self) -> &SamplerConfig {
        &self.cfg
    }

    /// Chooses the next token from one row of `logits` (one entry per vocabulary token), given
    /// the `history` of token ids that the penalties look at (typically the prompt and the
    /// tokens generated so far; pass `&[]` when penalties are off).
    ///
    /// Errors: empty logits; a NaN or `+inf` logit; all logits `-inf` (also after penalties);
    /// a history token `>= logits.len()`.
    pub fn sample(&mut self, logits: &[f32], history: &[u32]) -> Result<Sampled> {
        let Sampler {
            cfg,
            rng,
            work,
            counts,
            cands,
        } = self;
        let x = penalised(cfg, logits, history, work, counts)?;
        let token = if cfg.temperature == 0.0 {
            argmax(x)?
        } else {
            filtered(cfg, x, cands)?;
            draw(cands, rng.next_f64())
        };
        let norm = LogNorm::new(x);
        Ok(Sampled {
            token,
            logprob: norm.logprob(x[token as usize]),
            top: top_n(x, norm, cfg.top_logprobs, cands),
        })
    }

    /// The distribution that [`Sampler::sample`] would draw from for these inputs, after
    /// penalties, temperature and filters, renormalised: `(token, probability)` for every token
    /// with a chance of being drawn (probabilities sum to 1), most likely first, ties to the
    /// lower id. With temperature 0 it is the argmax with probability 1. Draws nothing from
    /// the random number generator. Same errors as [`Sampler::sample`].
    pub fn distribution(&mut self, logits: &[f32], history: &[u32]) -> Result<Vec<(u32, f64)>> {
        let Sampler {
            cfg,
            work,
            counts,
            cands,
            ..
        } = self;
        let x = penalised(cfg, logits, history, work, counts)?;
        if cfg.temperature == 0.0 {
            return Ok(vec![(argmax(x)?, 1.0)]);
        }
        if !filtered(cfg, x, cands)? {
            cands.sort_unstable_by(rank);
        }
        let total: f64 = cands.iter().map(|c| c.w).sum();
        Ok(cands
            .iter()
            .filter(|c| c.w > 0.0)
            .map(|c| (c.id, c.w / total))
            .collect())
    }
}

/// Checks the inputs and returns the logits after penalties: `logits` itself when the
/// penalties are off, else `work` holding a penalised copy.
fn penalised<'a>(
    cfg: &SamplerConfig,
    logits: &'a [f32],
    history: &[u32],
    work: &'a mut Vec<f32>,
    counts: &mut Vec<u32>,
) -> Result<&'a [f32]> {
    if logits.is_empty() {
        return Err(Error::EmptyLogits);
    }
    if u32::try_from(logits.len()).is_err() {
        return Err(Error::VocabTooLarge { len: logits.len() });
    }
    if let Some((index, &value)) = logits
        .iter()
        .enumerate()
        .find(|&(_, &l)| l.is_nan() || l == f32::INFINITY)
    {
        return Err(Error::InvalidLogit { index, value });
    }
    check_history(history, logits.len())?;
    if let Some(&(token, _)) = cfg
        .logit_bias
        .iter()
        .find(|&&(t, _)| t as usize >= logits.len())
    {
        return Err(Error::BiasTokenOutOfRange {
            token,
            vocab: logits.len(),
        });
    }
    let penalties = cfg.has_penalties() && !history.is_empty();
    if !penalties && cfg.logit_bias.is_empty() {
        return Ok(logits);
    }
    work.clear();
    work.extend_from_slice(logits);
    if penalties {
        if counts.len() != logits.len() {
            counts.clear();
            counts.resize(logits.len(), 0);
        }
        apply_penalties(work, history, cfg, counts);
    }
    for &(token, bias) in &cfg.logit_bias {
        // In f64, as the penalties: a sum past f32's range masks (-inf) or saturates.
        let y = (f64::from(work[token as usize]) + f64::from(bias)) as f32;
        work[token as usize] = if y == f32::INFINITY { f32::MAX } else { y };
    }
    Ok(work)
}

/// The index of the largest entry, ties to the lowest index; an error if all are `-inf`.
fn argmax(x: &[f32]) -> Result<u32> {
    let mut best = 0;
    for (i, &l) in x.iter().enumerate() {
        if l > x[best] {
            best = i;
        }
    }
    if x[best] == f32::NEG_INFINITY {
        return Err(Error::NoCandidates);
    }
    Ok(best as u32)
}

/// Fills `cands` with the tokens of `x` above `-inf`, weighted by temperature, and applies
/// top-k, top-p and min-p. Returns whether `cands` is sorted by rank.
fn filtered(cfg: &SamplerConfig, x: &[f32], cands: &mut Vec<Cand>) -> Result<bool> {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if max == f32::NEG_INFINITY {
        return Err(Error::NoCandidates);
    }
    let (max, t) = (f64::from(max), f64::from(cfg.temperature));
    cands.clear();
    cands.extend(
        x.iter()
            .enumerate()
            .filter(|&(_, &l)| l > f32::NEG_INFINITY)
            .map(|(i, &l)| Cand {
                id: i as u32,
                logit: l,
                // Subtract the max first: the top token gets exactly 1 and nothing overflows
                // even for a tiny temperature.
                w: ((f64::from(l) - max) / t).exp(),
            }),
    );
    let mut sorted = false;
    if let Some(k) = cfg.top_k {
        sorted = filters::top_k(cands, k);
    }
    if cfg.top_p < 1.0 {
        filters::top_p(cands, f64::from(cfg.top_p), sorted);
        sorted = true;
    }
    if cfg.min_p > 0.0 {
        filters::min_p(cands, f64::from(cfg.min_p));
    }
    Ok(sorted)
}

/// Draws a candidate with probability `w / Σw`, given a uniform `u` in `[0, 1)`: the first
/// candidate whose cumulative weight exceeds `u * Σw`. Never picks a zero-weight candidate.
fn draw(cands: &[Cand], u: f64) -> u32 {
    let total: f64 = cands.iter().map(|c| c.w).sum();
    let target = u * total;
    let mut cum = 0.0;
    for c in cands {
        cum += c.w;
        if target < cum {
            return c.id;
        }
    }
    // Rounding left `target` at or past the final sum: take the last candidate with weight.
    cands
        .iter()
        .rev()
        .find(|c| c.w > 0.0)
        .map_or(cands[0].id, |c| c.id)
}
