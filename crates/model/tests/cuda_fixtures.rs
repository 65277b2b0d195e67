//! `CudaModel` against transformers' reference logits on every fixture model.
//!
//! The device computes with bf16 weights, activations and KV cache, so the checks are the
//! fixtures README's bf16 ones (against the f32 reference): max |diff| ≤ 5e-2 × max |ref| on
//! `prompt0/1.logits_last`, argmax agreement ≥ 90 % over all positions; greedy identity is not
//! required (agreement is printed). The cached path (prefill 20, then single-token decode
//! steps) is held to the same bound row by row.
//!
//! Without a GPU every test prints `skipped: no CUDA driver (…)` and passes; with
//! `MIXTRAL_REQUIRE_GPU=1` it fails instead. `MIXTRAL_FIXTURES_DIR` overrides the fixture
//! folder (the gpu-check script runs these binaries from another checkout path).

mod common;

use common::{Expected, fixture};
use mixtral_kernels::cuda::CudaBackend;
use mixtral_model::{Checkpoint, CudaModel, ForwardOptions, Logits};
use mixtral_testkit::json_ids as ids;
use mixtral_testkit::{argmax, check_rel};

const MODELS: [&str; 3] = ["tiny-f32", "tiny-bf16", "tiny-variant-f32"];
const REL_TOL: f32 = 5e-2;
const MIN_ARGMAX_AGREEMENT: f64 = 0.90;

fn gpu() -> Option<CudaBackend> {
    match CudaBackend::new(0) {
        Ok(b) => Some(b),
        Err(e) if std::env::var_os("MIXTRAL_REQUIRE_GPU").is_some() => {
            panic!("MIXTRAL_REQUIRE_GPU is set but CudaBackend::new(0) failed: {e}")
        }
        Err(e) => {
            println!("skipped: no CUDA driver ({e})");
            None
        }
    }
}

struct Fixture {
    name: &'static str,
    ckpt: Checkpoint,
    exp: Expected,
}

impl Fixture {
    fn load(name: &'static str) -> Fixture {
        let ckpt = Checkpoint::open(fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        Fixture {
            name,
            ckpt,
            exp: Expected::load(name),
        }
    }

    fn f32s(&self, tensor: &str) -> Vec<f32> {
        self.exp
            .f32s(tensor)
            .unwrap_or_else(|| panic!("{}: no tensor {tensor}", self.name))
    }

    fn i32s(&self, tensor: &str) -> Vec<i32> {
        self.exp.i32s(tensor)
    }

    fn tokens(&self, case: usize) -> Vec<u32> {
        ids(&self.exp.json["cases"][case]["input_ids"])
    }

    fn upload(&self, gpu: &CudaBackend) -> CudaModel {
        let mut seen = (0, 0);
        let m = CudaModel::from_checkpoint(&self.ckpt, gpu, |done, total| seen = (done, total))
            .unwrap_or_else(|e| panic!("{}: {e}", self.name));
        assert!(
            seen.1 > 0 && seen.0 == seen.1,
            "{}: progress ended at {seen:?}",
            self.name
        );
        m
    }
}

const ALL: ForwardOptions = ForwardOptions {
    logits: Logits::All,
    trace_routing: true,
    router_logits: false,
    hidden_states: false,
};

#[test]
fn logits_and_argmax_match_transformers_within_bf16_tolerance() {
    let Some(gpu) = gpu() else { return };
    println!("device: {} ({})", gpu.name(), gpu.arch());
    for name in MODELS {
        let fx = Fixture::load(name);
        let m = fx.upload(&gpu);
        let v = m.config().vocab_size;
        for case in 0..3 {
            let tokens = fx.tokens(case);
            let positions: Vec<usize> = (0..tokens.len()).collect();
            let mut cache = m.new_cache(tokens.len()).unwrap();
            let out = m.prefill(&tokens, &positions, &mut cache, ALL).unwrap();
            assert_eq!(
                (out.rows, out.logits.len()),
                (tokens.len(), tokens.len() * v)
            );
            let want_last = fx.f32s(&format!("prompt{case}.logits_last"));
            let w = mixtral_testkit::worst(out.last(), &want_last);
            println!(
                "{name} prompt{case}: last-row max |diff| / max |ref| = {:.3e}",
                w.rel
            );
            if case < 2 {
                check_rel(
                    &format!("{name} prompt{case}.logits_last"),
                    out.last(),
                    &want_last,
                    REL_TOL,
                )
                .unwrap();
            }
            let want_argmax = fx.i32s(&format!("prompt{case}.argmax_all"));
            let agree = (0..tokens.len())
                .filter(|&t| argmax(out.row(t)) as i32 == want_argmax[t])
                .count();
            let frac = agree as f64 / tokens.len() as f64;
            println!(
                "{name} prompt{case}: argmax agreement {agree}/{}",
                tokens.len()
            );
            assert!(
                frac >= MIN_ARGMAX_AGREEMENT,
                "{name} prompt{case}: argmax agreement {frac:.3}"
            );
            // Router choices of prompt 1 (top-k sets), printed: bf16 may flip close calls.
            if case == 1 {
                let routing = out.routing.unwrap();
                let want = fx.i32s("router.prompt1.top_indices");
                let k = routing.top_k;
                let (mut same, mut all) = (0, 0);
                for l in 0..routing.layers.len() {
                    for t in 0..tokens.len() {
                        let mut got: Vec<i32> =
                            routing.experts(l, t).iter().map(|&e| e as i32).collect();
                        let base = (l * tokens.len() + t) * k;
                        let mut exp = want[base..base + k].to_vec();
                        got.sort_unstable();
                        exp.sort_unstable();
                        same += usize::from(got == exp);
                        all += 1;
                    }
                }
                println!("{name} prompt1: router top-{k} sets agree for {same}/{all} token-layers");
            }
        }
    }
}

#[test]
fn cached_decode_matches_the_incremental_reference() {
    let Some(gpu) = gpu() else { return };
    for name in MODELS {
        let fx = Fixture::load(name);
        let m = fx.upload(&gpu);
        let v = m.config().vocab_size;
        let tokens = fx.tokens(1);
        let prefill = fx.exp.json["incremental"]["prefill"].as_u64().unwrap() as usize;
        let want = fx.f32s("incremental.prompt1.logits");
        let stored_rows = want.len() / v;
        let first_row = tokens.len() - stored_rows; // tiny-bf16 stores positions 20.. only
        // A small initial capacity so the cache has to grow (and copy) along the way.
        let mut cache = m.new_cache(8).unwrap();
        let positions: Vec<usize> = (0..prefill).collect();
        let out = m
            .prefill(&tokens[..prefill], &positions, &mut cache, ALL)
            .unwrap();
        let mut rows: Vec<Vec<f32>> = (0..prefill).map(|t| out.row(t).to_vec()).collect();
        for (p, &tok) in tokens.iter().enumerate().skip(prefill) {
            let out = m
                .decode(tok, p, &mut cache, ForwardOptions::default())
                .unwrap();
            rows.push(out.logits);
        }
        assert_eq!(cache.len(), tokens.len());
        let mut worst = 0f32;
        for (r, got) in rows.iter().enumerate().skip(first_row) {
            let want_row = &want[(r - first_row) * v..][..v];
            let w = check_rel(
                &format!("{name} incremental row {r}"),
                got,
                want_row,
                REL_TOL,
            )
            .unwrap();
            worst = worst.max(w.rel);
        }
        println!("{name}: cached rows within {worst:.3e} of max |ref|");
    }
}

#[test]
fn greedy_on_the_device_follows_the_reference_path() {
    let Some(gpu) = gpu() else { return };
    for name in MODELS {
        let fx = Fixture::load(name);
        let m = fx.upload(&gpu);
        for case in 0..3 {
            let tokens = fx.tokens(case);
            let want = ids(&fx.exp.json["cases"][case]["greedy_new_tokens"]);
            let mut cache = m.new_cache(tokens.len() + want.len()).unwrap();
            let positions: Vec<usize> = (0..tokens.len()).collect();
            let mut next = m.prefill_greedy(&tokens, &positions, &mut cache).unwrap();
            let mut got = vec![next];
            while got.len() < want.len() {
                next = m.decode_greedy(next, cache.len(), &mut cache).unwrap();
                got.push(next);
            }
            let same = got.iter().zip(&want).take_while(|(a, b)| a == b).count();
            // Not required to match (bf16): printed so drift can be followed.
            println!(
                "{name} prompt{case}: greedy path equal for the first {same}/{} tokens",
                want.len()
            );
            assert!(got.iter().all(|&t| (t as usize) < m.config().vocab_size));
        }
    }
}

#[test]
fn input_errors_are_reported_not_launched() {
    let Some(gpu) = gpu() else { return };
    let fx = Fixture::load("tiny-f32");
    let m = fx.upload(&gpu);
    let mut cache = m.new_cache(16).unwrap();
    let opts = ForwardOptions::default();
    assert!(m.prefill(&[], &[], &mut cache, opts).is_err());
    assert!(
        m.prefill(&[5000], &[0], &mut cache, opts).is_err(),
        "token out of range"
    );
    assert!(
        m.prefill(&[1], &[3], &mut cache, opts).is_err(),
        "position gap"
    );
    assert!(m.prefill(&[1, 2], &[0, 1], &mut cache, opts).is_ok());
    assert_eq!(cache.len(), 2);
}
