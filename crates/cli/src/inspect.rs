//! `mixtral inspect`: load and validate a checkpoint, then summarise it.

use crate::args::DEFAULT_MODEL;
use crate::report;
use mixtral::model::Checkpoint;
use std::collections::BTreeMap;

/// Arguments of `mixtral inspect`.
#[derive(clap::Args)]
pub(crate) struct Args {
    /// Hugging Face model directory. Defaults to the tiny test model shipped in the repository.
    #[arg(long, default_value = DEFAULT_MODEL)]
    model: std::path::PathBuf,
    /// Context length to size the KV cache for (defaults to max_position_embeddings).
    #[arg(long)]
    context: Option<usize>,
    /// List every tensor with its dtype, shape and file.
    #[arg(long)]
    tensors: bool,
}

pub(crate) fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let start = std::time::Instant::now();
    let ckpt = Checkpoint::open(&args.model)?;
    let opened = start.elapsed();
    let c = &ckpt.config;
    println!("model        {}", ckpt.dir.display());
    println!(
        "opened in    {:.1} ms (headers only; weights are memory-mapped)",
        opened.as_secs_f64() * 1e3
    );
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
    let mut by_dtype: BTreeMap<String, u64> = BTreeMap::new();
    for t in ckpt.weights.tensors() {
        *by_dtype.entry(t.dtype().to_string()).or_default() += t.as_bytes().len() as u64;
    }
    for (dtype, bytes) in &by_dtype {
        println!("weights      {dtype}: {}", report::bytes(*bytes));
    }
    let ctx = args.context.unwrap_or(c.max_position_embeddings);
    println!(
        "kv cache     {} for {ctx} positions (f32)",
        report::bytes(c.kv_bytes_per_position() * ctx as u64)
    );
    println!(
        "files        {} ({} tensors)",
        ckpt.store().files().len(),
        ckpt.store().len()
    );
    for w in &ckpt.warnings {
        eprintln!("warning: {w}");
    }
    if args.tensors {
        for name in ckpt.store().names() {
            let (info, path) = ckpt.store().info(name).expect("listed name");
            let file = path.file_name().unwrap_or_default().to_string_lossy();
            println!("{name}\t{}\t{}\t{file}", info.dtype, info.shape);
        }
    }
    Ok(())
}
