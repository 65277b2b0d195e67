//! Tool (function) calling: conversations with tools become prompt ids, `tool_choice`
//! becomes a [`Constraint`], and the model's output becomes [`ToolCall`]s.
//!
//! # Two formats
//! - **v3** ([`ToolFormat::V3`]): a vocabulary with Mistral's v3 control tokens
//!   (Mixtral-8x22B-Instruct's) is rendered by
//!   [`Tokenizer::encode_chat_v3`](mixtral_tokenizer::Tokenizer::encode_chat_v3), id for id
//!   as mistral-common renders it, whatever chat format the engine was loaded with (the
//!   model's template renders the same conversation, but not provably id for id). The model
//!   opens its calls with the `[TOOL_CALLS]` token.
//! - **text** ([`ToolFormat::Text`]): every other vocabulary (Mixtral-8x7B-Instruct's v1 has
//!   no tool tokens) gets the same markers as plain text, in ordinary messages that go
//!   through the engine's chat format (template or `[INST]` renderer): the tools as a system
//!   message, a call as the assistant's `[TOOL_CALLS] [{"name": …, "arguments": …}]`, a
//!   result as a user message in `[TOOL_RESULTS] … [/TOOL_RESULTS]`. Being text, a message
//!   that contains these markers cannot forge anything a client could not write itself.
//!
//! A model that never learned the format still calls tools reliably under
//! [`ToolChoice::Required`] or [`ToolChoice::Function`]: [`tool_call_constraint`] makes the
//! output the marker and then a JSON list of calls valid against the tools' schemas.

use crate::{Constraint, Error, Message, Result, Role};
use mixtral_tokenizer::{ChatTemplate, Tokenizer};
use serde_json::{Map, Value, json};

pub use mixtral_tokenizer::tools::{Tool, ToolCall, ToolMessage};

/// The marker that opens the model's calls: the v3 token's name, and the text the text
/// format writes.
pub const TOOL_CALLS: &str = "[TOOL_CALLS]";

/// Which calls a request allows (OpenAI's `tool_choice`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum ToolChoice {
    /// No calls: the tools are left out of the prompt and the output is never parsed.
    None,
    /// The model answers or calls, as it likes (the output is parsed for calls).
    #[default]
    Auto,
    /// At least one call, to any of the tools (constrained).
    Required,
    /// Exactly one call, to the function of this name (constrained).
    Function(String),
}

/// How a vocabulary writes tool calls (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ToolFormat {
    /// Mistral's v3 control tokens; `calls` is the id of `[TOOL_CALLS]`.
    V3 {
        /// The id of `[TOOL_CALLS]`.
        calls: u32,
    },
    /// The markers as text, in the engine's chat format.
    Text,
}

impl ToolFormat {
    /// The format `tokenizer`'s vocabulary supports.
    pub fn of(tokenizer: &Tokenizer) -> ToolFormat {
        match tokenizer.piece_to_id(TOOL_CALLS) {
            Some(calls) if tokenizer.has_v3_controls() => ToolFormat::V3 { calls },
            _ => ToolFormat::Text,
        }
    }
}

/// The prompt ids of a conversation with tools: v3 when the vocabulary has its tokens, else
/// the text format through `template` (or the `[INST]` renderer). A conversation that ends
/// with the assistant's text continues it, as [`crate::encode_chat`] does.
pub(crate) fn encode_tool_chat(
    tokenizer: &Tokenizer,
    template: Option<&ChatTemplate>,
    messages: &[ToolMessage],
    tools: &[Tool],
) -> Result<Vec<u32>> {
    if matches!(messages.last(), Some(ToolMessage::ToolCalls(_))) {
        return Err(Error::ToolConversation(
            "the conversation ends with tool calls: send their results (`tool` messages) \
             before asking for the next turn",
        ));
    }
    match ToolFormat::of(tokenizer) {
        ToolFormat::V3 { .. } => {
            let mut ids = tokenizer.encode_chat_v3(messages, tools)?;
            if matches!(messages.last(), Some(ToolMessage::Assistant(_))) {
                // The renderer closes every assistant turn with EOS; a last one is continued.
                ids.pop();
            }
            Ok(ids)
        }
        ToolFormat::Text => {
            crate::encode_chat(tokenizer, template, &text_messages(messages, tools))
        }
    }
}

/// The conversation in the text format: ordinary messages carrying the markers as text.
/// Consecutive user turns (several tool results) are joined, as the `[INST]` format needs
/// turns that alternate.
fn text_messages(messages: &[ToolMessage], tools: &[Tool]) -> Vec<Message> {
    let mut out: Vec<Message> = vec![];
    if !tools.is_empty() {
        out.push(Message::system(tools_preamble(tools)));
    }
    for m in messages {
        let (role, text) = match m {
            ToolMessage::System(s) => (Role::System, s.clone()),
            ToolMessage::User(s) => (Role::User, s.clone()),
            ToolMessage::Assistant(s) => (Role::Assistant, s.clone()),
            ToolMessage::ToolCalls(calls) => {
                let list: Vec<Value> = calls
                    .iter()
                    .map(|c| json!({"name": c.name, "arguments": c.arguments, "id": c.id}))
                    .collect();
                (
                    Role::Assistant,
                    format!("{TOOL_CALLS} {}", Value::Array(list)),
                )
            }
            ToolMessage::ToolResult { call_id, content } => {
                let content = serde_json::from_str(content)
                    .unwrap_or_else(|_| Value::String(content.clone()));
                let result = json!({"content": content, "call_id": call_id});
                (
                    Role::User,
                    format!("[TOOL_RESULTS] {result} [/TOOL_RESULTS]"),
                )
            }
        };
        match out.last_mut() {
            Some(last) if last.role == Role::User && role == Role::User => {
                last.content.push_str("\n\n");
                last.content.push_str(&text);
            }
            _ => out.push(Message::new(role, text)),
        }
    }
    out
}

/// The system message that lists the tools in the text format, and how to call them.
fn tools_preamble(tools: &[Tool]) -> String {
    let list: Vec<Value> = tools
        .iter()
        .map(|t| {
            json!({"type": "function", "function": {
                "name": t.name, "description": t.description, "parameters": t.parameters,
            }})
        })
        .collect();
    format!(
        "[AVAILABLE_TOOLS] {} [/AVAILABLE_TOOLS]\nTo call functions, reply with {TOOL_CALLS} \
         and a JSON list of {{\"name\": …, \"arguments\": {{…}}}} objects, and nothing else.",
        Value::Array(list)
    )
}

/// The bytes of the text a conversation with tools holds, for the engine's early
/// prompt-length check.
pub(crate) fn text_bytes(messages: &[ToolMessage], tools: &[Tool]) -> usize {
    let json_len = |v: &Value| serde_json::to_string(v).map_or(0, |s| s.len());
    let messages = messages.iter().fold(0usize, |n, m| {
        n.saturating_add(match m {
            ToolMessage::System(s) | ToolMessage::User(s) | ToolMessage::Assistant(s) => s.len(),
            ToolMessage::ToolCalls(calls) => calls.iter().fold(0usize, |n, c| {
                n.saturating_add(c.name.len() + c.id.len() + json_len(&c.arguments))
            }),
            ToolMessage::ToolResult { call_id, content } => call_id.len() + content.len(),
        })
    });
    tools.iter().fold(messages, |n, t| {
        n.saturating_add(t.name.len() + t.description.len() + json_len(&t.parameters))
    })
}

/// The constraint `choice` puts on the output: none for [`ToolChoice::None`] and
/// [`ToolChoice::Auto`]; for [`ToolChoice::Required`], the marker and a JSON list of one or
/// more calls (one only unless `parallel`), each `{"name", "arguments"}` with the arguments
/// valid against that tool's `parameters`; for [`ToolChoice::Function`], one call to it.
///
/// # Errors
/// [`Error::ToolConversation`] when `choice` names a function `tools` does not hold, or asks
/// for calls with no tools.
pub fn tool_call_constraint(
    format: ToolFormat,
    tools: &[Tool],
    choice: &ToolChoice,
    parallel: bool,
) -> Result<Option<Constraint>> {
    let (chosen, one): (Vec<&Tool>, bool) = match choice {
        ToolChoice::None | ToolChoice::Auto => return Ok(None),
        ToolChoice::Required => (tools.iter().collect(), !parallel),
        ToolChoice::Function(name) => (tools.iter().filter(|t| t.name == *name).collect(), true),
    };
    if chosen.is_empty() {
        return Err(Error::ToolConversation(match choice {
            ToolChoice::Function(_) => "`tool_choice` names a function that `tools` does not hold",
            _ => "`tool_choice` asks for a call, but there are no tools",
        }));
    }
    let calls: Vec<Value> = chosen
        .iter()
        .map(|t| {
            let arguments = match &t.parameters {
                Value::Object(o) if !o.is_empty() => closed(o),
                _ => json!({"type": "object"}),
            };
            json!({
                "type": "object",
                "properties": {"name": {"const": t.name}, "arguments": arguments},
                "required": ["name", "arguments"],
                "additionalProperties": false,
            })
        })
        .collect();
    let mut list = Map::new();
    list.insert("type".into(), json!("array"));
    list.insert("items".into(), json!({"anyOf": calls}));
    list.insert("minItems".into(), json!(1));
    if one {
        list.insert("maxItems".into(), json!(1));
    }
    // Separators as mistral-common writes calls (Python's `json.dumps`) and no other
    // whitespace: what the v3 models were trained on, and no tokens spent on layout.
    list.insert(
        "x-guidance".into(),
        json!({"whitespace_flexible": false, "item_separator": ", ", "key_separator": ": "}),
    );
    let schema = Value::Object(list);
    let marker = match format {
        ToolFormat::V3 { calls } => format!("<[{calls}]>"),
        ToolFormat::Text => format!("{:?}", TOOL_CALLS),
    };
    // The v3 renderer writes the list after the token with SentencePiece's leading space;
    // the text format writes one space. The schema is serde_json's output: one JSON value,
    // which llguidance's `%json` reads whole, whatever its strings hold.
    Ok(Some(Constraint::Lark(format!(
        "start: {marker} \" \"? calls\ncalls: %json {schema}\n"
    ))))
}

/// A tool's parameters with `additionalProperties: false` at the top when it lists
/// `properties` and says nothing of others: a function takes the arguments it names (a
/// Python function refuses an unexpected keyword), and JSON Schema's default of allowing any
/// other key lets a weak model add keys until its token budget runs out. What a schema says
/// itself is kept.
fn closed(parameters: &Map<String, Value>) -> Value {
    let mut p = parameters.clone();
    if p.contains_key("properties") && !p.contains_key("additionalProperties") {
        p.insert("additionalProperties".into(), Value::Bool(false));
    }
    Value::Object(p)
}

/// Splits the model's output into text and tool calls, token by token, so a stream can show
/// text as it comes and hold back only what may be the start of a call.
#[derive(Debug)]
pub struct ToolCallParser {
    format: ToolFormat,
    state: State,
    /// Text held while it may still be the start of the text marker.
    held: String,
    /// The output after the marker: the calls' JSON.
    calls: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Nothing but (possibly) the start of the marker so far.
    Undecided,
    /// Text for the reader.
    Content,
    /// After the marker.
    Calls,
}

/// What a finished output held besides the text already returned by
/// [`ToolCallParser::push`].
#[derive(Debug, Default, PartialEq)]
pub struct ParsedOutput {
    /// Text not returned yet: what was held back, or the whole call text when it did not
    /// parse as calls (so nothing the model wrote is lost).
    pub content: String,
    /// The calls, in order, each with a fresh id.
    pub calls: Vec<ParsedCall>,
}

/// A call the model made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParsedCall {
    /// A fresh id: nine letters and digits, the form mistral-common accepts back.
    pub id: String,
    /// The function's name.
    pub name: String,
    /// The arguments, a JSON object, as the model wrote it (not re-serialized, so a number
    /// too large for an `f64` keeps its digits).
    pub arguments: String,
}

impl ToolCallParser {
    /// A parser for a vocabulary of this format.
    pub fn new(format: ToolFormat) -> ToolCallParser {
        ToolCallParser {
            format,
            state: State::Undecided,
            held: String::new(),
            calls: String::new(),
        }
    }

    /// Takes the next generated token; returns the text to show now.
    pub fn push(&mut self, id: u32, text: &str) -> String {
        if self.format == (ToolFormat::V3 { calls: id }) && self.state != State::Calls {
            self.state = State::Calls;
            return std::mem::take(&mut self.held);
        }
        match self.state {
            State::Calls => {
                self.calls.push_str(text);
                String::new()
            }
            State::Content => text.to_owned(),
            State::Undecided => {
                self.held.push_str(text);
                let start = self.held.trim_start();
                let marker = match self.format {
                    ToolFormat::Text => TOOL_CALLS,
                    // The token is the marker: only leading space is held.
                    ToolFormat::V3 { .. } => "",
                };
                if !marker.is_empty() && start.starts_with(marker) {
                    self.calls = start[marker.len()..].to_owned();
                    self.held.clear();
                    self.state = State::Calls;
                    String::new()
                } else if marker.starts_with(start) {
                    String::new()
                } else {
                    self.state = State::Content;
                    std::mem::take(&mut self.held)
                }
            }
        }
    }

    /// The end of the output: the held text, and the calls if they parse (else their text as
    /// content, marker included).
    pub fn finish(self) -> ParsedOutput {
        if self.state != State::Calls {
            return ParsedOutput {
                content: self.held,
                calls: vec![],
            };
        }
        match parse_calls(&self.calls) {
            Some(calls) => ParsedOutput {
                content: self.held,
                calls,
            },
            None => ParsedOutput {
                content: format!("{}{TOOL_CALLS}{}", self.held, self.calls),
                calls: vec![],
            },
        }
    }
}

/// The calls in `text`: a JSON list of `{"name", "arguments"}` (or one such object), the
/// arguments an object or a string holding one. `None` when it is anything else.
pub fn parse_calls(text: &str) -> Option<Vec<ParsedCall>> {
    use serde_json::value::RawValue;
    use std::collections::BTreeMap;
    type Call<'a> = BTreeMap<String, &'a RawValue>;
    let text = text.trim();
    let list: Vec<Call<'_>> = match text.starts_with('[') {
        true => serde_json::from_str(text).ok()?,
        false => vec![serde_json::from_str(text).ok()?],
    };
    if list.is_empty() {
        return None;
    }
    list.into_iter()
        .map(|call| {
            let name: String = serde_json::from_str(call.get("name")?.get()).ok()?;
            let arguments = match call.get("arguments").map(|a| a.get()) {
                None => "{}".to_owned(),
                Some(raw) if raw.starts_with('"') => {
                    serde_json::from_str::<String>(raw).ok()?.trim().to_owned()
                }
                Some(raw) => raw.to_owned(),
            };
            let object = serde_json::from_str::<Value>(&arguments).ok()?;
            object.is_object().then(|| ParsedCall {
                id: call_id(),
                name,
                arguments,
            })
        })
        .collect()
}

/// A fresh call id: nine letters and digits, the form mistral-common accepts back.
fn call_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    // RandomState is seeded from the OS once per process and stepped per instance.
    let mut bits = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    (0..9)
        .map(|_| {
            let c = ALPHABET[(bits % ALPHABET.len() as u64) as usize];
            bits /= ALPHABET.len() as u64;
            c as char
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(format: ToolFormat, pieces: &[(u32, &str)]) -> (String, ParsedOutput) {
        let mut p = ToolCallParser::new(format);
        let shown: String = pieces.iter().map(|&(id, t)| p.push(id, t)).collect();
        (shown, p.finish())
    }

    #[test]
    fn text_marker_split_across_tokens_becomes_calls() {
        let (shown, out) = feed(
            ToolFormat::Text,
            &[
                (10, " [TO"),
                (11, "OL_CA"),
                (12, "LLS] [{\"name\": \"f\", "),
                (13, "\"arguments\": {\"x\": 1}}]"),
            ],
        );
        assert_eq!(shown, "");
        assert_eq!(out.content, "");
        assert_eq!(out.calls.len(), 1);
        assert_eq!(out.calls[0].name, "f");
        assert_eq!(out.calls[0].arguments, r#"{"x": 1}"#);
        assert_eq!(out.calls[0].id.len(), 9);
        assert!(out.calls[0].id.bytes().all(|b| b.is_ascii_alphanumeric()));
    }

    #[test]
    fn text_that_only_starts_like_the_marker_is_shown_whole() {
        let (shown, out) = feed(ToolFormat::Text, &[(1, " [TO"), (2, "DO] list")]);
        assert_eq!(shown, " [TODO] list");
        assert_eq!(out, ParsedOutput::default());
    }

    #[test]
    fn v3_token_opens_calls_after_text_and_bad_json_comes_back_as_text() {
        let v3 = ToolFormat::V3 { calls: 5 };
        let (shown, out) = feed(v3, &[(7, "Sure."), (5, ""), (8, " [{\"name\": \"g\"}]")]);
        assert_eq!(shown, "Sure.");
        assert_eq!(out.calls[0].name, "g");
        assert_eq!(out.calls[0].arguments, "{}");
        let (_, out) = feed(v3, &[(5, ""), (8, " [{\"name\": ")]);
        assert!(out.calls.is_empty());
        assert_eq!(out.content, "[TOOL_CALLS] [{\"name\": ");
    }

    #[test]
    fn arguments_given_as_a_json_string_are_read() {
        let calls = parse_calls(r#"{"name": "f", "arguments": "{\"a\": [1]}"}"#).unwrap();
        assert_eq!(calls[0].arguments, r#"{"a": [1]}"#);
        // The model's digits, not an f64's.
        let big = r#"[{"name": "f", "arguments": {"id": 123456789012345678901234567890}}]"#;
        assert_eq!(
            parse_calls(big).unwrap()[0].arguments,
            r#"{"id": 123456789012345678901234567890}"#
        );
        assert!(parse_calls(r#"[{"name": "f", "arguments": 3}]"#).is_none());
        assert!(parse_calls("[]").is_none());
    }

    #[test]
    fn choice_of_an_unknown_function_or_no_tools_is_an_error() {
        let tools = [Tool {
            name: "f".into(),
            description: String::new(),
            parameters: json!({}),
        }];
        let named = ToolChoice::Function("g".into());
        assert!(tool_call_constraint(ToolFormat::Text, &tools, &named, true).is_err());
        assert!(tool_call_constraint(ToolFormat::Text, &[], &ToolChoice::Required, true).is_err());
        assert_eq!(
            tool_call_constraint(ToolFormat::Text, &tools, &ToolChoice::Auto, true).unwrap(),
            None
        );
    }

    /// The v3 grammar on Mixtral-8x22B-Instruct's vocabulary: the `[TOOL_CALLS]` token first
    /// (no text can stand in for it), then the calls as the v3 renderer writes them.
    #[test]
    fn v3_constraint_starts_with_the_control_token_and_takes_rendered_calls() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/tools");
        let tok = Tokenizer::from_sentencepiece_model(
            &std::path::Path::new(dir).join("tokenizer.model.v3"),
        )
        .unwrap();
        let format = ToolFormat::of(&tok);
        assert_eq!(format, ToolFormat::V3 { calls: 5 });
        let tools = [Tool {
            name: "add".into(),
            description: "Adds".into(),
            parameters: json!({"type": "object", "properties": {"a": {"type": "integer"}},
                               "required": ["a"], "additionalProperties": false}),
        }];
        let constraint = tool_call_constraint(format, &tools, &ToolChoice::Required, true)
            .unwrap()
            .unwrap();
        let vocab = 32768;
        let mut guide = crate::constraint::Guides::default()
            .guide(&constraint, &tok, vocab)
            .unwrap();
        let mut masked = vec![];
        guide.mask(&vec![0.0; vocab], &mut masked).unwrap();
        let allowed: Vec<usize> = (0..vocab).filter(|&i| masked[i].is_finite()).collect();
        assert_eq!(allowed, [5]);
        assert!(!guide.advance(5).unwrap());
        let text = tok
            .encode("[{\"name\": \"add\", \"arguments\": {\"a\": 7}}]")
            .unwrap();
        for &id in &text {
            guide.mask(&vec![0.0; vocab], &mut masked).unwrap();
            assert!(masked[id as usize].is_finite(), "token {id} refused");
            guide.advance(id).unwrap();
        }
        guide.mask(&vec![0.0; vocab], &mut masked).unwrap();
        assert!(masked[tok.eos_id() as usize].is_finite());
        // A wrong name is refused at its first differing token.
        let mut guide = crate::constraint::Guides::default()
            .guide(&constraint, &tok, vocab)
            .unwrap();
        guide.advance(5).unwrap();
        let bad = tok.encode("[{\"name\": \"sub\"").unwrap();
        let mut refused = false;
        for &id in &bad {
            guide.mask(&vec![0.0; vocab], &mut masked).unwrap();
            if !masked[id as usize].is_finite() {
                refused = true;
                break;
            }
            guide.advance(id).unwrap();
        }
        assert!(refused);
    }

    #[test]
    fn text_format_joins_consecutive_results_into_one_user_turn() {
        let call = |id: &str| ToolCall {
            id: id.into(),
            name: "f".into(),
            arguments: json!({}),
        };
        let messages = [
            ToolMessage::User("q".into()),
            ToolMessage::ToolCalls(vec![call("a"), call("b")]),
            ToolMessage::ToolResult {
                call_id: "a".into(),
                content: "1".into(),
            },
            ToolMessage::ToolResult {
                call_id: "b".into(),
                content: "two".into(),
            },
        ];
        let out = text_messages(&messages, &[]);
        assert_eq!(out.len(), 3);
        assert_eq!(out[2].role, Role::User);
        assert_eq!(
            out[2].content,
            "[TOOL_RESULTS] {\"content\":1,\"call_id\":\"a\"} [/TOOL_RESULTS]\n\n\
             [TOOL_RESULTS] {\"content\":\"two\",\"call_id\":\"b\"} [/TOOL_RESULTS]"
        );
    }
}
