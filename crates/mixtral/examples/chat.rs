//! A two-turn chat that reuses the KV cache of the first turn.
//!
//! `cargo run --release -p mixtral --example chat -- [MODEL_DIR]`

use mixtral::{Engine, Message, Prompt};

/// Runs two turns and returns both answers.
pub fn run(model_dir: &str) -> mixtral::Result<Vec<String>> {
    let engine = Engine::load(model_dir)?;
    let mut params = engine.params();
    params.max_new_tokens = 12;
    let mut messages = vec![
        Message::system("Answer briefly."),
        Message::user("What is the capital of France?"),
    ];
    let mut session = engine.session();
    let mut answers = Vec::new();
    for next_question in ["And of Italy?", ""] {
        // The whole conversation each turn: the session's cache already holds all but the
        // new question, so only that is computed.
        let answer: String = engine
            .generate_in(&mut session, &Prompt::Chat(messages.clone()), &params)?
            .map(|t| t.map(|t| t.text))
            .collect::<mixtral::Result<_>>()?;
        println!("assistant: {answer}");
        messages.push(Message::assistant(answer.trim()));
        answers.push(answer);
        if !next_question.is_empty() {
            messages.push(Message::user(next_question));
        }
    }
    Ok(answers)
}

#[allow(dead_code)]
fn main() -> mixtral::Result<()> {
    let dir = std::env::args().nth(1).unwrap_or(
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../tests/fixtures/models/tiny-bf16"
        )
        .into(),
    );
    run(&dir).map(|_| ())
}
