//! `Device`: the ten ops the graph ([`crate::graph`]) is written against, and the buffers it
//! passes between them. The CPU kernel sets ([`cpu::Cpu`]) and the CUDA backend
//! ([`cuda::Cuda`]) implement it; the graph is written once, generic over it.
//!
//! Buffers are associated types, not one storage enum: the graph names what a buffer holds
//! (`F32` for the residual stream and matmul outputs, `Act` for matmul inputs, which the GPU
//! keeps in bf16), and each device picks its own representation with no runtime tag to
//! check. Everything a device needs besides the buffers (MoE work space, flash-decoding
//! partials, the RoPE table) lives in its `Work`.

pub(crate) mod cpu;
pub(crate) mod cuda;
pub(crate) mod cuda_plan;
pub(crate) mod random;

use crate::Result;
use mixtral_kernels::attention::Attention;
use mixtral_kernels::moe::Moe;
use mixtral_kernels::rmsnorm::RmsNorm;
use mixtral_kernels::rope::Rope;
use mixtral_kernels::router::Router;
use std::ops::Range;

/// One decoder layer's weights as a device holds them (`W` a matrix or norm vector, `X` the
/// layer's experts).
#[derive(Clone, Debug)]
pub struct Layer<W, X> {
    /// RMSNorm before attention `[D]`.
    pub attn_norm: W,
    /// `[H·Dh, D]`.
    pub wq: W,
    /// `[G·Dh, D]`.
    pub wk: W,
    /// `[G·Dh, D]`.
    pub wv: W,
    /// `[D, H·Dh]`.
    pub wo: W,
    /// RMSNorm before the MoE block `[D]`.
    pub moe_norm: W,
    /// Router `[E, D]`.
    pub router: W,
    /// The `E` experts.
    pub experts: X,
}

/// Every weight of a Mixtral as a device holds them.
#[derive(Clone, Debug)]
pub struct Stack<W, X> {
    /// `[V, D]`.
    pub embed: W,
    /// The decoder layers.
    pub layers: Vec<Layer<W, X>>,
    /// Final RMSNorm `[D]`.
    pub norm: W,
    /// `[V, D]` (the embedding again when tied).
    pub lm_head: W,
}

/// One sequence of a forward call: its keys and values, and its rows of the call's tokens.
pub(crate) struct Seq<'a, K> {
    pub kv: &'a mut K,
    /// Positions cached before this call.
    pub cached: usize,
    pub rows: Range<usize>,
}

/// What a sequence's key/value storage must do whatever the device.
pub(crate) trait KvStore {
    /// Forgets rows appended past `len` (a stopped call's, or a reused prefix's tail).
    fn truncate(&mut self, len: usize);
    /// Room for `positions` positions in every layer now.
    fn reserve(&mut self, positions: usize) -> Result<()>;
    /// Bytes reserved for keys and values.
    fn reserved_bytes(&self) -> usize;
}

/// The activations of one forward call over `T` tokens, kept between calls and grown to the
/// largest (so a decode step allocates nothing).
pub(crate) struct Acts<D: Device> {
    /// Token rows the buffers have room for.
    pub rows: usize,
    /// The call's token ids.
    pub ids: D::Ids,
    /// The call's positions.
    pub pos: D::Pos,
    /// Residual stream `[T, D]`.
    pub h: D::F32,
    /// Normed activations `[T, D]` (a matmul input).
    pub x: D::Act,
    /// `[T, H·Dh]`.
    pub q: D::F32,
    /// `[T, G·Dh]`.
    pub k: D::F32,
    /// `[T, G·Dh]`.
    pub v: D::F32,
    /// Attention output `[T, H·Dh]` (a matmul input).
    pub att: D::Act,
    /// o_proj or MoE output `[T, D]`.
    pub out: D::F32,
    /// Router logits `[T, E]`.
    pub router: D::F32,
    /// Chosen experts and their weights `[T, K]`.
    pub routing: D::Routing,
    /// The rows the head reads, gathered `[rows, D]`.
    pub last: D::F32,
    /// Their normed state `[rows, D]`.
    pub last_x: D::Act,
    /// `[rows, V]`.
    pub logits: D::F32,
    /// The device's own work space.
    pub work: D::Work,
}

/// The ops of the graph on one device. Sizes are in elements; `n` is the call's token count.
/// Every op may fail on a device (a launch, an allocation): the CPU's never do.
pub(crate) trait Device {
    /// A weight matrix `[n, k]` or norm vector.
    type Weight;
    /// One layer's experts.
    type Experts;
    /// f32 activations.
    type F32;
    /// Matmul inputs (f32 on the CPU, bf16 on the GPU).
    type Act;
    /// Chosen experts and weights `[T, K]`.
    type Routing;
    /// A call's token ids.
    type Ids;
    /// A call's positions (and what RoPE needs for them).
    type Pos;
    /// One sequence's keys and values.
    type Kv: KvStore;
    /// Everything else the device's ops need.
    type Work;

    /// Empty activations (grown by [`Device::begin`]).
    fn acts(&self, c: &crate::Config) -> Result<Acts<Self>>
    where
        Self: Sized;

    /// Readies `a` for a call over `tokens` at `positions` (sequences at `seqs` rows): grows
    /// the buffers to `T` rows and hands the ids and positions to the device.
    fn begin(
        &self,
        c: &crate::Config,
        a: &mut Acts<Self>,
        tokens: &[u32],
        positions: &[usize],
        seqs: &[Seq<'_, Self::Kv>],
    ) -> Result<()>
    where
        Self: Sized;

    /// `h = table[ids]` widened to f32: `[T, D]`.
    fn embed(
        &self,
        table: &Self::Weight,
        ids: &Self::Ids,
        d: usize,
        h: &mut Self::F32,
    ) -> Result<()>;

    /// `y = rmsnorm(x) · w` over `p.rows` rows.
    fn rms_norm(
        &self,
        p: RmsNorm,
        x: &Self::F32,
        w: &Self::Weight,
        y: &mut Self::Act,
    ) -> Result<()>;

    /// `h += y` over the first `len` elements.
    fn add(&self, h: &mut Self::F32, y: &Self::F32, len: usize) -> Result<()>;

    /// `y = x Wᵀ` for each `(W, y)`, all of the same input `x` of `rows` rows (the q, k, v
    /// projections: one decode token runs them as one GEMV region where the device can).
    /// `exact`: f32 activations whatever the precision (the router: a rounding must not flip
    /// an expert choice).
    fn matmul(
        &self,
        rows: usize,
        x: &Self::Act,
        jobs: &mut [(&Self::Weight, &mut Self::F32)],
        exact: bool,
    ) -> Result<()>;

    /// Rotates queries and keys (`rope`: for `H` and `G` heads) at the call's positions,
    /// appends keys and values to each sequence's cache at layer `l`, and attends each
    /// sequence's queries over its cache into `out` `[T, H·Dh]`.
    #[expect(
        clippy::too_many_arguments,
        reason = "the layer, q/k/v, the caches and the output"
    )]
    fn attention(
        &self,
        l: usize,
        p: Attention,
        rope: [Rope; 2],
        a: AttentionIo<'_, Self>,
        seqs: &mut [Seq<'_, Self::Kv>],
        work: &mut Self::Work,
        out: &mut Self::Act,
    ) -> Result<()>
    where
        Self: Sized;

    /// Softmax, top-k and renormalisation of router logits `[T, E]`.
    fn top_k(&self, p: Router, logits: &Self::F32, routing: &mut Self::Routing) -> Result<()>;

    /// `y = Σ_k w_k · expert_k(x)` over each token's chosen experts: `[T, D]`.
    #[expect(
        clippy::too_many_arguments,
        reason = "the block's input, routing, experts, work space and output"
    )]
    fn moe(
        &self,
        p: Moe,
        x: &Self::Act,
        routing: &Self::Routing,
        experts: &Self::Experts,
        work: &mut Self::Work,
        y: &mut Self::F32,
    ) -> Result<()>;

    /// Copies rows `rows` (each of `d`) of `src` into consecutive rows of `dst`.
    fn gather(&self, src: &Self::F32, rows: &[usize], d: usize, dst: &mut Self::F32) -> Result<()>;

    /// Lets `f` read and change the first `len` elements of `x` on the host (steering: the
    /// CPU hands its buffer over; a GPU copies `len` values down and back).
    fn edit(&self, x: &mut Self::F32, len: usize, f: &mut dyn FnMut(&mut [f32])) -> Result<()>;

    /// Lets `f` read and change the first `len` chosen experts and weights on the host.
    fn edit_routing(
        &self,
        r: &mut Self::Routing,
        len: usize,
        f: &mut dyn FnMut(&mut [u32], &mut [f32]),
    ) -> Result<()>;

    /// Waits for the work queued so far (a GPU queues a whole call ahead of itself; a stop
    /// flag is only honoured if checked after the work before it is done). The CPU's ops
    /// are done when they return.
    fn sync(&self) -> Result<()> {
        Ok(())
    }

    /// Whether `kv` was made for this device and model shape (a cache from another model
    /// must be refused, not indexed out of range).
    fn fits(&self, c: &crate::Config, kv: &Self::Kv) -> bool;

    /// Appends the first `len` elements of `x` to `out` (records and logits).
    fn read(&self, x: &Self::F32, len: usize, out: &mut Vec<f32>) -> Result<()>;

    /// Appends the first `len` elements of a matmul input to `out`, widened to f32.
    fn read_act(&self, x: &Self::Act, len: usize, out: &mut Vec<f32>) -> Result<()>;
}

/// The attention op's inputs: queries, keys and values of the call, and its positions.
pub(crate) struct AttentionIo<'a, D: Device> {
    pub pos: &'a D::Pos,
    pub q: &'a mut D::F32,
    pub k: &'a mut D::F32,
    pub v: &'a D::F32,
}
