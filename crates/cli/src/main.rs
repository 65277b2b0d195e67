//! The `mixtral` command-line tool: inspect checkpoints, compute logits, generate text.

mod inspect;
mod report;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// The tiny test checkpoint shipped in the repository: the default `--model`.
pub(crate) const DEFAULT_MODEL: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../tests/fixtures/models/tiny-bf16"
);

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
    /// Load and validate a checkpoint, and print a summary of its config and tensors.
    Inspect(inspect::Args),
}

/// Arguments shared by every command that loads a model.
#[derive(clap::Args)]
pub(crate) struct ModelArg {
    /// Hugging Face model directory (config.json + safetensors). Defaults to the tiny test
    /// model shipped in the repository.
    #[arg(long, default_value = DEFAULT_MODEL)]
    pub model: PathBuf,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Inspect(args) => inspect::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            report::error(&*err);
            ExitCode::FAILURE
        }
    }
}
