//! `Model`: the Mixtral forward pass over a KV cache.
//!
//! embedding → per layer [RMSNorm → attention → residual add → RMSNorm → sparse MoE →
//! residual add] → final RMSNorm → lm_head.

use crate::KvDType;
use crate::input::check_input;
use crate::ops::MoeInput;
use crate::scratch::{Scratch, sized};
use crate::steer::Intervention;
use crate::{
    Checkpoint, Config, Kernels, KvCache, LayerRouting, LayerWeights, Result, RoutingTrace, Weights,
};
use mixtral_kernels::Weight;
use mixtral_kernels::attention::Attention;
use mixtral_kernels::matmul::Matmul;
use mixtral_kernels::matmul::cpu::Gemv;
use mixtral_kernels::moe::{Expert, Moe};
use mixtral_kernels::rmsnorm::RmsNorm;
use mixtral_kernels::rope::Rope;
use mixtral_kernels::router::Router;
use mixtral_tensor::Tensor;
use std::sync::atomic::{AtomicBool, Ordering};

/// Which rows of logits a forward call returns.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Logits {
    /// Only the last token's row (what generation needs; skips `T-1` lm_head products).
    #[default]
    Last,
    /// One row per input token.
    All,
}

impl Logits {
    /// Rows of logits a call over `n_tokens` tokens returns.
    pub fn rows(self, n_tokens: usize) -> usize {
        match self {
            Logits::All => n_tokens,
            Logits::Last => 1,
        }
    }
}

/// What a forward call should return besides updating the cache.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ForwardOptions {
    /// Which logits rows to compute.
    pub logits: Logits,
    /// Record each layer's router choices (off by default: it costs a copy per layer).
    pub trace_routing: bool,
    /// Record each layer's router logits over every expert, before the softmax
    /// ([`Output::router_logits`], `[L][T][E]`).
    pub router_logits: bool,
    /// Record the residual stream ([`Output::hidden_states`], `[L+2][T][D]`): the embeddings,
    /// the stream after each layer, and the final-normed state `lm_head` reads.
    pub hidden_states: bool,
}

/// A recorded `[A][B][C]` array of f32, row-major: what [`Output::router_logits`] and
/// [`Output::hidden_states`] hold.
#[derive(Clone, Debug, PartialEq)]
pub struct Recorded {
    /// `[A, B, C]`.
    pub dims: [usize; 3],
    /// `A · B · C` values.
    pub data: Vec<f32>,
}

impl Recorded {
    fn new(b: usize, c: usize) -> Recorded {
        Recorded {
            dims: [0, b, c],
            data: Vec::new(),
        }
    }

    /// Appends one `[B, C]` slice.
    fn push(&mut self, slice: &[f32]) {
        debug_assert_eq!(slice.len(), self.dims[1] * self.dims[2]);
        self.data.extend_from_slice(slice);
        self.dims[0] += 1;
    }

    /// The `C` values at `[a][b]` (e.g. layer `l`, token `t`).
    pub fn at(&self, a: usize, b: usize) -> &[f32] {
        let [na, nb, c] = self.dims;
        assert!(a < na && b < nb, "[{a}][{b}] outside {:?}", self.dims);
        &self.data[(a * nb + b) * c..][..c]
    }

    /// The `[B, C]` slice at `[a]`.
    pub fn slice(&self, a: usize) -> &[f32] {
        let [na, nb, c] = self.dims;
        assert!(a < na, "[{a}] outside {:?}", self.dims);
        &self.data[a * nb * c..][..nb * c]
    }
}

/// The result of a forward call.
#[derive(Clone, Debug)]
pub struct Output {
    /// `[rows, V]` f32 logits, row-major.
    pub logits: Vec<f32>,
    /// Rows in `logits` (1 for [`Logits::Last`], `T` for [`Logits::All`]).
    pub rows: usize,
    /// The router's choices, when asked for.
    pub routing: Option<RoutingTrace>,
    /// `[L][T][E]` router logits before the softmax (after any intervention), when asked for.
    pub router_logits: Option<Recorded>,
    /// `[L+2][T][D]` residual stream, when asked for: 0 the embeddings, `l + 1` after layer
    /// `l`, `L + 1` after the final norm.
    pub hidden_states: Option<Recorded>,
}

impl Output {
    /// Logits row `r`.
    pub fn row(&self, r: usize) -> &[f32] {
        let v = self.logits.len() / self.rows;
        &self.logits[r * v..(r + 1) * v]
    }

    /// The last row of logits.
    pub fn last(&self) -> &[f32] {
        self.row(self.rows - 1)
    }
}

/// A Mixtral ready to run: config, borrowed weights (every view checked) and the kernels.
#[derive(Debug)]
pub struct Model {
    config: Config,
    weights: Weights,
    kernels: Kernels,
    kv_dtype: KvDType,
    /// Every matmul in one summation order whatever its row count
    /// ([`Model::with_batch_invariance`]).
    invariant: bool,
}

/// `y = x Wᵀ` with `kernels`, for `x` of whole rows: `[rows, k] → [rows, n]`.
fn linear_with(kernels: Kernels, invariant: bool, x: &[f32], weight: &Tensor, y: &mut Vec<f32>) {
    let (n, k) = (weight.dims()[0], weight.dims()[1]);
    let p = Matmul {
        rows: x.len() / k,
        k,
        n,
    };
    kernels.matmul(p, x, w(weight), sized(y, p.rows * n), invariant);
}

/// A weight tensor as a kernel view; [`Model::new`] has checked that this succeeds.
fn w(t: &Tensor) -> Weight<'_> {
    Weight::new(t).expect("weight views are checked in Model::new")
}

impl Model {
    /// Takes a validated checkpoint; fails if a weight's bytes cannot be viewed (misaligned).
    /// Runs the fast CPU kernels for the best ISA this machine has.
    pub fn new(ckpt: Checkpoint) -> Result<Model> {
        for t in ckpt.weights.tensors() {
            Weight::new(t)?;
        }
        Ok(Model {
            config: ckpt.config,
            weights: ckpt.weights,
            kernels: Kernels::default(),
            kv_dtype: KvDType::default(),
            invariant: false,
        })
    }

    /// Opens a model directory ([`Checkpoint::open`]) and builds the model.
    pub fn open(dir: impl AsRef<std::path::Path>) -> Result<Model> {
        Model::new(Checkpoint::open(dir)?)
    }

    /// The same model running other kernels (e.g. [`Kernels::Reference`] as an oracle).
    pub fn with_kernels(mut self, kernels: Kernels) -> Model {
        self.kernels = kernels;
        self
    }

    /// The kernels in use.
    pub fn kernels(&self) -> Kernels {
        self.kernels
    }

    /// The architecture.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The weights.
    pub fn weights(&self) -> &Weights {
        &self.weights
    }

    /// An empty KV cache (and scratch buffers) for one sequence.
    pub fn new_cache(&self) -> KvCache {
        let c = &self.config;
        KvCache::with_dtype(
            c.num_hidden_layers,
            c.num_key_value_heads,
            c.head_dim,
            self.kv_dtype,
        )
    }

    /// Checks a whole prompt for an empty cache before any of it runs: non-empty, every id
    /// in the vocabulary, fitting the context (the errors a forward call would give).
    pub fn check_prompt(&self, tokens: &[u32]) -> Result<()> {
        crate::input::check_prompt(&self.config, tokens)
    }

    /// The same model making caches that store keys and values as `dtype`
    /// ([`Model::new_cache`]).
    pub fn with_kv_dtype(mut self, dtype: KvDType) -> Model {
        self.kv_dtype = dtype;
        self
    }

    /// The same model computing every row of every matmul in one summation order, whatever
    /// the number of rows in the call: a token's logits are then the same bits whether it
    /// runs alone, in a prompt chunk of any size, or batched with other sequences
    /// ([`Model::forward_batch`]), so seeded sampling is reproducible across batch shapes.
    /// Off by default: one-token calls (decode) lose the GEMV's streaming loops
    /// (docs/performance.md measures the cost).
    pub fn with_batch_invariance(mut self, on: bool) -> Model {
        self.invariant = on;
        self
    }

    /// Whether [`Model::with_batch_invariance`] is on.
    pub fn batch_invariant(&self) -> bool {
        self.invariant
    }

    /// The element type of the caches [`Model::new_cache`] makes.
    pub fn kv_dtype(&self) -> KvDType {
        self.kv_dtype
    }

    /// Runs `tokens` at `positions` (which must continue the cache: `cache.len()`,
    /// `cache.len() + 1`, …) and appends their keys and values to `cache`.
    pub fn prefill(
        &self,
        tokens: &[u32],
        positions: &[usize],
        cache: &mut KvCache,
        opts: ForwardOptions,
    ) -> Result<Output> {
        self.prefill_steered(tokens, positions, cache, opts, &Intervention::default())
    }

    /// [`Model::prefill`] under an [`Intervention`] on the router. The cache remembers the
    /// intervention it was filled under: continuing it under another is an error
    /// ([`crate::Error::CacheSteering`]), never a silent mix.
    pub fn prefill_steered(
        &self,
        tokens: &[u32],
        positions: &[usize],
        cache: &mut KvCache,
        opts: ForwardOptions,
        steer: &Intervention,
    ) -> Result<Output> {
        self.prefill_in(tokens, positions, cache, opts, steer, None)
    }

    /// [`Model::prefill_steered`] that `stop` can end from another thread: it is checked before
    /// each layer, so a long prompt stops within one layer's time of the request, with
    /// [`crate::Error::Stopped`] and the cache as it was before the call.
    #[expect(
        clippy::too_many_arguments,
        reason = "prefill_steered's arguments plus the stop flag"
    )]
    pub fn prefill_stoppable(
        &self,
        tokens: &[u32],
        positions: &[usize],
        cache: &mut KvCache,
        opts: ForwardOptions,
        steer: &Intervention,
        stop: &AtomicBool,
    ) -> Result<Output> {
        self.prefill_in(tokens, positions, cache, opts, steer, Some(stop))
    }

    #[expect(
        clippy::too_many_arguments,
        reason = "prefill_steered's arguments plus the stop flag"
    )]
    fn prefill_in(
        &self,
        tokens: &[u32],
        positions: &[usize],
        cache: &mut KvCache,
        opts: ForwardOptions,
        steer: &Intervention,
        stop: Option<&AtomicBool>,
    ) -> Result<Output> {
        check_input(&self.config, tokens, positions, cache.len())?;
        steer.validate(&self.config)?;
        cache.claim_steering(steer.fingerprint())?;
        let mut rec = Records::new(&self.config, tokens.len(), opts);
        rec.stop = stop;
        let routing = self.run_one(tokens, positions, cache, opts, steer, &mut rec)?;
        let rows = opts.logits.rows(tokens.len());
        Ok(Output {
            logits: cache.scratch.logits.clone(),
            rows,
            routing,
            router_logits: rec.router_logits,
            hidden_states: rec.hidden,
        })
    }

    /// Runs one token at `position` (= `cache.len()`) and returns its logits.
    pub fn decode(
        &self,
        token: u32,
        position: usize,
        cache: &mut KvCache,
        opts: ForwardOptions,
    ) -> Result<Output> {
        self.prefill(&[token], &[position], cache, opts)
    }

    /// [`Model::decode`] without a routing trace, returning the logits `[V]` borrowed from the
    /// cache's scratch: a decode step that allocates nothing.
    pub fn decode_logits<'c>(
        &self,
        token: u32,
        position: usize,
        cache: &'c mut KvCache,
    ) -> Result<&'c [f32]> {
        self.decode_logits_steered(token, position, cache, &Intervention::default())
    }

    /// [`Model::decode_logits`] under an [`Intervention`] (see [`Model::prefill_steered`]).
    pub fn decode_logits_steered<'c>(
        &self,
        token: u32,
        position: usize,
        cache: &'c mut KvCache,
        steer: &Intervention,
    ) -> Result<&'c [f32]> {
        check_input(&self.config, &[token], &[position], cache.len())?;
        steer.validate(&self.config)?;
        cache.claim_steering(steer.fingerprint())?;
        let opts = ForwardOptions::default();
        let mut rec = Records::new(&self.config, 1, opts);
        self.run_one(&[token], &[position], cache, opts, steer, &mut rec)?;
        Ok(&cache.scratch.logits)
    }

    /// One sequence through [`Model::graph`], with the cache's own scratch buffers. Leaves the
    /// logits in `cache.scratch.logits`; returns the routing trace.
    #[expect(
        clippy::too_many_arguments,
        reason = "the call's input, cache and options, plus its steering and its records"
    )]
    fn run_one(
        &self,
        tokens: &[u32],
        positions: &[usize],
        cache: &mut KvCache,
        opts: ForwardOptions,
        steer: &Intervention,
        rec: &mut Records<'_>,
    ) -> Result<Option<RoutingTrace>> {
        let mut s = std::mem::take(&mut cache.scratch);
        let n = tokens.len();
        let mut seqs = [Seq { cache, rows: 0..n }];
        let head = Head::Tail(opts.logits.rows(n));
        let trace = self.graph(tokens, positions, &mut seqs, &mut s, head, opts, steer, rec);
        seqs[0].cache.scratch = s;
        trace
    }

    /// Runs one step of several sequences as ONE forward call: each item's tokens continue
    /// its own cache (positions `cache.len()..`), every matmul and the experts run over the
    /// union of the items' tokens (one read of each weight serves them all), and attention
    /// runs per sequence over its own cache. Returns the logits of the last token of every
    /// item that asks for them (`[rows, V]`, in item order), borrowed from `scratch`.
    ///
    /// Each item gets the logits it would get alone, up to the matmuls' summation order
    /// (`docs/architecture.md`, "Batching"). The items are checked before anything runs: on
    /// an error no cache has changed. Interventions are not batched (each item runs
    /// unsteered), and nothing is recorded.
    pub fn forward_batch<'s>(
        &self,
        items: &mut [BatchItem<'_>],
        scratch: &'s mut BatchScratch,
    ) -> Result<&'s [f32]> {
        let BatchScratch {
            s,
            tokens,
            positions,
            head,
        } = scratch;
        tokens.clear();
        positions.clear();
        head.clear();
        let none = Intervention::default();
        for item in items.iter() {
            let start = item.cache.len();
            let pos = start..start.saturating_add(item.tokens.len());
            let first = positions.len();
            positions.extend(pos);
            check_input(&self.config, item.tokens, &positions[first..], start)?;
            item.cache.check_steering(none.fingerprint())?;
            tokens.extend_from_slice(item.tokens);
            if item.logits {
                head.push(positions.len() - 1);
            }
        }
        if tokens.is_empty() {
            return Err(crate::Error::EmptyInput);
        }
        let mut seqs: Vec<Seq<'_>> = Vec::with_capacity(items.len());
        let mut at = 0;
        for item in items.iter_mut() {
            item.cache.claim_steering(none.fingerprint())?;
            let n = item.tokens.len();
            seqs.push(Seq {
                cache: &mut *item.cache,
                rows: at..at + n,
            });
            at += n;
        }
        let opts = ForwardOptions::default();
        let mut rec = Records::new(&self.config, 0, opts);
        self.graph(
            tokens,
            positions,
            &mut seqs,
            s,
            Head::Rows(head),
            opts,
            &none,
            &mut rec,
        )?;
        Ok(&s.logits)
    }

    /// The graph, over the tokens of one or more sequences (`seqs` name each one's rows of
    /// `tokens`). Leaves the logits of the `head` rows in `s.logits`; returns the routing
    /// trace.
    #[expect(
        clippy::too_many_arguments,
        reason = "the call's input, caches and buffers, plus its options, steering and records"
    )]
    fn graph(
        &self,
        tokens: &[u32],
        positions: &[usize],
        seqs: &mut [Seq<'_>],
        s: &mut Scratch,
        head: Head<'_>,
        opts: ForwardOptions,
        steer: &Intervention,
        rec: &mut Records<'_>,
    ) -> Result<Option<RoutingTrace>> {
        let (c, n) = (&self.config, tokens.len());
        self.embed(tokens, sized(&mut s.h, n * c.hidden_size)); // [T, D]
        if let Some(h) = &mut rec.hidden {
            h.push(&s.h);
        }
        let mut trace = opts.trace_routing.then(|| RoutingTrace {
            top_k: steer.top_k(c),
            layers: vec![],
        });
        for (l, lw) in self.weights.layers.iter().enumerate() {
            if rec.stop.is_some_and(|stop| stop.load(Ordering::Relaxed)) {
                // Undo the layers' appends: the caches stay as they were before the call.
                for seq in seqs.iter_mut() {
                    let len = seq.cache.len();
                    seq.cache.truncate(len);
                }
                return Err(crate::Error::Stopped { layer: l });
            }
            self.attention_block(l, lw, positions, seqs, s);
            self.moe_block(l, lw, positions, s, steer, rec);
            if let Some(trace) = &mut trace {
                trace.layers.push(LayerRouting {
                    experts: s.ids.clone(),
                    weights: s.weights.clone(),
                });
            }
            if let Some(h) = &mut rec.hidden {
                h.push(&s.h);
            }
        }
        for seq in seqs.iter_mut() {
            seq.cache.commit(seq.rows.len());
        }
        if let Some(h) = &mut rec.hidden {
            // The final norm of every row (the head normalises only the rows it returns).
            self.norm(&s.h, &self.weights.norm, &mut s.x);
            h.push(&s.x);
        }
        self.head(head, s);
        Ok(trace)
    }

    /// Embedding rows widened to f32 into `h` (`[T, D]`).
    fn embed(&self, tokens: &[u32], h: &mut [f32]) {
        let d = self.config.hidden_size;
        let table = w(&self.weights.embed);
        for (row, &id) in h.chunks_exact_mut(d).zip(tokens) {
            table.row_into(id as usize * d, row);
        }
    }

    /// `y = rmsnorm(x) · weight` over rows of `D`.
    fn norm(&self, x: &[f32], weight: &Tensor, y: &mut Vec<f32>) {
        let cols = self.config.hidden_size;
        let p = RmsNorm {
            rows: x.len() / cols,
            cols,
            eps: self.config.rms_norm_eps as f32,
        };
        self.kernels.rms_norm(p, x, w(weight), sized(y, x.len()));
    }

    /// `y = x Wᵀ` for `x` of whole rows: `[rows, k] → [rows, n]`.
    fn linear(&self, x: &[f32], weight: &Tensor, y: &mut Vec<f32>) {
        linear_with(self.kernels, self.invariant, x, weight, y)
    }

    /// `h += o_proj(attention(rope(q), rope(k), v))` over the normed `h`.
    fn attention_block(
        &self,
        l: usize,
        lw: &LayerWeights,
        positions: &[usize],
        seqs: &mut [Seq<'_>],
        s: &mut Scratch,
    ) {
        let c = &self.config;
        self.norm(&s.h, &lw.attn_norm, &mut s.x); // [T, D]
        if positions.len() == 1 && !self.invariant {
            // One token: the three projections as one parallel region.
            let (qd, kvd) = (c.q_dim(), c.kv_dim());
            self.kernels.gemv_many(&mut [
                Gemv {
                    x: &s.x,
                    w: w(&lw.wq),
                    y: sized(&mut s.q, qd),
                },
                Gemv {
                    x: &s.x,
                    w: w(&lw.wk),
                    y: sized(&mut s.k, kvd),
                },
                Gemv {
                    x: &s.x,
                    w: w(&lw.wv),
                    y: sized(&mut s.v, kvd),
                },
            ]);
        } else {
            self.linear(&s.x, &lw.wq, &mut s.q); // [T, H·Dh]
            self.linear(&s.x, &lw.wk, &mut s.k); // [T, G·Dh]
            self.linear(&s.x, &lw.wv, &mut s.v); // [T, G·Dh]
        }
        let rope_q = Rope {
            n_heads: c.num_attention_heads,
            head_dim: c.head_dim,
            theta: c.rope_theta,
            interleaved: c.rope_interleaved,
        };
        let rope_k = Rope {
            n_heads: c.num_key_value_heads,
            ..rope_q
        };
        // The sequences of a batched call are at different positions: cover the furthest.
        let end = positions.iter().max().map_or(0, |p| p + 1);
        s.ensure_rope(rope_q, end);
        let table = s.rope.as_ref().expect("ensured above");
        self.kernels.rope(rope_q, table, positions, &mut s.q);
        self.kernels.rope(rope_k, table, positions, &mut s.k);
        let p = Attention {
            n_heads: c.num_attention_heads,
            n_kv_heads: c.num_key_value_heads,
            head_dim: c.head_dim,
            window: c.sliding_window,
        };
        let att = sized(&mut s.att, s.q.len()); // [T, H·Dh]
        let (qd, kvd) = (c.q_dim(), c.kv_dim());
        // Each sequence's keys and values go to its own cache, and its queries attend to it.
        for Seq { cache, rows } in seqs.iter_mut() {
            let (a, b) = (rows.start, rows.end);
            cache.append(l, &s.k[a * kvd..b * kvd], &s.v[a * kvd..b * kvd]);
            self.kernels.attention(
                p,
                &s.q[a * qd..b * qd],
                &positions[a..b],
                cache.layer(l),
                &mut att[a * qd..b * qd],
            );
        }
        self.linear(&s.att, &lw.wo, &mut s.out); // [T, D]
        s.h.iter_mut().zip(&s.out).for_each(|(a, b)| *a += b);
    }

    /// `h += moe(rmsnorm(h))`; leaves the router's choices in `s.ids` / `s.weights`.
    #[expect(
        clippy::too_many_arguments,
        reason = "the layer, its input, plus the request's steering and records"
    )]
    fn moe_block(
        &self,
        l: usize,
        lw: &LayerWeights,
        positions: &[usize],
        s: &mut Scratch,
        steer: &Intervention,
        rec: &mut Records<'_>,
    ) {
        let (c, n) = (&self.config, positions.len());
        self.norm(&s.h, &lw.moe_norm, &mut s.x); // [T, D]
        // The router in f32 at any precision: a rounding must not flip an expert choice.
        linear_with(
            self.kernels.exact(),
            self.invariant,
            &s.x,
            &lw.router,
            &mut s.router,
        ); // [T, E]
        let (k, e) = (steer.top_k(c), c.num_local_experts);
        if !steer.is_none() {
            steer.edit_logits(l, positions, e, &mut s.router);
        }
        if let Some(r) = &mut rec.router_logits {
            r.push(&s.router);
        }
        let p = Router {
            n_tokens: n,
            n_experts: e,
            top_k: k,
            norm_topk_prob: c.norm_topk_prob,
        };
        self.kernels.router_top_k(
            p,
            &s.router,
            sized(&mut s.ids, n * k),
            sized(&mut s.weights, n * k),
        ); // [T, K]
        if !steer.force.is_empty() {
            steer.force_choices(l, positions, &s.router, e, &mut s.ids, &mut s.weights);
        }
        let p = Moe {
            n_tokens: n,
            hidden: c.hidden_size,
            ffn: c.intermediate_size,
            top_k: k,
        };
        let y = sized(&mut s.out, s.x.len()); // [T, D]
        let (kernels, invariant) = (self.kernels, self.invariant);
        with_experts(lw, |experts| {
            let input = MoeInput {
                x: &s.x,
                ids: &s.ids,
                weights: &s.weights,
                experts,
            };
            kernels.moe(p, input, y, &mut s.moe, invariant)
        });
        s.h.iter_mut().zip(&s.out).for_each(|(a, b)| *a += b);
    }

    /// Final norm and lm_head over the `head` rows of `h`: `[rows, D] → [rows, V]`.
    fn head(&self, head: Head<'_>, s: &mut Scratch) {
        let d = self.config.hidden_size;
        let rows = match head {
            Head::Tail(rows) => &s.h[s.h.len() - rows * d..],
            Head::Rows(rows) => {
                // Gathered into `out`, free at this point of the graph.
                s.out.clear();
                for &r in rows {
                    s.out.extend_from_slice(&s.h[r * d..(r + 1) * d]);
                }
                &s.out
            }
        };
        if rows.is_empty() {
            s.logits.clear();
            return;
        }
        self.norm(rows, &self.weights.norm, &mut s.x);
        self.linear(&s.x, &self.weights.lm_head, &mut s.logits);
    }
}

/// One sequence's part of a [`Model::forward_batch`] call.
#[derive(Debug)]
pub struct BatchItem<'a> {
    /// Tokens that continue `cache` (a decode step's one token, or a chunk of a prompt).
    pub tokens: &'a [u32],
    /// The sequence's cache; the tokens' keys and values are appended to it.
    pub cache: &'a mut KvCache,
    /// Whether to return the logits of the last of `tokens` (a prompt chunk that is not the
    /// prompt's last needs none).
    pub logits: bool,
}

/// The activation buffers of [`Model::forward_batch`] calls, sized by the largest step and
/// reused (what a [`KvCache`] holds for its own sequence's calls).
#[derive(Debug, Default)]
pub struct BatchScratch {
    s: Scratch,
    tokens: Vec<u32>,
    positions: Vec<usize>,
    head: Vec<usize>,
}

impl BatchScratch {
    /// The logits the last [`Model::forward_batch`] call returned (`[rows, V]`).
    pub fn logits(&self) -> &[f32] {
        &self.s.logits
    }
}

/// A sequence of a forward call: its cache and its rows of the call's tokens.
struct Seq<'a> {
    cache: &'a mut KvCache,
    rows: std::ops::Range<usize>,
}

/// The rows of `h` the head turns into logits.
#[derive(Clone, Copy)]
enum Head<'a> {
    /// The last `n` rows.
    Tail(usize),
    /// These rows.
    Rows(&'a [usize]),
}

/// What a forward call records, allocated only when asked for, and the flag that stops it.
struct Records<'a> {
    router_logits: Option<Recorded>,
    hidden: Option<Recorded>,
    /// Checked before each layer ([`Model::prefill_stoppable`]).
    stop: Option<&'a AtomicBool>,
}

impl Records<'_> {
    fn new(c: &Config, n: usize, opts: ForwardOptions) -> Records<'static> {
        Records {
            router_logits: opts
                .router_logits
                .then(|| Recorded::new(n, c.num_local_experts)),
            hidden: opts.hidden_states.then(|| Recorded::new(n, c.hidden_size)),
            stop: None,
        }
    }
}

/// Experts held in a stack array by the MoE call, so a decode step allocates nothing.
const INLINE_EXPERTS: usize = 16;

/// Calls `f` with the layer's experts as kernel views (on the stack for up to 16 experts).
fn with_experts(lw: &LayerWeights, f: impl FnOnce(&[Expert<'_>])) {
    fn view(x: &crate::ExpertWeights) -> Expert<'_> {
        Expert {
            w1: w(&x.w1),
            w2: w(&x.w2),
            w3: w(&x.w3),
        }
    }
    let n = lw.experts.len();
    if n <= INLINE_EXPERTS {
        let empty = Expert {
            w1: Weight::F32(&[]),
            w2: Weight::F32(&[]),
            w3: Weight::F32(&[]),
        };
        let views: [Expert<'_>; INLINE_EXPERTS] =
            std::array::from_fn(|i| lw.experts.get(i).map_or(empty, view));
        f(&views[..n]);
    } else {
        f(&lw.experts.iter().map(view).collect::<Vec<_>>());
    }
}
