//! Constrained decoding on the random-weight fixture: a model that writes noise writes valid
//! JSON, regex matches and choices only because every token is masked by the grammar.

use mixtral::{Constraint, Engine, ErrorKind, FinishReason, GenerateParams, Prompt, SamplerConfig};
use serde_json::{Value, json};

const TINY_BF16: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../tests/fixtures/models/tiny-bf16"
);

/// Samples (temperature 1, seed `seed`) under `constraint`; returns the text and whether the
/// generation ended on its own (not at the token limit).
fn sample(engine: &Engine, constraint: Constraint, seed: u64) -> (String, FinishReason) {
    let params = GenerateParams {
        sampling: SamplerConfig {
            temperature: 1.0,
            seed,
            ..Default::default()
        },
        max_new_tokens: 400,
        ..Default::default()
    }
    .constraint(constraint);
    let prompt = Prompt::Text("Answer in JSON:".into());
    let mut generation = engine.generate(&prompt, &params).unwrap();
    let text: String = generation.by_ref().map(|t| t.unwrap().text).collect();
    (text, generation.finish_reason().unwrap().clone())
}

fn schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 12},
            "age": {"type": "integer", "minimum": 0, "maximum": 150},
            "colour": {"enum": ["red", "green", "blue"]},
            "tags": {"type": "array", "items": {"type": "string", "maxLength": 6}, "maxItems": 3},
            "address": {
                "type": "object",
                "properties": {"city": {"type": "string", "maxLength": 10}, "zip": {"type": "integer"}},
                "required": ["city"],
                "additionalProperties": false
            }
        },
        "required": ["name", "age", "colour", "address"],
        "additionalProperties": false
    })
}

/// The checks of `schema()` a validator would make, by hand (no JSON Schema crate here; the
/// server's test validates with Python's `jsonschema`).
fn valid(v: &Value) -> Result<(), String> {
    let o = v.as_object().ok_or("not an object")?;
    for key in o.keys() {
        if !["name", "age", "colour", "tags", "address"].contains(&key.as_str()) {
            return Err(format!("extra key {key}"));
        }
    }
    let name = o.get("name").and_then(Value::as_str).ok_or("name")?;
    (name.chars().count() <= 12)
        .then_some(())
        .ok_or("name too long")?;
    let age = o.get("age").and_then(Value::as_i64).ok_or("age")?;
    (0..=150)
        .contains(&age)
        .then_some(())
        .ok_or("age out of range")?;
    let colour = o.get("colour").and_then(Value::as_str).ok_or("colour")?;
    ["red", "green", "blue"]
        .contains(&colour)
        .then_some(())
        .ok_or("colour not in enum")?;
    if let Some(tags) = o.get("tags") {
        let tags = tags.as_array().ok_or("tags")?;
        (tags.len() <= 3).then_some(()).ok_or("too many tags")?;
        for t in tags {
            let t = t.as_str().ok_or("tag")?;
            (t.chars().count() <= 6)
                .then_some(())
                .ok_or("tag too long")?;
        }
    }
    let address = o
        .get("address")
        .and_then(Value::as_object)
        .ok_or("address")?;
    address.get("city").and_then(Value::as_str).ok_or("city")?;
    if let Some(zip) = address.get("zip") {
        zip.as_i64().ok_or("zip")?;
    }
    Ok(())
}

#[test]
fn a_random_model_writes_json_valid_against_the_schema() {
    let engine = Engine::load(TINY_BF16).unwrap();
    for seed in 0..8 {
        let (text, finish) = sample(&engine, Constraint::JsonSchema(schema()), seed);
        let v: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("seed {seed}: not JSON ({e}): {text:?} ({finish:?})"));
        valid(&v).unwrap_or_else(|e| panic!("seed {seed}: {e}: {text}"));
        assert_eq!(finish.as_str(), "stop", "seed {seed}: {text}");
    }
}

#[test]
fn json_objects_are_objects() {
    // Keys and strings are unbounded, so a random model may run out of tokens inside one;
    // every answer that ended on its own must be an object, and some must.
    let engine = Engine::load(TINY_BF16).unwrap();
    let mut ended = 0;
    for seed in 0..8 {
        let (text, finish) = sample(&engine, Constraint::JsonObject, seed);
        if finish.as_str() == "stop" {
            let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text:?}"));
            assert!(v.is_object(), "{text}");
            ended += 1;
        }
    }
    assert!(ended > 0, "no answer ended within 400 tokens");
}

#[test]
fn regex_and_choice_hold() {
    let engine = Engine::load(TINY_BF16).unwrap();
    for seed in 0..4 {
        let (text, _) = sample(
            &engine,
            Constraint::Regex(r"[0-9]{3}-[a-z]{2,4}".into()),
            seed,
        );
        let (digits, letters) = text.split_once('-').unwrap_or_else(|| panic!("{text:?}"));
        assert!(
            digits.len() == 3 && digits.bytes().all(|b| b.is_ascii_digit()),
            "{text:?}"
        );
        assert!((2..=4).contains(&letters.len()), "{text:?}");
        assert!(letters.bytes().all(|b| b.is_ascii_lowercase()), "{text:?}");

        let choices = vec![
            "yes (a.k.a. *true*)".to_string(),
            "no".into(),
            "maybe".into(),
        ];
        let (text, finish) = sample(&engine, Constraint::Choice(choices.clone()), seed);
        assert!(choices.contains(&text), "{text:?}");
        assert_eq!(finish.as_str(), "stop");
    }
}

#[test]
fn a_lark_grammar_is_followed() {
    let engine = Engine::load(TINY_BF16).unwrap();
    let grammar = r#"
        start: item ("," item)*
        item: "a" | "b" | NUMBER
        NUMBER: /[0-9]{1,2}/
    "#;
    for seed in 0..4 {
        let (text, _) = sample(&engine, Constraint::Lark(grammar.into()), seed);
        for item in text.split(',') {
            let ok = item == "a"
                || item == "b"
                || (1..=2).contains(&item.len()) && item.bytes().all(|b| b.is_ascii_digit());
            assert!(ok, "item {item:?} of {text:?}");
        }
    }
}

#[test]
fn a_malformed_constraint_is_an_invalid_input_error() {
    let engine = Engine::load(TINY_BF16).unwrap();
    let prompt = Prompt::Text("x".into());
    for bad in [
        Constraint::Regex("(unclosed".into()),
        Constraint::Lark("start: undefined_rule".into()),
        Constraint::JsonSchema(json!({"type": "no-such-type"})),
    ] {
        let params = GenerateParams::default().constraint(bad.clone());
        let err = match engine.generate(&prompt, &params) {
            Ok(_) => panic!("{bad:?} was accepted"),
            Err(e) => e,
        };
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{bad:?}: {err}");
        assert!(err.to_string().starts_with("output constraint"), "{err}");
    }
}

#[test]
fn greedy_output_that_already_fits_is_unchanged() {
    // A constraint that allows everything the model would write anyway changes nothing: the
    // greedy tokens under `.*` equal the unconstrained ones.
    let engine = Engine::load(TINY_BF16).unwrap();
    let prompt = Prompt::Text("The".into());
    let base = GenerateParams {
        max_new_tokens: 12,
        ignore_eos: true,
        ..Default::default()
    };
    let free: Vec<u32> = engine
        .generate(&prompt, &base)
        .unwrap()
        .map(|t| t.unwrap().id)
        .collect();
    let constrained: Vec<u32> = engine
        .generate(
            &prompt,
            &base.clone().constraint(Constraint::Regex("(?s:.*)".into())),
        )
        .unwrap()
        .map(|t| t.unwrap().id)
        .collect();
    assert_eq!(free, constrained);
}

#[test]
fn pathological_constraints_compile_or_are_refused_and_stay_in_budget() {
    // Constraints a hostile client might send (exponential repetition, catastrophic
    // backtracking, thousands of alternatives or required keys, deep nesting, a left-recursive
    // grammar): each compiles or is refused (llguidance bounds its work; none takes more than
    // a tenth of a second here), and generation under it keeps to its token budget.
    let engine = Engine::load(TINY_BF16).unwrap();
    let deep = (0..100).fold(
        json!({"type": "integer"}),
        |inner, _| json!({"type": "array", "items": inner}),
    );
    let keys: serde_json::Map<String, Value> = (0..2000)
        .map(|i| (format!("k{i}"), json!({"type": "integer"})))
        .collect();
    let required: Vec<&String> = keys.keys().collect();
    let wide = json!({"type": "object", "properties": keys, "required": required});
    for c in [
        Constraint::Regex("(a{1000}){1000}".into()),
        Constraint::Regex("(x+x+)+y".into()),
        Constraint::Regex(format!("({})", vec!["[a-z]{1,64}"; 200].join("|"))),
        Constraint::JsonSchema(deep),
        Constraint::JsonSchema(wide),
        Constraint::Lark("start: a+\na: a a | \"x\"".into()),
    ] {
        if engine.check_constraint(&c).is_err() {
            continue;
        }
        let params = GenerateParams {
            max_new_tokens: 16,
            ..Default::default()
        }
        .constraint(c);
        let tokens: Vec<_> = engine
            .generate(&Prompt::Text("x".into()), &params)
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert!(tokens.len() <= 16);
    }
}
