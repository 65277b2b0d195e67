//! Arguments shared by several commands: the model directory, threads, prompts, sampling.

use mixtral::{Device, Engine, LoadOptions, Message, Precision, Prompt};
use std::path::PathBuf;

/// What to do without `--model`: nothing is compiled in (an installed binary must not point
/// into the checkout that built it), so say where a model comes from.
#[derive(Debug, thiserror::Error)]
#[error(
    "no model given: pass --model (or set MIXTRAL_MODEL) with a Hugging Face repo id \
     (e.g. mistralai/Mixtral-8x7B-Instruct-v0.1: taken from the Hugging Face cache, \
     downloaded into it when missing), a Hugging Face directory (config.json, *.safetensors, \
     tokenizer.json), a Mistral directory (params.json, consolidated.safetensors, \
     tokenizer.model), a GGUF file or a .safetensors file with its config.json beside it; \
     a clone of the repository has a tiny test model: --model tests/fixtures/models/tiny-bf16"
)]
pub(crate) struct NoModel;

/// The local path of the `--model` argument (a repo id resolved through the Hugging Face
/// cache at `revision`, downloading with progress bars unless `HF_HUB_OFFLINE` is set), or
/// [`NoModel`].
pub(crate) fn resolve_model(
    model: &Option<PathBuf>,
    revision: Option<&str>,
) -> Result<PathBuf, Box<dyn std::error::Error>> {
    let model = model.as_deref().ok_or(NoModel)?;
    let Some(spec) = model.to_str() else {
        return Ok(model.to_path_buf());
    };
    let mut hub = mixtral::hub::HubOptions::from_env();
    hub.progress = true;
    if let Some(r) = revision {
        hub.revision = r.to_string();
    }
    Ok(mixtral::hub::resolve(spec, &hub)?)
}

/// [`resolve_model`] at the default revision.
pub(crate) fn model_path(model: &Option<PathBuf>) -> Result<PathBuf, Box<dyn std::error::Error>> {
    resolve_model(model, None)
}

/// Which model to load, and on how many threads.
#[derive(clap::Args)]
pub(crate) struct ModelArgs {
    /// The model: a Hugging Face repo id (`OWNER/NAME`, or `OWNER/NAME/FILE.gguf`; from the
    /// Hugging Face cache, downloaded into it when missing unless HF_HUB_OFFLINE is set), a
    /// Hugging Face directory (config.json + safetensors + tokenizer.json), a Mistral
    /// directory (params.json + consolidated.safetensors + tokenizer.model), a GGUF file, or a
    /// .safetensors file with its config.json beside it.
    #[arg(long, short = 'm', env = "MIXTRAL_MODEL")]
    pub model: Option<PathBuf>,
    /// The repo id's branch, tag or commit hash.
    #[arg(long, default_value = "main")]
    pub revision: String,
    /// Worker threads (default: one per core).
    #[arg(long, short = 't')]
    pub threads: Option<usize>,
    /// Where to run: `cpu`, `cuda` or `cuda:N`.
    #[arg(long, default_value = "cpu")]
    pub device: Device,
    /// Activation precision of the matmuls: `auto` (int8 for a quantized GGUF file, f32
    /// otherwise), `f32` (exact, matches transformers' f32 forward; quantized weights
    /// dequantized exactly),
    /// `bf16` (activations rounded to bf16 for bf16 weights, as llama.cpp and transformers'
    /// native bf16 compute; twice the prefill speed on AVX512-BF16 CPUs) or `int8` (as bf16,
    /// and 8-bit activation blocks with integer dots for quantized weights, as llama.cpp).
    #[arg(long, default_value = "auto")]
    pub precision: Precision,
    /// Quantize a bf16/f16/f32 checkpoint while loading it: `q8_0`, `q6_k`, `q5_k_m`,
    /// `q4_k_m`, `q5_k` or `q4_k` (what `mixtral quantize` writes, without keeping a file).
    #[arg(long)]
    pub quantize: Option<mixtral::QuantScheme>,
    /// The KV cache's element type: `f32`, `f16` or `bf16` (default: f32 at `--precision
    /// f32`, f16 otherwise, half the memory).
    #[arg(long = "kv-dtype")]
    pub kv_dtype: Option<mixtral::KvDType>,
    /// Sum every matmul row in one order whatever the number of rows in the call, so a
    /// sequence gets the same bits (and seeded samples) alone or batched by `serve` (CPU;
    /// decode pays for it, see docs/performance.md).
    #[arg(long)]
    pub batch_invariant: bool,
    /// How conversations are rendered: `auto` (the model's own chat template when it is not
    /// Mixtral-Instruct's, else the mistral-common-exact `[INST]` format), `mistral` or
    /// `template`.
    #[arg(long, default_value = "auto")]
    pub chat_format: mixtral::ChatFormat,
    /// Copy Q8_0, Q4_K and Q6_K matrices into the CPU kernels' interleaved layout at load (eight
    /// rows per register; the file's pages are released as each is copied): `auto` (on at
    /// int8 precision on AVX2 CPUs, where it is measured faster), `on` or `off`.
    #[arg(long, default_value = "auto")]
    pub repack: crate::serve::Toggle,
}

impl ModelArgs {
    /// Loads the engine, with a progress bar while weights are paged in.
    pub(crate) fn load(&self) -> Result<Engine, Box<dyn std::error::Error>> {
        let model = resolve_model(&self.model, Some(&self.revision))?;
        let opts = LoadOptions {
            threads: self.threads,
            device: self.device,
            precision: self.precision,
            prefault: true,
            quantize: self.quantize,
            kv_dtype: self.kv_dtype,
            batch_invariant: self.batch_invariant,
            chat_format: self.chat_format,
            repack: self.repack.as_option(),
        };
        let bar = crate::progress::bytes("loading weights");
        let engine = Engine::load_with(&model, opts, |done, total| {
            bar.set_length(total);
            bar.set_position(done);
        });
        bar.finish_and_clear();
        Ok(engine?)
    }
}

/// Exactly one of text, token ids or a chat file.
#[derive(clap::Args)]
#[group(required = true, multiple = false)]
pub(crate) struct PromptArgs {
    /// Prompt text (BOS is prepended).
    #[arg(long, short = 'p')]
    pub prompt: Option<String>,
    /// Prompt token ids, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub tokens: Option<Vec<u32>>,
    /// Path of a JSON file holding a conversation: `[{"role": "user", "content": "…"}, …]`.
    #[arg(long, value_name = "FILE")]
    pub chat: Option<PathBuf>,
}

impl PromptArgs {
    /// The prompt; with `system`, `--prompt TEXT` becomes a chat of that system message and
    /// the text as the user's turn (a chat file or token ids cannot take one).
    pub(crate) fn prompt(
        &self,
        system: Option<&str>,
    ) -> Result<Prompt, Box<dyn std::error::Error>> {
        if let Some(system) = system {
            let Some(text) = &self.prompt else {
                return Err(
                    "--system goes with --prompt (a chat file carries its own system message)"
                        .into(),
                );
            };
            return Ok(Prompt::Chat(vec![
                Message::system(system),
                Message::user(text.clone()),
            ]));
        }
        Ok(match (&self.prompt, &self.tokens, &self.chat) {
            (Some(text), _, _) => Prompt::Text(text.clone()),
            (_, Some(ids), _) => Prompt::Tokens(ids.clone()),
            (_, _, Some(path)) => Prompt::Chat(read_chat(path)?),
            _ => unreachable!("clap requires one prompt argument"),
        })
    }
}

/// Errors reading a `--chat` file.
#[derive(Debug)]
pub(crate) enum ChatFileError {
    Read(PathBuf, mixtral::tensor::Error),
    Parse(PathBuf, serde_json::Error),
}

impl std::fmt::Display for ChatFileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ChatFileError::Read(p, _) => write!(f, "{}: cannot read chat file", p.display()),
            ChatFileError::Parse(p, _) => {
                write!(
                    f,
                    "{}: expected a JSON list of {{\"role\": …, \"content\": …}} messages",
                    p.display()
                )
            }
        }
    }
}

impl std::error::Error for ChatFileError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ChatFileError::Read(_, e) => Some(e),
            ChatFileError::Parse(_, e) => Some(e),
        }
    }
}

/// The largest chat file read.
const MAX_CHAT_FILE_BYTES: u64 = 64 << 20;

/// Reads a conversation file.
pub(crate) fn read_chat(path: &std::path::Path) -> Result<Vec<Message>, ChatFileError> {
    // A chat file is a small regular file: not a FIFO (would block), not /dev/zero (never ends).
    let bytes = mixtral::tensor::read_small_file(path, MAX_CHAT_FILE_BYTES)
        .map_err(|e| ChatFileError::Read(path.to_path_buf(), e))?;
    serde_json::from_slice(&bytes).map_err(|e| ChatFileError::Parse(path.to_path_buf(), e))
}

/// Sampling and stopping options; unset ones come from the model's generation_config.json.
#[derive(clap::Args)]
pub(crate) struct SamplingArgs {
    /// Most new tokens to generate.
    #[arg(long, short = 'n')]
    pub max_new_tokens: Option<usize>,
    /// Keep generating past EOS.
    #[arg(long)]
    pub ignore_eos: bool,
    /// Sampling temperature; 0 is greedy.
    #[arg(long)]
    pub temperature: Option<f32>,
    /// Keep only the K most likely tokens.
    #[arg(long)]
    pub top_k: Option<usize>,
    /// Keep the smallest set of tokens whose probability reaches P.
    #[arg(long)]
    pub top_p: Option<f32>,
    /// Drop tokens less likely than P times the most likely one.
    #[arg(long)]
    pub min_p: Option<f32>,
    /// Repetition penalty (1 is off; off by default, as it hurts Mixtral).
    #[arg(long)]
    pub repeat_penalty: Option<f32>,
    /// Random seed (runs with the same seed and settings repeat exactly).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Stop when this string appears (not printed); may be repeated.
    #[arg(long)]
    pub stop: Vec<String>,
}

impl SamplingArgs {
    /// The engine's defaults with these options applied.
    pub(crate) fn params(&self, engine: &Engine) -> mixtral::GenerateParams {
        engine.params_with(&mixtral::Overrides {
            max_new_tokens: self.max_new_tokens,
            temperature: self.temperature,
            top_k: self.top_k,
            top_p: self.top_p,
            min_p: self.min_p,
            repetition_penalty: self.repeat_penalty,
            seed: Some(self.seed),
            ignore_eos: self.ignore_eos,
            stop_strings: self.stop.clone(),
        })
    }
}

/// Router interventions (research): the same on `logits` and `generate`. Not `--top-k`,
/// which is the sampler's.
#[derive(clap::Args, Debug, Default)]
pub(crate) struct SteerArgs {
    /// Remove experts from the router's choice: `LAYER:EXPERT` pairs, comma-separated
    /// (`--ablate 1:3,0:5`); the top-k is taken among the rest.
    #[arg(long, value_delimiter = ',', value_parser = parse_layer_expert)]
    pub ablate: Vec<(usize, usize)>,
    /// Remove expert E in every layer; may be repeated.
    #[arg(long = "ablate-expert")]
    pub ablate_expert: Vec<usize>,
    /// Experts per token, 1 … E, instead of the model's (Mixtral: 2).
    #[arg(long = "experts-per-token")]
    pub experts_per_token: Option<usize>,
}

/// `LAYER:EXPERT`.
fn parse_layer_expert(s: &str) -> Result<(usize, usize), String> {
    let (l, e) = s
        .split_once(':')
        .ok_or_else(|| format!("`{s}`: expected LAYER:EXPERT, e.g. 1:3"))?;
    let num = |v: &str| {
        v.trim()
            .parse::<usize>()
            .map_err(|_| format!("`{s}`: expected LAYER:EXPERT with two numbers, e.g. 1:3"))
    };
    Ok((num(l)?, num(e)?))
}

impl SteerArgs {
    /// The intervention these options describe.
    pub(crate) fn intervention(&self) -> mixtral::Intervention {
        mixtral::Intervention {
            ablate: self.ablate.clone(),
            ablate_everywhere: self.ablate_expert.clone(),
            experts_per_token: self.experts_per_token,
            ..Default::default()
        }
    }
}
