//! Plain generation, streamed token by token.
//!
//! `cargo run --release -p mixtral --example generate -- [MODEL_DIR] [PROMPT]`

use mixtral::{Engine, Prompt};

/// Generates up to 16 tokens after `prompt` and returns the text.
pub fn run(model_dir: &str, prompt: &str) -> mixtral::Result<String> {
    let engine = Engine::load(model_dir)?;
    let mut params = engine.params(); // greedy unless generation_config.json says otherwise
    params.max_new_tokens = 16;
    let mut text = String::new();
    for token in engine.generate(&Prompt::Text(prompt.into()), &params)? {
        let token = token?;
        print!("{}", token.text);
        text.push_str(&token.text);
    }
    println!();
    Ok(text)
}

#[allow(dead_code)]
fn main() -> mixtral::Result<()> {
    let mut args = std::env::args().skip(1);
    let dir = args.next().unwrap_or(
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../tests/fixtures/models/tiny-bf16"
        )
        .into(),
    );
    let prompt = args.next().unwrap_or("The capital of France is".into());
    run(&dir, &prompt).map(|_| ())
}
