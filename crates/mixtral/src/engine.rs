//! `Engine`: a loaded model with its tokenizer, worker threads and generation defaults.

use crate::{Defaults, Error, Result};
use mixtral_kernels::matmul::Precision as KernelPrecision;
use mixtral_kernels::threads::Team;
use mixtral_model::{Checkpoint, Config, ForwardOptions, Logits, Model, Output, Placement};
use mixtral_tokenizer::Tokenizer;
use std::path::{Path, PathBuf};

/// Where the model runs: the CPU, or an NVIDIA GPU by ordinal (`cpu`, `cuda`, `cuda:N`).
pub use mixtral_model::DeviceId as Device;

/// The precision activations are computed in ([`LoadOptions::precision`], the CLI's
/// `--precision`). Weights stay in their stored dtype.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Precision {
    /// `Int8` when the checkpoint's matmul weights include block-quantized ones (a quantized
    /// GGUF file), `F32` otherwise: the exact path where it costs little, llama.cpp's
    /// numerics where the exact one is slow. Measured on bench-1b (2 threads, AVX-512): the
    /// exact path decodes a Q4_K_M file at 32 tokens/s (it dequantizes every weight to f32
    /// as it streams), `Int8` at 250 (the bandwidth floor's neighbourhood); on bf16 weights
    /// `F32` decodes within a few percent of `Bf16` (both read the same bytes) and is exact.
    #[default]
    Auto,
    /// f32 activations and accumulation (bf16/f16 weights widened as they are read, quantized
    /// weights dequantized exactly): matches transformers' f32 forward to about 1e-6 of the
    /// logits' range.
    F32,
    /// Activations rounded to bf16 before each matmul with bf16 weights, products accumulated
    /// in f32: the numerics of transformers running a bf16 checkpoint natively and of
    /// llama.cpp. On CPUs with AVX512-BF16 the matmuls run twice the f32 FMA rate (prefill)
    /// and read half the activation bytes; logits move by about 1% of their range, so greedy
    /// text can diverge from the f32 path after a few dozen tokens. The router stays f32.
    /// On CUDA activations are bf16 whatever this says.
    Bf16,
    /// As `Bf16`, and activations quantized to 8-bit blocks (Q8_0 / Q8_K) before each matmul
    /// with block-quantized weights, multiplied with integer dot products: llama.cpp's
    /// numerics on its quantized files. About 0.4% of each dot's scale: logits move by a few
    /// percent of their range (the quantized fixtures' tolerance for activation-quantizing
    /// engines). Weights of Q4_1, Q5_0, Q5_1, Q2_K and Q3_K stay on the exact path.
    Int8,
}

impl std::str::FromStr for Precision {
    type Err = String;

    /// `auto`, `f32`, `bf16` or `int8`.
    fn from_str(s: &str) -> std::result::Result<Precision, String> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(Precision::Auto),
            "f32" => Ok(Precision::F32),
            "bf16" => Ok(Precision::Bf16),
            "int8" => Ok(Precision::Int8),
            _ => Err(format!(
                "unknown precision `{s}` (expected auto, f32, bf16 or int8)"
            )),
        }
    }
}

/// [`LoadOptions::quantize`]: `ckpt` written quantized to an unlinked temporary GGUF file,
/// opened in its place.
fn quantize_at_load(
    ckpt: Checkpoint,
    scheme: crate::QuantScheme,
    progress: &mut impl FnMut(u64, u64),
) -> Result<Checkpoint> {
    refuse_quantized(&ckpt)?;
    let tmp = tempfile::Builder::new()
        .prefix("mixtral-quantize-")
        .tempdir()
        .map_err(|source| {
            mixtral_model::Error::from(mixtral_tensor::Error::Io {
                path: std::env::temp_dir(),
                source,
            })
        })?;
    let file = tmp.path().join("model.gguf");
    mixtral_model::export::write_quantized_gguf(&ckpt, scheme, Vec::new(), &file, |d, t| {
        progress(d, t)
    })?;
    let quantized = Checkpoint::open(&file)?;
    // The mapping keeps the data; the name goes with the directory.
    drop(tmp);
    Ok(quantized)
}

/// [`Error::AlreadyQuantized`] naming the first file of `ckpt` that holds a quantized tensor.
pub(crate) fn refuse_quantized(ckpt: &Checkpoint) -> Result<()> {
    for f in ckpt.store().files() {
        for i in f.infos().values() {
            if let mixtral_tensor::FileDType::Known(dtype) = i.dtype
                && dtype.is_quantized()
            {
                return Err(Error::AlreadyQuantized {
                    path: f.path().to_path_buf(),
                    dtype,
                });
            }
        }
    }
    Ok(())
}

/// What [`Engine::logits`] records, and under which intervention.
#[derive(Clone, Debug, Default)]
pub struct LogitsOptions {
    /// The router's choices per layer and token ([`Output::routing`]).
    pub routing: bool,
    /// The router's logits over every expert ([`Output::router_logits`], `[L][T][E]`).
    pub router_logits: bool,
    /// The residual stream ([`Output::hidden_states`], `[L+2][T][D]`).
    pub hidden_states: bool,
    /// Steering of the router.
    pub intervention: mixtral_model::Intervention,
    /// Stops the computation from another thread: checked before every layer, so a long
    /// prompt stops within one layer's time, with [`Error::Cancelled`].
    pub cancel: Option<crate::CancelToken>,
}

/// The most worker threads [`LoadOptions::threads`] accepts.
pub const MAX_THREADS: usize = 1024;

/// How to load a model.
#[derive(Clone, Copy, Debug)]
pub struct LoadOptions {
    /// Where to run.
    pub device: Device,
    /// Worker threads (1 to [`MAX_THREADS`]); `None` uses one per core.
    pub threads: Option<usize>,
    /// Activation precision.
    pub precision: Precision,
    /// Read every weight page once at load (with progress), so the first token is not slowed
    /// by page faults. On by default, in the library as in the CLI: the first request would
    /// otherwise pay for reading the weights from disk (minutes for the 93 GB of 8x7B in
    /// bf16, spread over the first prompt's prefill), and a benchmark's first run would
    /// measure the disk. Off: pages load lazily on first use (a quick start for a short
    /// experiment on a model that is already in the page cache).
    pub prefault: bool,
    /// Quantize a bf16/f16/f32 checkpoint while loading it (`progress` then counts the bytes
    /// quantized): every matrix is quantized on all threads by ggml's algorithm, one tensor
    /// at a time, into a GGUF file in the temporary directory (`TMPDIR`) that is mapped and
    /// unlinked at once, so anonymous memory stays at one tensor's working set and the
    /// quantized weights live in the page cache, as a GGUF file's do. The same file
    /// `mixtral quantize` writes.
    pub quantize: Option<crate::QuantScheme>,
    /// The KV cache's element type; `None` picks f32 when the matmuls are exact (f32) and f16
    /// otherwise (as llama.cpp keeps it): half the cache's memory and half the bytes decode
    /// attention reads at long context, for logits ~1e-3 of their range away
    /// (docs/performance.md).
    pub kv_dtype: Option<mixtral_model::KvDType>,
    /// Compute every matmul row in one summation order whatever the number of rows in the
    /// call ([`Model::with_batch_invariance`]): a sequence then gets exactly the same logits,
    /// and the same seeded samples, alone or batched by a [`crate::Scheduler`], whatever the
    /// prompt's chunking. Off by default: decode loses the GEMV's streaming loops
    /// (docs/performance.md). CPU only.
    pub batch_invariant: bool,
    /// How conversations are rendered ([`crate::ChatFormat`]).
    pub chat_format: crate::ChatFormat,
    /// Copy quantized matrices into the CPU kernels' interleaved layout at load
    /// ([`mixtral_model::Placement::repack`]): `None` where it is measured faster (int8
    /// precision on AVX2), `Some(false)` to keep the file's layout, `Some(true)` to force it
    /// (an error on a GPU).
    pub repack: Option<bool>,
}

impl Default for LoadOptions {
    /// CPU, a thread per core, `Auto` precision, weights prefaulted, no quantizing, the KV
    /// dtype the precision picks, no batch invariance.
    fn default() -> LoadOptions {
        LoadOptions {
            device: Device::Cpu,
            threads: None,
            precision: Precision::Auto,
            prefault: true,
            quantize: None,
            kv_dtype: None,
            batch_invariant: false,
            chat_format: crate::ChatFormat::Auto,
            repack: None,
        }
    }
}

/// A model ready to generate: weights (memory-mapped), tokenizer, threads, defaults.
pub struct Engine {
    pub(crate) model: Model,
    pub(crate) tokenizer: Option<Tokenizer>,
    /// The model's chat template, when conversations are rendered with it.
    pub(crate) chat_template: Option<mixtral_tokenizer::ChatTemplate>,
    /// The most bytes of text one token can stand for (the longest vocabulary piece), which
    /// bounds a text's token count from below before it is tokenized.
    pub(crate) max_token_bytes: usize,
    pub(crate) defaults: Defaults,
    team: Team,
    dir: PathBuf,
    /// Tells this engine's sessions from other engines'.
    pub(crate) id: u64,
    /// Output constraints' parser factory, built on the first constrained request.
    pub(crate) guides: crate::constraint::Guides,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("dir", &self.dir)
            .field("threads", &self.team.threads())
            .finish()
    }
}

/// The longest vocabulary piece in bytes. A piece is the normalized text it covers (`▁` for a
/// space, which is longer than the space), and a byte-fallback piece (`<0x0A>`) is longer
/// than its one byte, so no token stands for more input bytes than this.
fn longest_piece(tokenizer: &Tokenizer) -> usize {
    (0..tokenizer.vocab_size() as u32)
        .filter_map(|id| tokenizer.id_to_piece(id))
        .map(str::len)
        .max()
        .unwrap_or(usize::MAX)
}

impl Engine {
    /// Loads a model with default options: a Hugging Face or Mistral directory, a GGUF file,
    /// a single `.safetensors` file with its `config.json` beside it, or a Hugging Face repo
    /// id (`mistralai/Mixtral-8x7B-Instruct-v0.1`) resolved through the local Hugging Face
    /// cache, downloaded when missing ([`crate::hub`]; revision `main`, `HF_HUB_OFFLINE`
    /// honoured).
    pub fn load(dir: impl AsRef<Path>) -> Result<Engine> {
        Engine::load_with(dir, LoadOptions::default(), |_, _| {})
    }

    /// Loads a model (anything [`Engine::load`] takes); `progress(done_bytes, total_bytes)`
    /// is called while weights are paged in (only with [`LoadOptions::prefault`]). For another
    /// revision of a repo, or another cache, resolve it first with [`crate::hub::resolve`].
    pub fn load_with(
        dir: impl AsRef<Path>,
        opts: LoadOptions,
        mut progress: impl FnMut(u64, u64),
    ) -> Result<Engine> {
        let resolved = match dir.as_ref() {
            p if std::fs::symlink_metadata(p).is_ok() => p.to_path_buf(),
            p => match p.to_str() {
                Some(spec) => crate::hub::resolve(spec, &crate::hub::HubOptions::from_env())?,
                None => p.to_path_buf(),
            },
        };
        let dir = resolved.as_path();
        match opts.threads {
            Some(0) => {
                return Err(Error::InvalidOption {
                    option: "threads",
                    reason: "must be at least 1",
                });
            }
            Some(n) if n > MAX_THREADS => {
                return Err(Error::InvalidOption {
                    option: "threads",
                    reason: "more than 1024 (no CPU this engine runs on has that many cores; \
                             more threads than cores only slow the kernels down)",
                });
            }
            _ => {}
        }
        let threads = opts.threads.unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
        });
        let team = Team::new(threads).map_err(|source| Error::Threads { threads, source })?;
        let mut ckpt = Checkpoint::open(dir)?;
        if let Some(scheme) = opts.quantize {
            ckpt = quantize_at_load(ckpt, scheme, &mut progress)?;
        }
        let tokenizer = match ckpt.gguf() {
            Some(file) if opts.quantize.is_none() => crate::gguf_vocab::tokenizer_from_gguf(file)?,
            _ => crate::gguf_vocab::find_tokenizer(dir)?,
        };
        let defaults = Defaults::read(
            crate::gguf_vocab::files_dir(dir),
            &ckpt.config,
            tokenizer.as_ref(),
        )?;
        let found = match (opts.chat_format, ckpt.gguf()) {
            (crate::ChatFormat::Mistral, _) => None,
            (_, Some(file)) if opts.quantize.is_none() => {
                crate::chat_format::gguf_template(file, tokenizer.as_ref())?
            }
            // A quantized-at-load GGUF file still carries its template.
            _ => crate::chat_format::model_chat_template(dir, tokenizer.as_ref())?,
        };
        // Rendering is capped by the model's context: a prompt past it is refused anyway.
        let limits =
            mixtral_tokenizer::RenderLimits::for_context(ckpt.config.max_position_embeddings);
        let chat_template =
            crate::chat_format::choose(opts.chat_format, found)?.map(|t| t.with_limits(limits));
        let placement = Placement {
            device: opts.device,
            precision: match opts.precision {
                Precision::Auto => None,
                Precision::F32 => Some(KernelPrecision::F32),
                Precision::Bf16 => Some(KernelPrecision::Bf16),
                Precision::Int8 => Some(KernelPrecision::Int8),
            },
            kv_dtype: opts.kv_dtype,
            batch_invariant: opts.batch_invariant,
            prefault: opts.prefault,
            repack: opts.repack,
        };
        let model = Model::place(ckpt, placement, &mut |done, total| {
            progress(done as u64, total as u64)
        })?;
        let max_token_bytes = tokenizer.as_ref().map_or(usize::MAX, longest_piece);
        Ok(Engine {
            model,
            tokenizer,
            chat_template,
            max_token_bytes,
            defaults,
            team,
            dir: dir.to_path_buf(),
            id: {
                static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
                NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            },
            guides: Default::default(),
        })
    }

    /// The model directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The architecture.
    pub fn config(&self) -> &Config {
        self.model.config()
    }

    /// The model (for research code that drives prefill/decode itself).
    pub fn model(&self) -> &Model {
        &self.model
    }

    /// The tokenizer, if the directory has one.
    pub fn tokenizer(&self) -> Option<&Tokenizer> {
        self.tokenizer.as_ref()
    }

    /// The tokenizer, or an error naming the directory.
    pub fn require_tokenizer(&self) -> Result<&Tokenizer> {
        self.tokenizer.as_ref().ok_or_else(|| Error::NoTokenizer {
            dir: self.dir.clone(),
        })
    }

    /// Defaults from `generation_config.json` and the tokenizer.
    pub fn defaults(&self) -> &Defaults {
        &self.defaults
    }

    /// Worker threads in use.
    pub fn threads(&self) -> usize {
        self.team.threads()
    }

    /// Parallel regions so far that found a worker thread descheduled by another process
    /// (after each, the engine runs on one thread for a while; see `threads::Team`).
    pub fn preemptions(&self) -> u64 {
        self.team.preemptions()
    }

    /// Logits at every position of `tokens` (a fresh sequence), with what `opts` asks to record
    /// (`LogitsOptions::default()`: nothing) and under its router intervention: the research
    /// entry point.
    ///
    /// ```
    /// use mixtral::LogitsOptions;
    /// let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/models/tiny-f32");
    /// let engine = mixtral::Engine::load(dir)?;
    /// let opts = LogitsOptions { routing: true, ..LogitsOptions::default() };
    /// let out = engine.logits(&[1, 140, 585], &opts)?;
    /// assert_eq!(out.rows, 3);
    /// let routing = out.routing.unwrap();
    /// println!("token 2, layer 0 → experts {:?}", routing.experts(0, 2));
    /// # Ok::<(), mixtral::Error>(())
    /// ```
    ///
    /// Steering and recording:
    ///
    /// ```
    /// use mixtral::{Intervention, LogitsOptions};
    /// let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/models/tiny-f32");
    /// let engine = mixtral::Engine::load(dir)?;
    /// let opts = LogitsOptions {
    ///     router_logits: true,
    ///     hidden_states: true,
    ///     intervention: Intervention { ablate_everywhere: vec![5], ..Default::default() },
    ///     ..Default::default()
    /// };
    /// let out = engine.logits(&[1, 140, 585], &opts)?;
    /// let router = out.router_logits.unwrap(); // [L][T][E]
    /// assert_eq!(router.at(0, 2)[5], f32::NEG_INFINITY); // expert 5 removed
    /// let hidden = out.hidden_states.unwrap(); // [L+2][T][D]
    /// assert_eq!(hidden.dims[0], engine.config().num_hidden_layers + 2);
    /// # Ok::<(), mixtral::Error>(())
    /// ```
    pub fn logits(&self, tokens: &[u32], opts: &LogitsOptions) -> Result<Output> {
        let positions: Vec<usize> = (0..tokens.len()).collect();
        let fwd = ForwardOptions {
            logits: Logits::All,
            trace_routing: opts.routing,
            router_logits: opts.router_logits,
            hidden_states: opts.hidden_states,
        };
        let mut cache = self.model.new_cache();
        let step = mixtral_model::Step::new(tokens, &positions)
            .options(fwd)
            .steer(&opts.intervention)
            .stop(opts.cancel.as_ref().map(crate::CancelToken::flag));
        self.run(|| self.model.forward(step, &mut cache))
            .map_err(crate::generate::cancelled)
    }

    /// Where the model runs.
    pub fn device(&self) -> Device {
        self.model.device()
    }

    /// Runs `f` on the calling thread with this engine's worker threads serving the parallel
    /// parts of every kernel it calls (see [`Team`]). Calls from several threads take turns.
    pub fn install<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        self.team.run(f)
    }

    /// Runs `f` on this engine's worker threads.
    pub(crate) fn run<T: Send>(
        &self,
        f: impl FnOnce() -> mixtral_model::Result<T> + Send,
    ) -> Result<T> {
        Ok(self.team.run(f)?)
    }
}
