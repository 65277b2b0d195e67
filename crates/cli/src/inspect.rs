//! `mixtral inspect`: load and validate a checkpoint, then summarise it.

use crate::report;
use mixtral::model::Checkpoint;
use std::collections::BTreeMap;

/// Arguments of `mixtral inspect`.
#[derive(clap::Args)]
pub(crate) struct Args {
    /// Model: a Hugging Face or Mistral directory, or a GGUF file.
    #[arg(long, short = 'm', env = "MIXTRAL_MODEL")]
    model: Option<std::path::PathBuf>,
    /// Context length to size the KV cache for (defaults to max_position_embeddings).
    #[arg(long)]
    context: Option<usize>,
    /// The KV cache's element type to size it for: `f32`, `f16` or `bf16` (default: f32 and
    /// f16 both).
    #[arg(long = "kv-dtype")]
    kv_dtype: Option<mixtral::KvDType>,
    /// List every tensor with its dtype, shape and file.
    #[arg(long)]
    tensors: bool,
    /// Also print what the model would take on this device (`cuda` or `cuda:N`): weights as
    /// the GPU stores them, the KV cache for `--context` in `--kv-dtype` (default bf16), the
    /// working memory of a 128-token call, and whether it all fits the card's free memory.
    #[arg(long, default_value = "cpu")]
    device: mixtral::Device,
}

pub(crate) fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let start = std::time::Instant::now();
    let path = crate::args::model_path(&args.model)?;
    let ckpt = Checkpoint::open(&path)?;
    let opened = start.elapsed();
    let c = &ckpt.config;
    // The GPU plan sizes a real cache, so it refuses a context the model cannot reach; the
    // CPU summary only multiplies (and says when the product is absurd).
    if let Some(ctx) = args.context
        && ctx > c.max_position_embeddings
        && args.device != mixtral::Device::Cpu
    {
        return Err(format!(
            "--context {ctx} is past the model's {} positions",
            c.max_position_embeddings
        )
        .into());
    }
    println!("model        {}", ckpt.dir.display());
    println!("format       {}", format_line(&ckpt));
    println!(
        "opened in    {:.1} ms (headers only; weights are memory-mapped)",
        opened.as_secs_f64() * 1e3
    );
    print_architecture(c);
    print_tokenizer(&path, c)?;
    print_weights(&ckpt);
    print_kv_cache(c, args.context, args.kv_dtype);

    println!(
        "files        {} ({} tensors)",
        ckpt.store().files().len(),
        ckpt.store().len()
    );
    for w in &ckpt.warnings {
        eprintln!("warning: {w}");
    }
    if args.tensors {
        print_tensors(&ckpt);
    }
    if let mixtral::Device::Cuda(ordinal) = args.device {
        let context = args.context.unwrap_or(c.max_position_embeddings);
        let kv = args.kv_dtype.unwrap_or(mixtral::KvDType::Bf16);
        let model = mixtral::model::Model::new(ckpt)?;
        print_device_plan(&model.cuda_plan(context, kv, 128), ordinal);
    }
    Ok(())
}

/// Every tensor with its dtype, shape and file.
fn print_tensors(ckpt: &Checkpoint) {
    for name in ckpt.store().names() {
        let (info, path) = ckpt.store().info(name).expect("listed name");
        let file = path.file_name().unwrap_or_default().to_string_lossy();
        // Names come from the file: escaped, so they cannot drive the terminal.
        let (name, file) = (
            mixtral::tensor::escape(name),
            mixtral::tensor::escape(&file),
        );
        println!("{name}\t{}\t{}\t{file}", info.dtype, info.shape);
    }
}

/// What the model takes on GPU `ordinal`, and whether it fits there now.
fn print_device_plan(plan: &mixtral::model::DevicePlan, ordinal: usize) {
    let b = |n: usize| report::bytes(n as u64);
    let card = mixtral::kernels::cuda::CudaBackend::new(ordinal)
        .and_then(|gpu| Ok((gpu.name().to_owned(), gpu.memory()?)));
    match &card {
        Ok((name, (free, total))) => println!(
            "device       cuda:{ordinal}: {name}, {} free of {}",
            b(*free),
            b(*total)
        ),
        Err(mixtral::kernels::cuda::Error::NoDriver { .. }) => {
            println!("device       cuda:{ordinal}: not here (no CUDA driver)")
        }
        Err(e) => println!(
            "device       cuda:{ordinal}: not usable ({})",
            mixtral::error_chain(e)
        ),
    }
    println!(
        "  weights    {} (GGUF blocks of Q8_0/Q4_0/Q4_K/Q5_K/Q6_K kept as they are, the rest bf16)",
        b(plan.weights)
    );
    println!(
        "  kv cache   {} {} for {} positions (up to {} while it grows)",
        b(plan.kv_cache),
        format!("{:?}", plan.kv_dtype).to_lowercase(),
        plan.context,
        b(plan.kv_peak)
    );
    println!(
        "  scratch    {} for calls of {} tokens",
        b(plan.scratch),
        plan.rows
    );
    let total = plan.total();
    match card {
        Ok((_, (free, _))) if total <= free => {
            println!(
                "  total      {}: fits, {} to spare",
                b(total),
                b(free - total)
            )
        }
        Ok((_, (free, _))) => println!(
            "  total      {}: does not fit, {} more than is free",
            b(total),
            b(total - free)
        ),
        Err(_) => println!("  total      {} (no GPU to compare it with)", b(total)),
    }
}

/// Layers, widths, RoPE, context and parameter counts.
fn print_architecture(c: &mixtral::model::Config) {
    println!(
        "layers       {} × [attention {} heads / {} kv heads × {} dims, MoE {} experts top-{}]",
        c.num_hidden_layers,
        c.num_attention_heads,
        c.num_key_value_heads,
        c.head_dim,
        c.num_local_experts,
        c.num_experts_per_tok
    );
    println!(
        "hidden       {}, expert width {}, vocab {}",
        c.hidden_size, c.intermediate_size, c.vocab_size
    );
    println!(
        "rope_theta   {}, rms_norm_eps {}",
        c.rope_theta, c.rms_norm_eps
    );
    let window = c
        .sliding_window
        .map_or("none (full causal attention)".to_string(), |w| {
            w.to_string()
        });
    println!(
        "context      {} positions, sliding window {window}",
        c.max_position_embeddings
    );
    println!(
        "parameters   {} total, {} active per token",
        report::count(c.n_params()),
        report::count(c.n_active_params())
    );
}

/// The tokenizer and chat template, validated as loading would (a broken tokenizer.json fails
/// here, not at the first prompt).
fn print_tokenizer(
    model: &std::path::Path,
    c: &mixtral::model::Config,
) -> Result<(), Box<dyn std::error::Error>> {
    let tokenizer = mixtral::find_tokenizer(model)?;
    match &tokenizer {
        Some(tok) => {
            println!(
                "tokenizer    {} ids, BOS {}, EOS {}",
                tok.vocab_size(),
                tok.bos_id(),
                tok.eos_id()
            );
            if tok.vocab_size() != c.vocab_size {
                println!(
                    "warning      the tokenizer has {} ids, the model's vocabulary {}",
                    tok.vocab_size(),
                    c.vocab_size
                );
            }
        }
        None => println!("tokenizer    none (token ids only)"),
    }
    {
        let template = mixtral::model_chat_template(model, tokenizer.as_ref())?;
        let line = match &template {
            None => "none: conversations use the [INST] format".to_string(),
            Some(t) if t.is_mistral_instruct() => {
                "Mixtral-Instruct's (conversations use the mistral-common-exact [INST] renderer)"
                    .to_string()
            }
            Some(t) => format!(
                "the model's own ({} bytes), used for conversations",
                t.source().len()
            ),
        };
        println!("chat         {line}");
    }
    Ok(())
}

/// Bytes per dtype and bits per weight, by the files' own tensors (a merged 3-D expert tensor
/// counts once).
fn print_weights(ckpt: &Checkpoint) {
    let mut by_dtype: BTreeMap<String, (usize, u64)> = BTreeMap::new();
    let (mut bits, mut values) = (0u64, 0u64);
    for file in ckpt.store().files() {
        for info in file.infos().values() {
            let bytes = info.range.len() as u64;
            let entry = by_dtype.entry(info.dtype.to_string()).or_default();
            *entry = (entry.0 + 1, entry.1 + bytes);
            bits += 8 * bytes;
            values += info.shape.checked_numel().unwrap_or(0) as u64;
        }
    }
    for (dtype, (count, bytes)) in &by_dtype {
        println!(
            "weights      {dtype}: {} ({count} tensors)",
            report::bytes(*bytes)
        );
    }
    if values > 0 {
        println!(
            "bits/weight  {:.2} ({} for {} values)",
            bits as f64 / values as f64,
            report::bytes(bits / 8),
            report::count(values)
        );
    }
}

/// KV cache size for `context` positions (default: the model's) in `kv_dtype` (default: f32
/// and f16).
fn print_kv_cache(
    c: &mixtral::model::Config,
    context: Option<usize>,
    kv_dtype: Option<mixtral::KvDType>,
) {
    let ctx = context.unwrap_or(c.max_position_embeddings);
    let dtypes = match kv_dtype {
        Some(d) => vec![d],
        None => vec![mixtral::KvDType::F32, mixtral::KvDType::F16],
    };
    let sizes: Vec<String> = dtypes
        .iter()
        .map(|&d| {
            let bytes = c
                .kv_bytes_as(ctx, d)
                .map_or("more than 16 EiB".to_string(), report::bytes);
            format!("{bytes} {}", format!("{d:?}").to_lowercase())
        })
        .collect();
    println!("kv cache     {} for {ctx} positions", sizes.join(" / "));
}

/// The checkpoint's format, with what a GGUF file says of itself.
fn format_line(ckpt: &Checkpoint) -> String {
    use mixtral::model::names::Layout;
    match (ckpt.layout, ckpt.gguf()) {
        (_, Some(file)) => {
            let meta = file.metadata();
            let arch = meta
                .get("general.architecture")
                .and_then(|v| v.as_str())
                .unwrap_or("?");
            let file_type = meta
                .get("general.file_type")
                .and_then(|v| v.as_u64())
                .map_or("not stated".to_string(), file_type_name);
            format!(
                "GGUF v{} (llama.cpp), architecture {}, file type {file_type}",
                file.version(),
                arch.escape_debug()
            )
        }
        (Layout::Mistral, _) => "Mistral (params.json + consolidated.safetensors)".into(),
        _ => "Hugging Face (config.json + safetensors)".into(),
    }
}

/// llama.cpp's name for `general.file_type` (`llama_ftype`): a label for the mix of tensor
/// types a file was quantized to (each tensor's own type is what counts).
fn file_type_name(id: u64) -> String {
    let name = match id {
        0 => "F32",
        1 => "F16",
        2 => "Q4_0",
        3 => "Q4_1",
        7 => "Q8_0",
        8 => "Q5_0",
        9 => "Q5_1",
        10 => "Q2_K",
        11 => "Q3_K_S",
        12 => "Q3_K_M",
        13 => "Q3_K_L",
        14 => "Q4_K_S",
        15 => "Q4_K_M",
        16 => "Q5_K_S",
        17 => "Q5_K_M",
        18 => "Q6_K",
        32 => "BF16",
        _ => return format!("{id}"),
    };
    format!("{name} ({id})")
}
