//! `Model`: a Mixtral placed on a device, and the calls that run it over a [`KvCache`]. Every
//! call goes through the one graph ([`crate::graph::forward`]); the device is chosen once,
//! when the model is placed, and only this file looks at it again.

use crate::cache::Store;
use crate::device::cpu::Cpu;
use crate::device::cuda::{Cuda, CudaKv, DeviceStack};
use crate::device::{Acts, Device as _, Seq, Stack};
use crate::graph::{self, Head, Records, Step as GraphStep};
use crate::input::check_input;
use crate::steer::Intervention;
use crate::{Checkpoint, Config, Kernels, KvCache, KvDType, Result, RoutingTrace, Weights};
use mixtral_kernels::cuda::CudaBackend;
use mixtral_kernels::matmul::Precision;
use mixtral_kernels::{Isa, Weight};
use std::sync::Mutex;
use std::sync::atomic::AtomicBool;

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
    pub(crate) fn new(b: usize, c: usize) -> Recorded {
        Recorded {
            dims: [0, b, c],
            data: Vec::new(),
        }
    }

    /// Appends one `[B, C]` slice.
    pub(crate) fn push(&mut self, slice: &[f32]) {
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

/// Where a model runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum DeviceId {
    /// The host CPU: the fast SIMD kernels (or their reference twins).
    #[default]
    Cpu,
    /// An NVIDIA GPU (by ordinal): weights uploaded once (GGUF blocks kept, else bf16), the
    /// KV cache and every activation on the device. Fails with a clear error where no CUDA
    /// driver is found.
    Cuda(usize),
}

impl std::str::FromStr for DeviceId {
    type Err = String;

    /// `cpu`, `cuda` (device 0) or `cuda:N`.
    fn from_str(s: &str) -> std::result::Result<DeviceId, String> {
        match s {
            "cpu" => Ok(DeviceId::Cpu),
            "cuda" => Ok(DeviceId::Cuda(0)),
            _ => s
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(DeviceId::Cuda)
                .ok_or_else(|| format!("unknown device `{s}` (expected cpu, cuda or cuda:N)")),
        }
    }
}

impl std::fmt::Display for DeviceId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeviceId::Cpu => f.write_str("cpu"),
            DeviceId::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

/// How a model is placed: the device and every choice that changes its numerics. `None`
/// picks the device's default; a choice the device has no path for is
/// [`crate::Error::Unsupported`] at [`Model::place`], never ignored.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Placement {
    /// The device.
    pub device: DeviceId,
    /// Matmul activation precision. Default: on the CPU `Int8` for block-quantized weights,
    /// else `F32`; on CUDA `Bf16` (its only path: others are `Unsupported` there).
    pub precision: Option<Precision>,
    /// KV cache element type. Default: `F32` at f32 precision and `F16` otherwise on the CPU;
    /// `Bf16` on CUDA.
    pub kv_dtype: Option<KvDType>,
    /// Every matmul in one summation order whatever its row count (CPU only).
    pub batch_invariant: bool,
    /// Touch every weight page at load, reporting progress, so the first call does not
    /// page them in (the CPU reads weights where they are mapped; a GPU reads them once to
    /// upload them, which pages them in anyway).
    pub prefault: bool,
    /// Copy the quantized matrices into the CPU kernels' interleaved layout at load
    /// ([`mixtral_kernels::qdot::interleave`]; Q8_0, Q4_K and Q6_K), releasing the file's pages as
    /// each is done. `None`: on where it is measured faster (int8 precision on AVX2), off
    /// elsewhere. `Some(true)` is unsupported where no kernel reads the layout fast: a GPU,
    /// another precision than int8, an ISA without the x86 kernels.
    pub repack: Option<bool>,
}

/// The device a [`Model`] runs on, with its copy of the weights where it needs one.
enum Exec {
    /// The host: the checkpoint's borrowed tensors are the weights.
    Cpu(Cpu),
    /// A GPU.
    Cuda(Box<Gpu>),
}

/// A model on a GPU: weights uploaded once, and one set of activations, used by one call at
/// a time (one stream runs one call at a time anyway).
struct Gpu {
    device: Cuda,
    weights: DeviceStack,
    acts: Mutex<Option<Acts<Cuda>>>,
}

/// A Mixtral ready to run: config, borrowed weights (every view checked) and the device.
pub struct Model {
    config: Config,
    weights: Weights,
    exec: Exec,
    kv_dtype: KvDType,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("device", &self.device())
            .field("precision", &self.precision())
            .field("kv_dtype", &self.kv_dtype)
            .finish_non_exhaustive()
    }
}

/// Whether any matmul weight is block-quantized (a quantized GGUF file).
fn has_quantized_weights(w: &Weights) -> bool {
    w.tensors().iter().any(|t| t.dtype().is_quantized())
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
            exec: Exec::Cpu(Cpu {
                kernels: Kernels::default(),
                invariant: false,
            }),
            kv_dtype: KvDType::default(),
        })
    }

    /// The same model with its quantized matrices in the CPU kernels' interleaved layout
    /// ([`Placement::repack`]; `progress(done, total)` in bytes), the file's pages of each
    /// released once it is copied. Matrices without the layout stay as they are.
    pub fn with_interleaved_weights(
        mut self,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Model> {
        if let Exec::Cuda(_) = self.exec {
            return Err(crate::Error::Unsupported {
                feature: "repacking weights".into(),
                device: self.device().to_string(),
                reason: "the interleaved layout is the CPU kernels'; the GPU holds its own copy",
            });
        }
        crate::repack::interleave_weights(&mut self.weights, progress)?;
        Ok(self)
    }

    /// Bytes of the weights held in the CPU kernels' interleaved layout
    /// ([`Model::with_interleaved_weights`]); 0 when none are.
    pub fn interleaved_weight_bytes(&self) -> usize {
        self.weights
            .tensors()
            .iter()
            .filter(|t| t.layout() == mixtral_tensor::Layout::Rows8)
            .map(|t| t.as_bytes().len())
            .sum()
    }

    /// Opens a model directory ([`Checkpoint::open`]) and builds the model.
    pub fn open(dir: impl AsRef<std::path::Path>) -> Result<Model> {
        Model::new(Checkpoint::open(dir)?)
    }

    /// Places a checkpoint as `placement` says: on the CPU with the kernels of the best ISA
    /// here, or uploaded to a GPU (`progress(done, total)` in device bytes as weights
    /// stream). Every option is checked against the device first:
    /// [`crate::Error::Unsupported`] names one the device has no path for.
    pub fn place(
        ckpt: Checkpoint,
        placement: Placement,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Model> {
        let model = Model::new(ckpt)?;
        let quantized = has_quantized_weights(&model.weights);
        match placement.device {
            DeviceId::Cpu => {
                let precision = placement.precision.unwrap_or(match quantized {
                    true => Precision::Int8,
                    false => Precision::F32,
                });
                let isa = Isa::detect();
                let int8 = precision == Precision::Int8;
                if placement.repack == Some(true) && !(int8 && crate::repack::has_kernels(isa)) {
                    return Err(crate::Error::Unsupported {
                        feature: "repacking weights".into(),
                        device: format!(
                            "{} ({}, {precision:?} precision)",
                            placement.device,
                            isa.name()
                        )
                        .to_lowercase(),
                        reason: "the interleaved layout is read fast only by the int8 kernels on \
                                 x86 (AVX2); other precisions and ISAs would decode it block by \
                                 block",
                    });
                }
                let repack = placement.repack.unwrap_or(int8 && crate::repack::pays(isa));
                let mut model = model;
                if repack {
                    model = model.with_interleaved_weights(progress)?;
                }
                if placement.prefault {
                    prefault(&model.weights, progress);
                }
                let kv = placement.kv_dtype.unwrap_or(match precision {
                    Precision::F32 => KvDType::F32,
                    _ => KvDType::F16,
                });
                Ok(model
                    .with_kernels(Kernels::cpu(isa, precision))
                    .with_kv_dtype(kv)
                    .with_batch_invariance(placement.batch_invariant))
            }
            DeviceId::Cuda(ordinal) => {
                let device = placement.device.to_string();
                match placement.precision {
                    None | Some(Precision::Bf16) => {}
                    Some(p) => {
                        return Err(crate::Error::Unsupported {
                            feature: format!("precision {p:?}").to_lowercase(),
                            device,
                            reason: "the CUDA backend multiplies bf16 activations by bf16 or \
                                     block-decoded weights (accumulating in f32); use --precision \
                                     bf16 or auto",
                        });
                    }
                }
                if placement.repack == Some(true) {
                    return Err(crate::Error::Unsupported {
                        feature: "repacking weights".into(),
                        device,
                        reason: "the interleaved layout is the CPU kernels'; the GPU uploads \
                                 weights in its own",
                    });
                }
                if placement.batch_invariant {
                    return Err(crate::Error::Unsupported {
                        feature: "batch invariance".into(),
                        device,
                        reason: "the GPU's matmuls change summation order with their row count",
                    });
                }
                let gpu = CudaBackend::new(ordinal)?;
                let kv = placement.kv_dtype.unwrap_or(KvDType::Bf16);
                Ok(model.on_gpu(&gpu, progress)?.with_kv_dtype(kv))
            }
        }
    }

    /// What this model would take on a GPU ([`DevicePlan`](crate::DevicePlan)): its weights
    /// as the device stores them (GGUF blocks of the types the kernels decode stay blocks, the
    /// rest bf16), one sequence's `kv_dtype` cache at `context` positions (at most the
    /// model's), and the working memory of calls of `rows` tokens. Pure arithmetic: no GPU is
    /// needed. A model already on a GPU, or made there, has no host weights to count: its
    /// plan's weights are 0.
    pub fn cuda_plan(&self, context: usize, kv_dtype: KvDType, rows: usize) -> crate::DevicePlan {
        let context = context.min(self.config.max_position_embeddings);
        crate::device::cuda_plan::plan(&self.config, &self.weights, context, kv_dtype, rows)
    }

    /// The same model uploaded to `gpu` (weights streamed with `progress(done, total)` in
    /// device bytes: GGUF blocks as they are, the rest as bf16). Fails with `OutOfMemory`,
    /// naming the sizes, before copying anything when the weights, one call's working memory
    /// and a first block of KV cache cannot fit in the card's free memory.
    pub fn on_gpu(
        mut self,
        gpu: &CudaBackend,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Model> {
        let device = Cuda { gpu: gpu.clone() };
        let weights = device.upload(&self.config, &self.weights, progress)?;
        self.exec = Exec::Cuda(Box::new(Gpu {
            device,
            weights,
            acts: Mutex::new(None),
        }));
        self.kv_dtype = KvDType::Bf16;
        Ok(self)
    }

    /// A model of `config`'s shape with random weights stored as `mix` says (bf16, or the
    /// block types of a llama.cpp file of that type), made on `gpu` (no host copy, and no host
    /// weights: [`Model::weights`] then holds none of them): for benchmarks at real sizes.
    pub fn random_on_gpu(
        config: &Config,
        gpu: &CudaBackend,
        mix: crate::WeightMix,
        seed: u64,
    ) -> Result<Model> {
        let device = Cuda { gpu: gpu.clone() };
        let weights = device.random(config, mix, seed)?;
        let empty = mixtral_tensor::Tensor::from_vec::<f32>(vec![], [0usize])?;
        Ok(Model {
            config: config.clone(),
            weights: Stack {
                embed: empty.clone(),
                layers: vec![],
                norm: empty.clone(),
                lm_head: empty,
            },
            exec: Exec::Cuda(Box::new(Gpu {
                device,
                weights,
                acts: Mutex::new(None),
            })),
            kv_dtype: KvDType::Bf16,
        })
    }

    /// The same model running other CPU kernels (e.g. [`Kernels::Reference`] as an oracle);
    /// a GPU model is left as it is.
    pub fn with_kernels(mut self, kernels: Kernels) -> Model {
        if let Exec::Cpu(cpu) = &mut self.exec {
            cpu.kernels = kernels;
        }
        self
    }

    /// The CPU kernels in use (`None` on a GPU).
    pub fn kernels(&self) -> Option<Kernels> {
        match &self.exec {
            Exec::Cpu(cpu) => Some(cpu.kernels),
            Exec::Cuda(_) => None,
        }
    }

    /// The matmul activation precision.
    pub fn precision(&self) -> Precision {
        match &self.exec {
            Exec::Cpu(cpu) => cpu.kernels.precision(),
            Exec::Cuda(_) => Precision::Bf16,
        }
    }

    /// The device the model runs on.
    pub fn device(&self) -> DeviceId {
        match &self.exec {
            Exec::Cpu(_) => DeviceId::Cpu,
            Exec::Cuda(gpu) => DeviceId::Cuda(gpu.device.gpu.ordinal()),
        }
    }

    /// The device's name for people (`cpu (avx512bf16)`, `cuda:0 (NVIDIA H100 80GB HBM3)`).
    pub fn device_name(&self) -> String {
        match &self.exec {
            Exec::Cpu(cpu) => match cpu.kernels {
                Kernels::Reference => "cpu (reference kernels)".into(),
                Kernels::Cpu(isa) | Kernels::CpuBf16(isa) | Kernels::CpuInt8(isa) => {
                    format!("cpu ({})", isa.name())
                }
            },
            Exec::Cuda(gpu) => {
                let gpu = &gpu.device.gpu;
                format!("cuda:{} ({})", gpu.ordinal(), gpu.name())
            }
        }
    }

    /// The architecture.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The checkpoint's weights (borrowed from its mapping; on a GPU, what was uploaded).
    pub fn weights(&self) -> &Weights {
        &self.weights
    }

    /// An empty KV cache for one sequence on the model's device.
    pub fn new_cache(&self) -> KvCache {
        let c = &self.config;
        match &self.exec {
            Exec::Cpu(_) => KvCache::with_dtype(
                c.num_hidden_layers,
                c.num_key_value_heads,
                c.head_dim,
                self.kv_dtype,
            ),
            Exec::Cuda(gpu) => {
                KvCache::from_store(Store::Cuda(CudaKv::new(&gpu.device.gpu, c, self.kv_dtype)))
            }
        }
    }

    /// An empty cache that takes its pages from `pool` as it grows and gives them back when
    /// dropped (a scheduler's sequences: their budget is the pool).
    ///
    /// # Errors
    /// [`Error::Unsupported`](crate::Error::Unsupported) on a GPU (its caches are device
    /// buffers of their own); [`Error::KvPool`](crate::Error::KvPool) when the pool was made
    /// for another shape or element type.
    pub fn new_paged_cache(&self, pool: &crate::KvPool) -> Result<KvCache> {
        match &self.exec {
            Exec::Cpu(_) => {
                let kv = crate::kv_cache::HostKv::paged(pool);
                if !kv.fits(&self.config) || kv.dtype() != self.kv_dtype {
                    return Err(crate::Error::KvPool(
                        "the pool was made for another model shape or KV dtype",
                    ));
                }
                Ok(KvCache::from_store(Store::Host(kv, None)))
            }
            Exec::Cuda(_) => Err(crate::Error::Unsupported {
                feature: "a paged KV cache".into(),
                device: self.device().to_string(),
                reason: "GPU caches are device buffers of their own (the scheduler reserves them)",
            }),
        }
    }

    /// [`Model::new_paged_cache`], starting from the pages of `pool` that other caches
    /// published ([`KvCache::publish_prefix`]) holding the longest run of whole pages of
    /// `ids`, at most `max_positions` positions; returns the cache and the positions it
    /// holds, whose keys and values need no computing. Only caches made with the same
    /// `salt` share pages (empty: no salt).
    ///
    /// # Errors
    /// As [`Model::new_paged_cache`].
    pub fn new_paged_cache_from(
        &self,
        pool: &crate::KvPool,
        ids: &[u32],
        max_positions: usize,
        salt: &[u8],
    ) -> Result<(KvCache, usize)> {
        // The checks and the refusal on a GPU, once.
        drop(self.new_paged_cache(pool)?);
        let (kv, held) = crate::kv_cache::HostKv::paged_from(pool, ids, max_positions, salt);
        let mut cache = KvCache::from_store(Store::Host(kv, None));
        cache.commit(held);
        Ok((cache, held))
    }

    /// Checks a whole prompt for an empty cache before any of it runs: non-empty, every id
    /// in the vocabulary, fitting the context (the errors a forward call would give).
    pub fn check_prompt(&self, tokens: &[u32]) -> Result<()> {
        crate::input::check_prompt(&self.config, tokens)
    }

    /// The same model making caches that store keys and values as `dtype`
    /// ([`Model::new_cache`]), on either device.
    pub fn with_kv_dtype(mut self, dtype: KvDType) -> Model {
        self.kv_dtype = dtype;
        self
    }

    /// The same model computing every row of every matmul in one summation order, whatever
    /// the number of rows in the call: a token's logits are then the same bits whether it
    /// runs alone, in a prompt chunk of any size, or batched with other sequences
    /// ([`Model::forward_batch`]), so seeded sampling is reproducible across batch shapes.
    /// Off by default: one-token calls (decode) lose the GEMV's streaming loops
    /// (docs/performance.md measures the cost). CPU only ([`Model::place`] refuses it on a
    /// GPU).
    pub fn with_batch_invariance(mut self, on: bool) -> Model {
        if let Exec::Cpu(cpu) = &mut self.exec {
            cpu.invariant = on;
        }
        self
    }

    /// Whether [`Model::with_batch_invariance`] is on.
    pub fn batch_invariant(&self) -> bool {
        matches!(&self.exec, Exec::Cpu(cpu) if cpu.invariant)
    }

    /// The element type of the caches [`Model::new_cache`] makes.
    pub fn kv_dtype(&self) -> KvDType {
        self.kv_dtype
    }

    /// Runs `tokens` at `positions` (which must continue the cache: `cache.len()`,
    /// `cache.len() + 1`, …) and appends their keys and values to `cache`: [`Model::forward`]
    /// with no intervention and no stop flag.
    pub fn prefill(
        &self,
        tokens: &[u32],
        positions: &[usize],
        cache: &mut KvCache,
        opts: ForwardOptions,
    ) -> Result<Output> {
        self.forward(Step::new(tokens, positions).options(opts), cache)
    }

    /// Runs one [`Step`] of one sequence: its tokens continue `cache` (their keys and values
    /// are appended), under the step's intervention on the router if any, recording and
    /// returning what its options ask for.
    ///
    /// The cache remembers the intervention it was filled under: continuing it under another
    /// is an error ([`crate::Error::CacheSteering`]), never a silent mix. A step's stop flag,
    /// set from another thread, is checked before each layer, so a long prompt stops within
    /// one layer's time with [`crate::Error::Stopped`] and the cache as it was before the call.
    pub fn forward(&self, step: Step<'_>, cache: &mut KvCache) -> Result<Output> {
        let none = Intervention::default();
        let steer = step.steer.unwrap_or(&none);
        let (tokens, opts) = (step.tokens, step.options);
        let mut rec = Records::new(&self.config, tokens.len(), opts, steer.top_k(&self.config));
        let graph_step = GraphStep {
            tokens,
            positions: step.positions,
            steer,
            head: Head::Tail(opts.logits.rows(tokens.len())),
            stop: step.stop,
        };
        let rows = self.run_one(&graph_step, cache, &mut rec)?;
        Ok(Output {
            logits: cache.logits.clone(),
            rows,
            routing: rec.routing,
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
    /// cache: a decode step that allocates nothing on the CPU.
    pub fn decode_logits<'c>(
        &self,
        token: u32,
        position: usize,
        cache: &'c mut KvCache,
    ) -> Result<&'c [f32]> {
        self.decode_logits_steered(token, position, cache, &Intervention::default())
    }

    /// [`Model::decode_logits`] under an [`Intervention`] (see [`Model::forward`]).
    pub fn decode_logits_steered<'c>(
        &self,
        token: u32,
        position: usize,
        cache: &'c mut KvCache,
        steer: &Intervention,
    ) -> Result<&'c [f32]> {
        let mut rec = Records::default();
        let step = GraphStep {
            tokens: &[token],
            positions: &[position],
            steer,
            head: Head::Tail(1),
            stop: None,
        };
        self.run_one(&step, cache, &mut rec)?;
        Ok(&cache.logits)
    }

    /// Greedy step: runs `tokens` (continuing `cache`) and returns the argmax of the last
    /// row's logits (the first index of the largest, as the sampler's greedy path picks).
    pub fn greedy(&self, tokens: &[u32], positions: &[usize], cache: &mut KvCache) -> Result<u32> {
        let step = GraphStep {
            tokens,
            positions,
            steer: &Intervention::default(),
            head: Head::Tail(1),
            stop: None,
        };
        self.run_one(&step, cache, &mut Records::default())?;
        let best = cache.logits.iter().enumerate().fold(
            (0, f32::NEG_INFINITY),
            |(bi, bv), (i, &v)| match v > bv {
                true => (i, v),
                false => (bi, bv),
            },
        );
        Ok(best.0 as u32)
    }

    /// One sequence's call: checks it, runs the graph on the model's device, commits the
    /// cache and leaves the logits in `cache.logits`. Returns the logits' row count.
    fn run_one(
        &self,
        step: &GraphStep<'_>,
        cache: &mut KvCache,
        rec: &mut Records,
    ) -> Result<usize> {
        check_input(&self.config, step.tokens, step.positions, cache.len())?;
        step.steer.validate(&self.config)?;
        cache.claim_steering(step.steer.fingerprint())?;
        let (c, n, cached) = (&self.config, step.tokens.len(), cache.len());
        let rows = 0..n;
        let KvCache { store, logits, .. } = cache;
        let got = match (&self.exec, store) {
            (Exec::Cpu(cpu), Store::Host(kv, acts)) if cpu.fits(c, kv) => {
                let acts = acts.get_or_insert_with(Box::default);
                let mut seqs = [Seq { kv, cached, rows }];
                run(cpu, c, &self.weights, &mut seqs, acts, step, rec, logits)
            }
            (Exec::Cuda(gpu), Store::Cuda(kv)) if gpu.device.fits(c, kv) => {
                let Gpu {
                    device,
                    weights,
                    acts,
                } = &**gpu;
                let mut slot = acts.lock().unwrap_or_else(|p| p.into_inner());
                let acts = match &mut *slot {
                    Some(a) => a,
                    None => slot.insert(device.acts(c)?),
                };
                let mut seqs = [Seq { kv, cached, rows }];
                run(device, c, weights, &mut seqs, acts, step, rec, logits)
            }
            _ => Err(self.foreign_cache()),
        };
        let rows = got?;
        cache.commit(n);
        Ok(rows)
    }

    /// The error for a cache another device's model made.
    fn foreign_cache(&self) -> crate::Error {
        crate::Error::Unsupported {
            feature: "a KV cache made by another model or device".into(),
            device: self.device().to_string(),
            reason: "make caches with this model's new_cache",
        }
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
            acts,
            tokens,
            positions,
            head,
            logits,
        } = scratch;
        tokens.clear();
        positions.clear();
        head.clear();
        let none = Intervention::default();
        // Each item's cached length and its rows of the call.
        let mut spans = Vec::with_capacity(items.len());
        for item in items.iter() {
            let start = item.cache.len();
            let pos = start..start.saturating_add(item.tokens.len());
            let first = positions.len();
            positions.extend(pos);
            check_input(&self.config, item.tokens, &positions[first..], start)?;
            item.cache.check_steering(none.fingerprint())?;
            tokens.extend_from_slice(item.tokens);
            spans.push((start, first..positions.len()));
            if item.logits {
                head.push(positions.len() - 1);
            }
        }
        if tokens.is_empty() {
            return Err(crate::Error::EmptyInput);
        }
        let step = GraphStep {
            tokens,
            positions,
            steer: &none,
            head: Head::Rows(head),
            stop: None,
        };
        let mut rec = Records::default();
        let c = &self.config;
        let got = match &self.exec {
            Exec::Cpu(cpu) => {
                let mut seqs = self.seqs(items, spans, |s| match s {
                    Store::Host(kv, _) if cpu.fits(c, kv) => Some(kv),
                    _ => None,
                })?;
                let acts = acts.get_or_insert_with(Box::default);
                run(
                    cpu,
                    c,
                    &self.weights,
                    &mut seqs,
                    acts,
                    &step,
                    &mut rec,
                    logits,
                )
            }
            Exec::Cuda(gpu) => {
                let mut seqs = self.seqs(items, spans, |s| match s {
                    Store::Cuda(kv) if gpu.device.fits(c, kv) => Some(kv),
                    _ => None,
                })?;
                let mut slot = gpu.acts.lock().unwrap_or_else(|p| p.into_inner());
                let acts = match &mut *slot {
                    Some(a) => a,
                    None => slot.insert(gpu.device.acts(c)?),
                };
                run(
                    &gpu.device,
                    c,
                    &gpu.weights,
                    &mut seqs,
                    acts,
                    &step,
                    &mut rec,
                    logits,
                )
            }
        };
        got?;
        for item in items.iter_mut() {
            item.cache.claim_steering(none.fingerprint())?;
            item.cache.commit(item.tokens.len());
        }
        Ok(logits)
    }
}

/// Touches one byte per page of every weight, reporting progress, so later reads hit memory.
fn prefault(weights: &Weights, progress: &mut dyn FnMut(usize, usize)) {
    const PAGE: usize = 4096;
    let tensors = weights.tensors();
    let total: usize = tensors.iter().map(|t| t.as_bytes().len()).sum();
    let mut done = 0;
    for t in tensors {
        let bytes = t.as_bytes();
        let mut sum = 0u8;
        for i in (0..bytes.len()).step_by(PAGE) {
            sum = sum.wrapping_add(bytes[i]);
        }
        std::hint::black_box(sum);
        done += bytes.len();
        progress(done, total);
    }
}

impl Model {
    /// Each item's cache storage on this model's device (`kv` picks it out of a cache, or
    /// says it is another device's), with its cached length and its rows of the call.
    fn seqs<'a, K>(
        &self,
        items: &'a mut [BatchItem<'_>],
        spans: Vec<(usize, std::ops::Range<usize>)>,
        kv: impl Fn(&mut Store) -> Option<&mut K>,
    ) -> Result<Vec<Seq<'a, K>>> {
        let mut seqs = Vec::with_capacity(items.len());
        for (item, (cached, rows)) in items.iter_mut().zip(spans) {
            let kv = kv(&mut item.cache.store).ok_or_else(|| self.foreign_cache())?;
            seqs.push(Seq { kv, cached, rows });
        }
        Ok(seqs)
    }
}

/// The graph on one device, then its logits copied to `logits` (`[rows, V]`); returns the
/// row count.
#[expect(
    clippy::too_many_arguments,
    reason = "the device, model, sequences and activations, and the call's step, records and output"
)]
fn run<D: crate::device::Device>(
    d: &D,
    c: &Config,
    w: &Stack<D::Weight, D::Experts>,
    seqs: &mut [Seq<'_, D::Kv>],
    acts: &mut Acts<D>,
    step: &GraphStep<'_>,
    rec: &mut Records,
    logits: &mut Vec<f32>,
) -> Result<usize> {
    let rows = graph::forward(d, c, w, seqs, acts, step, rec)?;
    logits.clear();
    d.read(&acts.logits, rows * c.vocab_size, logits)?;
    Ok(rows)
}

/// One forward call of one sequence ([`Model::forward`]): tokens that continue a cache at
/// their positions, what to return and record, and optionally an intervention on the router
/// and a flag that stops the call between layers. Build it with [`Step::new`] and the
/// setters:
///
/// ```no_run
/// # fn demo(model: &mixtral_model::Model, iv: &mixtral_model::Intervention) -> mixtral_model::Result<()> {
/// use mixtral_model::{ForwardOptions, Logits, Step};
/// let stop = std::sync::atomic::AtomicBool::new(false);
/// let mut cache = model.new_cache();
/// let opts = ForwardOptions { logits: Logits::Last, ..ForwardOptions::default() };
/// let step = Step::new(&[1, 2, 3], &[0, 1, 2]).options(opts).steer(iv).stop(&stop);
/// let out = model.forward(step, &mut cache)?;
/// # Ok(()) }
/// ```
#[derive(Clone, Copy, Debug)]
pub struct Step<'a> {
    /// The tokens, continuing the cache.
    pub tokens: &'a [u32],
    /// Their positions: `cache.len()`, `cache.len() + 1`, ….
    pub positions: &'a [usize],
    /// Which logits rows to return and what to record.
    pub options: ForwardOptions,
    /// An intervention on the router (none: the model as trained).
    pub steer: Option<&'a Intervention>,
    /// Set from another thread to stop the call before its next layer.
    pub stop: Option<&'a AtomicBool>,
}

impl<'a> Step<'a> {
    /// `tokens` at `positions`, default options, no intervention, no stop flag.
    pub fn new(tokens: &'a [u32], positions: &'a [usize]) -> Step<'a> {
        Step {
            tokens,
            positions,
            options: ForwardOptions::default(),
            steer: None,
            stop: None,
        }
    }

    /// With `options` (logits rows, recording).
    pub fn options(self, options: ForwardOptions) -> Step<'a> {
        Step { options, ..self }
    }

    /// Under `steer`.
    pub fn steer(self, steer: &'a Intervention) -> Step<'a> {
        Step {
            steer: Some(steer),
            ..self
        }
    }

    /// Stoppable through `stop` (a flag, or `None`: not stoppable). A call without a flag
    /// reads none, so a GPU never waits for its queue between layers to read one.
    pub fn stop(self, stop: impl Into<Option<&'a AtomicBool>>) -> Step<'a> {
        Step {
            stop: stop.into(),
            ..self
        }
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

/// The host buffers of [`Model::forward_batch`] calls, sized by the largest step and reused
/// (what a [`KvCache`] holds for its own sequence's calls).
#[derive(Default)]
pub struct BatchScratch {
    acts: Option<Box<Acts<Cpu>>>,
    tokens: Vec<u32>,
    positions: Vec<usize>,
    head: Vec<usize>,
    logits: Vec<f32>,
}

impl std::fmt::Debug for BatchScratch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchScratch")
            .field("tokens", &self.tokens.len())
            .finish_non_exhaustive()
    }
}

impl BatchScratch {
    /// The logits the last [`Model::forward_batch`] call returned (`[rows, V]`).
    pub fn logits(&self) -> &[f32] {
        &self.logits
    }
}
