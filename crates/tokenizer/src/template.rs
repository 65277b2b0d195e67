//! `ChatTemplate`: a model's own Jinja `chat_template` (Hugging Face's convention), rendered
//! with `minijinja` as transformers' `apply_chat_template` renders it.
//!
//! Fine-tunes of Mixtral that people run carry their own format (several use ChatML). The
//! template comes from `chat_template.jinja` (transformers 5 writes it there) or from
//! `tokenizer_config.json`'s `chat_template` (a string, or a list of named templates: the
//! one named `default`). Rendering follows transformers: `trim_blocks` and `lstrip_blocks`
//! on, `messages`, `bos_token`, `eos_token` and `add_generation_prompt` in scope,
//! `raise_exception(msg)` an error, Python's string methods (`strip`, `title` …) available.
//! [`crate::Tokenizer::encode_chat_template`] encodes a conversation with one: the special
//! tokens the template prints become ids, the same text inside a message stays text.
//!
//! Mixtral-Instruct's own template is detected ([`ChatTemplate::is_mistral_instruct`]): for it
//! the engine keeps the mistral-common-exact renderer ([`crate::chat`]), which the template
//! only approximates (it drops the space after `[/INST]` and rejects system messages).

use crate::chat::{Message, Role};
use crate::error::{Error, Result};
use serde_json::Value;
use std::path::Path;

/// The most bytes of a chat template file read.
pub const MAX_TEMPLATE_BYTES: u64 = 1 << 20;

/// A compiled-on-use chat template with the special tokens it may print.
#[derive(Clone, Debug)]
pub struct ChatTemplate {
    source: String,
    bos_token: String,
    eos_token: String,
}

impl ChatTemplate {
    /// A template from its source; checked to compile.
    ///
    /// # Errors
    /// [`Error::ChatTemplate`] if it does not compile.
    pub fn new(
        source: impl Into<String>,
        bos_token: impl Into<String>,
        eos_token: impl Into<String>,
    ) -> Result<ChatTemplate> {
        let t = ChatTemplate {
            source: source.into(),
            bos_token: bos_token.into(),
            eos_token: eos_token.into(),
        };
        t.env()?;
        Ok(t)
    }

    /// The template of a model directory, if it has one: `chat_template.jinja`, else
    /// `tokenizer_config.json`'s `chat_template`. `bos_token` / `eos_token` come from
    /// `tokenizer_config.json` (`<s>` / `</s>` when it names none).
    ///
    /// # Errors
    /// [`Error::Io`] / [`Error::Json`] for unreadable or malformed files, naming them;
    /// [`Error::ChatTemplate`] for a template that does not compile.
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
        let source = match crate::tokenizer::read_optional(&jinja, MAX_TEMPLATE_BYTES)? {
            Some(bytes) => Some(String::from_utf8(bytes).map_err(|_| Error::ChatTemplate {
                message: format!("{}: not UTF-8", jinja.display()),
            })?),
            None => match &config["chat_template"] {
                Value::String(s) => Some(s.clone()),
                Value::Array(named) => named
                    .iter()
                    .find(|t| t["name"] == "default")
                    .or(named.first())
                    .and_then(|t| t["template"].as_str())
                    .map(str::to_string),
                _ => None,
            },
        };
        source
            .map(|s| ChatTemplate::new(s, token("bos_token", "<s>"), token("eos_token", "</s>")))
            .transpose()
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

    fn env(&self) -> Result<minijinja::Environment<'static>> {
        let mut env = minijinja::Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function(
            "raise_exception",
            |msg: String| -> std::result::Result<String, minijinja::Error> {
                Err(minijinja::Error::new(
                    minijinja::ErrorKind::InvalidOperation,
                    msg,
                ))
            },
        );
        env.add_template_owned("chat", self.source.clone())
            .map_err(|e| Error::ChatTemplate {
                message: e.to_string(),
            })?;
        Ok(env)
    }

    /// The conversation rendered as text, with the assistant's turn opened when
    /// `add_generation_prompt` is set (as for generating a reply).
    ///
    /// # Errors
    /// [`Error::ChatTemplate`] when the template fails (it raised an exception, say for
    /// roles that do not alternate).
    pub fn render(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String> {
        let env = self.env()?;
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
        env.get_template("chat")
            .and_then(|t| t.render(ctx))
            .map_err(|e| Error::ChatTemplate {
                message: e.to_string(),
            })
    }
}
