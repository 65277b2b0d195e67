//! `mixtral generate`: stream a continuation of a prompt, or print it as one JSON object.

use crate::args::{ModelArgs, PromptArgs, SamplingArgs, SteerArgs};
use crate::{interrupt, progress};
use mixtral::{Engine, GenerateParams, Generation, Prompt};
use std::io::Write;

/// Arguments of `mixtral generate`.
#[derive(clap::Args)]
#[command(allow_negative_numbers = true)]
pub(crate) struct Args {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    prompt: PromptArgs,
    #[command(flatten)]
    sampling: SamplingArgs,
    #[command(flatten)]
    steer: SteerArgs,
    /// A system message: the prompt (`--prompt`) becomes its user turn, in the instruct
    /// format.
    #[arg(long)]
    system: Option<String>,
    /// Print one JSON object (ids, text, prompt_tokens, generated_tokens, prefill/decode
    /// tokens per second, finish_reason) instead of streaming text.
    #[arg(long)]
    json: bool,
}

pub(crate) fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let engine = args.model.load()?;
    let mut params = args.sampling.params(&engine);
    params.intervention = args.steer.intervention();
    let prompt = args.prompt.prompt(args.system.as_deref())?;
    interrupt::install();
    let mut session = engine.session();
    let mut generation = start(&engine, &mut session, &prompt, &params)?;
    let text = stream(&mut generation, !args.json)?;
    let stats = generation.stats();
    let finish = generation.finish_reason().map_or("stop", |f| f.as_str());
    if args.json {
        let out = serde_json::json!({
            "ids": generation.generated(),
            "text": text,
            "prompt_tokens": stats.prompt_tokens,
            "generated_tokens": stats.generated_tokens,
            "prefill_tokens_per_s": stats.prefill_tokens_per_s(),
            "decode_tokens_per_s": stats.decode_tokens_per_s(),
            "finish_reason": finish,
        });
        println!("{out}");
    } else {
        println!();
        eprintln!(
            "[{} prompt tokens, {:.1} tok/s prefill; {} generated, {:.1} tok/s decode; finish: {finish}]",
            stats.prompt_tokens,
            stats.prefill_tokens_per_s(),
            stats.generated_tokens,
            stats.decode_tokens_per_s()
        );
    }
    Ok(())
}

/// Prefills `prompt` in `session` with a progress bar.
pub(crate) fn start<'e>(
    engine: &'e Engine,
    session: &'e mut mixtral::Session,
    prompt: &Prompt,
    params: &GenerateParams,
) -> Result<Generation<'e>, mixtral::Error> {
    let bar = progress::tokens("prefill");
    let generation = engine.generate_in_with(session, prompt, params, |done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    });
    bar.finish_and_clear();
    generation
}

/// Runs `generation` to the end, printing text as it comes when `print` is set; returns the
/// whole text. Ctrl-C ends it cleanly.
pub(crate) fn stream(
    generation: &mut Generation<'_>,
    print: bool,
) -> Result<String, mixtral::Error> {
    let mut text = String::new();
    let mut stdout = std::io::stdout().lock();
    while let Some(token) = generation.next() {
        let token = token?;
        if print {
            // A closed stdout (e.g. piped into `head`) ends generation quietly.
            if stdout
                .write_all(token.text.as_bytes())
                .and_then(|_| stdout.flush())
                .is_err()
            {
                generation.interrupt();
            }
        }
        text.push_str(&token.text);
        if interrupt::take() {
            generation.interrupt();
        }
    }
    Ok(text)
}
