//! Typed launchers for every entry point of `kernels/*.cu`, with the shape checks the kernels
//! leave to their caller.
//!
//! Each launcher checks buffer lengths (at least what the call touches: workspaces may be
//! larger) and the kernel's limits, then launches on the backend's stream without waiting.
//! Index inputs a kernel would follow without a bound check reach it only through types that
//! were checked on the host: [`TokenIds`] (ids < V), [`Positions`] (increasing, with their
//! maximum known), [`Routing`] (expert ids < E, written by the router kernel or checked).

use super::blocks::{DeviceMatrix, Storage};
use super::check::{self, MoeArgs, int};
use super::error::limit;
use super::memory::{Bf16, DeviceBuffer, KvElement};
use super::source::{Source, find};
use super::{CudaBackend, Error, Result};
use crate::attention::Attention;
use crate::matmul::Matmul;
use crate::moe::Moe;
use crate::rmsnorm::RmsNorm;
use crate::rope::Rope;
use crate::router::Router;
use cudarc::driver::{LaunchArgs, LaunchConfig, PushKernelArg};
use std::sync::Arc;

pub use super::check::{
    DECODE_MAX_SPLITS, GEMM_K_STEP, GEMM_TILE_ROWS, GEMV_MAX_ROWS, MAX_EXPERTS, MAX_HEAD_DIM,
    MOE_GEMV_MAX_ASSIGNMENTS, RMS_MAX_COLS, ROUTER_MAX_EXPERTS,
};

/// `matmul_gemv_*` for bf16, then each [`super::BlockType`] in order.
pub(crate) const GEMV_OPS: [&str; 6] = [
    "matmul_gemv_bf16",
    "matmul_gemv_q80",
    "matmul_gemv_q40",
    "matmul_gemv_q4k",
    "matmul_gemv_q5k",
    "matmul_gemv_q6k",
];
/// `moe_gemm_swiglu_*`, in the same order.
pub(crate) const SWIGLU_OPS: [&str; 6] = [
    "moe_gemm_swiglu_bf16",
    "moe_gemm_swiglu_q80",
    "moe_gemm_swiglu_q40",
    "moe_gemm_swiglu_q4k",
    "moe_gemm_swiglu_q5k",
    "moe_gemm_swiglu_q6k",
];
/// `moe_gemm_down_*` (also the dense GEMM), in the same order.
pub(crate) const DOWN_OPS: [&str; 6] = [
    "moe_gemm_down_bf16",
    "moe_gemm_down_q80",
    "moe_gemm_down_q40",
    "moe_gemm_down_q4k",
    "moe_gemm_down_q5k",
    "moe_gemm_down_q6k",
];
/// `embedding_f32_*`, in the same order.
pub(crate) const EMBEDDING_OPS: [&str; 6] = [
    "embedding_f32_bf16",
    "embedding_f32_q80",
    "embedding_f32_q40",
    "embedding_f32_q4k",
    "embedding_f32_q5k",
    "embedding_f32_q6k",
];

/// `moe_gemv_swiglu_*` for each [`super::BlockType`] in order (no bf16 form: bf16 experts
/// keep the cp.async-pipelined tile GEMM, measured at 88% of the copy floor on an H100).
pub(crate) const SWIGLU_GEMV_OPS: [&str; 5] = [
    "moe_gemv_swiglu_q80",
    "moe_gemv_swiglu_q40",
    "moe_gemv_swiglu_q4k",
    "moe_gemv_swiglu_q5k",
    "moe_gemv_swiglu_q6k",
];
/// `moe_gemv_down_*`, in the same order.
pub(crate) const DOWN_GEMV_OPS: [&str; 5] = [
    "moe_gemv_down_q80",
    "moe_gemv_down_q40",
    "moe_gemv_down_q4k",
    "moe_gemv_down_q5k",
    "moe_gemv_down_q6k",
];

/// The GEMV form of a MoE product over `m`, for a call of `assignments` rows: blocks only,
/// and few rows.
fn moe_gemv_op(
    m: &DeviceMatrix,
    table: &[&'static str; 5],
    assignments: usize,
) -> Option<&'static str> {
    match m {
        DeviceMatrix::Blocks(t, _) if assignments <= check::MOE_GEMV_MAX_ASSIGNMENTS => {
            Some(table[t.index()])
        }
        _ => None,
    }
}

/// Pushes a matrix's device pointer (bf16 elements or bytes of blocks).
fn push_matrix<'a>(b: &mut LaunchArgs<'a>, m: &'a DeviceMatrix) {
    match m {
        DeviceMatrix::Bf16(buf) => b.arg(buf.slice()),
        DeviceMatrix::Blocks(_, buf) => b.arg(buf.slice()),
    };
}

fn src(file: &'static str) -> &'static Source {
    find(file).expect("every launcher names a file of source::ALL")
}

/// Launches a built argument list.
fn launch(op: &'static str, mut args: LaunchArgs<'_>, cfg: LaunchConfig) -> Result<()> {
    if cfg.grid_dim.0 == 0 || cfg.grid_dim.1 == 0 {
        return Ok(()); // nothing to do (e.g. zero rows); a zero grid is a launch error
    }
    // SAFETY: every caller pushes exactly the kernel's parameters, in order and with the
    // kernel's types (device pointers for pointers, i32 for int, f32/f64 for float/double,
    // u64 0 for a null pointer), and has passed the `check` function that proves each buffer
    // holds every element the kernel touches for this grid and these sizes. Buffers outlive
    // the kernel because they are freed stream-ordered on the same stream.
    unsafe { args.launch(cfg) }
        .map(drop)
        .map_err(Error::driver(op))
}

/// Token ids on the device, each checked `< vocab` on the host (the embedding gather trusts
/// them).
#[derive(Debug)]
pub struct TokenIds {
    buf: DeviceBuffer<u32>,
    vocab: usize,
}

impl TokenIds {
    /// How many ids.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
}

/// Positions on the device, checked increasing and `< 2^32` on the host; the largest is kept
/// so launchers can check it against the cache's rows.
#[derive(Debug)]
pub struct Positions {
    buf: DeviceBuffer<u32>,
    last: usize,
}

impl Positions {
    /// How many positions.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// The largest (last) position.
    pub fn last(&self) -> usize {
        self.last
    }
}

/// Router output on the device: expert ids `[T, K]` (each `< E`) and weights `[T, K]`.
#[derive(Debug)]
pub struct Routing {
    /// Expert ids, most probable first.
    pub ids: DeviceBuffer<u32>,
    /// Router weights matching `ids`.
    pub weights: DeviceBuffer<f32>,
    n_experts: usize,
    top_k: usize,
}

impl Routing {
    /// `E`.
    pub fn n_experts(&self) -> usize {
        self.n_experts
    }

    /// `K`.
    pub fn top_k(&self) -> usize {
        self.top_k
    }

    /// Token rows it has room for.
    pub fn capacity(&self) -> usize {
        self.ids.len() / self.top_k
    }
}

/// One layer's experts on the device, stacked: `w1`, `w3` `[E, F, D]`, `w2` `[E, D, F]`, in
/// bf16 or in blocks (`w1` and `w3` share one storage: one kernel reads both).
#[derive(Debug)]
pub struct DeviceExperts {
    /// Gate projections `[E, F, D]`.
    pub w1: DeviceMatrix,
    /// Up projections `[E, F, D]`.
    pub w3: DeviceMatrix,
    /// Down projections `[E, D, F]`.
    pub w2: DeviceMatrix,
    /// `E`.
    pub n_experts: usize,
    /// `D`.
    pub hidden: usize,
    /// `F`.
    pub ffn: usize,
}

/// Work buffers of one MoE call for up to `capacity` tokens.
#[derive(Debug)]
pub struct MoeScratch {
    offsets: DeviceBuffer<u32>,
    tile_offsets: DeviceBuffer<u32>,
    slot_of: DeviceBuffer<u32>,
    row_token: DeviceBuffer<u32>,
    act: DeviceBuffer<Bf16>,
    out: DeviceBuffer<f32>,
    capacity: usize,
}

/// The single-group tables that turn the grouped GEMM into a dense one over `rows` rows.
#[derive(Debug)]
pub struct DenseRows {
    offsets: DeviceBuffer<u32>,
    tile_offsets: DeviceBuffer<u32>,
}

/// Partial results of flash-decoding (`[splits, H, Dh]` and `[splits, H, 2]`).
#[derive(Debug)]
pub struct DecodeScratch {
    acc: DeviceBuffer<f32>,
    ml: DeviceBuffer<f32>,
}

impl CudaBackend {
    /// Uploads token ids, checking each is `< vocab`.
    pub fn upload_tokens(&self, ids: &[u32], vocab: usize) -> Result<TokenIds> {
        check::tokens(ids, vocab)?;
        Ok(TokenIds {
            buf: self.upload(ids, "token ids")?,
            vocab,
        })
    }

    /// Uploads positions, checking they increase and fit in `u32`.
    pub fn upload_positions(&self, positions: &[usize]) -> Result<Positions> {
        let (host, last) = check::positions(positions)?;
        Ok(Positions {
            buf: self.upload(&host, "positions")?,
            last,
        })
    }

    /// Room for the router's output for `capacity` tokens (ids start at 0, a valid expert).
    pub fn alloc_routing(
        &self,
        capacity: usize,
        n_experts: usize,
        top_k: usize,
    ) -> Result<Routing> {
        limit(
            (1..=n_experts).contains(&top_k),
            "routing",
            "top_k",
            top_k,
            "1 ≤ K ≤ E",
        )?;
        Ok(Routing {
            ids: self.alloc(capacity * top_k, "router ids")?,
            weights: self.alloc(capacity * top_k, "router weights")?,
            n_experts,
            top_k,
        })
    }

    /// Routing given from the host (tests, benchmarks), ids checked `< n_experts`.
    pub fn upload_routing(
        &self,
        ids: &[u32],
        weights: &[f32],
        n_experts: usize,
        top_k: usize,
    ) -> Result<Routing> {
        check::routing(ids, weights, n_experts, top_k)?;
        Ok(Routing {
            ids: self.upload(ids, "router ids")?,
            weights: self.upload(weights, "router weights")?,
            n_experts,
            top_k,
        })
    }

    /// Stacked expert buffers for `n_experts` experts of shape `hidden` × `ffn`, zeroed: the
    /// gate and up projections stored as `storage[0]`, the down projections as `storage[1]`.
    pub fn alloc_experts(
        &self,
        n_experts: usize,
        hidden: usize,
        ffn: usize,
        storage: [Storage; 2],
        what: &str,
    ) -> Result<DeviceExperts> {
        let n = n_experts * hidden * ffn;
        Ok(DeviceExperts {
            w1: self.alloc_matrix(storage[0], n, &format!("{what} w1"))?,
            w3: self.alloc_matrix(storage[0], n, &format!("{what} w3"))?,
            w2: self.alloc_matrix(storage[1], n, &format!("{what} w2"))?,
            n_experts,
            hidden,
            ffn,
        })
    }

    /// Work buffers for MoE calls of up to `p.n_tokens` tokens over `n_experts` experts.
    pub fn alloc_moe_scratch(&self, p: Moe, n_experts: usize) -> Result<MoeScratch> {
        let a = p.n_tokens * p.top_k;
        Ok(MoeScratch {
            offsets: self.alloc(n_experts + 1, "moe offsets")?,
            tile_offsets: self.alloc(n_experts + 1, "moe tile offsets")?,
            slot_of: self.alloc(a, "moe slots")?,
            row_token: self.alloc(a, "moe row tokens")?,
            act: self.alloc(a * p.ffn, "moe activations [T·K, F]")?,
            out: self.alloc(a * p.hidden, "moe expert outputs [T·K, D]")?,
            capacity: p.n_tokens,
        })
    }

    /// Partials for flash-decoding with `n_heads` heads of `head_dim`.
    pub fn alloc_decode_scratch(&self, n_heads: usize, head_dim: usize) -> Result<DecodeScratch> {
        Ok(DecodeScratch {
            acc: self.alloc(DECODE_MAX_SPLITS * n_heads * head_dim, "decode partials")?,
            ml: self.alloc(DECODE_MAX_SPLITS * n_heads * 2, "decode max/sum")?,
        })
    }

    /// `embedding_f32_<storage>`: rows `ids` of `table` `[V, D]` (bf16 or blocks), as f32 into
    /// `out` `[T, D]`.
    pub fn embedding(
        &self,
        ids: &TokenIds,
        table: &DeviceMatrix,
        cols: usize,
        out: &mut DeviceBuffer<f32>,
    ) -> Result<()> {
        let op = table.storage().pick(&EMBEDDING_OPS);
        let block = table.storage().block_len();
        let (n, vocab, values) = (ids.len(), ids.vocab, table.values());
        let cfg = check::embedding(op, n, vocab, cols, block, values, out.len())?;
        let f = self.function(src("embedding.cu"), op)?;
        let c = cols as i32;
        let mut b = self.stream().launch_builder(&f);
        b.arg(ids.buf.slice());
        push_matrix(&mut b, table);
        b.arg(out.slice_mut()).arg(&c);
        launch(op, b, cfg)
    }

    /// `embedding_bf16`: rows `ids` of `table` `[V, D]` into `out` `[T, D]`, as bf16.
    pub fn embedding_bf16(
        &self,
        ids: &TokenIds,
        table: &DeviceBuffer<Bf16>,
        cols: usize,
        out: &mut DeviceBuffer<Bf16>,
    ) -> Result<()> {
        const OP: &str = "embedding_bf16";
        let cfg = check::embedding(OP, ids.len(), ids.vocab, cols, 1, table.len(), out.len())?;
        let f = self.function(src("embedding.cu"), OP)?;
        let c = cols as i32;
        let mut b = self.stream().launch_builder(&f);
        b.arg(ids.buf.slice())
            .arg(table.slice())
            .arg(out.slice_mut())
            .arg(&c);
        launch(OP, b, cfg)
    }

    /// `rmsnorm_bf16`: `y = rms_norm(x) · w`, x f32 `[rows, cols]`, y bf16.
    /// Twin: [`crate::rmsnorm::reference::rms_norm`].
    pub fn rms_norm(
        &self,
        p: RmsNorm,
        x: &DeviceBuffer<f32>,
        w: &DeviceBuffer<Bf16>,
        y: &mut DeviceBuffer<Bf16>,
    ) -> Result<()> {
        const OP: &str = "rmsnorm_bf16";
        let cfg = check::rms_norm(OP, p, &[x.len()], w.len(), y.len())?;
        let f = self.function(src("rmsnorm.cu"), OP)?;
        let c = p.cols as i32;
        let mut b = self.stream().launch_builder(&f);
        b.arg(x.slice())
            .arg(w.slice())
            .arg(y.slice_mut())
            .arg(&c)
            .arg(&p.eps);
        launch(OP, b, cfg)
    }

    /// `rmsnorm_residual_bf16`: `h += r` (f32, in place), then `y = rms_norm(h) · w` (bf16).
    pub fn rms_norm_residual(
        &self,
        p: RmsNorm,
        h: &mut DeviceBuffer<f32>,
        r: &DeviceBuffer<f32>,
        w: &DeviceBuffer<Bf16>,
        y: &mut DeviceBuffer<Bf16>,
    ) -> Result<()> {
        const OP: &str = "rmsnorm_residual_bf16";
        let cfg = check::rms_norm(OP, p, &[h.len(), r.len()], w.len(), y.len())?;
        let f = self.function(src("rmsnorm.cu"), OP)?;
        let c = p.cols as i32;
        let mut b = self.stream().launch_builder(&f);
        b.arg(h.slice_mut())
            .arg(r.slice())
            .arg(w.slice())
            .arg(y.slice_mut())
            .arg(&c)
            .arg(&p.eps);
        launch(OP, b, cfg)
    }

    /// `rope_f32`: rotates `x` `[T, n_heads · Dh]` in place. Twin: [`crate::rope::reference::rope`].
    pub fn rope(&self, p: Rope, positions: &Positions, x: &mut DeviceBuffer<f32>) -> Result<()> {
        const OP: &str = "rope_f32";
        let cfg = check::rope(p, positions.len(), x.len())?;
        let f = self.function(src("rope.cu"), OP)?;
        let (h, dh) = (int(OP, "n_heads", p.n_heads)?, p.head_dim as i32);
        let interleaved = i32::from(p.interleaved);
        let mut b = self.stream().launch_builder(&f);
        b.arg(x.slice_mut())
            .arg(positions.buf.slice())
            .arg(&h)
            .arg(&dh)
            .arg(&p.theta)
            .arg(&interleaved);
        launch(OP, b, cfg)
    }

    /// `rope_kv_<dtype>`: rotates `k` `[T, G·Dh]` (`p.n_heads` = G) and writes it and `v`,
    /// rounded to the caches' element type, into rows `positions` of the caches `[rows, G·Dh]`.
    #[allow(clippy::too_many_arguments)]
    pub fn rope_kv<T: KvElement>(
        &self,
        p: Rope,
        positions: &Positions,
        k: &DeviceBuffer<f32>,
        v: &DeviceBuffer<f32>,
        k_cache: &mut DeviceBuffer<T>,
        v_cache: &mut DeviceBuffer<T>,
    ) -> Result<()> {
        let op = T::ROPE_KV;
        let cfg = check::rope_kv(
            p,
            positions.len(),
            positions.last(),
            [k.len(), v.len()],
            [k_cache.len(), v_cache.len()],
        )?;
        let f = self.function(src("rope.cu"), op)?;
        let (g, dh) = (int(op, "n_kv_heads", p.n_heads)?, p.head_dim as i32);
        let interleaved = i32::from(p.interleaved);
        let mut b = self.stream().launch_builder(&f);
        b.arg(k.slice())
            .arg(v.slice())
            .arg(positions.buf.slice())
            .arg(k_cache.slice_mut())
            .arg(v_cache.slice_mut())
            .arg(&g)
            .arg(&dh)
            .arg(&p.theta)
            .arg(&interleaved);
        launch(op, b, cfg)
    }

    /// `router_topk_f32`: softmax, top-k and renormalisation of `logits` `[T, E]` into
    /// `routing`. Twin: [`crate::router::reference::router_top_k`].
    pub fn router_top_k(
        &self,
        p: Router,
        logits: &DeviceBuffer<f32>,
        routing: &mut Routing,
    ) -> Result<()> {
        const OP: &str = "router_topk_f32";
        let cfg = check::router(
            p,
            (routing.n_experts, routing.top_k),
            logits.len(),
            routing.ids.len(),
        )?;
        let f = self.function(src("router.cu"), OP)?;
        let (t, e, k) = (p.n_tokens as i32, p.n_experts as i32, p.top_k as i32);
        let norm = i32::from(p.norm_topk_prob);
        let mut b = self.stream().launch_builder(&f);
        b.arg(logits.slice())
            .arg(routing.ids.slice_mut())
            .arg(routing.weights.slice_mut())
            .arg(&t)
            .arg(&e)
            .arg(&k)
            .arg(&norm);
        launch(OP, b, cfg)
    }

    /// `matmul_gemv_<storage>`: `y = x Wᵀ` for at most 8 rows, x bf16 `[rows, k]`, W `[n, k]`
    /// in bf16 or blocks, y f32. Twin: [`crate::matmul::reference::matmul`].
    pub fn matmul_gemv(
        &self,
        p: Matmul,
        x: &DeviceBuffer<Bf16>,
        w: &DeviceMatrix,
        y: &mut DeviceBuffer<f32>,
    ) -> Result<()> {
        let op = w.storage().pick(&GEMV_OPS);
        let cfg = check::gemv(op, w.storage().block_len(), p, x.len(), w.values(), y.len())?;
        let f = self.function(src("matmul.cu"), op)?;
        let (r, n, k) = (p.rows as i32, p.n as i32, p.k as i32);
        let mut b = self.stream().launch_builder(&f);
        b.arg(x.slice());
        push_matrix(&mut b, w);
        b.arg(y.slice_mut()).arg(&r).arg(&n).arg(&k);
        launch(op, b, cfg)
    }

    /// The single-group tables for a dense GEMM over `rows` rows, built once per row count.
    fn dense_rows(&self, rows: usize) -> Result<Arc<DenseRows>> {
        let mut cache = self
            .dense_rows_cache()
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(d) = cache.get(&rows) {
            return Ok(d.clone());
        }
        let tiles = rows.div_ceil(GEMM_TILE_ROWS) as u32;
        let d = Arc::new(DenseRows {
            offsets: self.upload(&[0, rows as u32], "dense GEMM offsets")?,
            tile_offsets: self.upload(&[0, tiles], "dense GEMM tiles")?,
        });
        cache.insert(rows, d.clone());
        Ok(d)
    }

    /// `y = x Wᵀ`, x bf16 `[rows, k]`, W `[n, k]` (bf16 or blocks), y f32 `[rows, n]`: the
    /// GEMV for up to 8 rows, else `moe_gemm_down_<storage>` as a one-group (dense)
    /// tensor-core GEMM, which needs `k % 32 == 0` and even `n`.
    /// Twin: [`crate::matmul::reference::matmul`].
    pub fn matmul(
        &self,
        p: Matmul,
        x: &DeviceBuffer<Bf16>,
        w: &DeviceMatrix,
        y: &mut DeviceBuffer<f32>,
    ) -> Result<()> {
        if p.rows <= GEMV_MAX_ROWS {
            return self.matmul_gemv(p, x, w, y);
        }
        let cfg = check::dense(w.storage().block_len(), p, x.len(), w.values(), y.len())?;
        let d = self.dense_rows(p.rows)?;
        self.gemm_down(x, w, &d.offsets, &d.tile_offsets, 1, p.n, p.k, y, cfg)
    }

    /// Launches `moe_gemm_down_<storage>` with `row_map = nullptr` (shapes already checked).
    #[allow(clippy::too_many_arguments)]
    fn gemm_down(
        &self,
        act: &DeviceBuffer<Bf16>,
        w2: &DeviceMatrix,
        offsets: &DeviceBuffer<u32>,
        tile_offsets: &DeviceBuffer<u32>,
        n_experts: usize,
        n: usize,
        k: usize,
        out: &mut DeviceBuffer<f32>,
        cfg: LaunchConfig,
    ) -> Result<()> {
        let op = w2.storage().pick(&DOWN_OPS);
        let f = self.function(src("moe.cu"), op)?;
        let (e, n_i, k_i) = (n_experts as i32, n as i32, k as i32);
        let null: u64 = 0; // `row_map = nullptr`: rows are read in place
        let mut b = self.stream().launch_builder(&f);
        b.arg(act.slice()).arg(&null);
        push_matrix(&mut b, w2);
        b.arg(offsets.slice())
            .arg(tile_offsets.slice())
            .arg(&e)
            .arg(&n_i)
            .arg(&k_i)
            .arg(out.slice_mut());
        launch(op, b, cfg)
    }

    /// The sparse MoE block on the device: `moe_align_u32` → `moe_gemm_swiglu_<storage>` →
    /// `moe_gemm_down_<storage>` → `moe_combine_f32`, `y` `[T, D]` f32 from `x` `[T, D]` bf16.
    /// Block weights in calls of at most [`MOE_GEMV_MAX_ASSIGNMENTS`] assignments take
    /// `moe_gemv_swiglu_<q>` / `moe_gemv_down_<q>` instead of the tile GEMMs (each product
    /// picks by its own matrix's storage).
    /// No host sync: the grids are sized from T·K and E. Twin: [`crate::moe::reference::moe`].
    #[allow(clippy::too_many_arguments)]
    pub fn moe(
        &self,
        p: Moe,
        x: &DeviceBuffer<Bf16>,
        routing: &Routing,
        experts: &DeviceExperts,
        scratch: &mut MoeScratch,
        y: &mut DeviceBuffer<f32>,
    ) -> Result<()> {
        let (w1, w3, w2) = (&experts.w1, &experts.w3, &experts.w2);
        let w_len = w1.values().min(w3.values()).min(w2.values());
        let args = MoeArgs {
            routing: (routing.n_experts, routing.top_k, routing.ids.len()),
            experts: (experts.n_experts, experts.hidden, experts.ffn, w_len),
            storage: [w1.storage(), w3.storage(), w2.storage()],
            capacity: scratch.capacity,
            x: x.len(),
            y: y.len(),
        };
        let [align, swiglu, down, combine] = check::moe(p, args)?;
        if p.n_tokens == 0 {
            return Ok(());
        }
        let a = (p.n_tokens * p.top_k) as i32;
        let (e, k) = (experts.n_experts as i32, p.top_k as i32);
        let (d, f_) = (p.hidden as i32, p.ffn as i32);
        let moe_src = src("moe.cu");

        let f = self.function(moe_src, "moe_align_u32")?;
        let mut b = self.stream().launch_builder(&f);
        b.arg(routing.ids.slice())
            .arg(&a)
            .arg(&k)
            .arg(&e)
            .arg(scratch.offsets.slice_mut())
            .arg(scratch.tile_offsets.slice_mut())
            .arg(scratch.slot_of.slice_mut())
            .arg(scratch.row_token.slice_mut());
        launch("moe_align_u32", b, align)?;

        let assignments = p.n_tokens * p.top_k;
        if let Some(op) = moe_gemv_op(w1, &SWIGLU_GEMV_OPS, assignments) {
            let f = self.function(moe_src, op)?;
            let mut b = self.stream().launch_builder(&f);
            b.arg(x.slice()).arg(scratch.row_token.slice());
            push_matrix(&mut b, w1);
            push_matrix(&mut b, w3);
            b.arg(scratch.offsets.slice())
                .arg(&e)
                .arg(&f_)
                .arg(&d)
                .arg(scratch.act.slice_mut());
            launch(
                op,
                b,
                check::moe_gemv_grid(assignments, experts.n_experts, p.ffn),
            )?;
        } else {
            self.moe_gemm_swiglu(x, experts, scratch, (e, f_, d), swiglu)?;
        }
        if let Some(op) = moe_gemv_op(w2, &DOWN_GEMV_OPS, assignments) {
            let f = self.function(moe_src, op)?;
            let mut b = self.stream().launch_builder(&f);
            b.arg(scratch.act.slice());
            push_matrix(&mut b, w2);
            b.arg(scratch.offsets.slice())
                .arg(&e)
                .arg(&d)
                .arg(&f_)
                .arg(scratch.out.slice_mut());
            launch(
                op,
                b,
                check::moe_gemv_grid(assignments, experts.n_experts, p.hidden),
            )?;
        } else {
            let (offsets, tiles) = (&scratch.offsets, &scratch.tile_offsets);
            self.gemm_down(
                &scratch.act,
                w2,
                offsets,
                tiles,
                experts.n_experts,
                p.hidden,
                p.ffn,
                &mut scratch.out,
                down,
            )?;
        }

        let f = self.function(moe_src, "moe_combine_f32")?;
        let mut b = self.stream().launch_builder(&f);
        b.arg(scratch.out.slice())
            .arg(scratch.slot_of.slice())
            .arg(routing.weights.slice())
            .arg(&k)
            .arg(&d)
            .arg(y.slice_mut());
        launch("moe_combine_f32", b, combine)
    }

    /// Launches `moe_gemm_swiglu_<storage>` (shapes already checked; `(E, F, D)` as kernel
    /// ints).
    fn moe_gemm_swiglu(
        &self,
        x: &DeviceBuffer<Bf16>,
        experts: &DeviceExperts,
        scratch: &mut MoeScratch,
        (e, f_, d): (i32, i32, i32),
        cfg: LaunchConfig,
    ) -> Result<()> {
        let op = experts.w1.storage().pick(&SWIGLU_OPS);
        let f = self.function(src("moe.cu"), op)?;
        let mut b = self.stream().launch_builder(&f);
        b.arg(x.slice()).arg(scratch.row_token.slice());
        push_matrix(&mut b, &experts.w1);
        push_matrix(&mut b, &experts.w3);
        b.arg(scratch.offsets.slice())
            .arg(scratch.tile_offsets.slice())
            .arg(&e)
            .arg(&f_)
            .arg(&d)
            .arg(scratch.act.slice_mut());
        launch(op, b, cfg)
    }

    /// `attention_prefill_<dtype>`: causal GQA of `q` f32 `[T, H·Dh]` at `positions` over the
    /// caches' first `cache_rows` rows, into `out` bf16 `[T, H·Dh]`.
    /// Twin: [`crate::attention::reference::attention`].
    #[allow(clippy::too_many_arguments)]
    pub fn attention_prefill<T: KvElement>(
        &self,
        p: Attention,
        q: &DeviceBuffer<f32>,
        positions: &Positions,
        k_cache: &DeviceBuffer<T>,
        v_cache: &DeviceBuffer<T>,
        cache_rows: usize,
        out: &mut DeviceBuffer<Bf16>,
    ) -> Result<()> {
        let op = T::PREFILL;
        let caches = [k_cache.len(), v_cache.len()];
        let (window, cfg) = check::attention_prefill(
            p,
            cache_rows,
            caches,
            positions.len(),
            positions.last(),
            q.len(),
            out.len(),
        )?;
        let f = self.function(src("attention.cu"), op)?;
        let (t, h, g, dh) = (
            positions.len() as i32,
            p.n_heads as i32,
            p.n_kv_heads as i32,
            p.head_dim as i32,
        );
        let mut b = self.stream().launch_builder(&f);
        b.arg(q.slice())
            .arg(positions.buf.slice())
            .arg(k_cache.slice())
            .arg(v_cache.slice())
            .arg(out.slice_mut())
            .arg(&t)
            .arg(&h)
            .arg(&g)
            .arg(&dh)
            .arg(&window);
        launch(op, b, cfg)
    }

    /// `attention_decode_<dtype>` + `attention_reduce_bf16` (flash-decoding): one query `q` f32
    /// `[H·Dh]` at `position` (one entry) over the caches, into `out` bf16 `[H·Dh]`. The
    /// visible keys are cut into at most 64 splits of a multiple of 32 keys.
    #[allow(clippy::too_many_arguments)]
    pub fn attention_decode<T: KvElement>(
        &self,
        p: Attention,
        q: &DeviceBuffer<f32>,
        position: &Positions,
        k_cache: &DeviceBuffer<T>,
        v_cache: &DeviceBuffer<T>,
        cache_rows: usize,
        scratch: &mut DecodeScratch,
        out: &mut DeviceBuffer<Bf16>,
    ) -> Result<()> {
        let op = T::DECODE;
        let caches = [k_cache.len(), v_cache.len()];
        let partials = [scratch.acc.len(), scratch.ml.len()];
        let plan = check::attention_decode(
            p,
            cache_rows,
            caches,
            position.len(),
            position.last(),
            q.len(),
            out.len(),
            partials,
        )?;
        let f = self.function(src("attention.cu"), op)?;
        let (h, g, dh) = (p.n_heads as i32, p.n_kv_heads as i32, p.head_dim as i32);
        let split_len = plan.split_len as i32;
        let mut b = self.stream().launch_builder(&f);
        b.arg(q.slice())
            .arg(position.buf.slice())
            .arg(k_cache.slice())
            .arg(v_cache.slice())
            .arg(scratch.acc.slice_mut())
            .arg(scratch.ml.slice_mut())
            .arg(&h)
            .arg(&g)
            .arg(&dh)
            .arg(&plan.window)
            .arg(&split_len);
        launch(op, b, check::grid(plan.splits, p.n_kv_heads, 256))?;

        const REDUCE: &str = "attention_reduce_bf16";
        let f = self.function(src("attention.cu"), REDUCE)?;
        let n_splits = plan.splits as i32;
        let mut b = self.stream().launch_builder(&f);
        b.arg(scratch.acc.slice())
            .arg(scratch.ml.slice())
            .arg(out.slice_mut())
            .arg(&n_splits)
            .arg(&h)
            .arg(&dh);
        launch(REDUCE, b, check::grid(p.n_heads, 1, MAX_HEAD_DIM as u32))
    }

    /// `add_f32`: `h[..n] += y[..n]` (the residual add).
    pub fn add(&self, h: &mut DeviceBuffer<f32>, y: &DeviceBuffer<f32>, n: usize) -> Result<()> {
        const OP: &str = "add_f32";
        let cfg = check::add(n, h.len(), y.len())?;
        let f = self.function(src("add.cu"), OP)?;
        let n = n as i32;
        let mut b = self.stream().launch_builder(&f);
        b.arg(h.slice_mut()).arg(y.slice()).arg(&n);
        launch(OP, b, cfg)
    }

    /// `argmax_f32`: the index of the largest logit of each of `rows` rows of `cols`, ties to
    /// the lower index.
    pub fn argmax(
        &self,
        logits: &DeviceBuffer<f32>,
        rows: usize,
        cols: usize,
        out: &mut DeviceBuffer<u32>,
    ) -> Result<()> {
        const OP: &str = "argmax_f32";
        let cfg = check::argmax(rows, cols, logits.len(), out.len())?;
        let f = self.function(src("argmax.cu"), OP)?;
        let c = cols as i32;
        let mut b = self.stream().launch_builder(&f);
        b.arg(logits.slice()).arg(out.slice_mut()).arg(&c);
        launch(OP, b, cfg)
    }
}
