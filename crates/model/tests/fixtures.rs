//! The forward pass against transformers' `MixtralForCausalLM` on every fixture model:
//! logits at every position, cached decode, greedy continuations and router choices.
//!
//! Tolerances are the fixtures' README's: for an f32 engine, every stored logits tensor within
//! `1e-4 × max |ref|`, argmax identical at every position, greedy tokens identical.

use mixtral_kernels::Isa;
use mixtral_model::{ForwardOptions, Kernels, Logits, Model, RoutingTrace};
mod common;

use common::{Expected, fixture};
use mixtral_testkit::json_ids as ids;
use mixtral_testkit::{argmax, check_rel};
use serde_json::Value;

const REL_TOL: f32 = 1e-4;
/// `tiny-f32-mistral` (Mistral's `params.json` + `consolidated.safetensors`, q/k rows in
/// adjacent-pair RoPE order) and `tiny-f32-v5` (transformers 5.x fused experts) hold
/// `tiny-f32`'s weights in other layouts: their expected outputs are `tiny-f32`'s.
const MODELS: [&str; 5] = [
    "tiny-f32",
    "tiny-bf16",
    "tiny-variant-f32",
    "tiny-f32-mistral",
    "tiny-f32-v5",
];

/// Every kernel set the model can run here: the reference twins and each available CPU ISA.
fn kernel_sets() -> Vec<Kernels> {
    std::iter::once(Kernels::Reference)
        .chain(Isa::available().into_iter().map(Kernels::Cpu))
        .collect()
}

/// Each fixture model with each kernel set, named for messages.
fn fixtures() -> impl Iterator<Item = (String, Fixture)> {
    MODELS.into_iter().flat_map(|name| {
        kernel_sets().into_iter().map(move |k| {
            let mut fx = Fixture::load(name);
            fx.model = fx.model.with_kernels(k);
            (format!("{name} [{k:?}]"), fx)
        })
    })
}

struct Fixture {
    model: Model,
    exp: Expected,
}

impl Fixture {
    fn load(name: &str) -> Fixture {
        let model = Model::open(fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        let expected = name.strip_suffix("-mistral").or(name.strip_suffix("-v5"));
        Fixture {
            model,
            exp: Expected::load(expected.unwrap_or(name)),
        }
    }

    fn f32s(&self, tensor: &str) -> Option<Vec<f32>> {
        self.exp.f32s(tensor)
    }

    fn i32s(&self, tensor: &str) -> Vec<i32> {
        self.exp.i32s(tensor)
    }

    fn cases(&self) -> &[Value] {
        self.exp.cases()
    }

    fn vocab(&self) -> usize {
        self.model.config().vocab_size
    }
}

fn positions(start: usize, n: usize) -> Vec<usize> {
    (start..start + n).collect()
}

/// Full-sequence forward with every logits row and the routing trace.
fn forward_all(m: &Model, tokens: &[u32]) -> (Vec<f32>, RoutingTrace) {
    let mut cache = m.new_cache();
    let opts = ForwardOptions {
        logits: Logits::All,
        trace_routing: true,
        ..Default::default()
    };
    let out = m
        .prefill(tokens, &positions(0, tokens.len()), &mut cache, opts)
        .unwrap();
    (out.logits, out.routing.unwrap())
}

#[test]
fn logits_at_every_position_match_transformers() {
    for (name, fx) in fixtures() {
        let v = fx.vocab();
        for (i, case) in fx.cases().iter().enumerate() {
            let tokens = ids(&case["input_ids"]);
            let (logits, _) = forward_all(&fx.model, &tokens);
            let n = tokens.len();
            if let Some(all) = fx.f32s(&format!("prompt{i}.logits_all")) {
                let w = check_rel(
                    &format!("{name} prompt{i} logits_all"),
                    &logits,
                    &all,
                    REL_TOL,
                )
                .unwrap();
                println!(
                    "{name} prompt{i}: all-position logits rel max diff {:.2e}",
                    w.rel
                );
            }
            if let Some(tail) = fx.f32s(&format!("prompt{i}.logits_tail")) {
                let start = case["logits_tail_start"].as_u64().unwrap() as usize;
                check_rel(
                    &format!("{name} prompt{i} logits_tail"),
                    &logits[start * v..],
                    &tail,
                    REL_TOL,
                )
                .unwrap();
            }
            let last = fx.f32s(&format!("prompt{i}.logits_last")).unwrap();
            check_rel(
                &format!("{name} prompt{i} logits_last"),
                &logits[(n - 1) * v..],
                &last,
                REL_TOL,
            )
            .unwrap();
            let want_argmax = fx.i32s(&format!("prompt{i}.argmax_all"));
            for (t, &want) in want_argmax.iter().enumerate() {
                let got = argmax(&logits[t * v..(t + 1) * v]);
                assert_eq!(got as i32, want, "{name} prompt{i}: argmax at position {t}");
            }
        }
    }
}

#[test]
fn prefill_then_decode_matches_the_full_forward() {
    for (name, fx) in fixtures() {
        let v = fx.vocab();
        let inc = &fx.exp.json["incremental"];
        let (prompt, prefill) = (
            inc["prompt"].as_u64().unwrap() as usize,
            inc["prefill"].as_u64().unwrap() as usize,
        );
        let tokens = ids(&fx.cases()[prompt]["input_ids"]);
        let mut cache = fx.model.new_cache();
        let all = ForwardOptions {
            logits: Logits::All,
            ..Default::default()
        };
        let mut got = fx
            .model
            .prefill(&tokens[..prefill], &positions(0, prefill), &mut cache, all)
            .unwrap()
            .logits;
        for (p, &tok) in tokens.iter().enumerate().skip(prefill) {
            let out = fx
                .model
                .decode(tok, p, &mut cache, ForwardOptions::default())
                .unwrap();
            got.extend_from_slice(out.last());
        }
        assert_eq!(cache.len(), tokens.len());
        let want = fx
            .f32s(&format!("incremental.prompt{prompt}.logits"))
            .unwrap();
        // tiny-bf16 stores only the decoded rows (positions prefill..).
        let got = &got[got.len() - want.len()..];
        let w = check_rel(&format!("{name} incremental"), got, &want, REL_TOL).unwrap();
        println!("{name}: cached decode rel max diff {:.2e}", w.rel);
        // And against our own full forward, row for row.
        let (full, _) = forward_all(&fx.model, &tokens);
        check_rel(
            &format!("{name} incremental vs own full"),
            got,
            &full[full.len() - got.len()..],
            REL_TOL,
        )
        .unwrap();
        assert_eq!(got.len() % v, 0);
    }
}

#[test]
fn greedy_continuations_are_token_for_token_identical() {
    for (name, fx) in fixtures() {
        for (i, case) in fx.cases().iter().enumerate() {
            let tokens = ids(&case["input_ids"]);
            let want = ids(&case["greedy_new_tokens"]);
            let step_logits = fx.f32s(&format!("prompt{i}.greedy_step_logits")).unwrap();
            let v = fx.vocab();
            let mut cache = fx.model.new_cache();
            let out = fx
                .model
                .prefill(
                    &tokens,
                    &positions(0, tokens.len()),
                    &mut cache,
                    ForwardOptions::default(),
                )
                .unwrap();
            let mut row = out.last().to_vec();
            let mut got = Vec::new();
            for step in 0..want.len() {
                if step < 4 {
                    let what = format!("{name} prompt{i} greedy step {step} logits");
                    check_rel(&what, &row, &step_logits[step * v..(step + 1) * v], REL_TOL)
                        .unwrap();
                }
                let next = argmax(&row) as u32;
                got.push(next);
                let pos = tokens.len() + step;
                row = fx
                    .model
                    .decode(next, pos, &mut cache, ForwardOptions::default())
                    .unwrap()
                    .last()
                    .to_vec();
            }
            assert_eq!(got, want, "{name} prompt{i}: greedy continuation");
        }
    }
}

#[test]
fn router_choices_match_at_every_position_with_a_clear_margin() {
    for (name, fx) in fixtures() {
        let c = fx.model.config();
        let (layers, e, k) = (
            c.num_hidden_layers,
            c.num_local_experts,
            c.num_experts_per_tok,
        );
        let prompt = fx.exp.json["router"]["prompt"].as_u64().unwrap() as usize;
        let tokens = ids(&fx.cases()[prompt]["input_ids"]);
        let (_, trace) = forward_all(&fx.model, &tokens);
        let want_ids = fx.i32s(&format!("router.prompt{prompt}.top_indices")); // [L, T, K]
        let want_w = fx
            .f32s(&format!("router.prompt{prompt}.top_weights"))
            .unwrap(); // [L, T, K]
        let ref_logits = fx.f32s(&format!("router.prompt{prompt}.logits")).unwrap(); // [L, T, E]
        let (mut checked, mut skipped) = (0, 0);
        for l in 0..layers {
            for t in 0..tokens.len() {
                let at = (l * tokens.len() + t) * k;
                let mut sorted = ref_logits[(l * tokens.len() + t) * e..][..e].to_vec();
                sorted.sort_by(|a, b| b.total_cmp(a));
                let margin = if k < e {
                    sorted[k - 1] - sorted[k]
                } else {
                    f32::INFINITY
                };
                if margin <= REL_TOL * sorted[0].abs().max(1.0) {
                    skipped += 1;
                    continue;
                }
                let want: Vec<u32> = want_ids[at..at + k].iter().map(|&x| x as u32).collect();
                assert_eq!(
                    trace.experts(l, t),
                    want.as_slice(),
                    "{name}: layer {l} token {t} experts"
                );
                check_rel(
                    &format!("{name}: layer {l} token {t} weights"),
                    trace.weights(l, t),
                    &want_w[at..at + k],
                    REL_TOL,
                )
                .unwrap();
                checked += 1;
            }
        }
        assert_eq!(checked + skipped, layers * tokens.len());
        assert!(checked > 0);
        println!(
            "{name}: {checked} token-layers checked, {skipped} skipped for a margin under tolerance"
        );
    }
}

#[test]
fn bad_input_is_a_typed_error() {
    let fx = Fixture::load("tiny-f32");
    let m = &fx.model;
    let mut cache = m.new_cache();
    let opts = ForwardOptions::default();
    let err = m.prefill(&[], &[], &mut cache, opts).unwrap_err();
    assert_eq!(err.to_string(), "empty input: at least one token is needed");
    let err = m
        .prefill(&[1, 5000], &[0, 1], &mut cache, opts)
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "token id 5000 at position 1 is out of range for a vocabulary of 1024"
    );
    let err = m.prefill(&[1], &[3], &mut cache, opts).unwrap_err();
    assert_eq!(
        err.to_string(),
        "position 3 given where the cache expects 0"
    );
    let too_long = vec![1u32; 4097];
    let err = m
        .prefill(&too_long, &positions(0, 4097), &mut cache, opts)
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "sequence of 4097 positions exceeds max_position_embeddings = 4096"
    );
    assert!(cache.is_empty(), "a rejected call must not touch the cache");
}

/// The fixtures README's checks for a bf16 compute path (against the f32 reference):
/// `max |diff| ≤ 5e-2 × max |ref|` on prompts 0 and 1's last logits, argmax agreement ≥ 90%
/// over all positions. Greedy identity is not required.
const BF16_REL_TOL: f32 = 5e-2;
const BF16_MIN_ARGMAX_AGREEMENT: f64 = 0.9;

#[test]
fn bf16_activations_match_transformers_within_bf16_tolerance() {
    let fx = Fixture::load("tiny-bf16");
    for isa in Isa::available() {
        let f32_model = Fixture::load("tiny-bf16")
            .model
            .with_kernels(Kernels::Cpu(isa));
        let m = Fixture::load("tiny-bf16")
            .model
            .with_kernels(Kernels::CpuBf16(isa));
        let v = fx.vocab();
        for (i, case) in fx.cases().iter().enumerate() {
            let tokens = ids(&case["input_ids"]);
            let (logits, _) = forward_all(&m, &tokens);
            let last = &logits[(tokens.len() - 1) * v..];
            let want_last = fx.f32s(&format!("prompt{i}.logits_last")).unwrap();
            let w = mixtral_testkit::worst(last, &want_last);
            println!(
                "tiny-bf16 [{isa}] prompt{i}: bf16 last-row max |diff| / max |ref| = {:.3e}",
                w.rel
            );
            if i < 2 {
                check_rel(
                    &format!("prompt{i} logits_last"),
                    last,
                    &want_last,
                    BF16_REL_TOL,
                )
                .unwrap();
            }
            let want_argmax = fx.i32s(&format!("prompt{i}.argmax_all"));
            let agree = (0..tokens.len())
                .filter(|&t| argmax(&logits[t * v..(t + 1) * v]) as i32 == want_argmax[t])
                .count();
            let frac = agree as f64 / tokens.len() as f64;
            assert!(
                frac >= BF16_MIN_ARGMAX_AGREEMENT,
                "[{isa}] prompt{i}: argmax agreement {agree}/{}",
                tokens.len()
            );
            // The rounding is really applied: the bf16 path must differ from the f32 one by
            // more than the f32 tolerance (an engine that ignored the precision would not).
            let (exact, _) = forward_all(&f32_model, &tokens);
            let gap = mixtral_testkit::worst(&logits, &exact);
            assert!(
                gap.rel > REL_TOL,
                "[{isa}] prompt{i}: bf16 path equals f32 ({:.1e})",
                gap.rel
            );
        }
    }
}

#[test]
fn bf16_precision_leaves_f32_weights_exact() {
    // Only bf16 weights get bf16 activations: an f32 checkpoint runs the same arithmetic.
    let fx = Fixture::load("tiny-f32");
    let tokens = ids(&fx.cases()[0]["input_ids"]);
    for isa in Isa::available() {
        let exact = Fixture::load("tiny-f32")
            .model
            .with_kernels(Kernels::Cpu(isa));
        let bf16 = Fixture::load("tiny-f32")
            .model
            .with_kernels(Kernels::CpuBf16(isa));
        assert_eq!(
            forward_all(&exact, &tokens).0,
            forward_all(&bf16, &tokens).0,
            "[{isa}]"
        );
    }
}

/// Greedy continuation of `n` tokens through the KV cache.
fn greedy_tokens(m: &Model, prompt: &[u32], n: usize) -> Vec<u32> {
    let mut cache = m.new_cache();
    let out = m
        .prefill(
            prompt,
            &positions(0, prompt.len()),
            &mut cache,
            ForwardOptions::default(),
        )
        .unwrap();
    let mut next = argmax(out.last()) as u32;
    let mut got = vec![next];
    while got.len() < n {
        let pos = cache.len();
        next = argmax(m.decode_logits(next, pos, &mut cache).unwrap()) as u32;
        got.push(next);
    }
    got
}

#[test]
fn half_precision_kv_caches_keep_the_bf16_tolerance_and_greedy_paths() {
    // The measurement behind the engine's default (f16 KV with reduced-precision matmuls):
    // with bf16 activations, an f16 or bf16 cache stays within the fixtures README's bf16
    // tolerance of the f32 reference. Greedy paths are printed, not required (the README
    // requires no greedy identity at bf16: bf16 activations alone move it).
    use mixtral_model::KvDType;
    let fx = Fixture::load("tiny-bf16");
    let v = fx.vocab();
    for isa in Isa::available() {
        let model = |kv| {
            Fixture::load("tiny-bf16")
                .model
                .with_kernels(Kernels::CpuBf16(isa))
                .with_kv_dtype(kv)
        };
        let f32_kv = model(KvDType::F32);
        for kv in [KvDType::F16, KvDType::Bf16] {
            let m = model(kv);
            for (i, case) in fx.cases().iter().enumerate() {
                let tokens = ids(&case["input_ids"]);
                let want_last = fx.f32s(&format!("prompt{i}.logits_last")).unwrap();
                let (logits, _) = forward_all(&m, &tokens);
                let last = &logits[(tokens.len() - 1) * v..];
                let w = mixtral_testkit::worst(last, &want_last);
                println!(
                    "tiny-bf16 [{isa} {kv:?} KV, bf16] prompt{i}: rel {:.3e}",
                    w.rel
                );
                if i < 2 {
                    check_rel(&format!("{kv:?} prompt{i}"), last, &want_last, BF16_REL_TOL)
                        .unwrap();
                }
                let want = ids(&case["greedy_new_tokens"]);
                let n = want.len();
                let (a, b) = (
                    greedy_tokens(&m, &tokens, n),
                    greedy_tokens(&f32_kv, &tokens, n),
                );
                let agree =
                    |x: &[u32], y: &[u32]| x.iter().zip(y).take_while(|(p, q)| p == q).count();
                println!(
                    "  greedy agreement: {kv:?} KV vs f32 KV {}/{n}; vs the f32 reference: \
                     {kv:?} KV {}, f32 KV {}",
                    agree(&a, &b),
                    agree(&a, &want),
                    agree(&b, &want)
                );
            }
        }
    }
}

#[test]
fn an_f16_kv_cache_at_f32_compute_is_measured_against_the_f32_tolerance() {
    // What an f16 cache costs the exact path (which keeps an f32 cache by default): printed
    // for docs/performance.md, and bounded well inside the bf16 tolerance.
    use mixtral_model::KvDType;
    for name in ["tiny-f32", "tiny-bf16"] {
        let fx = Fixture::load(name);
        let m = Fixture::load(name).model.with_kv_dtype(KvDType::F16);
        let v = fx.vocab();
        for (i, case) in fx.cases().iter().enumerate() {
            let tokens = ids(&case["input_ids"]);
            let want_last = fx.f32s(&format!("prompt{i}.logits_last")).unwrap();
            let (logits, _) = forward_all(&m, &tokens);
            let w = mixtral_testkit::worst(&logits[(tokens.len() - 1) * v..], &want_last);
            println!("{name} [f16 KV, f32] prompt{i}: rel {:.3e}", w.rel);
            assert!(w.rel < 1e-2, "{name} prompt{i}: {}", w.rel);
        }
    }
}
