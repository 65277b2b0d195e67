//! Mistral's v3 instruct format with function calling (Mixtral-8x22B-Instruct-v0.1's), as
//! mistral-common's v3 tokenizer renders it, id for id.
//!
//! The v3 vocabulary has control tokens for the format (`[INST]`, `[/INST]`, `[TOOL_CALLS]`,
//! `[AVAILABLE_TOOLS]`, `[/AVAILABLE_TOOLS]`, `[TOOL_RESULTS]`, `[/TOOL_RESULTS]`), so unlike v1
//! the markers are ids, never text. Rules (read from mistral-common 1.13's output on the
//! fixture's cases, `tests/fixtures/tools/`):
//! - BOS, then the messages in order; system messages are joined and prepended to the
//!   **last** user message's text with a blank line between;
//! - before the last user message, when there are tools: `[AVAILABLE_TOOLS]`, the JSON list of
//!   `{"type": "function", "function": {"name", "description", "parameters"}}`,
//!   `[/AVAILABLE_TOOLS]`;
//! - a user message: `[INST]`, its text, `[/INST]`;
//! - an assistant message: its text, or `[TOOL_CALLS]` and the JSON list of
//!   `{"name", "arguments", "id"}` (the arguments as a JSON object); then EOS;
//! - a tool result: `[TOOL_RESULTS]`, `{"content", "call_id"}` (the content as JSON when it
//!   parses as JSON, else as a string), `[/TOOL_RESULTS]`.
//!
//! Each text and JSON is encoded on its own (dummy-prefix space, no BOS/EOS); JSON is written as
//! Python's `json.dumps` writes it (`", "` and `": "` separators, non-ASCII as `\uXXXX`), keys
//! in the order given.

use crate::Tokenizer;
use crate::error::{Error, Result};
use serde_json::{Map, Value};

/// A function call the assistant made.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolCall {
    /// The call's id (a tool result names it).
    pub id: String,
    /// The function's name.
    pub name: String,
    /// Its arguments, a JSON object.
    pub arguments: Value,
}

/// One message of a conversation with tools.
#[derive(Debug, Clone, PartialEq)]
pub enum ToolMessage {
    /// Instructions, prepended to the last user message.
    System(String),
    /// The person asking.
    User(String),
    /// The assistant's text.
    Assistant(String),
    /// The assistant's function calls.
    ToolCalls(Vec<ToolCall>),
    /// A function's result.
    ToolResult {
        /// The id of the call it answers.
        call_id: String,
        /// The result (JSON text, or any text).
        content: String,
    },
}

/// A function the model may call, as an OpenAI request's `tools` entry holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct Tool {
    /// Its name.
    pub name: String,
    /// What it does (`""` when not given, as mistral-common writes it).
    pub description: String,
    /// Its parameters, a JSON Schema.
    pub parameters: Value,
}

/// The v3 format's control tokens, by name.
const CONTROLS: [&str; 7] = [
    "[INST]",
    "[/INST]",
    "[TOOL_CALLS]",
    "[AVAILABLE_TOOLS]",
    "[/AVAILABLE_TOOLS]",
    "[TOOL_RESULTS]",
    "[/TOOL_RESULTS]",
];

/// The ids of [`CONTROLS`] in one vocabulary.
struct Controls([u32; 7]);

impl Controls {
    fn of(tok: &Tokenizer) -> Result<Controls> {
        let mut ids = [0; 7];
        for (id, name) in ids.iter_mut().zip(CONTROLS) {
            *id = tok
                .piece_to_id(name)
                .filter(|&i| tok.token_bytes(i).is_none())
                .ok_or(Error::NotV3Vocabulary { token: name })?;
        }
        Ok(Controls(ids))
    }
}

impl Tokenizer {
    /// Whether this vocabulary has Mistral's v3 control tokens (`[INST]`, `[TOOL_CALLS]`,
    /// `[AVAILABLE_TOOLS]`, …), so [`Tokenizer::encode_chat_v3`] can render for it.
    pub fn has_v3_controls(&self) -> bool {
        Controls::of(self).is_ok()
    }

    /// The prompt ids (BOS first) of a conversation with tools in Mistral's v3 instruct
    /// format, identical to mistral-common's v3 `encode_chat_completion`. See the
    /// [module docs](crate::tools) for the rules.
    ///
    /// # Errors
    /// [`Error::NotV3Vocabulary`] when the vocabulary lacks the v3 control tokens,
    /// [`Error::EmptyConversation`], [`Error::Encode`].
    pub fn encode_chat_v3(&self, messages: &[ToolMessage], tools: &[Tool]) -> Result<Vec<u32>> {
        let [
            inst,
            end_inst,
            calls,
            tools_open,
            tools_close,
            results,
            end_results,
        ] = Controls::of(self)?.0;
        if messages.is_empty() {
            return Err(Error::EmptyConversation);
        }
        let system: Vec<&str> = messages
            .iter()
            .filter_map(|m| match m {
                ToolMessage::System(s) if !s.is_empty() => Some(s.as_str()),
                _ => None,
            })
            .collect();
        let system = system.join("\n\n");
        let last_user = messages
            .iter()
            .rposition(|m| matches!(m, ToolMessage::User(_)));
        let mut ids = vec![self.bos_id()];
        for (i, m) in messages.iter().enumerate() {
            match m {
                ToolMessage::System(_) => {}
                ToolMessage::User(text) => {
                    let last = Some(i) == last_user;
                    if last && !tools.is_empty() {
                        ids.push(tools_open);
                        ids.extend(self.encode(&python_json(&tools_json(tools)))?);
                        ids.push(tools_close);
                    }
                    ids.push(inst);
                    let text = match last && !system.is_empty() {
                        true => format!("{system}\n\n{text}"),
                        false => text.clone(),
                    };
                    ids.extend(self.encode(&text)?);
                    ids.push(end_inst);
                }
                ToolMessage::Assistant(text) => {
                    ids.extend(self.encode(text)?);
                    ids.push(self.eos_id());
                }
                ToolMessage::ToolCalls(list) => {
                    ids.push(calls);
                    let list: Vec<Value> = list
                        .iter()
                        .map(|c| {
                            let mut o = Map::new();
                            o.insert("name".into(), Value::String(c.name.clone()));
                            o.insert("arguments".into(), c.arguments.clone());
                            o.insert("id".into(), Value::String(c.id.clone()));
                            Value::Object(o)
                        })
                        .collect();
                    ids.extend(self.encode(&python_json(&Value::Array(list)))?);
                    ids.push(self.eos_id());
                }
                ToolMessage::ToolResult { call_id, content } => {
                    ids.push(results);
                    let content = serde_json::from_str(content)
                        .unwrap_or_else(|_| Value::String(content.clone()));
                    let mut o = Map::new();
                    o.insert("content".into(), content);
                    o.insert("call_id".into(), Value::String(call_id.clone()));
                    ids.extend(self.encode(&python_json(&Value::Object(o)))?);
                    ids.push(end_results);
                }
            }
        }
        Ok(ids)
    }
}

/// The tools as mistral-common lists them.
fn tools_json(tools: &[Tool]) -> Value {
    Value::Array(
        tools
            .iter()
            .map(|t| {
                let mut f = Map::new();
                f.insert("name".into(), Value::String(t.name.clone()));
                f.insert("description".into(), Value::String(t.description.clone()));
                f.insert("parameters".into(), t.parameters.clone());
                let mut o = Map::new();
                o.insert("type".into(), Value::String("function".into()));
                o.insert("function".into(), Value::Object(f));
                Value::Object(o)
            })
            .collect(),
    )
}

/// `v` as Python's `json.dumps(v)` writes it: `", "` and `": "` separators, every non-ASCII
/// character escaped (`\uXXXX`, surrogate pairs above U+FFFF), keys in their order.
pub(crate) fn python_json(v: &Value) -> String {
    let mut out = String::new();
    write_python_json(v, &mut out);
    out
}

fn write_python_json(v: &Value, out: &mut String) {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        // Python writes floats with repr; serde_json's shortest round-trip form agrees for
        // the values JSON requests carry (integers exactly).
        Value::Number(n) => out.push_str(&n.to_string()),
        Value::String(s) => write_python_string(s, out),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_python_json(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            out.push('{');
            for (i, (k, item)) in map.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_python_string(k, out);
                out.push_str(": ");
                write_python_json(item, out);
            }
            out.push('}');
        }
    }
}

fn write_python_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 || !c.is_ascii() => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_is_written_as_python_writes_it() {
        let v: Value =
            serde_json::from_str(r#"{"b": [1, 2.5, true, null], "a": "é \" \\ \n 😀 \u0001"}"#)
                .unwrap();
        assert_eq!(
            python_json(&v),
            r#"{"b": [1, 2.5, true, null], "a": "\u00e9 \" \\ \n \ud83d\ude00 \u0001"}"#
        );
    }
}
