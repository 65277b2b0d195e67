//! The `mixtral` command-line tool: inspect checkpoints, compute logits, generate and chat.

mod args;
mod bench;
mod bench_batch;
mod chat;
mod generate;
mod inspect;
mod interrupt;
mod logits;
mod progress;
mod quantize;
mod report;
mod serve;
mod tokenize;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "mixtral",
    version,
    about = "A from-scratch Rust inference engine for Mixtral"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate a continuation of a prompt, streaming it as it comes.
    Generate(generate::Args),
    /// Chat interactively in the Mixtral instruct format.
    Chat(chat::Args),
    /// Write every position's logits (and optionally router choices) to a safetensors file.
    Logits(logits::Args),
    /// Print the token ids of a text or a conversation as JSON.
    Tokenize(tokenize::TokenizeArgs),
    /// Print the text of token ids as JSON.
    Detokenize(tokenize::DetokenizeArgs),
    /// Load and validate a checkpoint, and print a summary of its config and tensors.
    Inspect(inspect::Args),
    /// Measure prefill and decode tokens/s against this machine's decode floor.
    Bench(bench::Args),
    /// Write a checkpoint as a quantized GGUF file (Q8_0, Q6_K, Q5_K_M, Q4_K_M …) that
    /// llama.cpp's tools load.
    Quantize(quantize::Args),
    /// Serve the model over an OpenAI-compatible HTTP API, batching concurrent requests.
    Serve(serve::Args),
    /// Keep N threads busy until killed (`bench --contend` runs this as its competitor).
    #[command(hide = true)]
    Spin {
        /// Busy threads.
        threads: usize,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Generate(args) => generate::run(args),
        Command::Chat(args) => chat::run(args),
        Command::Logits(args) => logits::run(args),
        Command::Tokenize(args) => tokenize::tokenize(args),
        Command::Detokenize(args) => tokenize::detokenize(args),
        Command::Inspect(args) => inspect::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Quantize(args) => quantize::run(args),
        Command::Serve(args) => serve::run(args),
        Command::Spin { threads } => bench::spin(threads),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            report::error(&*err);
            ExitCode::FAILURE
        }
    }
}
