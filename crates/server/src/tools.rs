//! Reading a chat request's tool fields: `tools`, `tool_choice`, `parallel_tool_calls`, and
//! the messages of a tool loop (an assistant's `tool_calls` with `content: null`, `tool`
//! results), into the library's [`Prompt::Tools`]. Every field is checked, with an error
//! that names it.

use crate::error::ApiError;
use mixtral::tools::{Tool, ToolCall, ToolChoice, ToolMessage};
use mixtral::{Message, Prompt, Role};
use serde_json::{Map, Value};

/// The fields read here.
pub(crate) const FIELDS: &[&str] = &["tools", "tool_choice", "parallel_tool_calls"];

/// The most tools a request may list (OpenAI's limit).
const MAX_TOOLS: usize = 128;
/// The longest function name (OpenAI's limit; letters, digits, `_` and `-`).
const MAX_NAME: usize = 64;

/// A request's tools and how it lets the model use them.
#[derive(Debug, Default)]
pub(crate) struct ToolRequest {
    pub tools: Vec<Tool>,
    pub choice: ToolChoice,
    /// `parallel_tool_calls` (default true): more than one call per turn allowed.
    pub parallel: bool,
}

impl ToolRequest {
    /// Whether the output is to be read for calls.
    pub fn parses_calls(&self) -> bool {
        !self.tools.is_empty() && self.choice != ToolChoice::None
    }
}

fn invalid(param: &str, message: String) -> ApiError {
    ApiError::invalid(Some(param), message)
}

/// `tools`, `tool_choice` and `parallel_tool_calls`. `tool_choice` defaults to `auto` with
/// tools and `none` without, as OpenAI's does.
pub(crate) fn request(obj: &Map<String, Value>) -> Result<ToolRequest, ApiError> {
    let tools = match obj.get("tools") {
        None | Some(Value::Null) => vec![],
        Some(Value::Array(list)) if list.len() > MAX_TOOLS => {
            return Err(invalid(
                "tools",
                format!("`tools` lists at most {MAX_TOOLS} functions"),
            ));
        }
        Some(Value::Array(list)) => list
            .iter()
            .enumerate()
            .map(|(i, t)| tool(i, t))
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(invalid("tools", "`tools` must be an array".into())),
    };
    let choice = match obj.get("tool_choice") {
        None | Some(Value::Null) if tools.is_empty() => ToolChoice::None,
        None | Some(Value::Null) => ToolChoice::Auto,
        Some(v) => tool_choice(v)?,
    };
    if choice != ToolChoice::None && tools.is_empty() {
        return Err(invalid(
            "tool_choice",
            "`tool_choice` asks for calls, but `tools` lists none".into(),
        ));
    }
    if let ToolChoice::Function(name) = &choice
        && !tools.iter().any(|t| t.name == *name)
    {
        return Err(invalid(
            "tool_choice",
            format!(
                "`tool_choice` names `{}`, which `tools` does not list",
                crate::error::clip(name)
            ),
        ));
    }
    let parallel = match obj.get("parallel_tool_calls") {
        None | Some(Value::Null) => true,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            return Err(invalid(
                "parallel_tool_calls",
                "`parallel_tool_calls` must be a boolean".into(),
            ));
        }
    };
    Ok(ToolRequest {
        tools,
        choice,
        parallel,
    })
}

/// Refuses keys of `obj` outside `allowed`, naming the first as `at.key`.
fn only(obj: &Map<String, Value>, allowed: &[&str], at: &str) -> Result<(), ApiError> {
    match obj.keys().find(|k| !allowed.contains(&k.as_str())) {
        None => Ok(()),
        Some(k) => {
            let param = format!("{at}.{}", crate::error::clip(k));
            Err(invalid(
                &param,
                format!("`{param}` is not supported by this server"),
            ))
        }
    }
}

/// A function's name: 1 to 64 letters, digits, `_` or `-`.
fn name(v: Option<&Value>, param: &str) -> Result<String, ApiError> {
    match v.and_then(Value::as_str) {
        Some(n)
            if !n.is_empty()
                && n.len() <= MAX_NAME
                && n.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') =>
        {
            Ok(n.to_owned())
        }
        _ => Err(invalid(
            param,
            format!("`{param}` must be 1 to {MAX_NAME} letters, digits, `_` or `-`"),
        )),
    }
}

/// `tools[i]`: `{"type": "function", "function": {"name", "description", "parameters",
/// "strict"}}`. `strict` is accepted either way: calls are always held to the schema when
/// `tool_choice` asks for them, and never when the model chooses.
fn tool(i: usize, v: &Value) -> Result<Tool, ApiError> {
    let at = format!("tools[{i}]");
    let obj = v
        .as_object()
        .ok_or_else(|| invalid(&at, format!("`{at}` must be an object")))?;
    only(obj, &["type", "function"], &at)?;
    if obj.get("type").and_then(Value::as_str) != Some("function") {
        return Err(invalid(
            &format!("{at}.type"),
            format!("`{at}.type` must be `function`"),
        ));
    }
    let at = format!("{at}.function");
    let f = obj
        .get("function")
        .and_then(Value::as_object)
        .ok_or_else(|| invalid(&at, format!("`{at}` must be an object")))?;
    only(f, &["name", "description", "parameters", "strict"], &at)?;
    let description = match f.get("description") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(_) => {
            let p = format!("{at}.description");
            return Err(invalid(&p, format!("`{p}` must be a string")));
        }
    };
    let parameters = match f.get("parameters") {
        None | Some(Value::Null) => Value::Object(Map::new()),
        Some(p @ Value::Object(_)) => p.clone(),
        Some(_) => {
            let p = format!("{at}.parameters");
            return Err(invalid(&p, format!("`{p}` must be a JSON Schema object")));
        }
    };
    if !matches!(f.get("strict"), None | Some(Value::Null | Value::Bool(_))) {
        let p = format!("{at}.strict");
        return Err(invalid(&p, format!("`{p}` must be a boolean")));
    }
    Ok(Tool {
        name: name(f.get("name"), &format!("{at}.name"))?,
        description,
        parameters,
    })
}

/// `tool_choice`: `none`, `auto`, `required`, or `{"type": "function", "function":
/// {"name"}}`.
fn tool_choice(v: &Value) -> Result<ToolChoice, ApiError> {
    let param = "tool_choice";
    match v {
        Value::String(s) => match s.as_str() {
            "none" => Ok(ToolChoice::None),
            "auto" => Ok(ToolChoice::Auto),
            "required" => Ok(ToolChoice::Required),
            other => Err(invalid(
                param,
                format!(
                    "`tool_choice` must be `none`, `auto`, `required` or a function, got `{}`",
                    crate::error::clip(other)
                ),
            )),
        },
        Value::Object(o) if o.get("type").and_then(Value::as_str) == Some("function") => {
            only(o, &["type", "function"], param)?;
            let f = o.get("function").and_then(Value::as_object).ok_or_else(|| {
                invalid(
                    "tool_choice.function",
                    "`tool_choice.function` must be an object".into(),
                )
            })?;
            only(f, &["name"], "tool_choice.function")?;
            Ok(ToolChoice::Function(name(
                f.get("name"),
                "tool_choice.function.name",
            )?))
        }
        _ => Err(invalid(
            param,
            "`tool_choice` must be a string or {\"type\": \"function\", \"function\": {\"name\": …}}"
                .into(),
        )),
    }
}

/// `messages[i].tool_calls`: a non-empty list of `{"id", "type": "function", "function":
/// {"name", "arguments"}}`, the arguments a string holding a JSON object.
pub(crate) fn tool_calls(list: &[Value], at: &str) -> Result<Vec<ToolCall>, ApiError> {
    if list.is_empty() {
        return Err(invalid(at, format!("`{at}` must not be empty")));
    }
    list.iter()
        .enumerate()
        .map(|(j, c)| {
            let at = format!("{at}[{j}]");
            let obj = c
                .as_object()
                .ok_or_else(|| invalid(&at, format!("`{at}` must be an object")))?;
            let id = match obj.get("id") {
                Some(Value::String(id)) if !id.is_empty() => id.clone(),
                _ => {
                    let p = format!("{at}.id");
                    return Err(invalid(&p, format!("`{p}` must be a non-empty string")));
                }
            };
            let f = obj
                .get("function")
                .and_then(Value::as_object)
                .ok_or_else(|| {
                    invalid(
                        &format!("{at}.function"),
                        format!("`{at}.function` must be an object"),
                    )
                })?;
            let p = format!("{at}.function.arguments");
            let arguments = f
                .get("arguments")
                .and_then(Value::as_str)
                .and_then(|s| serde_json::from_str::<Value>(s).ok())
                .filter(Value::is_object)
                .ok_or_else(|| {
                    invalid(&p, format!("`{p}` must be a string holding a JSON object"))
                })?;
            Ok(ToolCall {
                id,
                name: name(f.get("name"), &format!("{at}.function.name"))?,
                arguments,
            })
        })
        .collect()
}

/// The prompt of a chat: [`Prompt::Chat`] when nothing in it is about tools (so a plain chat
/// renders exactly as before), else [`Prompt::Tools`], with the tools left out under
/// `tool_choice: none`.
pub(crate) fn prompt(messages: Vec<ToolMessage>, request: &ToolRequest) -> Prompt {
    let plain = request.tools.is_empty() || request.choice == ToolChoice::None;
    if plain {
        let chat: Option<Vec<Message>> = messages
            .iter()
            .map(|m| match m {
                ToolMessage::System(s) => Some(Message::new(Role::System, s.clone())),
                ToolMessage::User(s) => Some(Message::new(Role::User, s.clone())),
                ToolMessage::Assistant(s) => Some(Message::new(Role::Assistant, s.clone())),
                ToolMessage::ToolCalls(_) | ToolMessage::ToolResult { .. } => None,
            })
            .collect();
        if let Some(chat) = chat {
            return Prompt::Chat(chat);
        }
    }
    Prompt::Tools {
        messages,
        tools: if plain { vec![] } else { request.tools.clone() },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mixtral::tokenizer::Tokenizer;
    use serde_json::json;

    const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/tools");

    /// The fixture's OpenAI requests, read as the server reads them, render to
    /// mistral-common's ids on Mixtral-8x22B-Instruct's vocabulary.
    #[test]
    fn fixture_requests_read_by_the_server_render_to_mistral_common_ids() {
        let dir = std::path::Path::new(FIXTURE);
        let tok = Tokenizer::from_sentencepiece_model(&dir.join("tokenizer.model.v3")).unwrap();
        let cases: Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("cases.json")).unwrap())
                .unwrap();
        let mut checked = 0;
        for case in cases["cases"].as_array().unwrap() {
            let r = case["request"].as_object().unwrap();
            if r.get("tools").is_none() {
                continue;
            }
            let messages = crate::api::messages(r).unwrap();
            let request = request(r).unwrap();
            assert!(request.parses_calls());
            let Prompt::Tools { messages, tools } = prompt(messages, &request) else {
                panic!("{}: not a tool prompt", case["name"]);
            };
            let want: Vec<u32> = serde_json::from_value(case["ids"].clone()).unwrap();
            assert_eq!(
                tok.encode_chat_v3(&messages, &tools).unwrap(),
                want,
                "{}",
                case["name"]
            );
            checked += 1;
        }
        assert_eq!(checked, 4);
    }

    fn refused(body: Value) -> String {
        let obj = body.as_object().unwrap();
        let err = match crate::api::messages(obj) {
            Err(e) => e,
            Ok(_) => request(obj).unwrap_err(),
        };
        err.param.unwrap()
    }

    #[test]
    fn malformed_tool_fields_are_refused_naming_the_field() {
        let user = json!([{"role": "user", "content": "hi"}]);
        let f = json!({"type": "function", "function": {"name": "f"}});
        let cases = [
            (
                json!({"messages": user, "tool_choice": "required"}),
                "tool_choice",
            ),
            (
                json!({"messages": user, "tools": [f], "tool_choice": "sometimes"}),
                "tool_choice",
            ),
            (
                json!({"messages": user, "tools": [f],
                       "tool_choice": {"type": "function", "function": {"name": "g"}}}),
                "tool_choice",
            ),
            (
                json!({"messages": user, "tools": [{"type": "web"}]}),
                "tools[0].type",
            ),
            (
                json!({"messages": user, "tools": [{"type": "function", "function": {"name": "a b"}}]}),
                "tools[0].function.name",
            ),
            (
                json!({"messages": user,
                       "tools": [{"type": "function", "function": {"name": "f", "extra": 1}}]}),
                "tools[0].function.extra",
            ),
            (
                json!({"messages": user, "tools": [f], "parallel_tool_calls": 1}),
                "parallel_tool_calls",
            ),
            (
                json!({"messages": [{"role": "assistant", "content": null, "tool_calls": [
                    {"id": "a", "type": "function", "function": {"name": "f", "arguments": "[1]"}}]}]}),
                "messages[0].tool_calls[0].function.arguments",
            ),
            (
                json!({"messages": [{"role": "tool", "content": "3"}]}),
                "messages[0].tool_call_id",
            ),
            (
                json!({"messages": [{"role": "assistant", "content": null}]}),
                "messages[0].content",
            ),
        ];
        for (body, param) in cases {
            assert_eq!(refused(body.clone()), param, "{body}");
        }
        let too_many: Vec<Value> = (0..=MAX_TOOLS).map(|_| f.clone()).collect();
        assert_eq!(
            refused(json!({"messages": user, "tools": too_many})),
            "tools"
        );
    }

    #[test]
    fn a_plain_chat_stays_a_plain_chat() {
        let body = json!({"messages": [{"role": "user", "content": "hi"}], "tools": [],
                          "tool_choice": "none"});
        let obj = body.as_object().unwrap();
        let request = request(obj).unwrap();
        assert!(!request.parses_calls());
        let prompt = prompt(crate::api::messages(obj).unwrap(), &request);
        assert!(matches!(prompt, Prompt::Chat(m) if m == [Message::user("hi")]));
    }
}
