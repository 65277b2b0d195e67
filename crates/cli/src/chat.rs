//! `mixtral chat`: an interactive conversation in the model's chat format.
//!
//! In a terminal the prompt has line editing and history (rustyline); Ctrl-C clears the line
//! (twice in a row quits), Ctrl-D quits, and during an answer Ctrl-C stops it. Piped input is
//! read line by line, so scripts can drive it. Empty lines are ignored; `/exit`, `/reset`,
//! `/system TEXT` and `/help` are commands.

use crate::args::{ModelArgs, SamplingArgs};
use crate::generate::{start, stream};
use crate::interrupt;
use mixtral::{ErrorKind, Message, Prompt};
use std::io::{BufRead, IsTerminal, Write};

/// Arguments of `mixtral chat`.
#[derive(clap::Args)]
#[command(allow_negative_numbers = true)]
pub(crate) struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// A system prompt (folded into the first user turn, as mistral-common does; `/system`
    /// changes it during the chat).
    #[arg(long)]
    system: Option<String>,
    #[command(flatten)]
    sampling: SamplingArgs,
}

const HELP: &str = "commands: /system TEXT (set the system prompt; /system alone removes it), \
                    /reset (forget the conversation), /exit (or Ctrl-D) to quit, /help; \
                    //TEXT sends /TEXT";

/// What the user typed at the prompt.
#[derive(Debug, PartialEq)]
enum Input {
    /// A message to answer.
    Message(String),
    Exit,
    Reset,
    System(Option<String>),
    Help,
    Unknown(String),
    /// An empty or blank line: nothing to do.
    Nothing,
}

fn parse(line: &str) -> Input {
    let line = line.trim_end_matches(['\n', '\r']);
    if line.trim().is_empty() {
        return Input::Nothing;
    }
    let Some(command) = line.trim_start().strip_prefix('/') else {
        return Input::Message(line.to_string());
    };
    // `//text` sends `/text`.
    if command.starts_with('/') {
        return Input::Message(command.to_string());
    }
    let (name, rest) = command
        .split_once(char::is_whitespace)
        .unwrap_or((command, ""));
    let rest = rest.trim();
    match name {
        "exit" | "quit" => Input::Exit,
        "reset" | "clear" => Input::Reset,
        "system" => Input::System((!rest.is_empty()).then(|| rest.to_string())),
        "help" | "?" => Input::Help,
        _ => Input::Unknown(name.to_string()),
    }
}

/// Where lines come from: an editor on a terminal, or plain lines from a pipe.
enum Lines {
    Editor(Box<rustyline::DefaultEditor>),
    Plain(std::io::StdinLock<'static>),
}

/// One read at the prompt.
enum Read {
    Line(String),
    /// Ctrl-C at the prompt.
    Interrupted,
    /// Ctrl-D or the end of the input.
    End,
}

impl Lines {
    fn new() -> Result<Lines, Box<dyn std::error::Error>> {
        if !std::io::stdin().is_terminal() {
            return Ok(Lines::Plain(std::io::stdin().lock()));
        }
        let config = rustyline::Config::builder()
            .auto_add_history(true)
            .max_history_size(1000)?
            .behavior(rustyline::Behavior::PreferTerm)
            .build();
        Ok(Lines::Editor(Box::new(
            rustyline::DefaultEditor::with_config(config)?,
        )))
    }

    fn read(&mut self, prompt: &str) -> Result<Read, Box<dyn std::error::Error>> {
        use rustyline::error::ReadlineError;
        match self {
            Lines::Editor(editor) => match editor.readline(prompt) {
                Ok(line) => Ok(Read::Line(line)),
                Err(ReadlineError::Interrupted) => Ok(Read::Interrupted),
                Err(ReadlineError::Eof) => Ok(Read::End),
                Err(e) => Err(e.into()),
            },
            Lines::Plain(stdin) => {
                eprint!("{prompt}");
                std::io::stderr().flush()?;
                let mut line = String::new();
                match stdin.read_line(&mut line)? {
                    0 => Ok(Read::End),
                    _ => Ok(Read::Line(line)),
                }
            }
        }
    }
}

pub(crate) fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let engine = args.model.load()?;
    engine.require_tokenizer()?;
    let params = args.sampling.params(&engine);
    interrupt::install();
    let mut system = args.system;
    let mut turns: Vec<Message> = Vec::new();
    let mut session = engine.session();
    let mut lines = Lines::new()?;
    eprintln!(
        "chatting with {} (/help for commands; Ctrl-C stops an answer; Ctrl-D or /exit quits)",
        engine.dir().display()
    );
    let mut interrupted_once = false;
    loop {
        // A Ctrl-C that came as a signal while no line was being read (right after an
        // answer, say) counts as one pressed at the prompt.
        let read = match interrupt::take() {
            true => Read::Interrupted,
            false => lines.read("> ")?,
        };
        let line = match read {
            Read::End => break,
            // Twice in a row: quit, with the status a Ctrl-C exit has.
            Read::Interrupted if interrupted_once => std::process::exit(130),
            Read::Interrupted => {
                interrupted_once = true;
                interrupt::arm_exit(true);
                eprintln!("(line cleared; Ctrl-C again, Ctrl-D or /exit quits)");
                continue;
            }
            Read::Line(line) => line,
        };
        interrupted_once = false;
        interrupt::arm_exit(false);
        let text = match parse(&line) {
            Input::Nothing => continue,
            Input::Exit => break,
            Input::Help => {
                eprintln!("{HELP}");
                continue;
            }
            Input::Unknown(name) => {
                eprintln!("unknown command /{name}; {HELP}");
                continue;
            }
            Input::Reset => {
                turns.clear();
                session = engine.session();
                eprintln!("(conversation forgotten)");
                continue;
            }
            Input::System(text) => {
                eprintln!(
                    "{}",
                    if text.is_some() {
                        "(system prompt set)"
                    } else {
                        "(system prompt removed)"
                    }
                );
                system = text;
                continue;
            }
            Input::Message(text) => text,
        };
        turns.push(Message::user(text));
        let messages: Vec<Message> = system
            .iter()
            .map(|s| Message::system(s.clone()))
            .chain(turns.iter().cloned())
            .collect();
        match answer(&engine, &mut session, &messages, &params) {
            Ok(answer) if answer.trim().is_empty() => {
                // An empty assistant turn cannot be rendered: forget the exchange.
                turns.pop();
                eprintln!("(no answer; that message was not kept)");
            }
            Ok(answer) => turns.push(Message::assistant(answer.trim())),
            // This message's fault (too long for the context, refused by the template):
            // say so and let the conversation go on without it.
            Err(e) if matches!(e.kind(), ErrorKind::InvalidInput | ErrorKind::Cancelled) => {
                turns.pop();
                let e = mixtral::error_chain(&e);
                eprintln!("error: {e} (that message was not kept; /reset starts over)");
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Generates the answer to `messages`, streaming it to stdout with a stats line on stderr.
fn answer(
    engine: &mixtral::Engine,
    session: &mut mixtral::Session,
    messages: &[Message],
    params: &mixtral::GenerateParams,
) -> Result<String, mixtral::Error> {
    let mut generation = start(engine, session, &Prompt::Chat(messages.to_vec()), params)?;
    let answer = stream(&mut generation, true)?;
    let stats = generation.stats();
    println!();
    eprintln!(
        "[{} prompt tokens, {} computed; {} generated]",
        stats.prompt_tokens, stats.prefill_tokens, stats.generated_tokens
    );
    Ok(answer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_and_messages_are_told_apart() {
        assert_eq!(parse("hello there\n"), Input::Message("hello there".into()));
        assert_eq!(parse("   \n"), Input::Nothing);
        assert_eq!(parse(""), Input::Nothing);
        assert_eq!(parse("/exit\n"), Input::Exit);
        assert_eq!(parse("  /quit"), Input::Exit);
        assert_eq!(parse("/reset"), Input::Reset);
        assert_eq!(
            parse("/system  Be brief. \n"),
            Input::System(Some("Be brief.".into()))
        );
        assert_eq!(parse("/system"), Input::System(None));
        assert_eq!(parse("/help"), Input::Help);
        assert_eq!(parse("/frobnicate x"), Input::Unknown("frobnicate".into()));
        assert_eq!(parse("//usr/bin is"), Input::Message("/usr/bin is".into()));
    }
}
