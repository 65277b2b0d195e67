//! The CUDA device: the graph's ops as launches on one GPU, over weights uploaded once.
//!
//! Precision: GGUF weights of the types the kernels decode (Q8_0, Q4_0, Q4_K, Q5_K, Q6_K) stay
//! in their blocks on the device, copied as the file holds them; every other weight is bf16
//! (f32 and f16 checkpoints are rounded to bf16 while uploading, other block types decoded).
//! Matmuls over blocks decode them in registers (exactly, for ≤ 8 rows) or into bf16 tiles for
//! the tensor cores (prefill). The residual stream, matmul outputs, softmax and every
//! accumulation are f32; normed activations and the KV cache are bf16 by default. So compare
//! against the f32 reference with the fixtures' bf16 tolerances.
//!
//! Nothing comes back to the host inside a call unless the call asked for it: steering and
//! recording copy the `[T, E]` router logits (and the `[T, K]` choices) down and back, and a
//! recorded hidden state is read once per layer.

use super::{Acts, AttentionIo, Device, KvStore, Layer, Seq, Stack};
use crate::{Config, KvDType, Result};
use mixtral_kernels::Weight;
use mixtral_kernels::attention::Attention;
use mixtral_kernels::cuda::{
    self, Bf16, CudaBackend, DecodeScratch, DeviceBuffer, DeviceExperts, DeviceMatrix, F16,
    KvElement, MoeScratch, Positions, Progress, Routing, Storage, TokenIds,
};
use mixtral_kernels::matmul::Matmul;
use mixtral_kernels::moe::Moe;
use mixtral_kernels::rmsnorm::RmsNorm;
use mixtral_kernels::rope::Rope;
use mixtral_kernels::router::Router;
use mixtral_tensor::Tensor;
use std::sync::Arc;

/// Positions a device cache grows by at least: a decode step rarely reallocates.
pub(crate) const CACHE_BLOCK: usize = 256;

/// One GPU.
#[derive(Clone, Debug)]
pub(crate) struct Cuda {
    pub gpu: CudaBackend,
}

/// A weight on the device, `[n, k]` in bf16 or GGUF blocks (a norm vector is `[D, 1]`, always
/// bf16); shared, so a tied lm_head is the embedding's one copy.
#[derive(Clone, Debug)]
pub struct DeviceWeight {
    buf: Arc<DeviceMatrix>,
    n: usize,
    k: usize,
}

impl DeviceWeight {
    /// A weight of `[n, k]` held in `buf`.
    pub(crate) fn new(buf: Arc<DeviceMatrix>, n: usize, k: usize) -> DeviceWeight {
        DeviceWeight { buf, n, k }
    }

    /// The bf16 elements of a norm vector (always uploaded as bf16).
    fn bf16(&self, what: &'static str) -> Result<&DeviceBuffer<Bf16>> {
        self.buf.as_bf16().ok_or_else(|| {
            cuda::Error::Input {
                op: what,
                what: format!("a {:?} weight where bf16 is needed", self.buf.storage()),
            }
            .into()
        })
    }
}

/// How a checkpoint tensor is stored on the device: its blocks where the kernels decode them
/// and they are in the file's row order, else bf16 (a tensor the CPU repacked into its
/// interleaved layout is decoded to bf16 at upload, as every other layout is).
fn storage_of(t: &Tensor) -> Storage {
    match Weight::new(t) {
        Ok(Weight::Quant(q)) if q.layout == mixtral_kernels::BlockLayout::Rows => {
            Storage::for_dtype(q.dtype)
        }
        _ => Storage::Bf16,
    }
}

/// How one layer's experts are stored: gate and up (one kernel reads both, so they must
/// agree, and agree across experts) and down. A layer whose experts disagree is bf16.
fn expert_storage(lw: &crate::weights::LayerWeights) -> [Storage; 2] {
    let all = |f: &dyn Fn(&crate::weights::ExpertWeights) -> &Tensor| {
        let first = lw.experts.first().map(|x| storage_of(f(x)));
        match first {
            Some(s) if lw.experts.iter().all(|x| storage_of(f(x)) == s) => s,
            _ => Storage::Bf16,
        }
    };
    let (w1, w3, w2) = (all(&|x| &x.w1), all(&|x| &x.w3), all(&|x| &x.w2));
    let gate_up = if w1 == w3 { w1 } else { Storage::Bf16 };
    [gate_up, w2]
}

/// Device bytes of `c`'s weights as [`Cuda::upload`] stores them (a tied head counted once).
pub(crate) fn device_weight_bytes(c: &Config, weights: &crate::Weights) -> usize {
    let tied = same(&weights.lm_head, &weights.embed);
    let norm = |t: &Tensor| Storage::Bf16.bytes(t.numel());
    let matrix = |t: &Tensor| storage_of(t).bytes(t.numel());
    let mut total = matrix(&weights.embed) + norm(&weights.norm);
    if !tied {
        total += matrix(&weights.lm_head);
    }
    let (d, f) = (c.hidden_size, c.intermediate_size);
    for lw in &weights.layers {
        let [gate_up, down] = expert_storage(lw);
        let per_expert = 2 * gate_up.bytes(f * d) + down.bytes(d * f);
        total += per_expert * lw.experts.len();
        total += norm(&lw.attn_norm) + norm(&lw.moe_norm);
        total += [&lw.wq, &lw.wk, &lw.wv, &lw.wo, &lw.router]
            .into_iter()
            .map(matrix)
            .sum::<usize>();
    }
    total
}

/// The model's weights on the device.
pub(crate) type DeviceStack = Stack<DeviceWeight, DeviceExperts>;

/// Every layer's keys and values of one element type, `[rows, G·Dh]` each.
struct Layers<T> {
    k: Vec<DeviceBuffer<T>>,
    v: Vec<DeviceBuffer<T>>,
}

/// The cache's layers in the element type `--kv-dtype` chose.
enum KvLayers {
    Bf16(Layers<Bf16>),
    F16(Layers<F16>),
    F32(Layers<f32>),
}

impl<T: KvElement> Layers<T> {
    fn empty() -> Layers<T> {
        Layers {
            k: vec![],
            v: vec![],
        }
    }

    /// Grows every layer to `rows` rows of `width`, keeping the first `old` elements.
    fn grow(
        &mut self,
        gpu: &CudaBackend,
        n_layers: usize,
        (old, rows, width): Sizes,
    ) -> Result<()> {
        for bufs in [&mut self.k, &mut self.v] {
            for l in 0..n_layers {
                let mut grown = gpu.alloc::<T>(rows * width, "KV cache")?;
                if let Some(buf) = bufs.get(l) {
                    gpu.copy(buf, 0, &mut grown, 0, old)?;
                }
                match bufs.get_mut(l) {
                    Some(buf) => *buf = grown,
                    None => bufs.push(grown),
                }
            }
        }
        Ok(())
    }

    fn bytes(&self) -> usize {
        self.k.iter().chain(&self.v).map(DeviceBuffer::bytes).sum()
    }
}

/// Elements kept, rows and row width of a growing cache.
type Sizes = (usize, usize, usize);

/// One sequence's keys and values on the device: per layer, `[rows, G·Dh]` of bf16, f16 or
/// f32.
pub(crate) struct CudaKv {
    gpu: CudaBackend,
    layers: KvLayers,
    rows: usize,
    n_layers: usize,
    kv_dim: usize,
    max: usize,
}

impl std::fmt::Debug for CudaKv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CudaKv")
            .field("dtype", &self.dtype())
            .field("rows", &self.rows)
            .finish_non_exhaustive()
    }
}

impl CudaKv {
    /// An empty cache of `dtype` (device memory is taken at the first reserve).
    pub(crate) fn new(gpu: &CudaBackend, c: &Config, dtype: KvDType) -> CudaKv {
        let layers = match dtype {
            KvDType::Bf16 => KvLayers::Bf16(Layers::empty()),
            KvDType::F16 => KvLayers::F16(Layers::empty()),
            KvDType::F32 => KvLayers::F32(Layers::empty()),
        };
        CudaKv {
            gpu: gpu.clone(),
            layers,
            rows: 0,
            n_layers: c.num_hidden_layers,
            kv_dim: c.kv_dim(),
            max: c.max_position_embeddings,
        }
    }

    /// The element type keys and values are stored in.
    pub(crate) fn dtype(&self) -> KvDType {
        match self.layers {
            KvLayers::Bf16(_) => KvDType::Bf16,
            KvLayers::F16(_) => KvDType::F16,
            KvLayers::F32(_) => KvDType::F32,
        }
    }
}

impl KvStore for CudaKv {
    fn truncate(&mut self, _: usize) {
        // Rows past the cache's length are overwritten by the next call: nothing to free.
    }

    fn reserve(&mut self, positions: usize) -> Result<()> {
        if positions <= self.rows {
            return Ok(());
        }
        let rows = super::cuda_plan::grown_rows(self.rows, positions, self.max);
        let sizes = (self.rows * self.kv_dim, rows, self.kv_dim);
        let (gpu, n) = (&self.gpu, self.n_layers);
        match &mut self.layers {
            KvLayers::Bf16(l) => l.grow(gpu, n, sizes)?,
            KvLayers::F16(l) => l.grow(gpu, n, sizes)?,
            KvLayers::F32(l) => l.grow(gpu, n, sizes)?,
        }
        self.rows = rows;
        Ok(())
    }

    fn reserved_bytes(&self) -> usize {
        match &self.layers {
            KvLayers::Bf16(l) => l.bytes(),
            KvLayers::F16(l) => l.bytes(),
            KvLayers::F32(l) => l.bytes(),
        }
    }
}

/// Per-sequence positions of a call, each increasing from its cache's length.
#[derive(Debug, Default)]
pub(crate) struct CudaPos {
    seqs: Vec<Positions>,
}

/// The GPU's own work space: the MoE tables, flash-decoding partials, and one sequence's
/// rows of q/k/v/att when a call holds several sequences (the kernels take whole buffers).
#[derive(Debug)]
pub(crate) struct CudaWork {
    moe: MoeScratch,
    /// Experts per token `moe` has room for (an intervention may ask more than the model's).
    moe_k: usize,
    decode: DecodeScratch,
    q: DeviceBuffer<f32>,
    k: DeviceBuffer<f32>,
    v: DeviceBuffer<f32>,
    att: DeviceBuffer<Bf16>,
}

/// A weight tensor as a kernel view (fails only for misaligned bytes).
fn view(t: &Tensor) -> Result<Weight<'_>> {
    Ok(Weight::new(t)?)
}

/// Whether `a` and `b` view the same bytes (a tied lm_head).
fn same(a: &Tensor, b: &Tensor) -> bool {
    std::ptr::eq(a.as_bytes().as_ptr(), b.as_bytes().as_ptr())
}

impl Cuda {
    /// Uploads `weights` (blocks kept as blocks, everything else as bf16), calling
    /// `progress(done, total)` (device bytes) as they stream. Fails with `OutOfMemory`,
    /// naming the sizes, before copying anything when the weights, one call's working memory
    /// and a first block of KV cache cannot fit in the card's free memory.
    pub(crate) fn upload(
        &self,
        c: &Config,
        weights: &crate::Weights,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<DeviceStack> {
        let gpu = &self.gpu;
        let tied = same(&weights.lm_head, &weights.embed);
        let least = super::cuda_plan::plan(c, weights, 1, KvDType::Bf16, 1);
        let (free, all) = gpu.memory()?;
        if least.total() > free {
            let gib = super::cuda_plan::gib;
            let row = super::cuda_plan::kv_row_bytes(c, KvDType::Bf16).max(1);
            let positions = least.kv_cache / row;
            return Err(cuda::Error::OutOfMemory {
                what: format!(
                    "the model: {} of weights, {} of working memory and {} for the first \
                     {positions} cached positions",
                    gib(least.weights),
                    gib(least.scratch),
                    gib(least.kv_peak),
                ),
                bytes: least.total(),
                free,
                total: all,
            }
            .into());
        }
        let total = least.weights;
        let mut progress = Progress::new(total, progress);
        let pr = &mut progress;
        let up = |t: &Tensor, storage: Storage, what: &str, pr: &mut Progress<'_>| {
            let dims = t.dims();
            let (n, k) = (dims[0], dims.get(1).copied().unwrap_or(1));
            let buf = Arc::new(gpu.upload_matrix(storage, view(t)?, what, pr)?);
            Ok::<_, crate::Error>(DeviceWeight { buf, n, k })
        };
        let matrix = |t: &Tensor, what: &str, pr: &mut Progress<'_>| up(t, storage_of(t), what, pr);
        let norm = |t: &Tensor, what: &str, pr: &mut Progress<'_>| up(t, Storage::Bf16, what, pr);
        let embed = matrix(&weights.embed, "embed_tokens", pr)?;
        let lm_head = match tied {
            // One copy on the device too: the head reads the embedding table.
            true => embed.clone(),
            false => matrix(&weights.lm_head, "lm_head", pr)?,
        };
        let norm_w = norm(&weights.norm, "norm", pr)?;
        let (d, f, e) = (c.hidden_size, c.intermediate_size, c.num_local_experts);
        let mut layers = Vec::with_capacity(weights.layers.len());
        for (l, lw) in weights.layers.iter().enumerate() {
            let what = |n: &str| format!("layer {l} {n}");
            let storage = expert_storage(lw);
            let mut experts = gpu.alloc_experts(e, d, f, storage, &what("experts"))?;
            for (i, x) in lw.experts.iter().enumerate() {
                let at = i * f * d;
                gpu.write_matrix(&mut experts.w1, at, view(&x.w1)?, pr)?;
                gpu.write_matrix(&mut experts.w3, at, view(&x.w3)?, pr)?;
                gpu.write_matrix(&mut experts.w2, at, view(&x.w2)?, pr)?;
            }
            layers.push(Layer {
                attn_norm: norm(&lw.attn_norm, &what("input_layernorm"), pr)?,
                wq: matrix(&lw.wq, &what("q_proj"), pr)?,
                wk: matrix(&lw.wk, &what("k_proj"), pr)?,
                wv: matrix(&lw.wv, &what("v_proj"), pr)?,
                wo: matrix(&lw.wo, &what("o_proj"), pr)?,
                moe_norm: norm(&lw.moe_norm, &what("post_attention_layernorm"), pr)?,
                router: matrix(&lw.router, &what("gate"), pr)?,
                experts,
            });
        }
        Ok(Stack {
            embed,
            layers,
            norm: norm_w,
            lm_head,
        })
    }

    /// Activations for `rows` tokens (`cuda_plan::scratch_bytes` counts them: keep the two
    /// in step).
    fn alloc_acts(&self, c: &Config, rows: usize) -> Result<Acts<Cuda>> {
        let gpu = &self.gpu;
        let (d, e, k) = (c.hidden_size, c.num_local_experts, c.num_experts_per_tok);
        let (qd, kvd) = (c.q_dim(), c.kv_dim());
        let moe = c.moe(rows, k);
        Ok(Acts {
            rows,
            ids: None,
            pos: CudaPos::default(),
            h: gpu.alloc(rows * d, "residual stream [T, D]")?,
            x: gpu.alloc(rows * d, "normed activations [T, D]")?,
            q: gpu.alloc(rows * qd, "queries [T, H·Dh]")?,
            k: gpu.alloc(rows * kvd, "keys [T, G·Dh]")?,
            v: gpu.alloc(rows * kvd, "values [T, G·Dh]")?,
            att: gpu.alloc(rows * qd, "attention output [T, H·Dh]")?,
            out: gpu.alloc(rows * d, "o_proj / MoE output [T, D]")?,
            router: gpu.alloc(rows * e, "router logits [T, E]")?,
            routing: gpu.alloc_routing(rows, e, k.min(e).max(1))?,
            last: gpu.alloc(rows * d, "head rows [rows, D]")?,
            last_x: gpu.alloc(rows * d, "normed head rows [rows, D]")?,
            logits: gpu.alloc(rows * c.vocab_size, "logits [rows, V]")?,
            work: CudaWork {
                moe: gpu.alloc_moe_scratch(moe, e)?,
                moe_k: k,
                decode: gpu.alloc_decode_scratch(c.num_attention_heads, c.head_dim)?,
                q: gpu.alloc(rows * qd, "one sequence's queries")?,
                k: gpu.alloc(rows * kvd, "one sequence's keys")?,
                v: gpu.alloc(rows * kvd, "one sequence's values")?,
                att: gpu.alloc(rows * qd, "one sequence's attention output")?,
            },
        })
    }

    /// Attention of one sequence whose rows are whole buffers.
    #[expect(
        clippy::too_many_arguments,
        reason = "the layer, the sequence's q/k/v and cache, and the output"
    )]
    fn attend_one(
        &self,
        l: usize,
        p: Attention,
        rope: [Rope; 2],
        pos: &Positions,
        qkv: Qkv<'_>,
        seq: &mut Seq<'_, CudaKv>,
        decode: &mut DecodeScratch,
        out: &mut DeviceBuffer<Bf16>,
    ) -> Result<()> {
        let rows = seq.cached + seq.rows.len(); // this call's rows are written already
        let one = seq.rows.len() == 1;
        let call = Attend {
            p,
            rope,
            pos,
            rows,
            one,
        };
        match &mut seq.kv.layers {
            KvLayers::Bf16(kv) => {
                call.run(&self.gpu, qkv, (&mut kv.k[l], &mut kv.v[l]), decode, out)
            }
            KvLayers::F16(kv) => {
                call.run(&self.gpu, qkv, (&mut kv.k[l], &mut kv.v[l]), decode, out)
            }
            KvLayers::F32(kv) => {
                call.run(&self.gpu, qkv, (&mut kv.k[l], &mut kv.v[l]), decode, out)
            }
        }
    }
}

/// A sequence's queries (rotated in place), keys and values.
type Qkv<'a> = (
    &'a mut DeviceBuffer<f32>,
    &'a DeviceBuffer<f32>,
    &'a DeviceBuffer<f32>,
);

/// One sequence's attention at one layer, whatever its cache's element type.
struct Attend<'a> {
    p: Attention,
    rope: [Rope; 2],
    pos: &'a Positions,
    /// Cache rows visible once this call's are written.
    rows: usize,
    /// One query row: flash-decoding.
    one: bool,
}

impl Attend<'_> {
    fn run<T: KvElement>(
        &self,
        gpu: &CudaBackend,
        (q, k, v): Qkv<'_>,
        (kc, vc): (&mut DeviceBuffer<T>, &mut DeviceBuffer<T>),
        decode: &mut DecodeScratch,
        out: &mut DeviceBuffer<Bf16>,
    ) -> Result<()> {
        let (p, pos, rows) = (self.p, self.pos, self.rows);
        gpu.rope(self.rope[0], pos, q)?;
        gpu.rope_kv(self.rope[1], pos, k, v, kc, vc)?;
        let group = p.n_heads / p.n_kv_heads.max(1);
        if self.one && group <= cuda::ops::GEMV_MAX_ROWS {
            gpu.attention_decode(p, q, pos, kc, vc, rows, decode, out)?;
        } else {
            gpu.attention_prefill(p, q, pos, kc, vc, rows, out)?;
        }
        Ok(())
    }
}

impl Device for Cuda {
    type Weight = DeviceWeight;
    type Experts = DeviceExperts;
    type F32 = DeviceBuffer<f32>;
    type Act = DeviceBuffer<Bf16>;
    type Routing = Routing;
    type Ids = Option<TokenIds>;
    type Pos = CudaPos;
    type Kv = CudaKv;
    type Work = CudaWork;

    fn acts(&self, c: &Config) -> Result<Acts<Cuda>> {
        self.alloc_acts(c, 1)
    }

    fn begin(
        &self,
        c: &Config,
        a: &mut Acts<Cuda>,
        tokens: &[u32],
        positions: &[usize],
        seqs: &[Seq<'_, Self::Kv>],
    ) -> Result<()> {
        if a.rows < tokens.len() {
            // Free the smaller set first: [T, V] logits alone can be gigabytes.
            *a = self.alloc_acts(c, 1)?;
            *a = self.alloc_acts(c, tokens.len())?;
        }
        a.ids = Some(self.gpu.upload_tokens(tokens, c.vocab_size)?);
        a.pos.seqs.clear();
        for seq in seqs {
            let pos = self.gpu.upload_positions(&positions[seq.rows.clone()])?;
            a.pos.seqs.push(pos);
        }
        // Since the last mark: the host between calls (sampling) and these uploads.
        Ok(self.gpu.mark("host: between calls, uploads")?)
    }

    fn embed(
        &self,
        table: &DeviceWeight,
        ids: &Option<TokenIds>,
        d: usize,
        h: &mut DeviceBuffer<f32>,
    ) -> Result<()> {
        let ids = ids.as_ref().expect("begin uploads the ids");
        self.gpu.embedding(ids, &table.buf, d, h)?;
        Ok(self.gpu.mark("embed")?)
    }

    fn rms_norm(
        &self,
        p: RmsNorm,
        x: &DeviceBuffer<f32>,
        w: &DeviceWeight,
        y: &mut DeviceBuffer<Bf16>,
    ) -> Result<()> {
        self.gpu.rms_norm(p, x, w.bf16("rms_norm")?, y)?;
        Ok(self.gpu.mark("rms_norm")?)
    }

    fn add(&self, h: &mut DeviceBuffer<f32>, y: &DeviceBuffer<f32>, len: usize) -> Result<()> {
        self.gpu.add(h, y, len)?;
        Ok(self.gpu.mark("residual add")?)
    }

    fn matmul(
        &self,
        rows: usize,
        x: &DeviceBuffer<Bf16>,
        jobs: &mut [(&DeviceWeight, &mut DeviceBuffer<f32>)],
        _exact: bool, // the router reads the same bf16 activations as every matmul here
    ) -> Result<()> {
        for (w, y) in jobs.iter_mut() {
            let p = Matmul {
                rows,
                k: w.k,
                n: w.n,
            };
            self.gpu.matmul(p, x, &w.buf, y)?;
        }
        let count = jobs.len();
        if let [(w, _), ..] = &*jobs
            && self.gpu.timing()
        {
            // Named by shape: ×3 is q/k/v; n = E the router, n = V the head, n = D o_proj.
            let name = format!("matmul ×{count} n={} ({:?})", w.n, w.buf.storage());
            self.gpu.mark(&name)?;
        }
        Ok(())
    }

    fn attention(
        &self,
        l: usize,
        p: Attention,
        rope: [Rope; 2],
        io: AttentionIo<'_, Cuda>,
        seqs: &mut [Seq<'_, CudaKv>],
        work: &mut CudaWork,
        out: &mut DeviceBuffer<Bf16>,
    ) -> Result<()> {
        let gpu = &self.gpu;
        let (qd, kvd) = (p.n_heads * p.head_dim, p.n_kv_heads * p.head_dim);
        if let [seq] = seqs {
            let pos = &io.pos.seqs[0];
            let qkv = (&mut *io.q, &*io.k, io.v);
            self.attend_one(l, p, rope, pos, qkv, seq, &mut work.decode, out)?;
            return Ok(gpu.mark("rope + attention")?);
        }
        // Several sequences: each one's rows go through the kernels on their own.
        for (seq, pos) in seqs.iter_mut().zip(&io.pos.seqs) {
            let (a, n) = (seq.rows.start, seq.rows.len());
            gpu.copy(io.q, a * qd, &mut work.q, 0, n * qd)?;
            gpu.copy(io.k, a * kvd, &mut work.k, 0, n * kvd)?;
            gpu.copy(io.v, a * kvd, &mut work.v, 0, n * kvd)?;
            let qkv = (&mut work.q, &work.k, &work.v);
            self.attend_one(l, p, rope, pos, qkv, seq, &mut work.decode, &mut work.att)?;
            gpu.copy(&work.att, 0, out, a * qd, n * qd)?;
        }
        Ok(gpu.mark("rope + attention")?)
    }

    fn top_k(&self, p: Router, logits: &DeviceBuffer<f32>, routing: &mut Routing) -> Result<()> {
        if routing.top_k() != p.top_k {
            let rows = routing.capacity();
            *routing = self.gpu.alloc_routing(rows, p.n_experts, p.top_k)?;
        }
        self.gpu.router_top_k(p, logits, routing)?;
        Ok(self.gpu.mark("router top-k")?)
    }

    fn moe(
        &self,
        p: Moe,
        x: &DeviceBuffer<Bf16>,
        routing: &Routing,
        experts: &DeviceExperts,
        work: &mut CudaWork,
        y: &mut DeviceBuffer<f32>,
    ) -> Result<()> {
        if p.top_k > work.moe_k {
            // Room for as many tokens as the buffers around it hold.
            let rows = y.len() / p.hidden.max(1);
            let grown = Moe {
                n_tokens: rows,
                ..p
            };
            work.moe = self.gpu.alloc_moe_scratch(grown, experts.n_experts)?;
            work.moe_k = p.top_k;
        }
        self.gpu.moe(p, x, routing, experts, &mut work.moe, y)?;
        Ok(self.gpu.mark("moe")?)
    }

    fn gather(
        &self,
        src: &DeviceBuffer<f32>,
        rows: &[usize],
        d: usize,
        dst: &mut DeviceBuffer<f32>,
    ) -> Result<()> {
        for (i, &r) in rows.iter().enumerate() {
            self.gpu.copy(src, r * d, dst, i * d, d)?;
        }
        Ok(self.gpu.mark("gather head rows")?)
    }

    fn edit(
        &self,
        x: &mut DeviceBuffer<f32>,
        len: usize,
        f: &mut dyn FnMut(&mut [f32]),
    ) -> Result<()> {
        let mut host = self.gpu.read(x, len)?;
        f(&mut host);
        Ok(self.gpu.write(x, 0, &host)?)
    }

    fn edit_routing(
        &self,
        r: &mut Routing,
        len: usize,
        f: &mut dyn FnMut(&mut [u32], &mut [f32]),
    ) -> Result<()> {
        let mut ids = self.gpu.read(&r.ids, len)?;
        let mut weights = self.gpu.read(&r.weights, len)?;
        f(&mut ids, &mut weights);
        // The MoE kernels follow these ids without a bound check.
        let e = r.n_experts() as u32;
        if let Some(&bad) = ids.iter().find(|&&id| id >= e) {
            return Err(crate::Error::Intervention {
                reason: format!("expert {bad} forced where the model has {e}"),
            });
        }
        self.gpu.write(&mut r.ids, 0, &ids)?;
        Ok(self.gpu.write(&mut r.weights, 0, &weights)?)
    }

    fn sync(&self) -> Result<()> {
        Ok(self.gpu.synchronize()?)
    }

    fn fits(&self, c: &Config, kv: &CudaKv) -> bool {
        kv.gpu.ordinal() == self.gpu.ordinal()
            && kv.n_layers == c.num_hidden_layers
            && kv.kv_dim == c.kv_dim()
    }

    fn read(&self, x: &DeviceBuffer<f32>, len: usize, out: &mut Vec<f32>) -> Result<()> {
        out.extend(self.gpu.read(x, len)?);
        Ok(self.gpu.mark("read back to the host")?)
    }

    fn read_act(&self, x: &DeviceBuffer<Bf16>, len: usize, out: &mut Vec<f32>) -> Result<()> {
        out.extend(self.gpu.read_bf16_as_f32(x, len)?);
        Ok(())
    }
}
