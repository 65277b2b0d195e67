//! A two-turn chat that reuses the KV cache of the first turn, on the CPU or a GPU.
//!
//! `cargo run --release -p mixtral --example chat -- [MODEL_DIR] [cpu|cuda|cuda:N]`

use mixtral::{Device, Engine, LoadOptions, Message, Prompt};

/// One answered turn.
#[derive(Debug)]
pub struct Turn {
    /// The answer's text.
    pub answer: String,
    /// The answer's token ids.
    pub ids: Vec<u32>,
    /// Tokens in the prompt (the whole conversation so far).
    pub prompt_tokens: usize,
    /// Prompt tokens computed: the rest came from the session's cache.
    pub computed: usize,
}

/// Runs two turns on `device` and returns both.
pub fn run(model_dir: &str, device: Device) -> mixtral::Result<Vec<Turn>> {
    let opts = LoadOptions {
        device,
        ..LoadOptions::default()
    };
    let engine = Engine::load_with(model_dir, opts, |_, _| {})?;
    let params = engine.params().max_new_tokens(12);
    let mut messages = vec![
        Message::system("Answer briefly."),
        Message::user("What is the capital of France?"),
    ];
    let mut session = engine.session();
    let mut turns = Vec::new();
    for next_question in ["And of Italy?", ""] {
        // The whole conversation each turn: the session's cache already holds all but the
        // new question, so only that is computed.
        let mut generation =
            engine.generate_in(&mut session, &Prompt::Chat(messages.clone()), &params)?;
        let answer: String = generation
            .by_ref()
            .map(|t| t.map(|t| t.text))
            .collect::<mixtral::Result<_>>()?;
        let stats = generation.stats();
        let turn = Turn {
            answer,
            ids: generation.generated().to_vec(),
            prompt_tokens: stats.prompt_tokens,
            computed: stats.prefill_tokens,
        };
        println!(
            "assistant: {} [{} prompt tokens, {} computed; ids {:?}]",
            turn.answer, turn.prompt_tokens, turn.computed, turn.ids
        );
        messages.push(Message::assistant(turn.answer.trim()));
        turns.push(turn);
        if !next_question.is_empty() {
            messages.push(Message::user(next_question));
        }
    }
    Ok(turns)
}

#[allow(dead_code)]
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir = args.next().unwrap_or(
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../tests/fixtures/models/tiny-bf16"
        )
        .into(),
    );
    let device: Device = args.next().as_deref().unwrap_or("cpu").parse()?;
    run(&dir, device)?;
    Ok(())
}
