//! Token sampling: turns a row of logits into the next token id, and decides when to stop.
//!
//! Stands beside the model in the crate graph and knows nothing of tensors: it works on one
//! row of the vocabulary as `&[f32]` logits and on `u32` token ids. The generator (in the
//! `mixtral` crate) runs the model, hands each row to a [`Sampler`], decodes the chosen token
//! with the tokenizer and feeds the id and text to a [`Stopper`].
//!
//! # Design decisions
//!
//! **Order of operations** (as HF transformers' logits processors):
//! 1. penalties on the raw logits, over the tokens in the history: repetition (HF: divide a
//!    positive logit by `r`, multiply a negative one by `r`), then presence and frequency
//!    (OpenAI: subtract `presence + frequency * count`). All off by default. Then
//!    `logit_bias` (OpenAI: add each listed token's bias).
//! 2. temperature: `0` means greedy, the argmax of the penalised logits with ties to the
//!    lowest id (the filters and the random generator are then not used); otherwise divide.
//! 3. top-k (ties to the lowest id), 4. top-p (the smallest set of most likely tokens whose
//!    mass is `>= p`, at least one), 5. min-p (probability `>= min_p * max probability`);
//!    each filter sees the distribution renormalised over what the previous one kept.
//! 6. a draw from the renormalised distribution with the sampler's own seeded generator.
//!
//! `-inf` logits mask tokens (never chosen, never listed); NaN or `+inf` logits, an empty
//! row, all `-inf`, and out-of-range history ids are errors ([`Error`]), never panics.
//!
//! **Random numbers**: xoshiro256** seeded by SplitMix64 ([`Rng`], written here, checked
//! against the published test vectors). Each sampler owns one and draws exactly one number per
//! non-greedy token, so a seed reproduces a run exactly, across runs and thread counts.
//!
//! **Log-probabilities** report the log-softmax of the penalised (and biased) logits: the model's
//! distribution as adjusted by the penalties, before temperature and the filters. So the
//! number does not depend on temperature or top-k/top-p/min-p, and is finite for every token
//! above `-inf`. (vLLM's default and llama.cpp report the model's distribution before any
//! processing; ours differs from that only when penalties are on.)
//!
//! **Performance**: scratch buffers live in the sampler, so greedy decoding does not allocate
//! per call; top-k uses partial selection (`O(V + k log k)`), and top-p without top-k sorts
//! only a growing top slice (64, 512, ...) until it holds the mass.
//!
//! # Example
//!
//! ```
//! use mixtral_sampler::{Sampler, SamplerConfig, StopConfig, Stopper};
//!
//! let mut sampler = Sampler::new(SamplerConfig {
//!     temperature: 0.7,
//!     top_k: Some(40),
//!     top_p: 0.95,
//!     repetition_penalty: 1.1,
//!     seed: 42,
//!     top_logprobs: 2,
//!     ..Default::default()
//! })?;
//! let mut stopper = Stopper::new(StopConfig {
//!     eos_token_ids: vec![2],
//!     max_new_tokens: Some(16),
//!     ..Default::default()
//! })?;
//!
//! let logits = [0.5f32, 2.0, -1.0, 1.5]; // one row from the model
//! let history = [1u32, 3]; // prompt and generated ids, for the penalties
//! let s = sampler.sample(&logits, &history)?;
//! assert!(s.token < 4 && s.logprob <= 0.0);
//! assert_eq!(s.top.len(), 2);
//!
//! let step = stopper.push(s.token, "text of the token");
//! print!("{}", step.text);
//! if let Some(reason) = step.stop {
//!     println!("\nfinish_reason: {}", reason.finish_reason()); // "stop" or "length"
//! }
//! # Ok::<(), mixtral_sampler::Error>(())
//! ```

mod config;
mod error;
mod filters;
mod logprobs;
mod penalties;
mod rng;
mod sampler;
mod stop;

pub use config::SamplerConfig;
pub use error::{Error, Result};
pub use rng::Rng;
pub use sampler::{Sampled, Sampler};
pub use stop::{FinishReason, Step, StopConfig, StopReason, Stopper};
