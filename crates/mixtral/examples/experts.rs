//! Which expert does what: expert usage per layer over a multilingual text, how much the
//! logits move when each expert of one layer is switched off, and top-k 1 against 2 and 3.
//!
//! `cargo run --release -p mixtral --example experts -- [MODEL]`

use mixtral::{Engine, Intervention, LogitsOptions, Prompt};

/// What the study found.
#[derive(Debug)]
pub struct Study {
    /// `[layer][expert]`: how many tokens chose each expert (top-k choices).
    pub usage: Vec<Vec<usize>>,
    /// `[expert]`: mean |Δ logit| over positions and vocabulary when that expert of the
    /// studied layer is ablated.
    pub ablation_effect: Vec<f32>,
    /// `(k, mean |Δ logit|)` against the model's own top-k, for k = 1, 2, 3.
    pub top_k_effect: Vec<(usize, f32)>,
}

/// Mean absolute difference of two logit arrays.
fn mean_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).sum::<f32>() / a.len() as f32
}

/// Runs the study on `model` over `text`, ablating each expert of `layer` in turn.
pub fn run(model: &str, text: &str, layer: usize) -> mixtral::Result<Study> {
    let engine = Engine::load(model)?;
    let tokens = engine.encode(&Prompt::Text(text.into()))?;
    let c = engine.config();
    // 1. Usage: the router's choices for every token, per layer.
    let plain = engine.logits(
        &tokens,
        &LogitsOptions {
            routing: true,
            router_logits: true,
            ..Default::default()
        },
    )?;
    let trace = plain.routing.as_ref().expect("asked for routing");
    let mut usage = vec![vec![0; c.num_local_experts]; c.num_hidden_layers];
    for (l, counts) in usage.iter_mut().enumerate() {
        for t in 0..trace.n_tokens() {
            trace
                .experts(l, t)
                .iter()
                .for_each(|&e| counts[e as usize] += 1);
        }
        println!("layer {l}: tokens per expert {counts:?}");
    }
    // 2. Ablation: each expert of `layer` switched off, the logits compared.
    let mut ablation_effect = Vec::new();
    for e in 0..c.num_local_experts {
        let opts = LogitsOptions {
            intervention: Intervention {
                ablate: vec![(layer, e)],
                ..Default::default()
            },
            ..Default::default()
        };
        let out = engine.logits(&tokens, &opts)?;
        let effect = mean_abs_diff(&plain.logits, &out.logits);
        println!("layer {layer}, expert {e} ablated: mean |Δ logit| {effect:.4}");
        ablation_effect.push(effect);
    }
    // 3. Experts per token.
    let mut top_k_effect = Vec::new();
    for k in [1, 2, 3].into_iter().filter(|&k| k <= c.num_local_experts) {
        let opts = LogitsOptions {
            intervention: Intervention {
                experts_per_token: Some(k),
                ..Default::default()
            },
            ..Default::default()
        };
        let out = engine.logits(&tokens, &opts)?;
        let effect = mean_abs_diff(&plain.logits, &out.logits);
        println!(
            "top-{k}: mean |Δ logit| against top-{} {effect:.4}",
            c.num_experts_per_tok
        );
        top_k_effect.push((k, effect));
    }
    Ok(Study {
        usage,
        ablation_effect,
        top_k_effect,
    })
}

#[allow(dead_code)]
fn main() -> mixtral::Result<()> {
    let model = std::env::args().nth(1).unwrap_or(
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../tests/fixtures/models/tiny-bf16"
        )
        .into(),
    );
    let text = "The cat sleeps. Le chat dort. Die Katze schläft. El gato duerme. \
                fn main() { println!(\"{}\", 2 + 2); }";
    run(&model, text, 0)?;
    Ok(())
}
