//! Determinism for science: the same inputs give bit-identical logits, and the same seed the
//! same tokens, whatever the number of threads, at every CPU precision. (Every kernel splits
//! its work by output element, never by a reduction, so no sum's order depends on the thread
//! count; docs/architecture.md.)

use mixtral::{Engine, LoadOptions, LogitsOptions, Precision, Prompt, SamplerConfig};
use std::path::PathBuf;

fn fixtures() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures"))
}

fn load(path: &PathBuf, threads: usize, dtype: Precision) -> Engine {
    let opts = LoadOptions {
        threads: Some(threads),
        precision: dtype,
        ..LoadOptions::default()
    };
    Engine::load_with(path, opts, |_, _| {}).unwrap()
}

#[test]
fn logits_and_seeded_samples_do_not_depend_on_the_thread_count() {
    let cases = [
        (fixtures().join("models/tiny-bf16"), Precision::F32),
        (fixtures().join("models/tiny-bf16"), Precision::Bf16),
        (fixtures().join("quant/tiny-q/Q4_K_M.gguf"), Precision::Int8),
        (fixtures().join("quant/tiny-q/Q4_K_M.gguf"), Precision::F32),
    ];
    let all = std::thread::available_parallelism().map_or(1, |n| n.get());
    for (path, dtype) in cases {
        let mut reference: Option<(Vec<u32>, Vec<u32>, Vec<u32>)> = None;
        for threads in [1, 2, 3, all.max(4)] {
            let engine = load(&path, threads, dtype);
            let v = engine.config().vocab_size as u32;
            let tokens: Vec<u32> = (0..70).map(|i| 1 + (i * 131 + 7) % (v - 1)).collect();
            let opts = LogitsOptions {
                router_logits: true,
                ..LogitsOptions::default()
            };
            let out = engine.logits(&tokens, &opts).unwrap();
            let bits: Vec<u32> = out.logits.iter().map(|x| x.to_bits()).collect();
            let router: Vec<u32> = out
                .router_logits
                .unwrap()
                .data
                .iter()
                .map(|x| x.to_bits())
                .collect();
            let mut params = engine.params();
            params.sampling = SamplerConfig {
                temperature: 0.9,
                seed: 42,
                ..SamplerConfig::default()
            };
            params.max_new_tokens = 12;
            params.ignore_eos = true;
            let sampled: Vec<u32> = engine
                .generate(&Prompt::Tokens(tokens[..20].to_vec()), &params)
                .unwrap()
                .map(|t| t.unwrap().id)
                .collect();
            let got = (bits, router, sampled);
            match &reference {
                None => reference = Some(got),
                Some(want) => assert!(
                    *want == got,
                    "{} {dtype:?}: {threads} threads differ from 1 thread",
                    path.display()
                ),
            }
        }
    }
}
