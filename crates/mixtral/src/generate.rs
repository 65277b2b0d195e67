//! Streaming generation: `Session` (a sequence's KV cache and ids), `Generation` (an iterator
//! of tokens with their text), and the parameters that steer it.

use crate::constraint::{Constraint, Guide};
use crate::{Engine, Result};
use mixtral_model::{ForwardOptions, Intervention, KvCache, Step};
use mixtral_sampler::{Sampled, Sampler, SamplerConfig, StopConfig, StopReason, Stopper};
use mixtral_tokenizer::IncrementalDecoder;
use mixtral_tokenizer::chat::Message;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Prompt tokens prefilled per forward call, so long prompts can report progress.
const PREFILL_CHUNK: usize = 128;

/// What to generate from.
#[derive(Clone, Debug)]
pub enum Prompt {
    /// Plain text, encoded with BOS first.
    Text(String),
    /// Token ids, used as they are.
    Tokens(Vec<u32>),
    /// A conversation in the Mixtral instruct format (BOS, `[INST] … [/INST]` turns).
    Chat(Vec<Message>),
    /// A conversation with tools the model may call, and their calls and results
    /// ([`crate::tools`] says how each vocabulary renders them).
    Tools {
        /// The conversation.
        messages: Vec<crate::ToolMessage>,
        /// The functions the model may call (none: only the history's calls are rendered).
        tools: Vec<crate::Tool>,
    },
}

/// Stops a generation from any thread: [`Engine::generate`] checks it before every layer of
/// the prompt's prefill (so even a long prompt stops within one layer's time, with
/// [`crate::Error::Cancelled`]) and before each new token (the iterator then ends with
/// [`FinishReason::Interrupted`]); a [`crate::Scheduler`] request leaves the batch at the next
/// step and frees its cache. Clones share the flag; equal when they do.
#[derive(Clone, Debug, Default)]
pub struct CancelToken(Arc<AtomicBool>);

impl CancelToken {
    /// A fresh token, not cancelled.
    pub fn new() -> CancelToken {
        CancelToken::default()
    }

    /// Asks the generation to stop.
    pub fn cancel(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    /// Whether [`CancelToken::cancel`] was called.
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    /// The flag the model checks between layers.
    pub(crate) fn flag(&self) -> &AtomicBool {
        &self.0
    }
}

impl PartialEq for CancelToken {
    fn eq(&self, other: &CancelToken) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

/// How to sample and when to stop.
#[derive(Clone, Debug, PartialEq)]
pub struct GenerateParams {
    /// Sampling settings (temperature 0 is greedy).
    pub sampling: SamplerConfig,
    /// Most tokens to generate.
    pub max_new_tokens: usize,
    /// Strings that end generation (never printed).
    pub stop_strings: Vec<String>,
    /// Token ids that end generation, besides EOS.
    pub stop_token_ids: Vec<u32>,
    /// Keep going past EOS.
    pub ignore_eos: bool,
    /// Steering of the router, applied to the prompt and to every decoded token (CPU only).
    /// A session filled under another intervention is recomputed, never continued.
    pub intervention: Intervention,
    /// Stops the generation from another thread, the prompt's prefill included.
    pub cancel: Option<CancelToken>,
    /// What the generated text must match (JSON Schema, regex, choices, grammar); `None`
    /// leaves it free. See [`Constraint`].
    pub constraint: Option<Constraint>,
    /// With a [`crate::Scheduler`]'s prefix caching: only requests with the same salt share
    /// cached pages (vLLM's `cache_salt`), so a tenant cannot time whether another's prompt
    /// is cached. `None` shares with every request without one. At most
    /// [`MAX_CACHE_SALT_BYTES`] bytes, not empty.
    pub cache_salt: Option<String>,
}

/// The longest [`GenerateParams::cache_salt`].
pub const MAX_CACHE_SALT_BYTES: usize = 256;

impl Default for GenerateParams {
    /// Greedy, 256 new tokens at most, no stop strings, no steering. [`Engine::params`] gives
    /// the model's own defaults (`generation_config.json`) instead.
    fn default() -> GenerateParams {
        GenerateParams {
            sampling: SamplerConfig::default(),
            max_new_tokens: 256,
            stop_strings: vec![],
            stop_token_ids: vec![],
            ignore_eos: false,
            intervention: Intervention::default(),
            cancel: None,
            constraint: None,
            cache_salt: None,
        }
    }
}

/// Builder methods: `GenerateParams::default().max_new_tokens(64).temperature(0.7).seed(1)`,
/// or the same on [`Engine::params`]. Ranges are checked when generation starts.
impl GenerateParams {
    /// What the generated text must match ([`Constraint`]).
    pub fn constraint(mut self, constraint: Constraint) -> GenerateParams {
        self.constraint = Some(constraint);
        self
    }

    /// Most tokens to generate.
    pub fn max_new_tokens(mut self, n: usize) -> GenerateParams {
        self.max_new_tokens = n;
        self
    }

    /// Sampling temperature (0: greedy).
    pub fn temperature(mut self, t: f32) -> GenerateParams {
        self.sampling.temperature = t;
        self
    }

    /// Nucleus sampling's mass, in (0, 1].
    pub fn top_p(mut self, p: f32) -> GenerateParams {
        self.sampling.top_p = p;
        self
    }

    /// Keep only the `k` most likely tokens.
    pub fn top_k(mut self, k: usize) -> GenerateParams {
        self.sampling.top_k = Some(k);
        self
    }

    /// The sampler's seed.
    pub fn seed(mut self, seed: u64) -> GenerateParams {
        self.sampling.seed = seed;
        self
    }

    /// Adds a string that ends generation (not returned).
    pub fn stop(mut self, s: impl Into<String>) -> GenerateParams {
        self.stop_strings.push(s.into());
        self
    }

    /// Keep generating past EOS.
    pub fn ignore_eos(mut self, on: bool) -> GenerateParams {
        self.ignore_eos = on;
        self
    }

    /// Steers the router ([`Intervention`]).
    pub fn intervention(mut self, i: Intervention) -> GenerateParams {
        self.intervention = i;
        self
    }

    /// Lets `token` stop the generation from another thread.
    pub fn cancel(mut self, token: CancelToken) -> GenerateParams {
        self.cancel = Some(token);
        self
    }
}

/// One generated token.
#[derive(Clone, Debug, PartialEq)]
pub struct Token {
    /// Its id.
    pub id: u32,
    /// Text that is safe to print now (may be empty while a multi-byte character or a
    /// possible stop string is held back).
    pub text: String,
    /// Log-probability of the token under the model's distribution.
    pub logprob: f32,
    /// The most likely alternatives and their log-probabilities, if asked for.
    pub top_logprobs: Vec<(u32, f32)>,
}

/// Why generation ended.
#[derive(Clone, Debug, PartialEq)]
pub enum FinishReason {
    /// EOS, a stop token, a stop string or the token limit.
    Stop(StopReason),
    /// [`Generation::interrupt`] was called (e.g. Ctrl-C).
    Interrupted,
    /// The sequence filled the model's context (`max_position_embeddings`): the last token
    /// generated could not be run through the model to choose another.
    ContextFull,
}

impl FinishReason {
    /// `"stop"`, `"length"` (the token limit or the context) or `"interrupted"`, as
    /// OpenAI-style APIs spell them.
    pub fn as_str(&self) -> &'static str {
        match self {
            FinishReason::Stop(r) => r.finish_reason().as_str(),
            FinishReason::Interrupted => "interrupted",
            FinishReason::ContextFull => "length",
        }
    }
}

/// Timings of one generation.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Stats {
    /// Tokens in the prompt.
    pub prompt_tokens: usize,
    /// Prompt tokens actually computed (the rest were reused from the session's cache).
    pub prefill_tokens: usize,
    /// Time spent in prefill.
    pub prefill_time: Duration,
    /// Tokens generated.
    pub generated_tokens: usize,
    /// Single-token forward calls run.
    pub decode_steps: usize,
    /// Time spent in them.
    pub decode_time: Duration,
}

impl Stats {
    /// Prompt tokens computed per second.
    pub fn prefill_tokens_per_s(&self) -> f64 {
        rate(self.prefill_tokens, self.prefill_time)
    }

    /// Generated tokens per second of decode time.
    pub fn decode_tokens_per_s(&self) -> f64 {
        rate(self.decode_steps, self.decode_time)
    }
}

fn rate(n: usize, t: Duration) -> f64 {
    if t.is_zero() {
        0.0
    } else {
        n as f64 / t.as_secs_f64()
    }
}

/// One sequence's state across generations: the KV cache and the ids it holds. Reusing a
/// session lets a chat continue without recomputing the conversation so far.
#[derive(Debug)]
pub struct Session {
    /// The [`Engine`] that made it (its cache has that model's shapes and device).
    engine: u64,
    cache: Box<KvCache>,
    ids: Vec<u32>,
    /// [`Intervention::fingerprint`] of the steering `ids` were computed under.
    steering: u64,
    /// The steering `ids` were computed under, its router hook kept alive: the fingerprint
    /// knows a hook by its address, and a freed hook's address can be handed to a new one,
    /// whose fingerprint would then match this cache.
    steered_by: Intervention,
}

impl Session {
    /// The ids whose keys and values are cached.
    pub fn ids(&self) -> &[u32] {
        &self.ids
    }
}

/// The session a [`Generation`] runs in: its own (from [`Engine::generate`]) or the caller's
/// (from [`Engine::generate_in`]), which keeps what was computed once the generation ends.
enum SessionSlot<'a> {
    Owned(Session),
    Borrowed(&'a mut Session),
}

impl std::ops::Deref for SessionSlot<'_> {
    type Target = Session;
    fn deref(&self) -> &Session {
        match self {
            SessionSlot::Owned(s) => s,
            SessionSlot::Borrowed(s) => s,
        }
    }
}

impl std::ops::DerefMut for SessionSlot<'_> {
    fn deref_mut(&mut self) -> &mut Session {
        match self {
            SessionSlot::Owned(s) => s,
            SessionSlot::Borrowed(s) => s,
        }
    }
}

/// A running generation: iterate it to get tokens as they are produced.
pub struct Generation<'e> {
    engine: &'e Engine,
    session: SessionSlot<'e>,
    decoding: Decoding<'e>,
    logits: Vec<f32>,
    stats: Stats,
    /// The request's router steering, for the decoded tokens.
    steer: Intervention,
    cancel: Option<CancelToken>,
}

/// What turns one sequence's logits into tokens: sampler, stop conditions, text decoder and
/// history. Shared by [`Generation`] and the batch scheduler, so a sequence gets the same
/// tokens from either.
pub(crate) struct Decoding<'e> {
    sampler: Sampler,
    stopper: Stopper,
    decoder: Option<IncrementalDecoder<'e>>,
    /// Prompt and generated ids, for the sampler's penalties.
    history: Vec<u32>,
    prompt_tokens: usize,
    /// The last sampled token, not yet run through the model.
    pub(crate) pending: Option<u32>,
    pub(crate) finish: Option<FinishReason>,
    /// The output constraint's state, and the masked logits it samples from.
    guide: Option<(Guide, Vec<f32>)>,
}

impl<'e> Decoding<'e> {
    /// Checks `params` (the sampler's and the stop conditions') for a prompt of `prompt_ids`.
    pub(crate) fn new(
        engine: &'e Engine,
        prompt_ids: &[u32],
        params: &GenerateParams,
    ) -> Result<Decoding<'e>> {
        let sampler = Sampler::new(params.sampling.clone())?;
        if let Some(salt) = &params.cache_salt
            && (salt.is_empty() || salt.len() > MAX_CACHE_SALT_BYTES)
        {
            return Err(crate::Error::InvalidOption {
                option: "cache_salt",
                reason: "must be 1 to 256 bytes",
            });
        }
        let stopper = Stopper::new(StopConfig {
            eos_token_ids: if params.ignore_eos {
                vec![]
            } else {
                engine.defaults.eos_token_ids.clone()
            },
            stop_token_ids: params.stop_token_ids.clone(),
            stop_strings: params.stop_strings.clone(),
            max_new_tokens: Some(params.max_new_tokens),
        })?;
        let guide = match &params.constraint {
            None => None,
            Some(c) => {
                let tokenizer = engine.require_tokenizer()?;
                let guide = engine
                    .guides
                    .guide(c, tokenizer, engine.config().vocab_size)?;
                Some((guide, Vec::new()))
            }
        };
        Ok(Decoding {
            sampler,
            stopper,
            decoder: engine.tokenizer.as_ref().map(|t| t.stream()),
            history: prompt_ids.to_vec(),
            prompt_tokens: prompt_ids.len(),
            pending: None,
            finish: None,
            guide,
        })
    }

    /// The prompt's ids and those generated so far.
    pub(crate) fn ids(&self) -> &[u32] {
        &self.history
    }

    /// Ids generated so far.
    pub(crate) fn generated(&self) -> &[u32] {
        &self.history[self.prompt_tokens..]
    }

    /// Chooses the next token from `logits`, the row after `cached` positions of a model
    /// with a context of `context`. Sets `finish` when it ends the sequence, and `pending`
    /// when it must be run through the model to choose another.
    pub(crate) fn next(&mut self, logits: &[f32], cached: usize, context: usize) -> Result<Token> {
        let logits = match &mut self.guide {
            Some((guide, masked)) => {
                guide.mask(logits, masked)?;
                &masked[..]
            }
            None => logits,
        };
        let Sampled {
            token: id,
            logprob,
            top,
        } = self.sampler.sample(logits, &self.history)?;
        let complete = match &mut self.guide {
            Some((guide, _)) => guide.advance(id)?,
            None => false,
        };
        self.history.push(id);
        let piece = match &mut self.decoder {
            Some(d) => d.push(id)?.unwrap_or_default(),
            None => String::new(),
        };
        let mut step = self.stopper.push(id, &piece);
        match step.stop {
            Some(reason) => self.finish = Some(FinishReason::Stop(reason)),
            // The constraint's grammar is complete: nothing more may follow.
            None if complete => {
                step.text.push_str(&self.stopper.flush());
                self.finish = Some(FinishReason::Stop(StopReason::Constraint));
            }
            // This token would sit at position `cached`: past the context, it cannot be run
            // to choose another. It is still returned, with any text held back for it.
            None if cached >= context => {
                step.text.push_str(&self.stopper.flush());
                self.finish = Some(FinishReason::ContextFull);
            }
            None => self.pending = Some(id),
        }
        Ok(Token {
            id,
            text: step.text,
            logprob,
            top_logprobs: top,
        })
    }
}

/// Sampling and stopping options a caller sets over the model's defaults
/// ([`Engine::params_with`]); `None` keeps the default. What the CLI's options and the
/// Python module's keyword arguments hold, so both read the defaults the same way.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Overrides {
    /// Most new tokens.
    pub max_new_tokens: Option<usize>,
    /// Sampling temperature (0 is greedy).
    pub temperature: Option<f32>,
    /// Keep only the K most likely tokens.
    pub top_k: Option<usize>,
    /// Nucleus sampling's probability mass.
    pub top_p: Option<f32>,
    /// Drop tokens less likely than this times the most likely one.
    pub min_p: Option<f32>,
    /// Repetition penalty (1 is off).
    pub repetition_penalty: Option<f32>,
    /// The sampler's seed.
    pub seed: Option<u64>,
    /// Keep going past EOS.
    pub ignore_eos: bool,
    /// Strings that end generation.
    pub stop_strings: Vec<String>,
}

/// How many positions of a cache holding `cached` a prompt of `prompt` can keep: their common
/// prefix, but never the prompt's last token, which is always computed again because its
/// logits choose the first new token (a session's next turn).
pub(crate) fn reusable_prefix(cached: &[u32], prompt: &[u32]) -> usize {
    let shared = cached
        .iter()
        .zip(prompt)
        .take_while(|(a, b)| a == b)
        .count();
    shared.min(prompt.len().saturating_sub(1))
}

/// The model's [`mixtral_model::Error::Stopped`] as the facade's [`crate::Error::Cancelled`]:
/// a [`CancelToken`] set the flag the model checks.
pub(crate) fn cancelled(e: crate::Error) -> crate::Error {
    match e {
        crate::Error::Model(mixtral_model::Error::Stopped { .. }) => crate::Error::Cancelled,
        e => e,
    }
}

impl Engine {
    /// Parameters from the model's defaults (`generation_config.json`), 256 new tokens at most.
    pub fn params(&self) -> GenerateParams {
        GenerateParams {
            sampling: self.defaults.sampling.clone(),
            max_new_tokens: self.defaults.max_new_tokens.unwrap_or(256),
            ..GenerateParams::default()
        }
    }

    /// [`Engine::params`] with `o` set over them.
    pub fn params_with(&self, o: &Overrides) -> GenerateParams {
        let mut p = self.params();
        let s = &mut p.sampling;
        if let Some(t) = o.temperature {
            s.temperature = t;
        }
        if let Some(k) = o.top_k {
            s.top_k = Some(k);
        }
        if let Some(v) = o.top_p {
            s.top_p = v;
        }
        if let Some(v) = o.min_p {
            s.min_p = v;
        }
        if let Some(v) = o.repetition_penalty {
            s.repetition_penalty = v;
        }
        if let Some(seed) = o.seed {
            s.seed = seed;
        }
        if let Some(n) = o.max_new_tokens {
            p.max_new_tokens = n;
        }
        p.ignore_eos = o.ignore_eos;
        p.stop_strings = o.stop_strings.clone();
        p
    }

    /// The prompt's token ids.
    ///
    /// # Errors
    /// [`PromptTooLong`](crate::Error::PromptTooLong) at once, before any tokenization, for
    /// text that could not fit the context however it tokenized (a stranger's 16 MB prompt
    /// must not cost gigabytes of tokenizer memory just to be refused); the tokenizer's and
    /// the chat template's errors.
    pub fn encode(&self, prompt: &Prompt) -> Result<Vec<u32>> {
        self.check_text_fits(prompt)?;
        Ok(match prompt {
            Prompt::Tokens(ids) => ids.clone(),
            Prompt::Text(text) => {
                let tok = self.require_tokenizer()?;
                let mut ids = vec![tok.bos_id()];
                ids.extend(tok.encode(text)?);
                ids
            }
            Prompt::Chat(messages) => crate::encode_chat(
                self.require_tokenizer()?,
                self.chat_template.as_ref(),
                messages,
            )?,
            Prompt::Tools { messages, tools } => crate::tools::encode_tool_chat(
                self.require_tokenizer()?,
                self.chat_template.as_ref(),
                messages,
                tools,
            )?,
        })
    }

    /// Refuses a prompt whose text is longer than any tokenization of it that fits the
    /// context: no token covers more bytes than the longest vocabulary piece.
    fn check_text_fits(&self, prompt: &Prompt) -> Result<()> {
        let bytes = match prompt {
            Prompt::Tokens(_) => return Ok(()),
            Prompt::Text(text) => text.len(),
            Prompt::Chat(messages) => messages
                .iter()
                .fold(0usize, |n, m| n.saturating_add(m.content.len())),
            Prompt::Tools { messages, tools } => crate::tools::text_bytes(messages, tools),
        };
        let context = self.config().max_position_embeddings;
        let per_token = self.max_token_bytes.max(1);
        let min_tokens = bytes.div_ceil(per_token);
        if min_tokens > context {
            return Err(crate::Error::PromptTooLong {
                bytes,
                min_tokens,
                context,
            });
        }
        Ok(())
    }

    /// An empty session.
    pub fn session(&self) -> Session {
        Session {
            engine: self.id,
            cache: Box::new(self.model.new_cache()),
            ids: vec![],
            steering: 0,
            steered_by: Intervention::default(),
        }
    }

    /// Runs `chunk` after the session's cached ids; returns the last row of logits.
    fn prefill_chunk(
        &self,
        session: &mut Session,
        chunk: &[u32],
        steer: &Intervention,
        cancel: Option<&CancelToken>,
    ) -> Result<Vec<f32>> {
        // Between chunks (and the model checks again before every layer).
        if cancel.is_some_and(CancelToken::is_cancelled) {
            return Err(crate::Error::Cancelled);
        }
        let start = session.ids.len();
        let positions: Vec<usize> = (start..start + chunk.len()).collect();
        let opts = ForwardOptions::default();
        let cache = &mut session.cache;
        let out = self
            .run(|| {
                let step = Step::new(chunk, &positions)
                    .options(opts)
                    .steer(steer)
                    .stop(cancel.map(CancelToken::flag));
                self.model.forward(step, cache)
            })
            .map_err(cancelled)?;
        session.ids.extend_from_slice(chunk);
        Ok(out.last().to_vec())
    }

    /// Runs one token after the session's cached ids, writing its logits into `logits`.
    fn decode_into(
        &self,
        session: &mut Session,
        id: u32,
        logits: &mut Vec<f32>,
        steer: &Intervention,
    ) -> Result<()> {
        let pos = session.ids.len();
        let cache = &mut session.cache;
        self.run(|| {
            let row = self.model.decode_logits_steered(id, pos, cache, steer)?;
            logits.clear();
            logits.extend_from_slice(row);
            Ok(())
        })?;
        session.ids.push(id);
        Ok(())
    }

    /// Compiles `constraint` against this engine's vocabulary without generating: what a
    /// server does to refuse a bad schema, regex or grammar before queueing the request.
    ///
    /// # Errors
    /// [`crate::Error::Constraint`] for a constraint llguidance cannot compile (or one past
    /// its limits), [`crate::Error::NoTokenizer`] without a tokenizer.
    pub fn check_constraint(&self, constraint: &Constraint) -> Result<()> {
        let tokenizer = self.require_tokenizer()?;
        self.guides
            .guide(constraint, tokenizer, self.config().vocab_size)
            .map(drop)
    }

    /// How this model's vocabulary writes tool calls: Mistral's v3 tokens or the text
    /// markers ([`crate::tools`]); what [`crate::tools::tool_call_constraint`] and
    /// [`crate::tools::ToolCallParser`] take.
    ///
    /// # Errors
    /// [`crate::Error::NoTokenizer`] without a tokenizer.
    pub fn tool_format(&self) -> Result<crate::tools::ToolFormat> {
        Ok(crate::tools::ToolFormat::of(self.require_tokenizer()?))
    }

    /// Starts generating from `prompt` in a fresh session.
    ///
    /// ```
    /// use mixtral::{Engine, GenerateParams, Prompt};
    /// # let model = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/models/tiny-bf16");
    /// let engine = Engine::load(model)?;
    /// let params = engine.params().max_new_tokens(8);
    /// for token in engine.generate(&Prompt::Text("Hello".into()), &params)? {
    ///     print!("{}", token?.text);
    /// }
    /// # Ok::<(), mixtral::Error>(())
    /// ```
    pub fn generate(&self, prompt: &Prompt, params: &GenerateParams) -> Result<Generation<'_>> {
        let ids = self.encode(prompt)?;
        self.start(SessionSlot::Owned(self.session()), &ids, params, |_, _| {})
    }

    /// Starts generating from `prompt` in `session`, reusing its cache for the longest common
    /// prefix of its ids and the prompt's: a chat that sends the whole conversation each turn
    /// computes only the new turn. The session keeps every token the generation ran through
    /// the model, for the next call.
    ///
    /// ```
    /// use mixtral::{Engine, Message, Prompt};
    /// # let model = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/models/tiny-bf16");
    /// let engine = Engine::load(model)?;
    /// let params = engine.params().max_new_tokens(8);
    /// let mut session = engine.session();
    /// let mut chat = vec![Message::user("Hello")];
    /// for question in ["How are you?", "Bye"] {
    ///     let answer = engine
    ///         .generate_in(&mut session, &Prompt::Chat(chat.clone()), &params)?
    ///         .map(|t| t.map(|t| t.text))
    ///         .collect::<mixtral::Result<String>>()?;
    ///     chat.push(Message::assistant(answer.trim()));
    ///     chat.push(Message::user(question));
    /// }
    /// # Ok::<(), mixtral::Error>(())
    /// ```
    pub fn generate_in<'a>(
        &'a self,
        session: &'a mut Session,
        prompt: &Prompt,
        params: &GenerateParams,
    ) -> Result<Generation<'a>> {
        self.generate_in_with(session, prompt, params, |_, _| {})
    }

    /// [`Engine::generate_in`] with `progress(done, total)` called after each prompt chunk is
    /// prefilled (chunks of 128 tokens; `total` counts only the tokens not already cached).
    pub fn generate_in_with<'a>(
        &'a self,
        session: &'a mut Session,
        prompt: &Prompt,
        params: &GenerateParams,
        progress: impl FnMut(usize, usize),
    ) -> Result<Generation<'a>> {
        let ids = self.encode(prompt)?;
        self.start(SessionSlot::Borrowed(session), &ids, params, progress)
    }

    /// Prefills `prompt_ids` in `session` and returns the generation that samples after them.
    fn start<'a>(
        &'a self,
        mut session: SessionSlot<'a>,
        prompt_ids: &[u32],
        params: &GenerateParams,
        mut progress: impl FnMut(usize, usize),
    ) -> Result<Generation<'a>> {
        if session.engine != self.id {
            return Err(crate::Error::InvalidOption {
                option: "session",
                reason: "the session was made by another engine (use this engine's \
                         Engine::session)",
            });
        }
        let decoding = Decoding::new(self, prompt_ids, params)?;
        // A prompt the context cannot hold (or with an id outside the vocabulary) is refused
        // before any of it is computed.
        self.model.check_prompt(prompt_ids)?;
        // A session computed under another intervention is recomputed from the start.
        let steering = params.intervention.fingerprint();
        let keep = if session.steering == steering {
            reusable_prefix(&session.ids, prompt_ids)
        } else {
            0
        };
        session.cache.truncate(keep);
        session.ids.truncate(keep);
        let start = Instant::now();
        // Non-empty: the prompt is (checked above), and `keep` leaves its last token.
        let todo = &prompt_ids[keep..];
        let mut logits = Vec::new();
        session.steering = steering;
        session.steered_by = params.intervention.clone();
        for chunk in todo.chunks(PREFILL_CHUNK) {
            logits = self.prefill_chunk(
                &mut session,
                chunk,
                &params.intervention,
                params.cancel.as_ref(),
            )?;
            progress(session.ids.len() - keep, todo.len());
        }
        let stats = Stats {
            prompt_tokens: prompt_ids.len(),
            prefill_tokens: todo.len(),
            prefill_time: start.elapsed(),
            ..Stats::default()
        };
        Ok(Generation {
            engine: self,
            session,
            decoding,
            logits,
            steer: params.intervention.clone(),
            cancel: params.cancel.clone(),
            stats,
        })
    }
}

impl std::fmt::Debug for Generation<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Generation")
            .field("generated", &self.generated())
            .field("finish", &self.decoding.finish)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl Generation<'_> {
    /// Why generation ended, once it has.
    pub fn finish_reason(&self) -> Option<&FinishReason> {
        self.decoding.finish.as_ref()
    }

    /// Timings so far.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Ids generated so far.
    pub fn generated(&self) -> &[u32] {
        self.decoding.generated()
    }

    /// Stops generation: the iterator ends and the finish reason is `Interrupted`.
    pub fn interrupt(&mut self) {
        if self.decoding.finish.is_none() {
            self.decoding.finish = Some(FinishReason::Interrupted);
        }
    }

    /// Runs the pending token through the model, leaving its logits in `self.logits`
    /// (no allocation: the model writes into the cache's scratch, copied into our buffer).
    fn advance(&mut self, id: u32) -> Result<()> {
        let start = Instant::now();
        self.engine
            .decode_into(&mut self.session, id, &mut self.logits, &self.steer)?;
        self.stats.decode_time += start.elapsed();
        self.stats.decode_steps += 1;
        Ok(())
    }

    fn step(&mut self) -> Result<Token> {
        if let Some(id) = self.decoding.pending.take() {
            self.advance(id)?;
        }
        let context = self.engine.config().max_position_embeddings;
        let token = self
            .decoding
            .next(&self.logits, self.session.ids.len(), context)?;
        self.stats.generated_tokens += 1;
        Ok(token)
    }
}

impl Iterator for Generation<'_> {
    type Item = Result<Token>;

    fn next(&mut self) -> Option<Result<Token>> {
        if self.cancel.as_ref().is_some_and(CancelToken::is_cancelled) {
            self.interrupt();
        }
        if self.decoding.finish.is_some() {
            return None;
        }
        let result = self.step();
        if result.is_err() {
            self.decoding.finish = Some(FinishReason::Interrupted);
        }
        Some(result)
    }
}
