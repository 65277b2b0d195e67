//! Reading the router: which experts each token goes to, layer by layer.
//!
//! `cargo run --release -p mixtral --example routing -- [MODEL_DIR]`

use mixtral::Engine;

/// Prints each token's experts per layer and returns how often each expert was chosen
/// (`[layer][expert]`).
pub fn run(model_dir: &str, tokens: &[u32]) -> mixtral::Result<Vec<Vec<usize>>> {
    let engine = Engine::load(model_dir)?;
    let out = engine.logits(
        tokens,
        &mixtral::LogitsOptions {
            routing: true,
            ..Default::default()
        },
    )?;
    let trace = out.routing.expect("asked for routing");
    let n_experts = engine.config().num_local_experts;
    let mut histogram = vec![vec![0; n_experts]; trace.layers.len()];
    for (layer, counts) in histogram.iter_mut().enumerate() {
        for t in 0..trace.n_tokens() {
            let (experts, weights) = (trace.experts(layer, t), trace.weights(layer, t));
            println!("layer {layer} token {t}: experts {experts:?} weights {weights:.3?}");
            experts.iter().for_each(|&e| counts[e as usize] += 1);
        }
    }
    Ok(histogram)
}

#[allow(dead_code)]
fn main() -> mixtral::Result<()> {
    let dir = std::env::args().nth(1).unwrap_or(
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../tests/fixtures/models/tiny-f32"
        )
        .into(),
    );
    let hist = run(&dir, &[1, 140, 585, 870, 824])?;
    println!("expert histogram per layer: {hist:?}");
    Ok(())
}
