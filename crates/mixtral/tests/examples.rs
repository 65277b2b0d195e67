//! Runs the code of `examples/` against the fixture models, so the examples cannot rot.

#[path = "../examples/chat.rs"]
mod chat;
#[path = "../examples/experts.rs"]
mod experts;
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
    let turns = chat::run(TINY_BF16, mixtral::Device::Cpu).unwrap();
    assert_eq!(turns.len(), 2);
    assert_eq!(turns[0].computed, turns[0].prompt_tokens);
    // The second turn computes only what the first did not leave in the session's cache.
    assert!(turns[1].computed < turns[1].prompt_tokens / 2, "{turns:?}");
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

#[test]
fn experts_example_measures_usage_ablation_and_top_k() {
    let study = experts::run(
        TINY_BF16,
        "The cat sleeps. Le chat dort. Die Katze schläft.",
        0,
    )
    .unwrap();
    // tiny-bf16: 2 layers, 8 experts, top-2.
    let tokens: usize = study.usage[0].iter().sum::<usize>() / 2;
    assert!(
        tokens > 5
            && study
                .usage
                .iter()
                .all(|l| l.iter().sum::<usize>() == 2 * tokens)
    );
    assert_eq!(study.ablation_effect.len(), 8);
    // An expert no token chose changes nothing but rounding (the softmax's denominator loses
    // a term); one that was chosen changes the logits.
    for (e, &effect) in study.ablation_effect.iter().enumerate() {
        let unused = study.usage[0][e] == 0;
        assert!(
            if unused { effect < 1e-5 } else { effect > 1e-3 },
            "expert {e}: {effect}"
        );
    }
    let by_k: Vec<usize> = study.top_k_effect.iter().map(|&(k, _)| k).collect();
    assert_eq!(by_k, [1, 2, 3]);
    assert_eq!(study.top_k_effect[1].1, 0.0, "top-2 is the model's own");
    assert!(study.top_k_effect[0].1 > 0.0 && study.top_k_effect[2].1 > 0.0);
}
