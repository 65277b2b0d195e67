//! The facade against the fixtures: greedy generation reproduces transformers' continuation,
//! sessions reuse their cache, and stop conditions end generation.

use mixtral::{Engine, FinishReason, Prompt, SamplerConfig};
use mixtral_testkit::json_ids as ids;
use serde_json::Value;

const TINY_BF16: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../tests/fixtures/models/tiny-bf16"
);

fn expected() -> Value {
    serde_json::from_slice(&std::fs::read(format!("{TINY_BF16}/expected.json")).unwrap()).unwrap()
}

#[test]
fn greedy_generation_equals_the_fixture_continuation() {
    let engine = Engine::load(TINY_BF16).unwrap();
    let exp = expected();
    for case in exp["cases"].as_array().unwrap() {
        let mut params = engine.params();
        params.sampling = SamplerConfig::default();
        params.max_new_tokens = 32;
        params.ignore_eos = true; // the fixture never stops at EOS
        let prompt = Prompt::Tokens(ids(&case["input_ids"]));
        let mut generation = engine.generate(&prompt, &params).unwrap();
        let got: Vec<u32> = generation.by_ref().map(|t| t.unwrap().id).collect();
        assert_eq!(got, ids(&case["greedy_new_tokens"]));
        assert_eq!(generation.finish_reason().unwrap().as_str(), "length");
        let stats = generation.stats();
        assert_eq!(
            (
                stats.prompt_tokens,
                stats.generated_tokens,
                stats.decode_steps
            ),
            (case["len"].as_u64().unwrap() as usize, 32, 31)
        );
    }
}

#[test]
fn a_session_reuses_its_cached_prefix() {
    let engine = Engine::load(TINY_BF16).unwrap();
    let mut params = engine.params();
    params.max_new_tokens = 4;
    let first: Vec<u32> = (1..30).collect();
    let mut session = engine.session();
    let a: Vec<u32> = engine
        .generate_in(&mut session, &Prompt::Tokens(first.clone()), &params)
        .unwrap()
        .map(|t| t.unwrap().id)
        .collect();
    assert_eq!(session.ids().len(), first.len() + 3); // the last sampled token was never run
    let mut longer = first.clone();
    longer.extend([500, 600]);
    let g = engine
        .generate_in(&mut session, &Prompt::Tokens(longer.clone()), &params)
        .unwrap();
    assert_eq!(
        g.stats().prefill_tokens,
        2,
        "only the new tokens are computed"
    );
    let fresh = engine
        .generate(&Prompt::Tokens(longer.clone()), &params)
        .unwrap();
    let (reused, recomputed): (Vec<u32>, Vec<u32>) = (
        g.map(|t| t.unwrap().id).collect(),
        fresh.map(|t| t.unwrap().id).collect(),
    );
    assert_eq!(reused, recomputed);
    assert_eq!(a.len(), 4);
}

#[test]
fn eos_stops_generation_unless_ignored() {
    let engine = Engine::load(TINY_BF16).unwrap();
    let exp = expected();
    let case = &exp["cases"][0];
    let continuation = ids(&case["greedy_new_tokens"]);
    // Make the 3rd greedy token a stop token: generation must end right there.
    let mut params = engine.params();
    params.max_new_tokens = 32;
    params.stop_token_ids = vec![continuation[2]];
    let mut g = engine
        .generate(&Prompt::Tokens(ids(&case["input_ids"])), &params)
        .unwrap();
    let got: Vec<u32> = g.by_ref().map(|t| t.unwrap().id).collect();
    let stop_at = continuation
        .iter()
        .position(|&t| t == continuation[2])
        .unwrap();
    assert_eq!(got, continuation[..=stop_at]);
    assert!(matches!(
        g.finish_reason(),
        Some(FinishReason::Stop(mixtral::sampler::StopReason::StopToken(
            _
        )))
    ));
}

#[test]
fn text_prompts_need_a_tokenizer() {
    let engine = Engine::load(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/models/tiny-f32"
    ))
    .unwrap();
    let err = engine
        .generate(&Prompt::Text("hi".into()), &engine.params())
        .unwrap_err();
    assert!(
        err.to_string().contains("no tokenizer (tokenizer.json"),
        "{err}"
    );
}

/// A copy of tiny-f32 whose context is `context` positions.
fn short_context_model(context: usize) -> tempfile::TempDir {
    let src = std::path::Path::new(TINY_BF16).join("../tiny-f32");
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        src.join("model.safetensors"),
        dir.path().join("model.safetensors"),
    )
    .unwrap();
    let mut config: Value =
        serde_json::from_slice(&std::fs::read(src.join("config.json")).unwrap()).unwrap();
    config["max_position_embeddings"] = context.into();
    std::fs::write(dir.path().join("config.json"), config.to_string()).unwrap();
    dir
}

#[test]
fn a_full_context_ends_generation_with_length_and_keeps_the_tokens() {
    let dir = short_context_model(8);
    let engine = Engine::load(dir.path()).unwrap();
    let mut params = engine.params();
    params.max_new_tokens = 100;
    params.ignore_eos = true;
    let prompt = Prompt::Tokens(vec![1, 5, 6, 7, 8]);
    let mut generation = engine.generate(&prompt, &params).unwrap();
    let got: Vec<u32> = generation.by_ref().map(|t| t.unwrap().id).collect();
    // Positions 0..8 hold the prompt and three generated tokens; the fourth is chosen from
    // position 7's logits and cannot be run itself.
    assert_eq!(got.len(), 4);
    assert_eq!(generation.finish_reason(), Some(&FinishReason::ContextFull));
    assert_eq!(generation.finish_reason().unwrap().as_str(), "length");
    // The same tokens as an unbounded context gives.
    let long = short_context_model(4096);
    let engine = Engine::load(long.path()).unwrap();
    params.max_new_tokens = 4;
    let want: Vec<u32> = engine
        .generate(&prompt, &params)
        .unwrap()
        .map(|t| t.unwrap().id)
        .collect();
    assert_eq!(got, want);
}

#[test]
fn a_prompt_longer_than_the_context_is_refused_before_prefill() {
    let dir = short_context_model(8);
    let engine = Engine::load(dir.path()).unwrap();
    let err = engine
        .generate(&Prompt::Tokens(vec![1; 9]), &engine.params())
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "sequence of 9 positions exceeds max_position_embeddings = 8"
    );
}

#[test]
fn a_session_filled_under_another_intervention_is_recomputed() {
    let engine = Engine::load(TINY_BF16).unwrap();
    let mut params = engine.params();
    params.sampling = SamplerConfig::default();
    params.max_new_tokens = 6;
    params.ignore_eos = true;
    let prompt: Vec<u32> = (1..30).collect();
    let mut session = engine.session();
    let g = engine
        .generate_in(&mut session, &Prompt::Tokens(prompt.clone()), &params)
        .unwrap();
    drop(g);
    let mut steered = params.clone();
    steered.intervention = mixtral::Intervention {
        experts_per_token: Some(1),
        ..Default::default()
    };
    let g = engine
        .generate_in(&mut session, &Prompt::Tokens(prompt.clone()), &steered)
        .unwrap();
    assert_eq!(g.stats().prefill_tokens, prompt.len(), "nothing reused");
    let reused: Vec<u32> = g.map(|t| t.unwrap().id).collect();
    let fresh: Vec<u32> = engine
        .generate(&Prompt::Tokens(prompt.clone()), &steered)
        .unwrap()
        .map(|t| t.unwrap().id)
        .collect();
    assert_eq!(reused, fresh);
}

#[test]
fn a_cancel_token_stops_a_prefill_within_one_layer_and_a_generation_between_tokens() {
    use mixtral::{CancelToken, Error, Intervention, RouterHook};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let engine = Engine::load(TINY_BF16).unwrap();
    let layers = engine.config().num_hidden_layers;
    assert!(layers >= 2, "the test needs a layer to stop before");
    // The router hook runs once per layer: the token is cancelled from inside layer 0 of the
    // first chunk (as another thread would), and no further layer may run.
    let cancel = CancelToken::new();
    let calls = Arc::new(AtomicUsize::new(0));
    let hook: RouterHook = {
        let (cancel, calls) = (cancel.clone(), calls.clone());
        Arc::new(move |_| {
            calls.fetch_add(1, Ordering::Relaxed);
            cancel.cancel();
        })
    };
    let mut params = engine.params();
    params.intervention = Intervention {
        hook: Some(hook),
        ..Intervention::default()
    };
    params.cancel = Some(cancel.clone());
    let prompt = Prompt::Tokens((0..3000).map(|i| 1 + i % 500).collect());
    let err = engine.generate(&prompt, &params).unwrap_err();
    assert!(matches!(err, Error::Cancelled), "{err}");
    assert_eq!(
        calls.load(Ordering::Relaxed),
        1,
        "layers run after the cancel"
    );
    // Between tokens: the iterator ends, interrupted, after the token that saw the cancel.
    let cancel = CancelToken::new();
    let mut params = engine.params();
    params.max_new_tokens = 50;
    params.ignore_eos = true;
    params.cancel = Some(cancel.clone());
    let mut generation = engine
        .generate(&Prompt::Tokens(vec![1, 5, 6]), &params)
        .unwrap();
    let mut got = 0;
    for token in generation.by_ref() {
        token.unwrap();
        got += 1;
        if got == 3 {
            cancel.cancel();
        }
    }
    assert_eq!(got, 3);
    assert_eq!(generation.finish_reason(), Some(&FinishReason::Interrupted));
}

#[test]
fn params_build_fluently_and_errors_have_kinds_to_match() {
    use mixtral::{CancelToken, ErrorKind, GenerateParams};
    let token = CancelToken::new();
    let params = GenerateParams::default()
        .max_new_tokens(8)
        .temperature(0.7)
        .top_p(0.9)
        .top_k(40)
        .seed(3)
        .stop("\n\n")
        .ignore_eos(true)
        .cancel(token.clone());
    assert_eq!(params.max_new_tokens, 8);
    assert_eq!(
        (
            params.sampling.temperature,
            params.sampling.top_p,
            params.sampling.top_k
        ),
        (0.7, 0.9, Some(40))
    );
    assert_eq!(params.sampling.seed, 3);
    assert_eq!(params.stop_strings, ["\n\n"]);
    assert!(params.ignore_eos);
    assert_eq!(params.cancel, Some(token));
    let engine = Engine::load(TINY_BF16).unwrap();
    let got: Vec<u32> = engine
        .generate(&Prompt::Tokens(vec![1, 2, 3]), &params)
        .unwrap()
        .map(|t| t.unwrap().id)
        .collect();
    assert_eq!(got.len(), 8);
    // Kinds: bad parameters and input, missing files, a cancel.
    let bad = GenerateParams::default().temperature(-1.0);
    let err = engine.generate(&Prompt::Tokens(vec![1]), &bad).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    let v = engine.config().vocab_size as u32;
    let err = engine
        .generate(&Prompt::Tokens(vec![1, v]), &GenerateParams::default())
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    let err = Engine::load("/nonexistent/model").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ModelFiles, "{err}");
    let cancelled = CancelToken::new();
    cancelled.cancel();
    let err = engine
        .generate(
            &Prompt::Tokens(vec![1, 2]),
            &GenerateParams::default().cancel(cancelled),
        )
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Cancelled, "{err}");
    // A lower crate's error converts with `?`.
    fn open(p: &str) -> mixtral::Result<()> {
        mixtral::tensor::SafetensorsFile::open(p)?;
        Ok(())
    }
    assert_eq!(
        open("/nonexistent.safetensors").unwrap_err().kind(),
        ErrorKind::ModelFiles
    );
}

#[test]
fn chat_prompts_follow_the_models_own_template_unless_it_is_mixtral_instructs() {
    use mixtral::{ChatFormat, LoadOptions, Message};
    // tiny-bf16 as a ChatML fine-tune.
    let dir = tempfile::tempdir().unwrap();
    mixtral_testkit::copy_dir(std::path::Path::new(TINY_BF16), dir.path());
    let chatml = mixtral_testkit::make_chatml(dir.path());
    let expected: Value =
        serde_json::from_slice(&std::fs::read(chatml.join("expected.json")).unwrap()).unwrap();
    let case = &expected["cases"][1];
    let messages: Vec<Message> = serde_json::from_value(case["messages"].clone()).unwrap();
    let load = |dir: &std::path::Path, chat_format| {
        let opts = LoadOptions {
            chat_format,
            ..LoadOptions::default()
        };
        Engine::load_with(dir, opts, |_, _| {}).unwrap()
    };
    let prompt = Prompt::Chat(messages.clone());
    let chatml_ids = load(dir.path(), ChatFormat::Auto).encode(&prompt).unwrap();
    assert_eq!(
        chatml_ids,
        ids(&case["ids"]),
        "transformers' apply_chat_template"
    );
    let forced = load(dir.path(), ChatFormat::Mistral)
        .encode(&prompt)
        .unwrap();
    assert_eq!(forced[..2], [1, 733], "[INST] format: <s> ▁[");
    // Mixtral-Instruct's own template is detected: the mistral-common-exact renderer stays,
    // which keeps the system message the template would refuse.
    let tiny = load(std::path::Path::new(TINY_BF16), ChatFormat::Auto);
    assert_eq!(tiny.encode(&prompt).unwrap(), forced);
    let err = load(std::path::Path::new(TINY_BF16), ChatFormat::Template)
        .encode(&prompt)
        .unwrap_err();
    assert!(err.to_string().contains("chat template"), "{err}");
}

#[test]
fn a_session_only_runs_on_the_engine_that_made_it() {
    let a = Engine::load(TINY_BF16).unwrap();
    let b = Engine::load(TINY_BF16).unwrap();
    let mut session = a.session();
    let prompt = Prompt::Tokens(vec![1, 2, 3]);
    let err = b
        .generate_in(&mut session, &prompt, &a.params())
        .unwrap_err();
    assert_eq!(err.kind(), mixtral::ErrorKind::InvalidInput, "{err}");
    assert!(err.to_string().contains("another engine"), "{err}");
    assert!(a.generate_in(&mut session, &prompt, &a.params()).is_ok());
}
