//! The full 32k context on a small model: a 32,768-token prompt prefills (in chunks, as the
//! facade feeds it) and decodes, and with a half-precision KV cache the logits at a few
//! positions stay close to the f32 cache's. Release builds only (CI runs the tests in
//! release): the unoptimised attention would take minutes.

use mixtral_model::{ForwardOptions, KvDType, Logits, Model};
use mixtral_testkit::{argmax, fixtures_dir};

/// Logits at the positions in `at` (each the last of a chunk) and of one decoded token.
fn run(m: &Model, tokens: &[u32], at: &[usize]) -> Vec<Vec<f32>> {
    let mut cache = m.new_cache();
    let mut rows = Vec::new();
    let mut start = 0;
    for &end in at {
        let positions: Vec<usize> = (start..=end).collect();
        let out = m
            .prefill(
                &tokens[start..=end],
                &positions,
                &mut cache,
                ForwardOptions::default(),
            )
            .unwrap();
        rows.push(out.last().to_vec());
        start = end + 1;
    }
    let next = argmax(rows.last().unwrap()) as u32;
    let pos = cache.len();
    let opts = ForwardOptions {
        logits: Logits::Last,
        ..Default::default()
    };
    rows.push(
        m.decode(next, pos, &mut cache, opts)
            .unwrap()
            .last()
            .to_vec(),
    );
    rows
}

#[test]
#[cfg_attr(
    debug_assertions,
    ignore = "minutes without optimisation; CI runs release"
)]
fn a_32k_prompt_prefills_and_decodes_with_every_kv_dtype() {
    let dir = fixtures_dir().join("models/tiny-bf16");
    let f32_model = Model::open(&dir).unwrap();
    let n = f32_model.config().max_position_embeddings;
    assert_eq!(n, 32_768, "the fixture's context");
    let v = f32_model.config().vocab_size as u32;
    let tokens: Vec<u32> = (0..n as u32)
        .map(|i| 1 + (i.wrapping_mul(2654435761) >> 8) % (v - 1))
        .collect();
    // Chunk ends: early, middle, the last prompt position.
    let at = [4095, 16_383, n - 2];
    let want = run(&f32_model, &tokens, &at);
    for row in &want {
        assert!(row.iter().all(|x| x.is_finite()));
    }
    for kv in [KvDType::F16, KvDType::Bf16] {
        let m = Model::open(&dir).unwrap().with_kv_dtype(kv);
        let got = run(&m, &tokens, &at);
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            let scale = w.iter().fold(0f32, |a, x| a.max(x.abs()));
            let diff = g.iter().zip(w).fold(0f32, |a, (x, y)| a.max((x - y).abs()));
            println!(
                "{kv:?} KV, row {i}: max |diff| / max |ref| = {:.2e}",
                diff / scale
            );
            // The fixtures' bf16 tolerance (5e-2): half-precision storage of K and V only.
            assert!(diff <= 5e-2 * scale, "{kv:?} row {i}: {diff} vs {scale}");
        }
    }
}
