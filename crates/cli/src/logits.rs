//! `mixtral logits`: every position's logits (and optionally the routing) as safetensors.

use crate::args::{ModelArgs, SteerArgs};
use mixtral::tensor::{Tensor, save};
use mixtral::{Engine, LogitsOptions, Prompt};
use std::path::{Path, PathBuf};

/// Arguments of `mixtral logits`.
#[derive(clap::Args)]
#[command(allow_negative_numbers = true)]
pub(crate) struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// Token ids, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        required_unless_present = "text",
        conflicts_with = "text"
    )]
    tokens: Option<Vec<u32>>,
    /// Text, encoded with BOS first (needs tokenizer.json).
    #[arg(long)]
    text: Option<String>,
    /// Output file (safetensors): `logits` F32 [seq_len, vocab].
    #[arg(long)]
    out: PathBuf,
    /// Also write `routing.{layer}.experts` I64 [seq_len, k] and `routing.{layer}.weights` F32.
    #[arg(long)]
    routing: bool,
    /// Also write `router_logits.{layer}` F32 [seq_len, experts]: the router's logits over
    /// every expert, before the softmax.
    #[arg(long = "router-logits")]
    router_logits: bool,
    /// Also write `hidden.{i}` F32 [seq_len, hidden]: i = 0 the embeddings, l + 1 the residual
    /// stream after layer l, layers + 1 after the final norm.
    #[arg(long = "hidden-states")]
    hidden_states: bool,
    #[command(flatten)]
    steer: SteerArgs,
}

pub(crate) fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let engine = args.model.load()?;
    if let Some(file) = model_file_at(&engine, &args.out) {
        return Err(format!(
            "{}: is the model's own file {}; refusing to write over it",
            args.out.display(),
            file.display()
        )
        .into());
    }
    let prompt = match (args.tokens, args.text) {
        (Some(ids), _) => Prompt::Tokens(ids),
        (None, Some(text)) => Prompt::Text(text),
        (None, None) => unreachable!("clap requires --tokens or --text"),
    };
    let ids = engine.encode(&prompt)?;
    let opts = LogitsOptions {
        routing: args.routing,
        router_logits: args.router_logits,
        hidden_states: args.hidden_states,
        intervention: args.steer.intervention(),
        cancel: None,
    };
    let out = engine.logits(&ids, &opts)?;
    let (t, v) = (ids.len(), engine.config().vocab_size);
    let mut tensors = vec![("logits".to_string(), Tensor::from_vec(out.logits, [t, v])?)];
    if let Some(trace) = out.routing {
        let k = trace.top_k;
        for (l, layer) in trace.layers.into_iter().enumerate() {
            let experts: Vec<i64> = layer.experts.iter().map(|&e| e as i64).collect();
            tensors.push((
                format!("routing.{l}.experts"),
                Tensor::from_vec(experts, [t, k])?,
            ));
            tensors.push((
                format!("routing.{l}.weights"),
                Tensor::from_vec(layer.weights, [t, k])?,
            ));
        }
    }
    for (prefix, rec) in [
        ("router_logits", &out.router_logits),
        ("hidden", &out.hidden_states),
    ] {
        if let Some(rec) = rec {
            for i in 0..rec.dims[0] {
                let slice = rec.slice(i).to_vec();
                tensors.push((
                    format!("{prefix}.{i}"),
                    Tensor::from_vec(slice, [t, rec.dims[2]])?,
                ));
            }
        }
    }
    save(&args.out, &tensors)?;
    eprintln!(
        "wrote {} tensors for {t} positions to {}",
        tensors.len(),
        args.out.display()
    );
    Ok(())
}

/// The model file that `out` is (the same file by device and inode, whatever the path's
/// spelling or links), if it is one: a GGUF file, or any file directly in the model directory.
fn model_file_at(engine: &Engine, out: &Path) -> Option<PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let target = std::fs::metadata(out).ok()?;
    let same = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| (m.dev(), m.ino()) == (target.dev(), target.ino()))
    };
    let model = engine.dir();
    if model.is_file() {
        return same(model).then(|| model.to_path_buf());
    }
    std::fs::read_dir(model)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| same(p))
}
