//! `CudaModel`: the Mixtral forward pass on one GPU, with bf16 weights and a bf16 KV cache in
//! device memory.
//!
//! Per call: token ids and positions go up, then every layer runs on the device with no host
//! round-trip (routing included: router → align → grouped GEMMs → combine), and only the
//! logits (or, for greedy decoding, one argmax id per row) come back. A routing trace, when
//! asked for, costs one small read per layer.
//!
//! Precision: weights are bf16 on the device (f32 and f16 checkpoints are rounded to bf16
//! while uploading); the residual stream, matmul outputs, softmax and every accumulation are
//! f32; normed activations and the KV cache are bf16. So compare against the f32 reference
//! with the fixtures' bf16 tolerances, not the f32 ones.
//!
//! Paths: prefill projections use the tensor-core GEMM (`moe_gemm_down_bf16` with one group)
//! for more than 8 rows and the GEMV otherwise. The MoE block always goes through the grouped
//! 64-row-tile GEMMs, decode included: one token's two experts each fill 1 of a tile's 64
//! rows, which costs tensor-core work but no extra weight traffic (the weights, which bound
//! decode, are read once per tile column either way).

use crate::{
    Checkpoint, Config, Error as ModelError, ForwardOptions, LayerRouting, Logits, Model, Output,
    RoutingTrace, Weights,
};
use mixtral_kernels::Weight;
use mixtral_kernels::attention::Attention;
use mixtral_kernels::cuda::{
    self, Bf16, CudaBackend, DecodeScratch, DeviceBuffer, DeviceExperts, MoeScratch, Progress,
    Routing,
};
use mixtral_kernels::matmul::Matmul;
use mixtral_kernels::moe::Moe;
use mixtral_kernels::rmsnorm::RmsNorm;
use mixtral_kernels::rope::Rope;
use mixtral_kernels::router::Router;
use mixtral_tensor::Tensor;
use std::sync::Mutex;

/// What a [`CudaModel`] call can report: the model's own input errors, or the device's.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CudaModelError {
    /// Bad input (token out of range, positions not continuing the cache, …).
    #[error(transparent)]
    Model(#[from] ModelError),
    /// The CUDA backend failed (driver, compile, out of memory, shape).
    #[error(transparent)]
    Cuda(#[from] cuda::Error),
}

type Result<T, E = CudaModelError> = std::result::Result<T, E>;

/// Positions the device cache grows by at least: a decode step rarely reallocates.
const CACHE_BLOCK: usize = 256;

/// One decoder layer's weights on the device (bf16).
struct DeviceLayer {
    attn_norm: DeviceBuffer<Bf16>,
    wq: DeviceBuffer<Bf16>,
    wk: DeviceBuffer<Bf16>,
    wv: DeviceBuffer<Bf16>,
    wo: DeviceBuffer<Bf16>,
    moe_norm: DeviceBuffer<Bf16>,
    router: DeviceBuffer<Bf16>,
    experts: DeviceExperts,
}

/// The KV cache of one sequence on the device: per layer, bf16 keys and values `[rows, G·Dh]`,
/// of which the first [`CudaKvCache::len`] positions are filled.
pub struct CudaKvCache {
    k: Vec<DeviceBuffer<Bf16>>,
    v: Vec<DeviceBuffer<Bf16>>,
    len: usize,
    rows: usize,
    kv_dim: usize,
}

impl std::fmt::Debug for CudaKvCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CudaKvCache")
            .field("len", &self.len)
            .field("rows", &self.rows)
            .finish_non_exhaustive()
    }
}

impl CudaKvCache {
    /// Positions held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when no position is held.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Positions there is room for before the next reallocation.
    pub fn capacity(&self) -> usize {
        self.rows
    }

    /// Forgets every position from `len` on.
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    /// Device bytes reserved.
    pub fn reserved_bytes(&self) -> usize {
        self.k.iter().chain(&self.v).map(DeviceBuffer::bytes).sum()
    }

    /// Grows to at least `rows` positions, keeping the filled ones.
    fn reserve(&mut self, gpu: &CudaBackend, rows: usize, max: usize) -> Result<()> {
        if rows <= self.rows {
            return Ok(());
        }
        let new_rows = rows.max(2 * self.rows).max(CACHE_BLOCK).min(max.max(rows));
        let filled = self.len * self.kv_dim;
        for buf in self.k.iter_mut().chain(self.v.iter_mut()) {
            let mut grown = gpu.alloc::<Bf16>(new_rows * self.kv_dim, "KV cache")?;
            gpu.copy(buf, 0, &mut grown, 0, filled)?;
            *buf = grown;
        }
        self.rows = new_rows;
        Ok(())
    }
}

/// Activations of one forward call, sized for up to `rows` tokens and reused across calls.
struct Workspace {
    rows: usize,
    h: DeviceBuffer<f32>,
    x: DeviceBuffer<Bf16>,
    q: DeviceBuffer<f32>,
    k: DeviceBuffer<f32>,
    v: DeviceBuffer<f32>,
    att: DeviceBuffer<Bf16>,
    o: DeviceBuffer<f32>,
    router_logits: DeviceBuffer<f32>,
    routing: Routing,
    moe: MoeScratch,
    y: DeviceBuffer<f32>,
    x_last: DeviceBuffer<Bf16>,
    logits: DeviceBuffer<f32>,
    ids: DeviceBuffer<u32>,
    decode: DecodeScratch,
}

impl Workspace {
    fn new(gpu: &CudaBackend, c: &Config, rows: usize) -> Result<Workspace> {
        let (d, e, k) = (c.hidden_size, c.num_local_experts, c.num_experts_per_tok);
        let moe = Moe {
            n_tokens: rows,
            hidden: d,
            ffn: c.intermediate_size,
            top_k: k,
        };
        Ok(Workspace {
            rows,
            h: gpu.alloc(rows * d, "residual stream [T, D]")?,
            x: gpu.alloc(rows * d, "normed activations [T, D]")?,
            q: gpu.alloc(rows * c.q_dim(), "queries [T, H·Dh]")?,
            k: gpu.alloc(rows * c.kv_dim(), "keys [T, G·Dh]")?,
            v: gpu.alloc(rows * c.kv_dim(), "values [T, G·Dh]")?,
            att: gpu.alloc(rows * c.q_dim(), "attention output [T, H·Dh]")?,
            o: gpu.alloc(rows * d, "o_proj output [T, D]")?,
            router_logits: gpu.alloc(rows * e, "router logits [T, E]")?,
            routing: gpu.alloc_routing(rows, e, k)?,
            moe: gpu.alloc_moe_scratch(moe, e)?,
            y: gpu.alloc(rows * d, "MoE output [T, D]")?,
            x_last: gpu.alloc(d, "last row [D]")?,
            logits: gpu.alloc(rows * c.vocab_size, "logits [T, V]")?,
            ids: gpu.alloc(rows, "argmax ids [T]")?,
            decode: gpu.alloc_decode_scratch(c.num_attention_heads, c.head_dim)?,
        })
    }
}

/// What the caller wants back from a forward pass.
#[derive(Clone, Copy)]
enum Want {
    Logits(Logits),
    Greedy,
}

/// A Mixtral on one GPU: bf16 weights uploaded once, then [`CudaModel::prefill`] and
/// [`CudaModel::decode`] as on [`Model`], over a [`CudaKvCache`].
pub struct CudaModel {
    gpu: CudaBackend,
    config: Config,
    embed: DeviceBuffer<Bf16>,
    /// `None` when tied to the embedding.
    lm_head: Option<DeviceBuffer<Bf16>>,
    norm: DeviceBuffer<Bf16>,
    layers: Vec<DeviceLayer>,
    work: Mutex<Option<Workspace>>,
}

impl std::fmt::Debug for CudaModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CudaModel")
            .field("gpu", &self.gpu)
            .field("layers", &self.layers.len())
            .finish()
    }
}

/// A weight tensor as a kernel view (fails only for misaligned bytes).
fn weight(t: &Tensor) -> Result<Weight<'_>> {
    Ok(Weight::new(t).map_err(ModelError::from)?)
}

/// Whether `a` and `b` view the same bytes (a tied lm_head).
fn same(a: &Tensor, b: &Tensor) -> bool {
    std::ptr::eq(a.as_bytes().as_ptr(), b.as_bytes().as_ptr())
}

impl CudaModel {
    /// Uploads a checkpoint's weights to `gpu` as bf16, calling `progress(done, total)` (device
    /// bytes) as they stream. Fails with `OutOfMemory` (naming the bytes needed) before copying
    /// anything when the weights cannot fit.
    pub fn from_checkpoint(
        ckpt: &Checkpoint,
        gpu: &CudaBackend,
        progress: impl FnMut(usize, usize),
    ) -> Result<CudaModel> {
        Self::new(&ckpt.config, &ckpt.weights, gpu, progress)
    }

    /// [`CudaModel::from_checkpoint`] from a CPU [`Model`]'s weights.
    pub fn from_model(
        model: &Model,
        gpu: &CudaBackend,
        progress: impl FnMut(usize, usize),
    ) -> Result<CudaModel> {
        Self::new(model.config(), model.weights(), gpu, progress)
    }

    /// Uploads `weights` (checked against `config` when the checkpoint was opened).
    pub fn new(
        config: &Config,
        weights: &Weights,
        gpu: &CudaBackend,
        mut progress: impl FnMut(usize, usize),
    ) -> Result<CudaModel> {
        let total: usize = weights.tensors().iter().map(|t| t.numel() * 2).sum();
        let (free, all) = gpu.memory()?;
        if total > free {
            return Err(cuda::Error::OutOfMemory {
                what: format!("{} layers of bf16 weights", config.num_hidden_layers),
                bytes: total,
                free,
                total: all,
            }
            .into());
        }
        let mut progress = Progress::new(total, &mut progress);
        let pr = &mut progress;
        let up = |t: &Tensor, what: &str, pr: &mut Progress<'_>| -> Result<DeviceBuffer<Bf16>> {
            Ok(gpu.upload_weight_bf16(weight(t)?, what, pr)?)
        };
        let embed = up(&weights.embed, "embed_tokens", pr)?;
        let lm_head = match same(&weights.lm_head, &weights.embed) {
            true => None,
            false => Some(up(&weights.lm_head, "lm_head", pr)?),
        };
        let norm = up(&weights.norm, "norm", pr)?;
        let mut layers = Vec::with_capacity(weights.layers.len());
        for (l, lw) in weights.layers.iter().enumerate() {
            let what = |n: &str| format!("layer {l} {n}");
            let (d, f, e) = (
                config.hidden_size,
                config.intermediate_size,
                config.num_local_experts,
            );
            let mut experts = gpu.alloc_experts(e, d, f, &what("experts"))?;
            for (i, x) in lw.experts.iter().enumerate() {
                let at = i * f * d;
                gpu.write_weight_bf16(&mut experts.w1, at, weight(&x.w1)?, pr)?;
                gpu.write_weight_bf16(&mut experts.w3, at, weight(&x.w3)?, pr)?;
                gpu.write_weight_bf16(&mut experts.w2, at, weight(&x.w2)?, pr)?;
            }
            layers.push(DeviceLayer {
                attn_norm: up(&lw.attn_norm, &what("input_layernorm"), pr)?,
                wq: up(&lw.wq, &what("q_proj"), pr)?,
                wk: up(&lw.wk, &what("k_proj"), pr)?,
                wv: up(&lw.wv, &what("v_proj"), pr)?,
                wo: up(&lw.wo, &what("o_proj"), pr)?,
                moe_norm: up(&lw.moe_norm, &what("post_attention_layernorm"), pr)?,
                router: up(&lw.router, &what("gate"), pr)?,
                experts,
            });
        }
        Ok(CudaModel {
            gpu: gpu.clone(),
            config: config.clone(),
            embed,
            lm_head,
            norm,
            layers,
            work: Mutex::new(None),
        })
    }

    /// A model of `config`'s shape with uniform random bf16 weights made on the device (no
    /// host copy): for benchmarks at real sizes. Each matrix is scaled by `1/√fan_in` so the
    /// activations keep a sane magnitude through the layers.
    pub fn random(config: &Config, gpu: &CudaBackend, seed: u64) -> Result<CudaModel> {
        let c = config;
        let (d, v, e, f) = (
            c.hidden_size,
            c.vocab_size,
            c.num_local_experts,
            c.intermediate_size,
        );
        // A distinct seed per tensor, so no two matrices repeat each other's values.
        let n = std::cell::Cell::new(0u64);
        let next_seed = || {
            n.set(n.get() + 1);
            seed.wrapping_add(n.get() << 32)
        };
        let fill = |len: usize, fan_in: usize, what: &str| -> Result<DeviceBuffer<Bf16>> {
            let mut b = gpu.alloc::<Bf16>(len, what)?;
            gpu.fill_uniform_bf16(&mut b, next_seed(), 1.0 / (fan_in as f32).sqrt())?;
            Ok(b)
        };
        let embed = fill(v * d, 1, "embed_tokens")?;
        let lm_head = Some(fill(v * d, d, "lm_head")?);
        let norm = fill(d, 1, "norm")?;
        let mut layers = Vec::new();
        for l in 0..c.num_hidden_layers {
            let what = |n: &str| format!("layer {l} {n}");
            let mut experts = gpu.alloc_experts(e, d, f, &what("experts"))?;
            for (buf, fan_in) in [
                (&mut experts.w1, d),
                (&mut experts.w3, d),
                (&mut experts.w2, f),
            ] {
                gpu.fill_uniform_bf16(buf, next_seed(), 1.0 / (fan_in as f32).sqrt())?;
            }
            layers.push(DeviceLayer {
                attn_norm: fill(d, 1, &what("input_layernorm"))?,
                wq: fill(c.q_dim() * d, d, &what("q_proj"))?,
                wk: fill(c.kv_dim() * d, d, &what("k_proj"))?,
                wv: fill(c.kv_dim() * d, d, &what("v_proj"))?,
                wo: fill(d * c.q_dim(), c.q_dim(), &what("o_proj"))?,
                moe_norm: fill(d, 1, &what("post_attention_layernorm"))?,
                router: fill(e * d, d, &what("gate"))?,
                experts,
            });
        }
        Ok(CudaModel {
            gpu: gpu.clone(),
            config: config.clone(),
            embed,
            lm_head,
            norm,
            layers,
            work: Mutex::new(None),
        })
    }

    /// The architecture.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The device.
    pub fn backend(&self) -> &CudaBackend {
        &self.gpu
    }

    /// An empty device KV cache with room for `capacity` positions (it grows when needed).
    pub fn new_cache(&self, capacity: usize) -> Result<CudaKvCache> {
        let c = &self.config;
        let rows = capacity.clamp(1, c.max_position_embeddings.max(1));
        let alloc = |_| self.gpu.alloc::<Bf16>(rows * c.kv_dim(), "KV cache");
        Ok(CudaKvCache {
            k: (0..c.num_hidden_layers)
                .map(alloc)
                .collect::<Result<_, _>>()?,
            v: (0..c.num_hidden_layers)
                .map(alloc)
                .collect::<Result<_, _>>()?,
            len: 0,
            rows,
            kv_dim: c.kv_dim(),
        })
    }

    /// Runs `tokens` at `positions` (continuing `cache`), appends their keys and values, and
    /// returns the logits `opts` asks for, as [`Model::prefill`] does.
    pub fn prefill(
        &self,
        tokens: &[u32],
        positions: &[usize],
        cache: &mut CudaKvCache,
        opts: ForwardOptions,
    ) -> Result<Output> {
        if opts.router_logits || opts.hidden_states {
            return Err(ModelError::Intervention {
                reason: "router logits and hidden states are recorded on the CPU path only \
                         (run with --device cpu)"
                    .into(),
            }
            .into());
        }
        let (out, routing) = self.forward(
            tokens,
            positions,
            cache,
            Want::Logits(opts.logits),
            opts.trace_routing,
        )?;
        Ok(Output {
            rows: opts.logits.rows(tokens.len()),
            logits: out.into_logits(),
            routing,
            router_logits: None,
            hidden_states: None,
        })
    }

    /// Runs one token at `position` (= `cache.len()`), as [`Model::decode`] does.
    pub fn decode(
        &self,
        token: u32,
        position: usize,
        cache: &mut CudaKvCache,
        opts: ForwardOptions,
    ) -> Result<Output> {
        self.prefill(&[token], &[position], cache, opts)
    }

    /// Greedy step: runs `tokens` and returns the argmax of the last row's logits, computed on
    /// the device (4 bytes come back instead of `V` logits).
    pub fn prefill_greedy(
        &self,
        tokens: &[u32],
        positions: &[usize],
        cache: &mut CudaKvCache,
    ) -> Result<u32> {
        let (out, _) = self.forward(tokens, positions, cache, Want::Greedy, false)?;
        Ok(out.into_id())
    }

    /// [`CudaModel::prefill_greedy`] for one token.
    pub fn decode_greedy(
        &self,
        token: u32,
        position: usize,
        cache: &mut CudaKvCache,
    ) -> Result<u32> {
        self.prefill_greedy(&[token], &[position], cache)
    }

    fn forward(
        &self,
        tokens: &[u32],
        positions: &[usize],
        cache: &mut CudaKvCache,
        want: Want,
        trace: bool,
    ) -> Result<(Fetched, Option<RoutingTrace>)> {
        crate::input::check_input(&self.config, tokens, positions, cache.len)?;
        let (c, gpu, n) = (&self.config, &self.gpu, tokens.len());
        cache.reserve(gpu, cache.len + n, c.max_position_embeddings)?;
        let mut slot = self.work.lock().unwrap_or_else(|p| p.into_inner());
        if slot.as_ref().is_none_or(|w| w.rows < n) {
            *slot = None; // free the smaller one first
            *slot = Some(Workspace::new(gpu, c, n)?);
        }
        let ws = slot.as_mut().expect("just filled");
        let ids = gpu.upload_tokens(tokens, c.vocab_size)?;
        let pos = gpu.upload_positions(positions)?;
        gpu.embedding(&ids, &self.embed, c.hidden_size, &mut ws.h)?;
        let mut trace = trace.then(|| RoutingTrace {
            top_k: c.num_experts_per_tok,
            layers: vec![],
        });
        let norm = RmsNorm {
            rows: n,
            cols: c.hidden_size,
            eps: c.rms_norm_eps as f32,
        };
        for (l, lw) in self.layers.iter().enumerate() {
            // h += moe(...) of the previous layer, fused into this layer's first norm.
            match l {
                0 => gpu.rms_norm(norm, &ws.h, &lw.attn_norm, &mut ws.x)?,
                _ => gpu.rms_norm_residual(norm, &mut ws.h, &ws.y, &lw.attn_norm, &mut ws.x)?,
            }
            self.attention(l, lw, &pos, cache, ws, n)?;
            gpu.rms_norm_residual(norm, &mut ws.h, &ws.o, &lw.moe_norm, &mut ws.x)?;
            self.moe(lw, ws, n)?;
            if let Some(trace) = &mut trace {
                let a = n * c.num_experts_per_tok;
                trace.layers.push(LayerRouting {
                    experts: gpu.read(&ws.routing.ids, a)?,
                    weights: gpu.read(&ws.routing.weights, a)?,
                });
            }
        }
        cache.len += n;
        gpu.rms_norm_residual(norm, &mut ws.h, &ws.y, &self.norm, &mut ws.x)?;
        let fetched = self.head(ws, n, want)?;
        Ok((fetched, trace))
    }

    /// q, k, v projections, RoPE, cache append, attention and o_proj into `ws.o`.
    #[allow(clippy::too_many_arguments)]
    fn attention(
        &self,
        l: usize,
        lw: &DeviceLayer,
        pos: &cuda::Positions,
        cache: &mut CudaKvCache,
        ws: &mut Workspace,
        n: usize,
    ) -> Result<()> {
        let (c, gpu) = (&self.config, &self.gpu);
        let (d, qd, kvd) = (c.hidden_size, c.q_dim(), c.kv_dim());
        let mm = |n_out: usize, k: usize| Matmul {
            rows: n,
            k,
            n: n_out,
        };
        gpu.matmul(mm(qd, d), &ws.x, &lw.wq, &mut ws.q)?; // [T, H·Dh]
        gpu.matmul(mm(kvd, d), &ws.x, &lw.wk, &mut ws.k)?; // [T, G·Dh]
        gpu.matmul(mm(kvd, d), &ws.x, &lw.wv, &mut ws.v)?; // [T, G·Dh]
        let rope = |heads| Rope {
            n_heads: heads,
            head_dim: c.head_dim,
            theta: c.rope_theta,
            interleaved: c.rope_interleaved,
        };
        gpu.rope(rope(c.num_attention_heads), pos, &mut ws.q)?;
        let (kc, vc) = (&mut cache.k[l], &mut cache.v[l]);
        gpu.rope_kv(rope(c.num_key_value_heads), pos, &ws.k, &ws.v, kc, vc)?;
        let p = Attention {
            n_heads: c.num_attention_heads,
            n_kv_heads: c.num_key_value_heads,
            head_dim: c.head_dim,
            window: c.sliding_window,
        };
        let rows = cache.len + n; // this call's rows are written already
        let group = c.num_attention_heads / c.num_key_value_heads.max(1);
        if n == 1 && group <= cuda::ops::GEMV_MAX_ROWS {
            gpu.attention_decode(p, &ws.q, pos, kc, vc, rows, &mut ws.decode, &mut ws.att)?;
        } else {
            gpu.attention_prefill(p, &ws.q, pos, kc, vc, rows, &mut ws.att)?; // [T, H·Dh]
        }
        gpu.matmul(mm(d, qd), &ws.att, &lw.wo, &mut ws.o)?; // [T, D]
        Ok(())
    }

    /// Router and experts on the normed `ws.x` into `ws.y`.
    fn moe(&self, lw: &DeviceLayer, ws: &mut Workspace, n: usize) -> Result<()> {
        let (c, gpu) = (&self.config, &self.gpu);
        let (e, k) = (c.num_local_experts, c.num_experts_per_tok);
        let mm = Matmul {
            rows: n,
            k: c.hidden_size,
            n: e,
        };
        gpu.matmul(mm, &ws.x, &lw.router, &mut ws.router_logits)?; // [T, E]
        let p = Router {
            n_tokens: n,
            n_experts: e,
            top_k: k,
            norm_topk_prob: c.norm_topk_prob,
        };
        gpu.router_top_k(p, &ws.router_logits, &mut ws.routing)?; // [T, K]
        let p = Moe {
            n_tokens: n,
            hidden: c.hidden_size,
            ffn: c.intermediate_size,
            top_k: k,
        };
        gpu.moe(p, &ws.x, &ws.routing, &lw.experts, &mut ws.moe, &mut ws.y)?; // [T, D]
        Ok(())
    }

    /// lm_head on the final normed rows in `ws.x`, and what comes back to the host.
    fn head(&self, ws: &mut Workspace, n: usize, want: Want) -> Result<Fetched> {
        let (c, gpu) = (&self.config, &self.gpu);
        let (d, v) = (c.hidden_size, c.vocab_size);
        let lm_head = self.lm_head.as_ref().unwrap_or(&self.embed);
        let rows = match want {
            Want::Logits(Logits::All) => n,
            _ => 1,
        };
        let p = Matmul { rows, k: d, n: v };
        if rows == n {
            gpu.matmul(p, &ws.x, lm_head, &mut ws.logits)?; // [T, V]
        } else {
            gpu.copy(&ws.x, (n - 1) * d, &mut ws.x_last, 0, d)?;
            gpu.matmul(p, &ws.x_last, lm_head, &mut ws.logits)?; // [1, V]
        }
        Ok(match want {
            Want::Greedy => {
                gpu.argmax(&ws.logits, 1, v, &mut ws.ids)?;
                Fetched::Id(gpu.read(&ws.ids, 1)?[0])
            }
            Want::Logits(_) => Fetched::Logits(gpu.read(&ws.logits, rows * v)?),
        })
    }
}

/// What a forward pass read back.
enum Fetched {
    Logits(Vec<f32>),
    Id(u32),
}

impl Fetched {
    fn into_logits(self) -> Vec<f32> {
        match self {
            Fetched::Logits(l) => l,
            Fetched::Id(_) => unreachable!("logits were asked for"),
        }
    }

    fn into_id(self) -> u32 {
        match self {
            Fetched::Id(i) => i,
            Fetched::Logits(_) => unreachable!("an id was asked for"),
        }
    }
}
