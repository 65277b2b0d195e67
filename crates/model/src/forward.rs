//! `Model`: the Mixtral forward pass over a KV cache, with the reference kernels.
//!
//! embedding → per layer [RMSNorm → attention → residual add → RMSNorm → sparse MoE →
//! residual add] → final RMSNorm → lm_head.

use crate::{
    Checkpoint, Config, Error, KvCache, LayerRouting, LayerWeights, Result, RoutingTrace, Weights,
};
use mixtral_kernels::Weight;
use mixtral_kernels::attention::{Attention, reference::attention};
use mixtral_kernels::matmul::{Matmul, reference::matmul};
use mixtral_kernels::moe::{Expert, Moe, reference::moe};
use mixtral_kernels::rmsnorm::{RmsNorm, reference::rms_norm};
use mixtral_kernels::rope::{Rope, reference::rope};
use mixtral_kernels::router::{Router, reference::router_top_k};
use mixtral_tensor::Tensor;

/// Which rows of logits a forward call returns.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Logits {
    /// Only the last token's row (what generation needs; skips `T-1` lm_head products).
    #[default]
    Last,
    /// One row per input token.
    All,
}

/// What a forward call should return besides updating the cache.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ForwardOptions {
    /// Which logits rows to compute.
    pub logits: Logits,
    /// Record each layer's router choices (off by default: it costs a copy per layer).
    pub trace_routing: bool,
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

/// A Mixtral ready to run: config and borrowed weights, every weight view checked.
#[derive(Debug)]
pub struct Model {
    config: Config,
    weights: Weights,
}

/// A weight tensor as a kernel view; [`Model::new`] has checked that this succeeds.
fn w(t: &Tensor) -> Weight<'_> {
    Weight::new(t).expect("weight views are checked in Model::new")
}

impl Model {
    /// Takes a validated checkpoint; fails if a weight's bytes cannot be viewed (misaligned).
    pub fn new(ckpt: Checkpoint) -> Result<Model> {
        for t in ckpt.weights.tensors() {
            Weight::new(t)?;
        }
        Ok(Model {
            config: ckpt.config,
            weights: ckpt.weights,
        })
    }

    /// Opens a model directory ([`Checkpoint::open`]) and builds the model.
    pub fn open(dir: impl AsRef<std::path::Path>) -> Result<Model> {
        Model::new(Checkpoint::open(dir)?)
    }

    /// The architecture.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The weights.
    pub fn weights(&self) -> &Weights {
        &self.weights
    }

    /// An empty KV cache for one sequence.
    pub fn new_cache(&self) -> KvCache {
        KvCache::new(self.config.num_hidden_layers, self.config.kv_dim())
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
        self.check_input(tokens, positions, cache)?;
        Ok(self.forward(tokens, positions, cache, opts))
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

    fn check_input(&self, tokens: &[u32], positions: &[usize], cache: &KvCache) -> Result<()> {
        let c = &self.config;
        if tokens.is_empty() {
            return Err(Error::EmptyInput);
        }
        assert_eq!(tokens.len(), positions.len(), "one position per token");
        if let Some((index, &id)) = tokens
            .iter()
            .enumerate()
            .find(|&(_, &id)| id as usize >= c.vocab_size)
        {
            return Err(Error::TokenOutOfRange {
                id,
                index,
                vocab: c.vocab_size,
            });
        }
        for (i, &p) in positions.iter().enumerate() {
            if p != cache.len() + i {
                return Err(Error::PositionMismatch {
                    expected: cache.len() + i,
                    found: p,
                });
            }
        }
        let len = cache.len() + tokens.len();
        if len > c.max_position_embeddings {
            return Err(Error::ContextOverflow {
                len,
                max: c.max_position_embeddings,
            });
        }
        Ok(())
    }

    fn forward(
        &self,
        tokens: &[u32],
        positions: &[usize],
        cache: &mut KvCache,
        opts: ForwardOptions,
    ) -> Output {
        let (c, n) = (&self.config, tokens.len());
        let mut h = self.embed(tokens); // [T, D]
        let mut trace = opts.trace_routing.then(|| RoutingTrace {
            top_k: c.num_experts_per_tok,
            layers: vec![],
        });
        for (l, lw) in self.weights.layers.iter().enumerate() {
            self.attention_block(l, lw, positions, cache, &mut h);
            let routing = self.moe_block(lw, n, &mut h);
            if let Some(trace) = &mut trace {
                trace.layers.push(routing);
            }
        }
        cache.commit(n);
        let rows = match opts.logits {
            Logits::All => n,
            Logits::Last => 1,
        };
        let last = &h[(n - rows) * c.hidden_size..];
        Output {
            logits: self.head(last, rows),
            rows,
            routing: trace,
        }
    }

    /// Embedding rows widened to f32: `[T, D]`.
    fn embed(&self, tokens: &[u32]) -> Vec<f32> {
        let d = self.config.hidden_size;
        let table = w(&self.weights.embed);
        let mut h = vec![0f32; tokens.len() * d];
        for (row, &id) in h.chunks_exact_mut(d).zip(tokens) {
            table.row_into(id as usize * d, row);
        }
        h
    }

    fn norm(&self, x: &[f32], weight: &Tensor) -> Vec<f32> {
        let cols = self.config.hidden_size;
        let p = RmsNorm {
            rows: x.len() / cols,
            cols,
            eps: self.config.rms_norm_eps as f32,
        };
        let mut y = vec![0f32; x.len()];
        rms_norm(p, x, w(weight), &mut y);
        y
    }

    /// `x Wᵀ` for `x` of `rows` rows: `[rows, k] → [rows, n]`.
    fn linear(&self, x: &[f32], weight: &Tensor) -> Vec<f32> {
        let (n, k) = (weight.dims()[0], weight.dims()[1]);
        let p = Matmul {
            rows: x.len() / k,
            k,
            n,
        };
        let mut y = vec![0f32; p.rows * n];
        matmul(p, x, w(weight), &mut y);
        y
    }

    /// `h += o_proj(attention(rope(q), rope(k), v))` over the normed `h`.
    fn attention_block(
        &self,
        l: usize,
        lw: &LayerWeights,
        positions: &[usize],
        cache: &mut KvCache,
        h: &mut [f32],
    ) {
        let c = &self.config;
        let x = self.norm(h, &lw.attn_norm); // [T, D]
        let mut q = self.linear(&x, &lw.wq); // [T, H·Dh]
        let mut k = self.linear(&x, &lw.wk); // [T, G·Dh]
        let v = self.linear(&x, &lw.wv); // [T, G·Dh]
        let theta = c.rope_theta;
        rope(
            Rope {
                n_heads: c.num_attention_heads,
                head_dim: c.head_dim,
                theta,
            },
            positions,
            &mut q,
        );
        rope(
            Rope {
                n_heads: c.num_key_value_heads,
                head_dim: c.head_dim,
                theta,
            },
            positions,
            &mut k,
        );
        cache.append(l, &k, &v);
        let (k_all, v_all) = cache.layer(l); // [S, G·Dh]
        let p = Attention {
            n_heads: c.num_attention_heads,
            n_kv_heads: c.num_key_value_heads,
            head_dim: c.head_dim,
            window: c.sliding_window,
        };
        let mut att = vec![0f32; q.len()]; // [T, H·Dh]
        attention(p, &q, positions, k_all, v_all, &mut att);
        let o = self.linear(&att, &lw.wo); // [T, D]
        h.iter_mut().zip(&o).for_each(|(a, b)| *a += b);
    }

    /// `h += moe(rmsnorm(h))`; returns the router's choices.
    fn moe_block(&self, lw: &LayerWeights, n: usize, h: &mut [f32]) -> LayerRouting {
        let c = &self.config;
        let x = self.norm(h, &lw.moe_norm); // [T, D]
        let logits = self.linear(&x, &lw.router); // [T, E]
        let (k, e) = (c.num_experts_per_tok, c.num_local_experts);
        let mut route = LayerRouting {
            experts: vec![0; n * k],
            weights: vec![0.0; n * k],
        }; // [T, K]
        let p = Router {
            n_tokens: n,
            n_experts: e,
            top_k: k,
            norm_topk_prob: c.norm_topk_prob,
        };
        router_top_k(p, &logits, &mut route.experts, &mut route.weights);
        let experts: Vec<Expert<'_>> = lw
            .experts
            .iter()
            .map(|x| Expert {
                w1: w(&x.w1),
                w2: w(&x.w2),
                w3: w(&x.w3),
            })
            .collect();
        let mut y = vec![0f32; x.len()]; // [T, D]
        let p = Moe {
            n_tokens: n,
            hidden: c.hidden_size,
            ffn: c.intermediate_size,
            top_k: k,
        };
        moe(p, &x, &route.experts, &route.weights, &experts, &mut y);
        h.iter_mut().zip(&y).for_each(|(a, b)| *a += b);
        route
    }

    /// Final norm and lm_head: `[rows, D] → [rows, V]`.
    fn head(&self, h: &[f32], _rows: usize) -> Vec<f32> {
        let x = self.norm(h, &self.weights.norm);
        self.linear(&x, &self.weights.lm_head)
    }
}
