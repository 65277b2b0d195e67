//! `ChatTemplate`: a model's own Jinja `chat_template` (Hugging Face's convention), rendered
//! with `minijinja` as transformers' `apply_chat_template` renders it.
//!
//! Fine-tunes of Mixtral that people run carry their own format (several use ChatML). The
//! template comes from `chat_template.jinja` (transformers 5 writes it there) or from
//! `tokenizer_config.json`'s `chat_template`: a string, or transformers' list of named
//! templates (`[{"name": "default", "template": "…"}, …]`), of which the one named `default`
//! is the chat template (the others are for tool use or RAG, which this engine does not
//! do); a list without one, or a value of any other type, is an error rather than a model
//! silently run without its format. Rendering follows transformers: `trim_blocks` and
//! `lstrip_blocks` on, `messages`, `bos_token`, `eos_token` and `add_generation_prompt` in
//! scope, `raise_exception(msg)` an error, `strftime_now(format)` the current UTC time,
//! Python's string methods (`strip`, `title` …) available. Rendering is bounded in time and
//! memory ([`RenderLimits`]); loading only compiles.
//! [`crate::Tokenizer::encode_chat_template`] encodes a conversation with one: the special
//! tokens the template prints become ids, the same text inside a message stays text.
//!
//! Mixtral-Instruct's own template is detected ([`ChatTemplate::is_mistral_instruct`]): for it
//! the engine keeps the mistral-common-exact renderer ([`crate::chat`]), which the template
//! only approximates (it drops the space after `[/INST]` and rejects system messages).

use crate::chat::{Message, Role};
use crate::error::{Error, Result};
use crate::template_limits::{self as limits, Budget, RenderLimits};
use minijinja::machinery::{Instructions, WhitespaceConfig};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// The most bytes of a chat template file read.
pub const MAX_TEMPLATE_BYTES: u64 = 1 << 20;

/// The prefix of the names the render guards are called by; a template may not use it.
const RESERVED: &str = "__mixtral_guard";

/// A compiled template: its code and its blocks' code.
type Compiled<'s> = (Instructions<'s>, BTreeMap<&'s str, Instructions<'s>>);

/// A chat template, compiled when made and rendered per conversation within
/// [`RenderLimits`], with the special tokens it may print.
#[derive(Clone, Debug)]
pub struct ChatTemplate {
    source: String,
    /// Where it came from (`dir/chat_template.jinja`, `file.gguf: tokenizer.chat_template`),
    /// for errors.
    name: String,
    bos_token: String,
    eos_token: String,
    limits: RenderLimits,
    /// Whether the missing-BOS warning was given (shared by clones: once per model).
    warned_no_bos: Arc<AtomicBool>,
}

impl ChatTemplate {
    /// A template from its source; checked to compile (it is not run).
    ///
    /// # Errors
    /// [`Error::ChatTemplate`] if it does not compile; [`Error::TemplateLimit`] if compiling
    /// it would build constants of more than 4 MiB (minijinja folds `'x' * 100000000`
    /// while compiling).
    pub fn new(
        source: impl Into<String>,
        bos_token: impl Into<String>,
        eos_token: impl Into<String>,
    ) -> Result<ChatTemplate> {
        ChatTemplate::named("(inline)", source, bos_token, eos_token)
    }

    /// As [`ChatTemplate::new`], with `name` (where the template came from) in its errors.
    ///
    /// # Errors
    /// [`Error::ChatTemplate`] if it does not compile.
    pub fn named(
        name: impl Into<String>,
        source: impl Into<String>,
        bos_token: impl Into<String>,
        eos_token: impl Into<String>,
    ) -> Result<ChatTemplate> {
        let t = ChatTemplate {
            source: source.into(),
            name: name.into(),
            bos_token: bos_token.into(),
            eos_token: eos_token.into(),
            limits: RenderLimits::default(),
            warned_no_bos: Arc::default(),
        };
        if t.source.contains(RESERVED) {
            return Err(t.error(format!("names beginning with {RESERVED} are reserved")));
        }
        t.check_folds(&t.parse()?)?;
        Ok(t)
    }

    /// This template with other render limits (the engine sets them from the model's
    /// context length, [`RenderLimits::for_context`]).
    pub fn with_limits(mut self, limits: RenderLimits) -> ChatTemplate {
        self.limits = limits;
        self
    }

    /// The limits each rendering runs within.
    pub fn limits(&self) -> RenderLimits {
        self.limits
    }

    /// Where the template came from, as its errors name it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The template of a model directory, if it has one: `chat_template.jinja`, else
    /// `tokenizer_config.json`'s `chat_template`. `bos_token` / `eos_token` come from
    /// `tokenizer_config.json` (`<s>` / `</s>` when it names none).
    ///
    /// # Errors
    /// [`Error::Io`] / [`Error::Json`] for unreadable or malformed files, naming them;
    /// [`Error::BadTemplateField`] for a `chat_template` that is neither a string nor a list
    /// of named templates with one named `default`; [`Error::ChatTemplate`] for a template
    /// that does not compile.
    pub fn from_dir(dir: &Path) -> Result<Option<ChatTemplate>> {
        let config_path = dir.join("tokenizer_config.json");
        let config: Value =
            match crate::tokenizer::read_optional(&config_path, crate::MAX_CONFIG_BYTES)? {
                Some(bytes) => crate::tokenizer::parse_json(&config_path, &bytes)?,
                None => Value::Null,
            };
        let token = |key: &str, default: &str| -> String {
            match &config[key] {
                Value::String(s) => s.clone(),
                Value::Object(o) => o
                    .get("content")
                    .and_then(Value::as_str)
                    .unwrap_or(default)
                    .to_string(),
                _ => default.to_string(),
            }
        };
        let jinja = dir.join("chat_template.jinja");
        let (name, source) = match crate::tokenizer::read_optional(&jinja, MAX_TEMPLATE_BYTES)? {
            Some(bytes) => {
                let name = jinja.display().to_string();
                match String::from_utf8(bytes) {
                    Ok(s) => (name, s),
                    Err(_) => {
                        return Err(Error::ChatTemplate {
                            template: name,
                            message: "not UTF-8".into(),
                        });
                    }
                }
            }
            None => match config_template(&config_path, &config["chat_template"])? {
                Some(s) => (format!("{}: chat_template", config_path.display()), s),
                None => return Ok(None),
            },
        };
        let bos = token("bos_token", "<s>");
        ChatTemplate::named(name, source, bos, token("eos_token", "</s>")).map(Some)
    }

    /// The template's source.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Whether this is Mixtral-Instruct's own `[INST] … [/INST]` template (or a variant of
    /// it), which the mistral-common-exact renderer serves better.
    pub fn is_mistral_instruct(&self) -> bool {
        self.source.contains("[INST]") && self.source.contains("[/INST]")
    }

    pub(crate) fn error(&self, message: String) -> Error {
        Error::ChatTemplate {
            template: self.name.clone(),
            message,
        }
    }

    /// The template's syntax tree, parsed as transformers renders (`trim_blocks`,
    /// `lstrip_blocks`).
    fn parse(&self) -> Result<minijinja::machinery::ast::Stmt<'_>> {
        let ws = WhitespaceConfig {
            keep_trailing_newline: false,
            lstrip_blocks: true,
            trim_blocks: true,
        };
        minijinja::machinery::parse(&self.source, "chat", Default::default(), ws)
            .map_err(|e| self.error(e.to_string()))
    }

    /// Refuses a template whose constant expressions would fold into more than
    /// [`crate::template_fold::MAX_FOLDED_BYTES`]: minijinja folds them while compiling,
    /// before any guard runs. Checked once, when the template is made (its source never
    /// changes after).
    fn check_folds(&self, ast: &minijinja::machinery::ast::Stmt<'_>) -> Result<()> {
        let folded = crate::template_fold::folded_bytes(ast);
        if folded > crate::template_fold::MAX_FOLDED_BYTES {
            return Err(Error::TemplateLimit {
                template: self.name.clone(),
                limit: format!(
                    "its constant expressions make values of up to {folded} bytes, more than \
                     the {} a chat template may",
                    crate::template_fold::MAX_FOLDED_BYTES
                ),
            });
        }
        Ok(())
    }

    /// The template's code, with every instruction that can build a large value routed
    /// through the guards of [`crate::template_limits`].
    fn compile(&self) -> Result<Compiled<'_>> {
        let ast = self.parse()?;
        let mut codegen = minijinja::machinery::CodeGenerator::new("chat", &self.source);
        codegen.compile_stmt(&ast);
        let (mut code, mut blocks) = codegen.finish();
        limits::patch(&mut code);
        for block in blocks.values_mut() {
            limits::patch(block);
        }
        Ok((code, blocks))
    }

    fn env(&self, budget: &Arc<Budget>) -> minijinja::Environment<'static> {
        let mut env = minijinja::Environment::new();
        env.set_fuel(Some(self.limits.fuel));
        env.set_formatter(limits::formatter(budget.clone()));
        let methods = budget.clone();
        env.set_unknown_method_callback(move |state, value, method, args| {
            limits::check_method(&methods, value, method, args)?;
            minijinja_contrib::pycompat::unknown_method_callback(state, value, method, args)
        });
        env.add_function(
            "raise_exception",
            |msg: String| -> std::result::Result<String, minijinja::Error> {
                Err(minijinja::Error::new(
                    minijinja::ErrorKind::InvalidOperation,
                    msg,
                ))
            },
        );
        env.add_function("strftime_now", |format: String| {
            crate::strftime::strftime(&format, crate::strftime::now())
        });
        limits::add_guards(&mut env, budget);
        env
    }

    /// The conversation rendered as text, with the assistant's turn opened when
    /// `add_generation_prompt` is set (as for generating a reply). The text holds the
    /// messages as they are: to encode a conversation, use
    /// [`crate::Tokenizer::encode_chat_template`], which keeps them out of control tokens.
    ///
    /// # Errors
    /// [`Error::ChatTemplate`] when the template fails (it raised an exception, say for
    /// roles that do not alternate); [`Error::TemplateLimit`] when it runs past its
    /// [`RenderLimits`].
    pub fn render(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String> {
        let messages: Vec<Value> = messages
            .iter()
            .map(|m| {
                let role = match m.role {
                    Role::System => "system",
                    Role::User => "user",
                    Role::Assistant => "assistant",
                };
                serde_json::json!({"role": role, "content": m.content})
            })
            .collect();
        let ctx = minijinja::context! {
            messages => messages,
            bos_token => self.bos_token,
            eos_token => self.eos_token,
            add_generation_prompt => add_generation_prompt,
        };
        let budget = Budget::new(self.limits);
        let env = self.env(&budget);
        let (code, blocks) = self.compile()?;
        let mut text = String::new();
        let result = minijinja::machinery::Vm::new(&env).eval(
            &code,
            ctx,
            &blocks,
            &mut minijinja::machinery::make_string_output(&mut text),
            minijinja::AutoEscape::None,
        );
        match result {
            Ok(_) => Ok(text),
            Err(e) => Err(match (e.kind(), budget.tripped()) {
                (minijinja::ErrorKind::OutOfFuel, _) => Error::TemplateLimit {
                    template: self.name.clone(),
                    limit: format!("ran more than its {} instructions", self.limits.fuel),
                },
                (_, Some(limit)) => Error::TemplateLimit {
                    template: self.name.clone(),
                    limit,
                },
                _ => self.error(e.to_string()),
            }),
        }
    }

    /// A warning, the first time only, that the template printed no BOS (`ids`, its
    /// encoding, do not start with `bos_id`) while the model has one: the prompt then starts
    /// without it, which is usually a broken template, but may be what the model was
    /// trained on, so it is not an error.
    pub(crate) fn note_missing_bos(&self, ids: &[u32], bos_id: u32) -> Option<String> {
        if ids.first() == Some(&bos_id) || self.warned_no_bos.swap(true, Ordering::Relaxed) {
            return None;
        }
        Some(format!(
            "chat template {} does not print the BOS token {:?}; prompts start without it",
            self.name, self.bos_token
        ))
    }
}

/// `tokenizer_config.json`'s `chat_template`: a string, or the template named `default` of a
/// list of named templates; absent or `null` is `None`.
fn config_template(path: &Path, field: &Value) -> Result<Option<String>> {
    let bad = |reason: String| Error::BadTemplateField {
        path: path.to_owned(),
        field: "chat_template",
        reason,
    };
    match field {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s.clone())),
        Value::Array(named) => {
            let default = named.iter().find(|t| t["name"] == "default");
            match default.map(|t| &t["template"]) {
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(_) => Err(bad("the template named \"default\" is not a string".into())),
                None => Err(bad(format!(
                    "a list of {} named templates, none named \"default\" (the chat template)",
                    named.len()
                ))),
            }
        }
        other => Err(bad(format!(
            "expected a string or a list of named templates, found {}",
            match other {
                Value::Bool(_) => "a boolean",
                Value::Number(_) => "a number",
                _ => "an object",
            }
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_template_without_bos_is_warned_about_once() {
        let t = ChatTemplate::named("t.jinja", "hi", "<s>", "</s>").unwrap();
        let copy = t.clone();
        let first = t.note_missing_bos(&[5, 6], 1).expect("a warning");
        assert!(
            first.starts_with("chat template t.jinja ") && first.contains("\"<s>\""),
            "{first}"
        );
        assert_eq!(t.note_missing_bos(&[5, 6], 1), None);
        assert_eq!(
            copy.note_missing_bos(&[5], 1),
            None,
            "clones share the warning"
        );
        let with_bos = ChatTemplate::new("{{ bos_token }}", "<s>", "</s>").unwrap();
        assert_eq!(with_bos.note_missing_bos(&[1, 5], 1), None);
    }
}
