//! Looking inside and steering the router, against transformers with hooks on
//! `MixtralForCausalLM` (`tests/fixtures/research`, README there): router logits over every
//! expert, the residual stream, and logits and greedy continuations under ablation, forced
//! routing and a changed top-k, on every device ([`common::devices`]) within its tolerance
//! (1e-4 of max |reference| for the f32 kernel sets, 5e-2 for bf16 numerics).

mod common;

use common::devices::devices;
use mixtral_model::{
    Error, ForceRouting, ForwardOptions, Intervention, Logits, Model, RouterLogits, Step,
};
use mixtral_tensor::SafetensorsFile;
use mixtral_testkit::json_ids as ids;
use mixtral_testkit::{argmax, check_rel, fixtures_dir};
use serde_json::Value;
use std::sync::Arc;

/// The intervention a fixture entry describes.
fn intervention(spec: &Value) -> Intervention {
    let mut iv = Intervention::default();
    let num = |v: &Value| v.as_u64().unwrap() as usize;
    match spec["kind"].as_str().unwrap() {
        "ablate" => {
            if let Some(pairs) = spec["pairs"].as_array() {
                iv.ablate = pairs.iter().map(|p| (num(&p[0]), num(&p[1]))).collect();
            } else {
                iv.ablate_everywhere = vec![num(&spec["expert"])];
            }
        }
        "force" => {
            iv.force = vec![ForceRouting {
                layer: num(&spec["layer"]),
                positions: spec["positions"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(num)
                    .collect(),
                experts: ids(&spec["experts"]),
            }]
        }
        "top_k" => iv.experts_per_token = Some(num(&spec["k"])),
        other => panic!("unknown intervention {other}"),
    }
    iv
}

fn all(router_logits: bool, hidden_states: bool) -> ForwardOptions {
    ForwardOptions {
        logits: Logits::All,
        router_logits,
        hidden_states,
        ..Default::default()
    }
}

fn greedy(m: &Model, prompt: &[u32], n: usize, iv: &Intervention) -> Vec<u32> {
    let mut cache = m.new_cache();
    let positions: Vec<usize> = (0..prompt.len()).collect();
    let out = m
        .forward(
            Step::new(prompt, &positions)
                .options(ForwardOptions::default())
                .steer(iv),
            &mut cache,
        )
        .unwrap();
    let mut next = argmax(out.last()) as u32;
    let mut tokens = vec![next];
    while tokens.len() < n {
        let pos = cache.len();
        let out = m
            .forward(
                Step::new(&[next], &[pos])
                    .options(ForwardOptions::default())
                    .steer(iv),
                &mut cache,
            )
            .unwrap();
        next = argmax(out.last()) as u32;
        tokens.push(next);
    }
    tokens
}

#[test]
fn observations_and_interventions_match_transformers() {
    for name in ["tiny-f32", "tiny-variant-f32"] {
        let dir = fixtures_dir().join("research").join(name);
        let exp: Value =
            serde_json::from_slice(&std::fs::read(dir.join("expected.json")).unwrap()).unwrap();
        let refs = SafetensorsFile::open(dir.join("expected.safetensors")).unwrap();
        let t = |key: &str| refs.tensor(key).unwrap().to_f32_vec().unwrap();
        let case = &exp["cases"][0];
        let tokens = ids(&case["input_ids"]);
        let positions: Vec<usize> = (0..tokens.len()).collect();
        for dev in devices() {
            let model = dev.open(fixtures_dir().join("models").join(name));
            let c = model.config().clone();
            let what = format!("{name} [{}]", dev.name);
            let tol = dev.tol;
            // Observation.
            let out = model
                .prefill(&tokens, &positions, &mut model.new_cache(), all(true, true))
                .unwrap();
            check_rel(&format!("{what} logits"), &out.logits, &t("p0.logits"), tol).unwrap();
            let router = out.router_logits.unwrap();
            assert_eq!(
                router.dims,
                [c.num_hidden_layers, tokens.len(), c.num_local_experts]
            );
            let want = t("p0.router_logits");
            check_rel(&format!("{what} router logits"), &router.data, &want, tol).unwrap();
            let hidden = out.hidden_states.unwrap();
            assert_eq!(
                hidden.dims,
                [c.num_hidden_layers + 2, tokens.len(), c.hidden_size]
            );
            let want = t("p0.hidden");
            let per = tokens.len() * c.hidden_size;
            for i in 0..hidden.dims[0] {
                let w = &want[i * per..(i + 1) * per];
                check_rel(&format!("{what} hidden {i}"), hidden.slice(i), w, tol).unwrap();
            }
            // Interventions: logits of the prompt and the greedy continuation.
            for spec in case["interventions"].as_array().unwrap() {
                let iv = intervention(spec);
                let label = format!("{what} {}", spec["name"].as_str().unwrap());
                let out = model
                    .forward(
                        Step::new(&tokens, &positions)
                            .options(all(false, false))
                            .steer(&iv),
                        &mut model.new_cache(),
                    )
                    .unwrap();
                let want = t(&format!("p0.{}.logits", spec["name"].as_str().unwrap()));
                check_rel(&label, &out.logits, &want, tol).unwrap();
                let want = ids(&spec["greedy_new_tokens"]);
                let got = greedy(&model, &tokens, want.len(), &iv);
                // bf16 numerics may drift from the f32 path; f32 ones must not.
                match dev.exact {
                    true => assert_eq!(got, want, "{label}: greedy"),
                    false => println!("{label}: greedy equal: {}", got == want),
                }
            }
        }
    }
}

#[test]
fn a_hook_sees_and_edits_the_logits_as_ablation_does() {
    for dev in devices() {
        hook_equals_ablation(&dev.open(fixtures_dir().join("models/tiny-f32")));
    }
}

/// Ablating expert 3 of layer 1 through the hook equals the named ablation.
fn hook_equals_ablation(model: &Model) {
    let tokens: Vec<u32> = (1..20).collect();
    let positions: Vec<usize> = (0..tokens.len()).collect();
    let named = Intervention {
        ablate: vec![(1, 3)],
        ..Default::default()
    };
    let hook = Intervention {
        hook: Some(Arc::new(|r: &mut RouterLogits<'_>| {
            if r.layer == 1 {
                for t in 0..r.positions.len() {
                    r.token(t)[3] = f32::NEG_INFINITY;
                }
            }
        })),
        ..Default::default()
    };
    let run = |iv: &Intervention| {
        model
            .forward(
                Step::new(&tokens, &positions)
                    .options(all(true, false))
                    .steer(iv),
                &mut model.new_cache(),
            )
            .unwrap()
    };
    let (a, b) = (run(&named), run(&hook));
    assert_eq!(a.logits, b.logits);
    assert_eq!(a.router_logits, b.router_logits);
    assert_eq!(b.router_logits.unwrap().at(1, 0)[3], f32::NEG_INFINITY);
}

#[test]
fn a_cache_is_never_continued_under_another_intervention() {
    for dev in devices() {
        one_intervention_per_cache(&dev.open(fixtures_dir().join("models/tiny-f32")));
    }
}

fn one_intervention_per_cache(model: &Model) {
    let iv = Intervention {
        experts_per_token: Some(1),
        ..Default::default()
    };
    let mut cache = model.new_cache();
    let opts = ForwardOptions::default();
    model
        .forward(
            Step::new(&[1, 2, 3], &[0, 1, 2]).options(opts).steer(&iv),
            &mut cache,
        )
        .unwrap();
    let err = model.decode(4, 3, &mut cache, opts).unwrap_err();
    assert!(
        matches!(
            err,
            Error::CacheSteering {
                cached: true,
                asked: false
            }
        ),
        "{err}"
    );
    assert!(model.decode_logits(4, 3, &mut cache).is_err());
    let other = Intervention {
        experts_per_token: Some(3),
        ..Default::default()
    };
    assert!(
        model
            .forward(
                Step::new(&[4], &[3]).options(opts).steer(&other),
                &mut cache
            )
            .is_err()
    );
    // The same intervention continues; an emptied cache takes any.
    model
        .forward(Step::new(&[4], &[3]).options(opts).steer(&iv), &mut cache)
        .unwrap();
    cache.truncate(0);
    model.decode(1, 0, &mut cache, opts).unwrap();
}

#[test]
fn interventions_that_do_not_fit_are_refused() {
    let model = Model::open(fixtures_dir().join("models/tiny-f32")).unwrap();
    let c = model.config().clone();
    let bad = [
        Intervention {
            experts_per_token: Some(0),
            ..Default::default()
        },
        Intervention {
            experts_per_token: Some(c.num_local_experts + 1),
            ..Default::default()
        },
        Intervention {
            ablate: vec![(c.num_hidden_layers, 0)],
            ..Default::default()
        },
        Intervention {
            ablate_everywhere: (0..7).collect(),
            ..Default::default()
        },
        Intervention {
            force: vec![ForceRouting {
                layer: 0,
                positions: vec![0],
                experts: vec![1],
            }],
            ..Default::default()
        },
        Intervention {
            force: vec![ForceRouting {
                layer: 0,
                positions: vec![0],
                experts: vec![2, 2],
            }],
            ..Default::default()
        },
        Intervention {
            ablate: vec![(0, 1)],
            force: vec![ForceRouting {
                layer: 0,
                positions: vec![0],
                experts: vec![1, 2],
            }],
            ..Default::default()
        },
    ];
    for iv in bad {
        let err = model
            .forward(
                Step::new(&[1], &[0])
                    .options(ForwardOptions::default())
                    .steer(&iv),
                &mut model.new_cache(),
            )
            .unwrap_err();
        assert!(matches!(err, Error::Intervention { .. }), "{iv:?}: {err}");
    }
}
