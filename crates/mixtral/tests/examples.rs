//! Runs the code of `examples/` against the fixture models, so the examples cannot rot.

#[path = "../examples/chat.rs"]
mod chat;
#[path = "../examples/generate.rs"]
mod generate;
#[path = "../examples/routing.rs"]
mod routing;

const TINY_BF16: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../tests/fixtures/models/tiny-bf16"
);
const TINY_F32: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../tests/fixtures/models/tiny-f32"
);

#[test]
fn generate_example_streams_text() {
    let text = generate::run(TINY_BF16, "The capital of France is").unwrap();
    assert!(!text.is_empty());
}

#[test]
fn chat_example_answers_two_turns() {
    let answers = chat::run(TINY_BF16).unwrap();
    assert_eq!(answers.len(), 2);
}

#[test]
fn routing_example_counts_k_choices_per_token() {
    let hist = routing::run(TINY_F32, &[1, 140, 585, 870, 824]).unwrap();
    // Fixture tiny-f32: 2 layers, 8 experts, top-2, 5 tokens → 10 choices per layer.
    assert_eq!(hist.len(), 2);
    assert!(
        hist.iter()
            .all(|layer| layer.len() == 8 && layer.iter().sum::<usize>() == 10)
    );
}
