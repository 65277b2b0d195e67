//! `mixtral logits --router-logits --hidden-states` and the intervention flags on `logits` and
//! `generate`, against transformers' hooked references (`tests/fixtures/research`).

mod common;

use common::{csv, fixture, mixtral, ok_stdout, s, stdout_json};
use mixtral::tensor::SafetensorsFile;
use mixtral_testkit::{check_rel, fixtures_dir};
use serde_json::Value;

fn research() -> (Value, SafetensorsFile) {
    let dir = fixtures_dir().join("research/tiny-f32");
    let exp = serde_json::from_slice(&std::fs::read(dir.join("expected.json")).unwrap()).unwrap();
    (
        exp,
        SafetensorsFile::open(dir.join("expected.safetensors")).unwrap(),
    )
}

fn f32s(file: &SafetensorsFile, name: &str) -> Vec<f32> {
    file.tensor(name).unwrap().to_f32_vec().unwrap()
}

#[test]
fn logits_writes_router_logits_and_hidden_states() {
    let (exp, refs) = research();
    let tokens = csv(&exp["cases"][0]["input_ids"]);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("obs.safetensors");
    let model = fixture("tiny-f32");
    let args = [
        "logits",
        "--model",
        s(&model),
        "--tokens",
        &tokens,
        "--out",
        s(&out),
    ];
    ok_stdout(&mixtral(
        &[&args[..], &["--router-logits", "--hidden-states"]].concat(),
    ));
    let got = SafetensorsFile::open(&out).unwrap();
    let (layers, t, e, d) = (2, 40, 8, 64);
    let want = f32s(&refs, "p0.router_logits");
    for l in 0..layers {
        let g = f32s(&got, &format!("router_logits.{l}"));
        check_rel("router logits", &g, &want[l * t * e..(l + 1) * t * e], 1e-4).unwrap();
    }
    let want = f32s(&refs, "p0.hidden");
    for i in 0..layers + 2 {
        let g = f32s(&got, &format!("hidden.{i}"));
        check_rel(
            &format!("hidden {i}"),
            &g,
            &want[i * t * d..(i + 1) * t * d],
            1e-4,
        )
        .unwrap();
    }
    // Interventions on `logits`: the flags name what the fixtures did.
    for (flags, name) in [
        (vec!["--ablate", "1:3"], "ablate_l1_e3"),
        (vec!["--ablate-expert", "5"], "ablate_e5_every_layer"),
        (vec!["--experts-per-token", "1"], "top_k_1"),
    ] {
        let out = dir.path().join(format!("{name}.safetensors"));
        let args = [
            "logits",
            "--model",
            s(&model),
            "--tokens",
            &tokens,
            "--out",
            s(&out),
        ];
        ok_stdout(&mixtral(&[&args[..], &flags[..]].concat()));
        let got = f32s(&SafetensorsFile::open(&out).unwrap(), "logits");
        check_rel(name, &got, &f32s(&refs, &format!("p0.{name}.logits")), 1e-4).unwrap();
    }
}

#[test]
fn generate_applies_the_intervention_to_decoded_tokens() {
    let (exp, _) = research();
    let case = &exp["cases"][0];
    let model = fixture("tiny-f32");
    for (flags, i) in [(["--ablate", "1:3"], 0), (["--experts-per-token", "3"], 4)] {
        let iv = &case["interventions"][i];
        let want = &iv["greedy_new_tokens"];
        let n = want.as_array().unwrap().len().to_string();
        let json = stdout_json(&mixtral(&[
            "generate",
            "--model",
            s(&model),
            "--tokens",
            &csv(&case["input_ids"]),
            "--max-new-tokens",
            &n,
            "--ignore-eos",
            "--temperature",
            "0",
            "--json",
            flags[0],
            flags[1],
        ]));
        assert_eq!(&json["ids"], want, "{}", iv["name"]);
    }
}

#[test]
fn interventions_that_do_not_fit_are_clear_errors() {
    let model = fixture("tiny-f32");
    for (flags, needle) in [
        (vec!["--ablate", "9:0"], "ablate 9:0"),
        (vec!["--ablate", "1-3"], "expected LAYER:EXPERT"),
        (vec!["--experts-per-token", "9"], "9 experts per token"),
    ] {
        let out = mixtral(
            &[
                &["generate", "--model", s(&model), "--tokens", "1,2"][..],
                &flags[..],
            ]
            .concat(),
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains(needle),
            "{flags:?}: {err}"
        );
        assert!(!err.contains("panicked"), "{err}");
    }
}
