//! `Scheduler`: continuous batching. Many requests, from any number of threads, generate
//! together: every step runs the next token of each running sequence, and chunks of the
//! prompts of sequences that have just joined, as ONE forward call
//! ([`mixtral_model::Model::forward_batch`]), so one read of each weight (and of each
//! expert the step's tokens chose) serves every sequence.
//!
//! - **Joining and leaving.** A request joins at the next step; its prompt is prefilled in
//!   chunks of [`BatchOptions::prefill_chunk`] beside the others' decode steps (a long prompt
//!   does not stall them), and it leaves the step it finishes. A cancelled request, or one
//!   whose receiver is gone, frees its cache at once.
//! - **Memory.** Keys and values are budgeted in blocks out of [`BatchOptions::kv_memory`]:
//!   on the CPU, pages of [`mixtral_model::PAGE_POSITIONS`] positions of one [`KvPool`] that
//!   every sequence's cache takes from (attention reads them through a page table), on a GPU
//!   blocks of [`KvCache::BLOCK_POSITIONS`] of each sequence's own buffers. A request is
//!   admitted when the blocks for its prompt and first token are free, and takes more as it
//!   grows. When a step's growth does not fit, cached pages are evicted first, then the most
//!   recently admitted running sequence is **preempted**: its blocks are freed and it waits, ahead of every queued
//!   request, to be readmitted, when its prompt and the tokens it had generated are computed
//!   again (vLLM's recompute preemption) and it goes on from where it stopped, with its
//!   sampler's state: its client sees a delay, nothing else ([`Metrics::preemptions`]).
//!   [`BatchOptions::reserve_max_tokens`] reserves prompt plus `max_new_tokens` at
//!   admission instead (nothing is ever preempted; fewer sequences fit). A request that could
//!   never fit alone is refused when submitted.
//! - **Prefixes** (on the CPU). Every step, each sequence publishes its whole pages: indexed
//!   by a hash of their tokens and of the pages before them. A request whose prompt begins
//!   with the tokens of published pages takes those pages (shared, reference-counted: with
//!   a sequence still running, or kept after it ended) and computes only the rest. Pages no
//!   sequence holds stay cached ([`Metrics::kv_blocks_cached`]) until a page is needed,
//!   evicted least recently released first ([`BatchOptions::prefix_caching`],
//!   [`Finished::cached_tokens`]; vLLM's automatic prefix caching). A preempted sequence
//!   readmitted starts from whatever of its own pages is still cached.
//! - **Same tokens as alone.** Each sequence samples from its own logits row with its own
//!   sampler and seed, through the code [`Engine::generate`] uses. The rows match the ones it
//!   gets alone to about one ulp of the logits' range (one-token and many-token matmuls sum
//!   in different orders), and bit for bit with [`crate::LoadOptions::batch_invariant`].

use crate::generate::Decoding;
use crate::{CancelToken, Engine, Error, FinishReason, GenerateParams, Prompt, Result, Token};
use mixtral_model::{BatchItem, BatchScratch, KvCache, KvPool, PAGE_POSITIONS};
use std::collections::VecDeque;
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How a [`Scheduler`] batches.
#[derive(Clone, Copy, Debug)]
pub struct BatchOptions {
    /// The most sequences running at once (1 to 1024).
    pub max_batch: usize,
    /// Bytes of keys and values all running sequences may hold together; `None`: room for
    /// `max_batch` sequences of 4,096 positions (or of the context, if shorter).
    pub kv_memory: Option<usize>,
    /// The most requests waiting to start; more are refused ([`Error::QueueFull`]).
    pub max_queue: usize,
    /// Prompt tokens a joining sequence prefills per step.
    pub prefill_chunk: usize,
    /// Share keys and values of whole pages between requests whose prompts begin with the
    /// same tokens (a system prompt, a chat's earlier turns), and keep pages no sequence
    /// holds until their memory is needed. `None` (the default): on where the budget is a
    /// page pool (the CPU), off on a GPU; `Some(true)` on a GPU is refused (its caches are
    /// device buffers of their own, not pages yet). Greedy tokens are the same either way
    /// (bit for bit with a batch-invariant engine).
    pub prefix_caching: Option<bool>,
    /// Reserve each request's prompt plus `max_new_tokens` (capped at the context) when it is
    /// admitted, as the scheduler did before it could preempt: a running sequence never
    /// waits for memory, but a budget holds as many sequences as fit at their longest. Off
    /// by default: sequences take blocks as they grow.
    pub reserve_max_tokens: bool,
}

impl Default for BatchOptions {
    fn default() -> BatchOptions {
        BatchOptions {
            max_batch: 16,
            kv_memory: None,
            max_queue: 256,
            prefill_chunk: 128,
            prefix_caching: None,
            reserve_max_tokens: false,
        }
    }
}

/// What a request's stream receives.
#[derive(Clone, Debug)]
pub enum Event {
    /// The next generated token.
    Token(Token),
    /// The request ended (after its last token).
    Done(Finished),
    /// The request failed; nothing follows.
    Error(Arc<Error>),
}

/// How a request ended.
#[derive(Clone, Debug)]
pub struct Finished {
    /// Why.
    pub reason: FinishReason,
    /// Tokens in the prompt.
    pub prompt_tokens: usize,
    /// Prompt tokens not computed: their keys and values came from an earlier request's
    /// ([`BatchOptions::prefix_caching`]).
    pub cached_tokens: usize,
    /// Tokens generated.
    pub generated_tokens: usize,
    /// From submission to the first token (`None` if there was none).
    pub time_to_first_token: Option<Duration>,
    /// From submission to the end.
    pub total_time: Duration,
}

/// Where a request's events go: called on the scheduler's thread, so it must be quick (a
/// channel send). Returning `false` (the receiver is gone) cancels the request.
pub type Sink = Box<dyn FnMut(Event) -> bool + Send>;

/// A submitted request's stream of events (an iterator that ends after `Done` or `Error`).
#[derive(Debug)]
pub struct RequestHandle {
    events: mpsc::Receiver<Event>,
    cancel: CancelToken,
    ended: bool,
}

impl RequestHandle {
    /// A token that cancels this request from another thread.
    pub fn cancel_token(&self) -> CancelToken {
        self.cancel.clone()
    }

    /// Cancels the request.
    pub fn cancel(&self) {
        self.cancel.cancel();
    }

    /// Waits for the end and returns the generated tokens and how it ended.
    pub fn collect_all(self) -> Result<(Vec<Token>, Finished)> {
        let mut tokens = vec![];
        for event in self {
            match event {
                Event::Token(t) => tokens.push(t),
                Event::Done(f) => return Ok((tokens, f)),
                Event::Error(e) => return Err(Error::Batch(crate::error_chain(&*e))),
            }
        }
        Err(Error::Batch("the scheduler stopped".into()))
    }
}

impl Drop for RequestHandle {
    /// A handle dropped before its request ended cancels it (its cache is freed at the next
    /// step, even mid-prompt).
    fn drop(&mut self) {
        if !self.ended {
            self.cancel.cancel();
        }
    }
}

impl Iterator for RequestHandle {
    type Item = Event;

    fn next(&mut self) -> Option<Event> {
        if self.ended {
            return None;
        }
        let event = self.events.recv().ok();
        self.ended = !matches!(event, Some(Event::Token(_)));
        event
    }
}

/// A snapshot of a scheduler's state, for monitoring.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Metrics {
    /// Requests waiting to start.
    pub queued: usize,
    /// Sequences running.
    pub active: usize,
    /// KV blocks held by running sequences (a page several share counts once).
    pub kv_blocks_used: usize,
    /// KV pages that no sequence holds, kept for the prefixes they hold (free for the
    /// taking: evicted when a sequence needs a page).
    pub kv_blocks_cached: usize,
    /// Whether prefix caching is on ([`BatchOptions::prefix_caching`] resolved for the
    /// device).
    pub prefix_caching: bool,
    /// Requests admitted since the start (each looked for a cached prefix).
    pub prefix_cache_queries: u64,
    /// Requests that started from a cached prefix.
    pub prefix_cache_hits: u64,
    /// Prompt tokens taken from cached prefixes instead of computed.
    pub prefix_cache_tokens: u64,
    /// KV blocks in the budget.
    pub kv_blocks_total: usize,
    /// Bytes per KV block.
    pub kv_block_bytes: usize,
    /// Positions per KV block (a page of the CPU's pool, [`mixtral_model::PAGE_POSITIONS`];
    /// [`KvCache::BLOCK_POSITIONS`] on a GPU).
    pub kv_block_positions: usize,
    /// Running sequences preempted since the start (their blocks freed for others, their
    /// tokens computed again when readmitted).
    pub preemptions: u64,
    /// Requests submitted since the start.
    pub requests_total: u64,
    /// Requests that ended (finished, cancelled or failed); counted at the end of the
    /// scheduler step that ended them, just after their last event was sent.
    pub requests_finished: u64,
    /// Prompt tokens computed since the start.
    pub prompt_tokens_total: u64,
    /// Tokens generated since the start.
    pub generated_tokens_total: u64,
    /// Forward steps run since the start.
    pub steps_total: u64,
    /// Tokens generated per second over the last few seconds.
    pub generated_tokens_per_s: f64,
}

/// A request waiting to start.
struct Queued {
    ids: Vec<u32>,
    params: GenerateParams,
    sink: Sink,
    cancel: CancelToken,
    /// Blocks it takes when admitted.
    blocks: usize,
    /// Blocks it may hold at its longest (prompt plus `max_new_tokens`, within the context).
    max_blocks: usize,
    submitted: Instant,
}

/// The state the submitting threads and the scheduler's thread share.
struct State {
    queue: VecDeque<Queued>,
    /// No new requests; the thread ends once the running ones are done.
    closing: bool,
    /// Cancel everything at the next step.
    cancel_all: bool,
    metrics: Metrics,
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
    /// Signalled when the scheduler goes idle (nothing queued or running).
    idle: Condvar,
    opts: BatchOptions,
    block_bytes: usize,
    /// Positions per block.
    block_positions: usize,
    total_blocks: usize,
    /// The CPU's pages, `total_blocks` of them (`None` on a GPU).
    pool: Option<KvPool>,
    /// [`BatchOptions::prefix_caching`] resolved: only with a pool.
    prefix_caching: bool,
    context: usize,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic on the scheduler thread is reported to callers by their closed streams; the
        // state itself stays consistent (every change is one assignment), so go on with it.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Continuous batching over one [`Engine`] (CPU): submit requests from any thread, read each
/// one's tokens as they come. See the module docs.
///
/// ```
/// use mixtral::{BatchOptions, Engine, Event, Prompt, Scheduler};
/// use std::sync::Arc;
/// let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/models/tiny-bf16");
/// let engine = Arc::new(Engine::load(dir)?);
/// let scheduler = Scheduler::new(engine.clone(), BatchOptions::default())?;
/// let mut params = engine.params();
/// params.max_new_tokens = 8;
/// let handles: Vec<_> = ["Hello", "Bonjour", "Hallo"]
///     .into_iter()
///     .map(|p| scheduler.submit(&Prompt::Text(p.into()), &params))
///     .collect::<Result<_, _>>()?;
/// for handle in handles {
///     for event in handle {
///         match event {
///             Event::Token(t) => print!("{}", t.text),
///             Event::Done(done) => println!(" [{}]", done.reason.as_str()),
///             Event::Error(e) => eprintln!("error: {}", mixtral::error_chain(&*e)),
///         }
///     }
/// }
/// # Ok::<(), mixtral::Error>(())
/// ```
pub struct Scheduler {
    shared: Arc<Shared>,
    engine: Arc<Engine>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scheduler")
            .field("opts", &self.shared.opts)
            .field("metrics", &self.metrics())
            .finish()
    }
}

impl Scheduler {
    /// Starts the scheduler's thread, on an engine on any device. Fails on options out of
    /// range.
    pub fn new(engine: Arc<Engine>, opts: BatchOptions) -> Result<Scheduler> {
        if !(1..=1024).contains(&opts.max_batch) {
            return Err(Error::InvalidOption {
                option: "max_batch",
                reason: "must be 1 to 1024",
            });
        }
        if opts.max_queue == 0 {
            return Err(Error::InvalidOption {
                option: "max_queue",
                reason: "must be at least 1 (every request waits in the queue for its step)",
            });
        }
        if opts.prefill_chunk == 0 {
            return Err(Error::InvalidOption {
                option: "prefill_chunk",
                reason: "must be at least 1",
            });
        }
        let c = engine.config();
        let model = engine.model();
        let shape = (c.num_hidden_layers, c.num_key_value_heads, c.head_dim);
        // On the CPU the budget is a pool of pages every sequence takes from; a GPU's caches
        // are device buffers of their own, budgeted in blocks.
        let paged = model.device() == mixtral_model::DeviceId::Cpu;
        let (block_bytes, block_positions) = match paged {
            true => (
                KvPool::page_bytes(shape.0, shape.1, shape.2, model.kv_dtype()),
                PAGE_POSITIONS,
            ),
            false => (
                KvCache::block_bytes(shape.0, shape.1, shape.2, model.kv_dtype()),
                KvCache::BLOCK_POSITIONS,
            ),
        };
        let block_bytes = block_bytes.max(1);
        let context = c.max_position_embeddings;
        let kv_memory = opts.kv_memory.unwrap_or_else(|| {
            let per_seq = context.min(4096).div_ceil(block_positions);
            opts.max_batch
                .saturating_mul(per_seq)
                .saturating_mul(block_bytes)
        });
        let total_blocks = kv_memory / block_bytes;
        if total_blocks == 0 {
            return Err(Error::InvalidOption {
                option: "kv_memory",
                reason: "smaller than one KV block (Metrics::kv_block_bytes)",
            });
        }
        let pool = match paged {
            true => Some(KvPool::new(c, model.kv_dtype(), total_blocks)?),
            false => None,
        };
        let prefix_caching = match (opts.prefix_caching, paged) {
            (Some(true), false) => {
                return Err(Error::InvalidOption {
                    option: "prefix_caching",
                    reason: "needs the CPU's KV page pool (a GPU's caches are not paged yet)",
                });
            }
            (Some(on), _) => on,
            (None, paged) => paged,
        };
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                queue: VecDeque::new(),
                closing: false,
                cancel_all: false,
                metrics: Metrics {
                    kv_blocks_total: total_blocks,
                    kv_block_bytes: block_bytes,
                    kv_block_positions: block_positions,
                    prefix_caching,
                    ..Metrics::default()
                },
            }),
            wake: Condvar::new(),
            idle: Condvar::new(),
            opts,
            block_bytes,
            block_positions,
            total_blocks,
            pool,
            prefix_caching,
            context,
        });
        let thread = {
            let (shared, engine) = (shared.clone(), engine.clone());
            std::thread::Builder::new()
                .name("mixtral-scheduler".into())
                .spawn(move || {
                    let _fail_queued = FailQueuedOnPanic(&shared);
                    Worker::new(&engine, &shared).run()
                })
                .map_err(|source| Error::Threads { threads: 1, source })?
        };
        Ok(Scheduler {
            shared,
            engine,
            thread: Some(thread),
        })
    }

    /// The engine it runs.
    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// Submits a request; its events arrive on the returned handle.
    pub fn submit(&self, prompt: &Prompt, params: &GenerateParams) -> Result<RequestHandle> {
        let ids = self.engine.encode(prompt)?;
        let (tx, rx) = mpsc::channel();
        let sink: Sink = Box::new(move |event| tx.send(event).is_ok());
        let cancel = self.submit_with(ids, params, sink)?;
        Ok(RequestHandle {
            events: rx,
            cancel,
            ended: false,
        })
    }

    /// Submits a request of token ids whose events go to `sink` (e.g. an async channel's
    /// sender). Everything that can be checked before it runs is checked here: the prompt's
    /// ids and length, the sampling and stop parameters, its memory, the queue's room.
    pub fn submit_with(
        &self,
        ids: Vec<u32>,
        params: &GenerateParams,
        sink: Sink,
    ) -> Result<CancelToken> {
        self.engine.model().check_prompt(&ids)?;
        if !params.intervention.is_none() {
            return Err(Error::InvalidOption {
                option: "intervention",
                reason: "router interventions are not batched (use Engine::generate)",
            });
        }
        // The sampler and stop conditions, checked now rather than on the scheduler's thread.
        Decoding::new(&self.engine, &ids, params)?;
        let positions = ids
            .len()
            .saturating_add(params.max_new_tokens)
            .min(self.shared.context);
        let bp = self.shared.block_positions;
        let max_blocks = positions.div_ceil(bp);
        if max_blocks > self.shared.total_blocks {
            return Err(Error::KvBudget {
                needed: max_blocks.saturating_mul(self.shared.block_bytes),
                budget: self.shared.total_blocks * self.shared.block_bytes,
            });
        }
        // The prompt and its first token's position; the rest is taken as it is generated.
        let blocks = match self.shared.opts.reserve_max_tokens {
            true => max_blocks,
            false => (ids.len() + 1).min(self.shared.context).div_ceil(bp),
        };
        if !self.is_running() {
            // Only a bug ends the thread early (a panic in a kernel): say so, never queue.
            return Err(Error::Batch("the scheduler's thread has stopped".into()));
        }
        let cancel = CancelToken::default();
        let mut state = self.shared.lock();
        if state.closing {
            return Err(Error::Batch("the scheduler is shutting down".into()));
        }
        if state.queue.len() >= self.shared.opts.max_queue {
            return Err(Error::QueueFull {
                queued: state.queue.len(),
            });
        }
        state.queue.push_back(Queued {
            ids,
            params: params.clone(),
            sink,
            cancel: cancel.clone(),
            blocks,
            max_blocks,
            submitted: Instant::now(),
        });
        state.metrics.requests_total += 1;
        state.metrics.queued = state.queue.len();
        drop(state);
        self.shared.wake.notify_one();
        Ok(cancel)
    }

    /// The current state.
    pub fn metrics(&self) -> Metrics {
        let mut m = self.shared.lock().metrics;
        if m.active == 0 {
            m.generated_tokens_per_s = 0.0;
        }
        m
    }

    /// False once the scheduler's thread has ended: after [`Scheduler::close`] once idle, or
    /// after a bug (a panic), when every queued request was failed.
    pub fn is_running(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }

    /// Cancels every queued and running request.
    pub fn cancel_all(&self) {
        self.shared.lock().cancel_all = true;
        self.shared.wake.notify_one();
    }

    /// Refuses new requests from now on (the running and queued ones go on).
    pub fn close(&self) {
        self.shared.lock().closing = true;
        self.shared.wake.notify_one();
    }

    /// Waits until nothing is queued or running, at most `timeout`; true if it got there.
    pub fn wait_idle(&self, timeout: Duration) -> bool {
        // A timeout past what an `Instant` can hold waits without a deadline.
        let deadline = Instant::now().checked_add(timeout);
        let mut state = self.shared.lock();
        loop {
            if state.metrics.queued == 0 && state.metrics.active == 0 {
                return true;
            }
            let now = Instant::now();
            let left = match deadline {
                Some(d) if now >= d => return false,
                Some(d) => d - now,
                None => Duration::from_secs(3600),
            };
            state = self
                .shared
                .idle
                .wait_timeout(state, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}

impl Drop for Scheduler {
    /// Cancels what is left and joins the scheduler's thread.
    fn drop(&mut self) {
        {
            let mut state = self.shared.lock();
            state.closing = true;
            state.cancel_all = true;
        }
        self.shared.wake.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Fails every queued request if the scheduler's thread unwinds (a bug), so no caller waits
/// forever on a request no thread will run; running ones end as the worker's sinks drop.
struct FailQueuedOnPanic<'a>(&'a Shared);

impl Drop for FailQueuedOnPanic<'_> {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let mut state = self.0.lock();
        state.closing = true;
        let error = Arc::new(Error::Batch("the scheduler's thread panicked".into()));
        let queued: Vec<Queued> = state.queue.drain(..).collect();
        for mut q in queued {
            (q.sink)(Event::Error(error.clone()));
            state.metrics.requests_finished += 1;
        }
        state.metrics.queued = 0;
        state.metrics.active = 0;
        drop(state);
        self.0.idle.notify_all();
    }
}

/// What one running sequence contributes to a step.
enum Plan {
    /// Its next prompt chunk (rows of its prompt).
    Prefill(std::ops::Range<usize>),
    /// Its pending token, as the one-token slice a batch item borrows.
    Decode([u32; 1]),
}

/// A running sequence.
struct Running<'e> {
    prompt: Vec<u32>,
    /// After a preemption: the prompt and the generated tokens that were in its cache, to
    /// compute again before it decodes on (`None`: the prompt).
    recompute: Option<Vec<u32>>,
    cache: KvCache,
    /// Tokens of [`Running::feed`] prefilled so far (the cached ones included).
    prefilled: usize,
    /// Prompt tokens taken from cached pages.
    cached: usize,
    /// [`GenerateParams::cache_salt`]: the pages it shares.
    salt: Option<String>,
    decoding: Decoding<'e>,
    sink: Sink,
    cancel: CancelToken,
    /// Blocks its cache holds.
    blocks: usize,
    /// Blocks it may hold at its longest.
    max_blocks: usize,
    submitted: Instant,
    first_token: Option<Duration>,
    generated: usize,
}

impl Running<'_> {
    /// The tokens to prefill: the prompt, or after a preemption what its cache held.
    fn feed(&self) -> &[u32] {
        self.recompute.as_deref().unwrap_or(&self.prompt)
    }

    /// Whether prefilling `rows` ends the prompt and so samples the first token (not when it
    /// ends a preempted sequence's recomputation: its next token is already chosen).
    fn wants_logits(&self, rows: &std::ops::Range<usize>) -> bool {
        rows.end == self.feed().len() && self.decoding.pending.is_none()
    }

    /// What it contributes to the next step.
    fn plan(&self, chunk: usize) -> Plan {
        let feed = self.feed().len();
        match self.decoding.pending {
            Some(id) if self.prefilled == feed => Plan::Decode([id]),
            _ => Plan::Prefill(self.prefilled..(self.prefilled + chunk).min(feed)),
        }
    }

    /// Blocks of `bp` positions its cache needs to run `plan` (never more than it may hold
    /// at its longest).
    fn needs(&self, plan: &Plan, bp: usize) -> usize {
        let positions = match plan {
            Plan::Prefill(rows) => rows.end,
            Plan::Decode(_) => self.cache.len() + 1,
        };
        positions.div_ceil(bp).min(self.max_blocks)
    }

    /// Sends `event`; false if the receiver is gone.
    fn send(&mut self, event: Event) -> bool {
        (self.sink)(event)
    }

    fn finished(&self, reason: FinishReason) -> Finished {
        Finished {
            reason,
            prompt_tokens: self.prompt.len(),
            cached_tokens: self.cached,
            generated_tokens: self.generated,
            time_to_first_token: self.first_token,
            total_time: self.submitted.elapsed(),
        }
    }
}

/// The scheduler's thread.
struct Worker<'e> {
    engine: &'e Engine,
    shared: &'e Shared,
    running: Vec<Running<'e>>,
    /// Preempted sequences waiting to be readmitted, oldest submission first.
    preempted: Vec<Running<'e>>,
    scratch: BatchScratch,
    /// Tokens generated in the current rate window, and when it began.
    window: (u64, Instant),
}

impl<'e> Worker<'e> {
    fn new(engine: &'e Engine, shared: &'e Shared) -> Worker<'e> {
        Worker {
            engine,
            shared,
            running: vec![],
            preempted: vec![],
            scratch: BatchScratch::default(),
            window: (0, Instant::now()),
        }
    }

    fn run(mut self) {
        loop {
            // Outside the lock: reserving zero-fills memory, and a failure takes the lock.
            self.readmit();
            let (admitted, cancelled) = {
                let mut state = self.shared.lock();
                while state.queue.is_empty()
                    && self.running.is_empty()
                    && self.preempted.is_empty()
                    && !state.closing
                {
                    // Nothing to cancel: a `cancel_all` now must not reach later requests.
                    state.cancel_all = false;
                    self.publish(&mut state);
                    self.shared.idle.notify_all();
                    state = self
                        .shared
                        .wake
                        .wait(state)
                        .unwrap_or_else(|p| p.into_inner());
                }
                if state.cancel_all {
                    state.cancel_all = false;
                    for q in self.running.iter().chain(&self.preempted) {
                        q.cancel.cancel();
                    }
                    for q in &state.queue {
                        q.cancel.cancel();
                    }
                }
                if state.closing
                    && state.queue.is_empty()
                    && self.running.is_empty()
                    && self.preempted.is_empty()
                {
                    self.publish(&mut state);
                    self.shared.idle.notify_all();
                    return;
                }
                self.take_admitted(&mut state)
            };
            let ended = self.start(admitted, cancelled);
            if ended > 0 {
                self.shared.lock().metrics.requests_finished += ended;
            }
            self.drop_cancelled();
            if !self.running.is_empty() {
                self.step();
            }
            let mut state = self.shared.lock();
            self.publish(&mut state);
        }
    }

    /// Under the lock: the queued requests that start now (first come first served, while
    /// the batch has room and their blocks are free, counting every block a request's
    /// prompt needs even if cached pages will serve some), and those cancelled while queued.
    fn take_admitted(&mut self, state: &mut State) -> (Vec<Queued>, Vec<Queued>) {
        let (mut keep, mut cancelled) = (VecDeque::new(), vec![]);
        for q in state.queue.drain(..) {
            if q.cancel.is_cancelled() {
                cancelled.push(q);
            } else {
                keep.push_back(q);
            }
        }
        state.queue = keep;
        let mut available = self.available().saturating_sub(self.growth());
        let mut admitted = vec![];
        // Preempted sequences go first: a new request waits until they are back.
        while self.preempted.is_empty()
            && self.running.len() + admitted.len() < self.shared.opts.max_batch
        {
            let Some(front) = state.queue.front() else {
                break;
            };
            if front.blocks > available {
                break; // Waits for running sequences to free blocks (first come, first served).
            }
            available -= front.blocks;
            admitted.extend(state.queue.pop_front());
        }
        (admitted, cancelled)
    }

    /// Blocks no running sequence holds: the pool's free and cached pages, or on a GPU the
    /// budget less what the running sequences reserved.
    fn available(&self) -> usize {
        match &self.shared.pool {
            Some(pool) => pool.free_pages(),
            None => {
                let used: usize = self.running.iter().map(|r| r.blocks).sum();
                self.shared.total_blocks.saturating_sub(used)
            }
        }
    }

    /// Blocks the running sequences take at their next step: what admission must leave
    /// them (admitting into blocks a running sequence is about to take would only preempt
    /// the newcomer at once).
    fn growth(&self) -> usize {
        let (chunk, bp) = (self.shared.opts.prefill_chunk, self.shared.block_positions);
        self.running
            .iter()
            .map(|r| r.needs(&r.plan(chunk), bp).saturating_sub(r.blocks))
            .sum()
    }

    /// A cache for `ids` (a prompt, or what a preempted sequence computes again): with
    /// prefix caching, starting from the published pages that hold its longest run of whole
    /// pages published under the same `salt`, leaving at least `compute` tokens to run;
    /// returns it and the positions it holds.
    fn cache_for(
        &self,
        ids: &[u32],
        compute: usize,
        salt: Option<&str>,
    ) -> Result<(KvCache, usize)> {
        match &self.shared.pool {
            Some(pool) if self.shared.prefix_caching => {
                let max = ids.len().saturating_sub(compute);
                let salt = salt.unwrap_or_default().as_bytes();
                Ok(self
                    .engine
                    .model()
                    .new_paged_cache_from(pool, ids, max, salt)?)
            }
            _ => Ok((self.new_cache()?, 0)),
        }
    }

    /// Outside the lock (reserving a cache zero-fills it, which takes a while for a long
    /// context): ends the cancelled requests and starts the admitted ones. Returns how many
    /// ended.
    fn start(&mut self, admitted: Vec<Queued>, cancelled: Vec<Queued>) -> u64 {
        let mut ended = 0;
        for mut q in cancelled {
            let done = Finished {
                reason: FinishReason::Interrupted,
                prompt_tokens: q.ids.len(),
                cached_tokens: 0,
                generated_tokens: 0,
                time_to_first_token: None,
                total_time: q.submitted.elapsed(),
            };
            (q.sink)(Event::Done(done));
            ended += 1;
        }
        for mut q in admitted {
            let start = Decoding::new(self.engine, &q.ids, &q.params).and_then(|decoding| {
                // The prompt's last token is always computed: its logits choose the first.
                let salt = q.params.cache_salt.as_deref();
                let (mut cache, cached) = self.cache_for(&q.ids, 1, salt)?;
                if self.shared.prefix_caching {
                    let mut state = self.shared.lock();
                    let m = &mut state.metrics;
                    m.prefix_cache_queries += 1;
                    m.prefix_cache_hits += u64::from(cached > 0);
                    m.prefix_cache_tokens += cached as u64;
                }
                // On a GPU this is where device memory runs out: the request fails alone.
                cache.reserve(q.blocks * self.shared.block_positions)?;
                Ok((decoding, cache, cached))
            });
            match start {
                Ok((decoding, cache, cached)) => {
                    self.running.push(Running {
                        prompt: q.ids,
                        recompute: None,
                        cache,
                        prefilled: cached,
                        cached,
                        salt: q.params.cache_salt.clone(),
                        decoding,
                        sink: q.sink,
                        cancel: q.cancel,
                        blocks: q.blocks,
                        max_blocks: q.max_blocks,
                        submitted: q.submitted,
                        first_token: None,
                        generated: 0,
                    });
                }
                Err(e) => {
                    (q.sink)(Event::Error(Arc::new(e)));
                    ended += 1;
                }
            }
        }
        ended
    }

    /// Ends every running sequence that was cancelled, freeing its cache now.
    fn drop_cancelled(&mut self) {
        let mut ended = 0;
        let (running, preempted) = (&mut self.running, &mut self.preempted);
        let mut retain = |r: &mut Running<'_>| {
            if r.cancel.is_cancelled() {
                let done = r.finished(FinishReason::Interrupted);
                r.send(Event::Done(done));
                ended += 1;
                false
            } else {
                true
            }
        };
        running.retain_mut(&mut retain);
        preempted.retain_mut(&mut retain);
        if ended > 0 {
            self.shared.lock().metrics.requests_finished += ended;
        }
    }

    /// One forward call over every running sequence: its pending token, or its next prompt
    /// chunk. Then each sequence that got logits samples its next token.
    fn step(&mut self) {
        let plans = match self.grow() {
            Ok(plans) => plans,
            Err(e) => return self.fail_all(e),
        };
        let prompt_tokens: u64 = plans
            .iter()
            .map(|p| match p {
                Plan::Prefill(rows) => rows.len() as u64,
                Plan::Decode(_) => 0,
            })
            .sum();
        if let Err(e) = self.forward(&plans) {
            return self.fail_all(e);
        }
        let (generated, ended) = self.sample(plans);
        let mut state = self.shared.lock();
        let m = &mut state.metrics;
        m.steps_total += 1;
        m.prompt_tokens_total += prompt_tokens;
        m.generated_tokens_total += generated;
        m.requests_finished += ended;
        self.window.0 += generated;
    }

    /// Fails every running sequence with `e`: inputs are checked at submission, so this is a
    /// bug or an exhausted machine; the scheduler goes on.
    fn fail_all(&mut self, e: Error) {
        let e = Arc::new(e);
        let n = self.running.len() as u64;
        for mut r in self.running.drain(..) {
            r.send(Event::Error(e.clone()));
        }
        self.shared.lock().metrics.requests_finished += n;
    }

    /// The step's plans, with the blocks each running sequence needs for them taken: from
    /// the free ones, then from cached pages (least recently released first), then by
    /// preempting running sequences, most recently admitted first, until the rest fit. The
    /// oldest always fits: no request is admitted that could not run alone.
    fn grow(&mut self) -> Result<Vec<Plan>> {
        let (chunk, bp) = (self.shared.opts.prefill_chunk, self.shared.block_positions);
        loop {
            let plans: Vec<Plan> = self.running.iter().map(|r| r.plan(chunk)).collect();
            if self.growth() <= self.available() || self.running.len() == 1 {
                for (r, plan) in self.running.iter_mut().zip(&plans) {
                    let n = r.needs(plan, bp);
                    if n > r.blocks {
                        r.cache.reserve(n * bp)?;
                        r.blocks = n;
                    }
                }
                return Ok(plans);
            }
            self.preempt_newest();
        }
    }

    /// An empty cache: on the pool's pages on the CPU.
    fn new_cache(&self) -> Result<KvCache> {
        let model = self.engine.model();
        Ok(match &self.shared.pool {
            Some(pool) => model.new_paged_cache(pool)?,
            None => model.new_cache(),
        })
    }

    /// Frees the most recently admitted running sequence's blocks; it waits in
    /// [`Worker::preempted`] to be computed again.
    fn preempt_newest(&mut self) {
        let Some(mut r) = self.running.pop() else {
            return;
        };
        // What its cache held: the prompt while prefilling it, else the prompt and every
        // generated token but the pending one (run at its next decode step).
        if r.decoding.pending.is_some() {
            let ids = r.decoding.ids();
            r.recompute = Some(ids[..ids.len() - 1].to_vec());
        }
        // Dropping its cache gives its pages back; an empty one holds none.
        match self.new_cache() {
            Ok(cache) => r.cache = cache,
            Err(e) => {
                r.send(Event::Error(Arc::new(e)));
                self.shared.lock().metrics.requests_finished += 1;
                return;
            }
        }
        r.prefilled = 0;
        r.blocks = 0;
        let at = self
            .preempted
            .partition_point(|p| p.submitted <= r.submitted);
        self.preempted.insert(at, r);
        self.shared.lock().metrics.preemptions += 1;
    }

    /// Moves preempted sequences back into the batch, oldest first, while their blocks (for
    /// what they compute again, and the next token) are free. With prefix caching each
    /// starts from what of its pages is still cached.
    fn readmit(&mut self) {
        while let Some(r) = self.preempted.first() {
            let blocks = (r.feed().len() + 1)
                .div_ceil(self.shared.block_positions)
                .min(r.max_blocks);
            if self.running.len() >= self.shared.opts.max_batch
                || blocks > self.available().saturating_sub(self.growth())
            {
                return;
            }
            let mut r = self.preempted.remove(0);
            // A sequence preempted mid-prompt computes its last prompt token for its logits;
            // one with a pending token has chosen it and runs it at its next decode.
            let compute = usize::from(r.decoding.pending.is_none());
            let cache = self
                .cache_for(r.feed(), compute, r.salt.as_deref())
                .and_then(|(mut cache, held)| {
                    cache.reserve(blocks * self.shared.block_positions)?;
                    Ok((cache, held))
                });
            match cache {
                Ok((cache, held)) => {
                    r.cache = cache;
                    r.prefilled = held;
                }
                Err(e) => {
                    r.send(Event::Error(Arc::new(e)));
                    self.shared.lock().metrics.requests_finished += 1;
                    continue;
                }
            }
            r.blocks = blocks;
            self.running.push(r);
        }
    }

    /// The step's one forward call; the logits stay in the scratch (read by `sample`).
    fn forward(&mut self, plans: &[Plan]) -> Result<()> {
        let mut items: Vec<BatchItem<'_>> = self
            .running
            .iter_mut()
            .zip(plans)
            .map(|(r, plan)| match plan {
                Plan::Decode(one) => BatchItem {
                    tokens: one,
                    cache: &mut r.cache,
                    logits: true,
                },
                Plan::Prefill(rows) => {
                    let logits = r.wants_logits(rows);
                    let feed = r.recompute.as_deref().unwrap_or(&r.prompt);
                    BatchItem {
                        tokens: &feed[rows.clone()],
                        cache: &mut r.cache,
                        logits,
                    }
                }
            })
            .collect();
        let (model, scratch) = (self.engine.model(), &mut self.scratch);
        self.engine
            .run(|| model.forward_batch(&mut items, scratch).map(|_| ()))
    }

    /// Each sequence that got logits samples and sends its next token; finished, failed and
    /// dropped ones leave the batch. Returns (tokens generated, sequences ended).
    fn sample(&mut self, plans: Vec<Plan>) -> (u64, u64) {
        let context = self.shared.context;
        let v = self.engine.config().vocab_size;
        let mut rows = self.scratch.logits().chunks_exact(v);
        let (mut generated, mut ended) = (0u64, 0u64);
        // Sequences that finished: their caches are dropped once the logits are read.
        let mut finished = vec![];
        let mut i = 0;
        for plan in plans {
            let r = &mut self.running[i];
            let wants = match plan {
                Plan::Decode(_) => {
                    r.decoding.pending = None;
                    true
                }
                Plan::Prefill(chunk) => {
                    r.prefilled = chunk.end;
                    r.wants_logits(&chunk)
                }
            };
            let mut keep = true;
            if wants {
                let row = rows.next().expect("a logits row per sequence that asked");
                match r.decoding.next(row, r.cache.len(), context) {
                    Ok(token) => {
                        generated += 1;
                        r.generated += 1;
                        r.first_token.get_or_insert_with(|| r.submitted.elapsed());
                        keep = r.send(Event::Token(token));
                        if let Some(reason) = r.decoding.finish.clone() {
                            let done = r.finished(reason);
                            r.send(Event::Done(done));
                            finished.push(self.running.remove(i));
                            ended += 1;
                            continue;
                        } else if !keep {
                            r.cancel.cancel();
                            keep = true; // Dropped (and counted) by `drop_cancelled`.
                        }
                    }
                    Err(e) => {
                        r.send(Event::Error(Arc::new(e)));
                        keep = false;
                    }
                }
            }
            if keep {
                i += 1;
            } else {
                self.running.remove(i);
                ended += 1;
            }
        }
        if self.shared.prefix_caching {
            // Every whole page computed so far, for requests that begin the same way.
            for r in finished.iter_mut().chain(self.running.iter_mut()) {
                r.cache.publish_prefix(r.decoding.ids());
            }
        }
        drop(finished);
        (generated, ended)
    }

    /// Publishes the queue, batch and memory gauges, and the generation rate.
    fn publish(&mut self, state: &mut State) {
        let m = &mut state.metrics;
        // Preempted sequences wait too (for their blocks, ahead of the queue).
        m.queued = state.queue.len() + self.preempted.len();
        m.active = self.running.len();
        m.kv_blocks_used = self.shared.total_blocks - self.available();
        m.kv_blocks_cached = self.shared.pool.as_ref().map_or(0, KvPool::cached_pages);
        let elapsed = self.window.1.elapsed();
        if elapsed >= Duration::from_secs(2) {
            m.generated_tokens_per_s = self.window.0 as f64 / elapsed.as_secs_f64();
            self.window = (0, Instant::now());
        }
    }
}
