//! `mixtral chat`: an interactive conversation in the Mixtral instruct format.

use crate::args::{ModelArgs, SamplingArgs};
use crate::generate::{start, stream};
use crate::interrupt;
use mixtral::{Message, Prompt};
use std::io::{BufRead, Write};

/// Arguments of `mixtral chat`.
#[derive(clap::Args)]
#[command(allow_negative_numbers = true)]
pub(crate) struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// A system prompt (folded into the first user turn, as mistral-common does).
    #[arg(long)]
    system: Option<String>,
    #[command(flatten)]
    sampling: SamplingArgs,
}

pub(crate) fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let engine = args.model.load()?;
    engine.require_tokenizer()?;
    let params = args.sampling.params(&engine);
    interrupt::install();
    let mut messages: Vec<Message> = args.system.into_iter().map(Message::system).collect();
    let mut session = engine.session();
    eprintln!(
        "chatting with {} (empty line or Ctrl-D to quit; Ctrl-C stops an answer)",
        engine.dir().display()
    );
    let stdin = std::io::stdin();
    loop {
        eprint!("> ");
        std::io::stderr().flush()?;
        let mut line = String::new();
        if stdin.lock().read_line(&mut line)? == 0 || line.trim().is_empty() {
            break;
        }
        messages.push(Message::user(line.trim_end_matches(['\n', '\r'])));
        let mut generation = start(
            &engine,
            &mut session,
            &Prompt::Chat(messages.clone()),
            &params,
        )?;
        let answer = stream(&mut generation, true)?;
        drop(generation);
        println!();
        messages.push(Message::assistant(answer.trim()));
    }
    Ok(())
}
