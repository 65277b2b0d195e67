//! `mixtral quantize`: write a checkpoint as a quantized GGUF file that llama.cpp loads.

use mixtral::QuantScheme;
use std::path::PathBuf;

/// Arguments of `mixtral quantize`.
#[derive(clap::Args)]
pub(crate) struct Args {
    /// Model to quantize: a Hugging Face or Mistral directory, or a GGUF file, of bf16, f16
    /// or f32 weights (a GGUF file quantized already is refused: requantizing compounds the
    /// error).
    #[arg(long)]
    model: PathBuf,
    /// Target: `Q8_0`, `Q6_K`, `Q5_K_M`, `Q4_K_M` (llama.cpp's file types, with the tensor
    /// types llama-quantize picks for a Mixtral), or `Q5_K` / `Q4_K` (every matrix that type).
    #[arg(long = "type")]
    scheme: QuantScheme,
    /// Output GGUF file; it must not exist yet.
    #[arg(long)]
    out: PathBuf,
    /// Print one JSON object when done.
    #[arg(long)]
    json: bool,
}

pub(crate) fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    // Not `exists`, which follows links: a dangling link is there too, and the writer would
    // fail on it with a bare "File exists".
    if std::fs::symlink_metadata(&args.out).is_ok() {
        return Err(format!(
            "{}: already exists (refusing to overwrite it)",
            args.out.display()
        )
        .into());
    }
    let start = std::time::Instant::now();
    let bar = crate::progress::bytes("quantizing");
    let report = mixtral::quantize_to_gguf(&args.model, args.scheme, &args.out, |done, total| {
        bar.set_length(total);
        bar.set_position(done);
    });
    bar.finish_and_clear();
    let report = report?;
    let secs = start.elapsed().as_secs_f64();
    if report.tokenizer_from.is_none() {
        eprintln!(
            "warning: {} has no tokenizer.model: the file carries no vocabulary (llama.cpp \
             refuses it; this engine runs it from token ids)",
            args.model.display()
        );
    }
    if args.json {
        let out = serde_json::json!({
            "out": args.out.display().to_string(),
            "type": args.scheme.to_string(),
            "tensor_bytes": report.tensor_bytes,
            "tokenizer_from": report.tokenizer_from,
            "seconds": secs,
        });
        println!("{out}");
    } else {
        println!(
            "wrote {} ({}, {:.1} MB of tensors) in {secs:.1} s",
            args.out.display(),
            args.scheme,
            report.tensor_bytes as f64 / 1e6
        );
    }
    Ok(())
}
