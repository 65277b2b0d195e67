//! Loading the fixture checkpoints, and every way a checkpoint can contradict its config.

mod common;

use common::{fixture, keep, rewrite};
use mixtral_model::{Checkpoint, Error, Warning, names};
use mixtral_tensor::{DType, Tensor};

#[test]
fn every_fixture_loads_with_the_shapes_its_config_implies() {
    for (model, layers, experts, dtype) in [
        ("tiny-f32", 2, 8, DType::F32),
        ("tiny-bf16", 2, 8, DType::BF16),
        ("tiny-variant-f32", 3, 6, DType::F32),
    ] {
        let ckpt = Checkpoint::open(fixture(model)).unwrap();
        let c = &ckpt.config;
        assert_eq!(ckpt.weights.layers.len(), layers, "{model}");
        assert_eq!(ckpt.weights.layers[0].experts.len(), experts, "{model}");
        assert!(ckpt.warnings.is_empty(), "{model}: {:?}", ckpt.warnings);
        for t in ckpt.weights.tensors() {
            assert_eq!(t.dtype(), dtype, "{model}");
            assert!(
                ckpt.store().maps_address(t.as_bytes().as_ptr()),
                "{model}: a weight was copied"
            );
        }
        assert_eq!(
            ckpt.weights.layers[0].wq.dims(),
            &[c.q_dim(), c.hidden_size]
        );
        let n: usize = ckpt.weights.tensors().iter().map(|t| t.numel()).sum();
        assert_eq!(n as u64, c.n_params(), "{model}: parameter count");
    }
}

#[test]
fn both_config_key_styles_are_read() {
    let f32 = Checkpoint::open(fixture("tiny-f32")).unwrap().config; // transformers 5.x style
    assert_eq!(
        (f32.rope_theta, f32.head_dim, f32.torch_dtype),
        (1e6, 16, Some(DType::F32))
    );
    let bf16 = Checkpoint::open(fixture("tiny-bf16")).unwrap().config; // hub style
    assert_eq!(
        (bf16.rope_theta, bf16.head_dim, bf16.torch_dtype),
        (1e6, 128, Some(DType::BF16))
    );
    let variant = Checkpoint::open(fixture("tiny-variant-f32"))
        .unwrap()
        .config;
    assert_eq!(
        (
            variant.sliding_window,
            variant.num_experts_per_tok,
            variant.num_key_value_heads
        ),
        (Some(16), 3, 1)
    );
}

#[test]
fn a_sharded_checkpoint_loads_the_same_tensors_as_one_file() {
    let dir = tempfile::tempdir().unwrap();
    rewrite("tiny-bf16", dir.path(), keep, |_| {});
    let sharded = Checkpoint::open(fixture("tiny-bf16")).unwrap();
    let single = Checkpoint::open(dir.path()).unwrap();
    for (a, b) in sharded
        .weights
        .tensors()
        .iter()
        .zip(single.weights.tensors())
    {
        assert_eq!(a.as_bytes(), b.as_bytes());
    }
}

#[test]
fn wrong_shape_names_tensor_expected_and_found() {
    let dir = tempfile::tempdir().unwrap();
    let victim = names::expert_w1(1, 5);
    rewrite(
        "tiny-f32",
        dir.path(),
        |name, t| {
            if name == victim {
                let v = Tensor::from_vec(vec![0f32; 128 * 63], [128, 63]).unwrap();
                vec![(name.to_string(), v)]
            } else {
                keep(name, t)
            }
        },
        |_| {},
    );
    let err = Checkpoint::open(dir.path()).unwrap_err();
    assert!(
        matches!(&err, Error::WrongShape { name, .. } if *name == victim),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.ends_with("model.layers.1.block_sparse_moe.experts.5.w1.weight: expected [128, 64], found [128, 63]"),
        "{msg}"
    );
    assert!(msg.contains("model.safetensors"), "{msg}");
}

#[test]
fn missing_tensor_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let victim = names::wk(0);
    rewrite(
        "tiny-f32",
        dir.path(),
        |name, t| {
            if name == victim {
                vec![]
            } else {
                keep(name, t)
            }
        },
        |_| {},
    );
    let err = Checkpoint::open(dir.path()).unwrap_err();
    assert!(
        matches!(&err, Error::MissingTensor { name, .. } if *name == victim),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .contains("model.layers.0.self_attn.k_proj.weight")
    );
}

#[test]
fn integer_weights_are_an_unsupported_dtype() {
    let dir = tempfile::tempdir().unwrap();
    rewrite(
        "tiny-f32",
        dir.path(),
        |name, t| {
            if name == names::FINAL_NORM {
                vec![(
                    name.to_string(),
                    Tensor::from_vec(vec![1i32; 64], [64]).unwrap(),
                )]
            } else {
                keep(name, t)
            }
        },
        |_| {},
    );
    let err = Checkpoint::open(dir.path()).unwrap_err();
    assert!(
        matches!(
            &err,
            Error::WeightDtype {
                dtype: DType::I32,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("model.norm.weight"));
}

#[test]
fn config_that_contradicts_the_tensors_is_caught() {
    let dir = tempfile::tempdir().unwrap();
    rewrite("tiny-f32", dir.path(), keep, |c| {
        c["intermediate_size"] = 96.into()
    });
    let err = Checkpoint::open(dir.path()).unwrap_err();
    assert!(matches!(&err, Error::WrongShape { .. }), "{err:?}");
    assert!(
        err.to_string()
            .contains("expected [96, 64], found [128, 64]"),
        "{err}"
    );
}

#[test]
fn config_with_indivisible_heads_is_caught() {
    let dir = tempfile::tempdir().unwrap();
    rewrite("tiny-f32", dir.path(), keep, |c| {
        c["num_attention_heads"] = 5.into()
    });
    let err = Checkpoint::open(dir.path()).unwrap_err();
    assert!(
        matches!(
            &err,
            Error::ConfigValue {
                field: "hidden_size",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("config.json"), "{err}");
}

#[test]
fn a_directory_that_is_not_a_model_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let err = Checkpoint::open(dir.path()).unwrap_err();
    assert!(matches!(err, Error::NotAModelDir { .. }));
    let err = Checkpoint::open("/nonexistent/model").unwrap_err();
    assert_eq!(
        err.to_string(),
        "/nonexistent/model: not a model (expected a directory with config.json or params.json, a .gguf file, or a .safetensors file with config.json or params.json beside it)"
    );
}

#[test]
fn config_without_weights_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        fixture("tiny-f32").join("config.json"),
        dir.path().join("config.json"),
    )
    .unwrap();
    let err = Checkpoint::open(dir.path()).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Tensor(mixtral_tensor::Error::NoSafetensors { .. })
        ),
        "{err:?}"
    );
}

#[test]
fn unknown_extra_tensors_are_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    rewrite(
        "tiny-f32",
        dir.path(),
        |name, t| {
            let mut out = keep(name, t.clone());
            if name == names::FINAL_NORM {
                out.push(("model.extra.rotary_emb.inv_freq".to_string(), t));
            }
            out
        },
        |_| {},
    );
    let ckpt = Checkpoint::open(dir.path()).unwrap();
    assert_eq!(
        ckpt.warnings,
        vec![Warning::UnusedTensors {
            names: vec!["model.extra.rotary_emb.inv_freq".to_string()]
        }]
    );
}

#[test]
fn transformers_5_fused_experts_give_the_same_expert_weights() {
    let dir = tempfile::tempdir().unwrap();
    let legacy = Checkpoint::open(fixture("tiny-f32")).unwrap();
    let (f, d, e) = (128, 64, 8);
    rewrite(
        "tiny-f32",
        dir.path(),
        |name, t| {
            if name.contains(".experts.") {
                return vec![];
            }
            let Some(l) = name.strip_suffix(".block_sparse_moe.gate.weight") else {
                return keep(name, t);
            };
            let l: usize = l.rsplit('.').next().unwrap().parse().unwrap();
            let experts = &legacy.weights.layers[l].experts;
            let mut gate_up = Vec::new();
            let mut down = Vec::new();
            for x in experts {
                gate_up.extend_from_slice(x.w1.as_slice::<f32>().unwrap());
                gate_up.extend_from_slice(x.w3.as_slice::<f32>().unwrap());
                down.extend_from_slice(x.w2.as_slice::<f32>().unwrap());
            }
            vec![
                (names::fused_router(l), t),
                (
                    names::fused_gate_up(l),
                    Tensor::from_vec(gate_up, [e, 2 * f, d]).unwrap(),
                ),
                (
                    names::fused_down(l),
                    Tensor::from_vec(down, [e, d, f]).unwrap(),
                ),
            ]
        },
        |_| {},
    );
    let fused = Checkpoint::open(dir.path()).unwrap();
    assert!(fused.warnings.is_empty(), "{:?}", fused.warnings);
    for (a, b) in legacy.weights.tensors().iter().zip(fused.weights.tensors()) {
        assert_eq!(a.dims(), b.dims());
        assert_eq!(a.as_bytes(), b.as_bytes());
        assert!(b.is_mapped());
    }
}

#[test]
fn a_checkpoint_with_misaligned_data_runs_through_an_aligned_copy() {
    let src = fixture("tiny-f32");
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(src.join("model.safetensors")).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    // One more byte of header (a trailing space, valid JSON): every tensor's data moves off
    // its alignment, as the format allows.
    let mut moved = ((n + 1) as u64).to_le_bytes().to_vec();
    moved.extend_from_slice(&bytes[8..8 + n]);
    moved.push(b' ');
    moved.extend_from_slice(&bytes[8 + n..]);
    std::fs::write(dir.path().join("model.safetensors"), moved).unwrap();
    std::fs::copy(src.join("config.json"), dir.path().join("config.json")).unwrap();
    let ckpt = Checkpoint::open(dir.path()).unwrap();
    assert!(
        matches!(&ckpt.warnings[..], [Warning::AlignedCopy { path }] if path.ends_with("model.safetensors")),
        "{:?}",
        ckpt.warnings
    );
    assert!(
        ckpt.warnings[0]
            .to_string()
            .contains("copied to aligned memory")
    );
    let run = |m: mixtral_model::Model| {
        let mut cache = m.new_cache();
        m.prefill(&[1, 5, 9], &[0, 1, 2], &mut cache, Default::default())
            .unwrap()
            .logits
    };
    let original = mixtral_model::Model::open(&src).unwrap();
    assert_eq!(run(mixtral_model::Model::new(ckpt).unwrap()), run(original));
}

#[test]
fn many_unused_tensors_make_one_short_warning() {
    let dir = tempfile::tempdir().unwrap();
    rewrite(
        "tiny-f32",
        dir.path(),
        |name, t| {
            let mut out = keep(name, t.clone());
            if name == names::FINAL_NORM {
                out.extend((0..20).map(|i| (format!("extra.{i:02}\u{1b}[31m"), t.clone())));
            }
            out
        },
        |_| {},
    );
    let ckpt = Checkpoint::open(dir.path()).unwrap();
    let text = ckpt.warnings[0].to_string();
    assert!(
        text.starts_with("20 unused tensor(s)") && text.ends_with(" and 12 more"),
        "{text}"
    );
    assert!(!text.contains('\u{1b}'), "{text}");
}

#[test]
fn a_100_kb_tensor_name_is_shown_cut_short() {
    let dir = tempfile::tempdir().unwrap();
    let long = "\u{1b}".repeat(100 << 10);
    rewrite(
        "tiny-f32",
        dir.path(),
        |name, t| {
            let mut out = keep(name, t.clone());
            if name == names::FINAL_NORM {
                out.push((long.clone(), t));
            }
            out
        },
        |_| {},
    );
    let ckpt = Checkpoint::open(dir.path()).unwrap();
    let text = ckpt.warnings[0].to_string();
    assert!(text.len() < 400, "{} bytes: {}", text.len(), &text[..400]);
    assert!(
        text.contains("102400 bytes") && !text.contains('\u{1b}'),
        "{text}"
    );
}
