//! Tool calls on the random-weight fixture (a v1 vocabulary, so the text format): under
//! `tool_choice` `required` or a named function, a model that writes noise writes calls whose
//! arguments validate, only because the output is constrained to the tools' schemas.

use mixtral::tools::{ParsedCall, ToolCallParser, ToolFormat, tool_call_constraint};
use mixtral::{
    Engine, ErrorKind, GenerateParams, Prompt, SamplerConfig, Tool, ToolCall, ToolChoice,
    ToolMessage,
};
use serde_json::json;

const TINY_BF16: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../tests/fixtures/models/tiny-bf16"
);

fn tools() -> Vec<Tool> {
    vec![
        Tool {
            name: "get_weather".into(),
            // A stranger's description that looks like grammar: it must stay a JSON string.
            description: "Weather}\nstart: \"x\"\n%json {".into(),
            parameters: json!({
                "type": "object",
                "properties": {
                    "city": {"type": "string", "maxLength": 12},
                    "unit": {"enum": ["celsius", "fahrenheit"]}
                },
                "required": ["city", "unit"],
                "additionalProperties": false
            }),
        },
        Tool {
            name: "add".into(),
            description: "Adds two integers".into(),
            parameters: json!({
                "type": "object",
                "properties": {
                    "a": {"type": "integer", "minimum": -1000, "maximum": 1000},
                    "b": {"type": "integer", "minimum": -1000, "maximum": 1000}
                },
                "required": ["a", "b"],
                "additionalProperties": false
            }),
        },
    ]
}

/// Whether `call`'s arguments hold what its tool's schema requires, checked by hand.
fn valid(call: &ParsedCall) -> bool {
    let Ok(a) = serde_json::from_str::<serde_json::Value>(&call.arguments) else {
        return false;
    };
    match call.name.as_str() {
        "get_weather" => {
            a["city"].as_str().is_some_and(|c| c.chars().count() <= 12)
                && matches!(a["unit"].as_str(), Some("celsius" | "fahrenheit"))
                && a.as_object().unwrap().len() == 2
        }
        "add" => {
            // JSON Schema's integers include `-0`, which serde_json reads as a float.
            let small = |v: &serde_json::Value| {
                v.as_f64()
                    .is_some_and(|x| x.fract() == 0.0 && x.abs() <= 1000.0)
            };
            small(&a["a"]) && small(&a["b"]) && a.as_object().unwrap().len() == 2
        }
        _ => false,
    }
}

/// Samples under `choice`; returns the text shown and the calls parsed.
fn sample(
    engine: &Engine,
    choice: &ToolChoice,
    parallel: bool,
    seed: u64,
) -> (String, Vec<ParsedCall>) {
    let format = engine.tool_format().unwrap();
    assert_eq!(format, ToolFormat::Text);
    let constraint = tool_call_constraint(format, &tools(), choice, parallel)
        .unwrap()
        .unwrap();
    let params = GenerateParams {
        sampling: SamplerConfig {
            temperature: 1.0,
            seed,
            ..Default::default()
        },
        max_new_tokens: 300,
        ..Default::default()
    }
    .constraint(constraint);
    let prompt = Prompt::Tools {
        messages: vec![ToolMessage::User("What is the weather in Paris?".into())],
        tools: tools(),
    };
    let mut parser = ToolCallParser::new(format);
    let mut shown = String::new();
    for t in engine.generate(&prompt, &params).unwrap() {
        let t = t.unwrap();
        shown.push_str(&parser.push(t.id, &t.text));
    }
    let out = parser.finish();
    shown.push_str(&out.content);
    (shown, out.calls)
}

#[test]
fn required_and_named_choices_make_a_random_model_call_valid_tools() {
    let engine = Engine::load(TINY_BF16).unwrap();
    for seed in 0..4 {
        let (shown, calls) = sample(&engine, &ToolChoice::Required, true, seed);
        assert_eq!(shown, "", "seed {seed}: text besides the calls");
        assert!(!calls.is_empty(), "seed {seed}");
        assert!(calls.iter().all(valid), "seed {seed}: {calls:?}");

        let named = ToolChoice::Function("add".into());
        let (shown, calls) = sample(&engine, &named, true, seed);
        assert_eq!(shown, "");
        assert_eq!(calls.len(), 1, "seed {seed}: {calls:?}");
        assert_eq!(calls[0].name, "add");
        assert!(valid(&calls[0]), "{calls:?}");

        let (_, calls) = sample(&engine, &ToolChoice::Required, false, seed);
        assert_eq!(calls.len(), 1, "parallel_tool_calls false: {calls:?}");
    }
}

#[test]
fn a_tool_loop_renders_and_a_dangling_call_is_refused() {
    let engine = Engine::load(TINY_BF16).unwrap();
    let call = ToolCall {
        id: "abcDEF123".into(),
        name: "add".into(),
        arguments: json!({"a": 1, "b": 2}),
    };
    let mut messages = vec![
        ToolMessage::System("Be brief.".into()),
        ToolMessage::User("1 + 2?".into()),
        ToolMessage::ToolCalls(vec![call]),
    ];
    let dangling = Prompt::Tools {
        messages: messages.clone(),
        tools: tools(),
    };
    let err = engine.encode(&dangling).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");

    messages.push(ToolMessage::ToolResult {
        call_id: "abcDEF123".into(),
        content: "3".into(),
    });
    let prompt = Prompt::Tools {
        messages,
        tools: tools(),
    };
    let ids = engine.encode(&prompt).unwrap();
    let text = engine.tokenizer().unwrap().decode(&ids).unwrap();
    for part in [
        "[AVAILABLE_TOOLS]",
        "[TOOL_CALLS]",
        "[TOOL_RESULTS]",
        "call_id",
        "Be brief.",
    ] {
        assert!(text.contains(part), "{part} missing from {text}");
    }
    // The loop's last turn is the model's: the prompt ends with an open [/INST].
    assert!(text.trim_end().ends_with("[/INST]"), "{text}");
}
