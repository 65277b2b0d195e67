//! Reading OpenAI requests: every field checked for its type and range, with an error that
//! names it. Parsed from a JSON value by hand rather than derived, so a wrong type says which
//! field and what was expected, as OpenAI's errors do.

pub use crate::endpoint::Endpoint;
use crate::error::ApiError;
use mixtral::tools::ToolMessage;
use mixtral::{Engine, GenerateParams, Prompt};
use serde_json::{Map, Value};

/// The most strings `stop` may hold (OpenAI's limit).
const MAX_STOP: usize = 4;
/// The most alternatives `top_logprobs` may ask for (OpenAI's limit).
const MAX_TOP_LOGPROBS: u64 = 20;
/// The most tokens `logit_bias` may name (OpenAI's limit).
const MAX_LOGIT_BIAS: usize = 300;

/// The fields both endpoints honour.
const COMMON_FIELDS: &[&str] = &[
    "model",
    "max_tokens",
    "temperature",
    "top_p",
    "top_k",
    "presence_penalty",
    "frequency_penalty",
    "seed",
    "n",
    "stop",
    "stream",
    "stream_options",
    "logprobs",
    "logit_bias",
    "ignore_eos",
    // An end-user id for the operator's logs; nothing to do with the answer.
    "user",
    // vLLM's: only requests with the same salt share cached prefixes.
    "cache_salt",
];

/// The fields only `/v1/chat/completions` honours.
const CHAT_FIELDS: &[&str] = &["messages", "max_completion_tokens", "top_logprobs"];

/// The fields only `/v1/completions` honours (`echo` is read to refuse `true`).
const COMPLETION_FIELDS: &[&str] = &["prompt", "echo"];

/// Refuses any field the server does not honour, so that a client never gets a silently
/// different answer from what it asked for (OpenAI refuses unknown fields too). A null
/// field is as good as absent. The output constraints ([`crate::guided::FIELDS`]) and the
/// tool fields ([`crate::tools::FIELDS`]) are checked where they are read.
fn refuse_unknown(obj: &Map<String, Value>, endpoint: Endpoint) -> Result<(), ApiError> {
    let own = match endpoint {
        Endpoint::Chat => CHAT_FIELDS,
        Endpoint::Completions => COMPLETION_FIELDS,
    };
    for (name, value) in obj {
        let honoured = value.is_null()
            || COMMON_FIELDS.contains(&name.as_str())
            || own.contains(&name.as_str())
            || crate::guided::FIELDS.contains(&name.as_str())
            || (endpoint == Endpoint::Chat && crate::tools::FIELDS.contains(&name.as_str()));
        if !honoured {
            let name = crate::error::clip(name);
            return Err(ApiError::invalid(
                Some(&name),
                format!("`{name}` is not supported by this server"),
            )
            .with_code("unsupported_parameter"));
        }
    }
    Ok(())
}

/// `logit_bias`: `{"token id": bias}`, at most [`MAX_LOGIT_BIAS`] entries, each id in the
/// vocabulary and each bias in [-100, 100].
fn logit_bias(obj: &Map<String, Value>, vocab: usize) -> Result<Vec<(u32, f32)>, ApiError> {
    let map = match obj.get("logit_bias") {
        None | Some(Value::Null) => return Ok(vec![]),
        Some(Value::Object(map)) => map,
        Some(v) => return Err(Fields::wrong("logit_bias", "an object", v)),
    };
    if map.len() > MAX_LOGIT_BIAS {
        return Err(ApiError::invalid(
            Some("logit_bias"),
            format!("`logit_bias` names at most {MAX_LOGIT_BIAS} tokens"),
        ));
    }
    map.iter()
        .map(|(key, bias)| {
            // Only the canonical spelling: `"07"` or `"+7"` would name token 7 again and
            // sum past the bias limit.
            let token = key
                .parse::<u32>()
                .ok()
                .filter(|&t| (t as usize) < vocab && t.to_string() == *key)
                .ok_or_else(|| {
                    ApiError::invalid(
                        Some("logit_bias"),
                        format!(
                            "`logit_bias` key `{}` is not a token id below {vocab}",
                            crate::error::clip(key)
                        ),
                    )
                })?;
            let bias = bias
                .as_f64()
                .filter(|b| (-100.0..=100.0).contains(b))
                .ok_or_else(|| {
                    ApiError::invalid(
                        Some("logit_bias"),
                        format!(
                            "`logit_bias` values must be numbers from -100 to 100 (token {token})"
                        ),
                    )
                })?;
            Ok((token, bias as f32))
        })
        .collect()
}

/// A request ready for the scheduler.
#[derive(Debug)]
pub struct Job {
    /// The prompt's token ids.
    pub ids: Vec<u32>,
    /// Sampling and stopping.
    pub params: GenerateParams,
    /// Answer as server-sent events.
    pub stream: bool,
    /// Send a last chunk with `usage` (`stream_options.include_usage`).
    pub include_usage: bool,
    /// Report each token's log-probability.
    pub logprobs: bool,
    /// The model the request names, if it names one.
    pub model: Option<String>,
    /// The field that set `params.constraint` (a compile error is reported against it).
    pub constraint_field: Option<&'static str>,
    /// How to read tool calls from the output, when the request offers tools.
    pub tool_format: Option<mixtral::tools::ToolFormat>,
}

/// Parses and checks a request body for `endpoint`.
pub fn parse(engine: &Engine, endpoint: Endpoint, body: &[u8]) -> Result<Job, ApiError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::invalid(None, format!("the body is not valid JSON: {e}")))?;
    let Value::Object(obj) = value else {
        return Err(ApiError::invalid(None, "the body must be a JSON object"));
    };
    refuse_unknown(&obj, endpoint)?;
    let f = Fields(&obj);
    let model = match obj.get("model") {
        None | Some(Value::Null) => None,
        Some(Value::String(m)) => Some(m.clone()),
        Some(_) => return Err(ApiError::invalid(Some("model"), "`model` must be a string")),
    };
    let tools = match endpoint {
        Endpoint::Chat => crate::tools::request(&obj)?,
        Endpoint::Completions => crate::tools::ToolRequest::default(),
    };
    let prompt = match endpoint {
        Endpoint::Chat => crate::tools::prompt(messages(&obj)?, &tools),
        Endpoint::Completions => completion_prompt(&obj)?,
    };
    let mut params = generate_params(engine, &obj)?;
    let mut constraint = crate::guided::constraint(endpoint, &obj)?;
    let tool_format = match tools.parses_calls() {
        true => Some(
            engine
                .tool_format()
                .map_err(|e| ApiError::from_engine(&e).for_endpoint(endpoint))?,
        ),
        false => None,
    };
    if let Some(format) = tool_format {
        let calls = mixtral::tools::tool_call_constraint(
            format,
            &tools.tools,
            &tools.choice,
            tools.parallel,
        )
        .map_err(|e| ApiError::invalid(Some("tool_choice"), e.to_string()))?;
        match (calls, &constraint) {
            (Some(_), Some((field, _))) => {
                return Err(ApiError::invalid(
                    Some(field),
                    format!("`{field}` and `tool_choice` both constrain the output: give one"),
                ));
            }
            (Some(calls), None) => constraint = Some(("tool_choice", calls)),
            (None, _) => {}
        }
    }
    let constraint_field = constraint.as_ref().map(|(field, _)| *field);
    params.constraint = constraint.map(|(_, c)| c);
    let stream = f.boolean("stream")?.unwrap_or(false);
    let include_usage = match obj.get("stream_options") {
        None | Some(Value::Null) => false,
        Some(Value::Object(o)) => Fields(o).boolean("include_usage")?.unwrap_or(false),
        Some(_) => {
            return Err(ApiError::invalid(
                Some("stream_options"),
                "`stream_options` must be an object",
            ));
        }
    };
    let (logprobs, top) = logprobs(endpoint, &f)?;
    params.sampling.top_logprobs = top as usize;
    if endpoint == Endpoint::Completions && f.boolean("echo")?.unwrap_or(false) {
        return Err(ApiError::invalid(Some("echo"), "`echo` is not supported"));
    }
    Ok(Job {
        ids: prompt_ids(engine, endpoint, &prompt)?,
        params,
        stream,
        include_usage,
        logprobs,
        model,
        constraint_field,
        tool_format,
    })
}

/// The request's sampling and stopping parameters over the model's defaults.
fn generate_params(engine: &Engine, obj: &Map<String, Value>) -> Result<GenerateParams, ApiError> {
    let f = Fields(obj);
    let context = engine.config().max_position_embeddings as u64;
    let mut params = engine.params();
    let max_tokens = f.uint("max_completion_tokens")?.or(f.uint("max_tokens")?);
    if let Some(n) = max_tokens {
        if n == 0 || n > context {
            let param = if obj.contains_key("max_completion_tokens") {
                "max_completion_tokens"
            } else {
                "max_tokens"
            };
            return Err(ApiError::invalid(
                Some(param),
                format!("`{param}` must be 1 to {context} (the model's context), got {n}"),
            ));
        }
        params.max_new_tokens = n as usize;
    }
    if let Some(t) = f.number("temperature", 0.0, 2.0)? {
        params.sampling.temperature = t;
    }
    if let Some(p) = f.number("top_p", 0.0, 1.0)? {
        if p == 0.0 {
            return Err(ApiError::invalid(
                Some("top_p"),
                "`top_p` must be in (0, 1], got 0",
            ));
        }
        params.sampling.top_p = p;
    }
    if let Some(k) = f.uint("top_k")? {
        params.sampling.top_k = (k > 0).then_some(k as usize);
    }
    if let Some(p) = f.number("presence_penalty", -2.0, 2.0)? {
        params.sampling.presence_penalty = p;
    }
    if let Some(p) = f.number("frequency_penalty", -2.0, 2.0)? {
        params.sampling.frequency_penalty = p;
    }
    if let Some(seed) = f.int("seed")? {
        params.sampling.seed = seed as u64;
    }
    if let Some(n) = f.uint("n")?
        && n != 1
    {
        return Err(ApiError::invalid(
            Some("n"),
            format!("only `n` = 1 is supported, got {n}"),
        ));
    }
    params.sampling.logit_bias = logit_bias(obj, engine.config().vocab_size)?;
    params.stop_strings = stop(obj)?;
    params.ignore_eos = f.boolean("ignore_eos")?.unwrap_or(false);
    params.cache_salt = cache_salt(&f)?;
    Ok(params)
}

/// `cache_salt`: a non-empty string of at most [`mixtral::MAX_CACHE_SALT_BYTES`] bytes.
fn cache_salt(f: &Fields<'_>) -> Result<Option<String>, ApiError> {
    let Some(v) = f.get("cache_salt") else {
        return Ok(None);
    };
    match v.as_str() {
        Some(s) if !s.is_empty() && s.len() <= mixtral::MAX_CACHE_SALT_BYTES => {
            Ok(Some(s.to_string()))
        }
        _ => Err(ApiError::invalid(
            Some("cache_salt"),
            format!(
                "`cache_salt` must be a non-empty string of at most {} bytes",
                mixtral::MAX_CACHE_SALT_BYTES
            ),
        )),
    }
}

/// Whether log-probabilities are asked for, and how many alternatives per token.
fn logprobs(endpoint: Endpoint, f: &Fields<'_>) -> Result<(bool, u64), ApiError> {
    Ok(match endpoint {
        // Chat: `logprobs: bool` and `top_logprobs: 0..=20`.
        Endpoint::Chat => {
            let on = f.boolean("logprobs")?.unwrap_or(false);
            let top = f.uint("top_logprobs")?.unwrap_or(0);
            if top > MAX_TOP_LOGPROBS {
                return Err(ApiError::invalid(
                    Some("top_logprobs"),
                    format!("`top_logprobs` must be 0 to {MAX_TOP_LOGPROBS}, got {top}"),
                ));
            }
            if top > 0 && !on {
                return Err(ApiError::invalid(
                    Some("top_logprobs"),
                    "`top_logprobs` needs `logprobs: true`",
                ));
            }
            (on, top)
        }
        // Completions (legacy): `logprobs: 0..=5` alternatives.
        Endpoint::Completions => match f.uint("logprobs")? {
            None => (false, 0),
            Some(n) if n <= 5 => (true, n),
            Some(n) => {
                return Err(ApiError::invalid(
                    Some("logprobs"),
                    format!("`logprobs` must be 0 to 5, got {n}"),
                ));
            }
        },
    })
}

/// The prompt's token ids, refused when they leave no room in the context for an answer.
fn prompt_ids(engine: &Engine, endpoint: Endpoint, prompt: &Prompt) -> Result<Vec<u32>, ApiError> {
    let context = engine.config().max_position_embeddings as u64;
    let ids = engine
        .encode(prompt)
        .map_err(|e| ApiError::from_engine(&e).for_endpoint(endpoint))?;
    if ids.len() as u64 >= context {
        return Err(ApiError::invalid(
            Some(match endpoint {
                Endpoint::Chat => "messages",
                Endpoint::Completions => "prompt",
            }),
            format!(
                "the prompt is {} tokens; the model's context is {context}, which must also \
                 hold at least one generated token",
                ids.len()
            ),
        )
        .with_code("context_length_exceeded"));
    }
    Ok(ids)
}

/// Typed access to a request's fields; each getter is `None` for an absent or null field.
struct Fields<'a>(&'a Map<String, Value>);

impl Fields<'_> {
    fn get(&self, name: &str) -> Option<&Value> {
        self.0.get(name).filter(|v| !v.is_null())
    }

    fn wrong(name: &str, want: &str, got: &Value) -> ApiError {
        ApiError::invalid(
            Some(name),
            format!("`{name}` must be {want}, got {}", kind(got)),
        )
    }

    fn boolean(&self, name: &str) -> Result<Option<bool>, ApiError> {
        self.get(name)
            .map(|v| v.as_bool().ok_or_else(|| Self::wrong(name, "a boolean", v)))
            .transpose()
    }

    fn uint(&self, name: &str) -> Result<Option<u64>, ApiError> {
        self.get(name)
            .map(|v| {
                v.as_u64()
                    .ok_or_else(|| Self::wrong(name, "a non-negative integer", v))
            })
            .transpose()
    }

    fn int(&self, name: &str) -> Result<Option<i64>, ApiError> {
        self.get(name)
            .map(|v| v.as_i64().ok_or_else(|| Self::wrong(name, "an integer", v)))
            .transpose()
    }

    fn number(&self, name: &str, lo: f32, hi: f32) -> Result<Option<f32>, ApiError> {
        let Some(v) = self.get(name) else {
            return Ok(None);
        };
        let x = v.as_f64().ok_or_else(|| Self::wrong(name, "a number", v))? as f32;
        if !(lo..=hi).contains(&x) {
            return Err(ApiError::invalid(
                Some(name),
                format!("`{name}` must be {lo} to {hi}, got {x}"),
            ));
        }
        Ok(Some(x))
    }
}

/// The JSON type of `v`, for messages.
fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "an integer",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// `messages`: a non-empty array of `{role, content}`, the content a string or an array of
/// text parts; an assistant's may be `null` beside `tool_calls`, and a `tool` message names
/// the call it answers (`tool_call_id`). Beside `tool_calls`, an assistant's text is not
/// rendered, as mistral-common's v3 format renders such a turn.
pub(crate) fn messages(obj: &Map<String, Value>) -> Result<Vec<ToolMessage>, ApiError> {
    let list = match obj.get("messages") {
        None | Some(Value::Null) => {
            return Err(ApiError::invalid(
                Some("messages"),
                "`messages` is required",
            ));
        }
        Some(Value::Array(list)) => list,
        Some(v) => return Err(Fields::wrong("messages", "an array", v)),
    };
    if list.is_empty() {
        return Err(ApiError::invalid(
            Some("messages"),
            "`messages` must hold at least one message",
        ));
    }
    list.iter()
        .enumerate()
        .map(|(i, m)| {
            let Value::Object(m) = m else {
                return Err(ApiError::invalid(
                    Some(&format!("messages[{i}]")),
                    format!("`messages[{i}]` must be an object, got {}", kind(m)),
                ));
            };
            message(i, m)
        })
        .collect()
}

/// `messages[i]`.
fn message(i: usize, m: &Map<String, Value>) -> Result<ToolMessage, ApiError> {
    let at = |field: &str| format!("messages[{i}].{field}");
    let role = match m.get("role") {
        Some(Value::String(r)) => r.as_str(),
        Some(v) => return Err(Fields::wrong(&at("role"), "a string", v)),
        None => {
            return Err(ApiError::invalid(
                Some(&at("role")),
                format!("`{}` is required", at("role")),
            ));
        }
    };
    if !matches!(role, "system" | "developer" | "user" | "assistant" | "tool") {
        return Err(ApiError::invalid(
            Some(&at("role")),
            format!(
                "unknown role `{}` in `{}` (expected system, user, assistant or tool)",
                crate::error::clip(role),
                at("role")
            ),
        ));
    }
    if role == "assistant"
        && let Some(calls) = m.get("tool_calls").filter(|v| !v.is_null())
    {
        let list = calls
            .as_array()
            .ok_or_else(|| Fields::wrong(&at("tool_calls"), "an array", calls))?;
        return Ok(ToolMessage::ToolCalls(crate::tools::tool_calls(
            list,
            &at("tool_calls"),
        )?));
    }
    let content = match m.get("content") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => text_parts(parts, &at("content"))?,
        Some(v) if !v.is_null() => {
            return Err(Fields::wrong(
                &at("content"),
                "a string or an array of text parts",
                v,
            ));
        }
        _ => {
            return Err(ApiError::invalid(
                Some(&at("content")),
                format!("`{}` is required", at("content")),
            ));
        }
    };
    Ok(match role {
        "system" | "developer" => ToolMessage::System(content),
        "user" => ToolMessage::User(content),
        "assistant" => ToolMessage::Assistant(content),
        _ => match m.get("tool_call_id") {
            Some(Value::String(id)) if !id.is_empty() => ToolMessage::ToolResult {
                call_id: id.clone(),
                content,
            },
            _ => {
                return Err(ApiError::invalid(
                    Some(&at("tool_call_id")),
                    format!(
                        "`{}` must name the call this result answers",
                        at("tool_call_id")
                    ),
                ));
            }
        },
    })
}

/// `[{"type": "text", "text": "…"}, …]` joined.
fn text_parts(parts: &[Value], at: &str) -> Result<String, ApiError> {
    let mut text = String::new();
    for (j, p) in parts.iter().enumerate() {
        match (p.get("type").and_then(Value::as_str), p.get("text")) {
            (Some("text"), Some(Value::String(t))) => text.push_str(t),
            _ => {
                return Err(ApiError::invalid(
                    Some(&format!("{at}[{j}]")),
                    format!(
                        "`{at}[{j}]` must be a text part ({{\"type\": \"text\", \"text\": …}})"
                    ),
                ));
            }
        }
    }
    Ok(text)
}

/// `prompt`: a string, or an array of one string, or of token ids.
fn completion_prompt(obj: &Map<String, Value>) -> Result<Prompt, ApiError> {
    let wrong = || {
        ApiError::invalid(
            Some("prompt"),
            "`prompt` must be a string, an array of one string, or an array of token ids",
        )
    };
    match obj.get("prompt") {
        None | Some(Value::Null) => Err(ApiError::invalid(Some("prompt"), "`prompt` is required")),
        Some(Value::String(s)) => Ok(Prompt::Text(s.clone())),
        Some(Value::Array(a)) if a.len() == 1 && a[0].is_string() => {
            Ok(Prompt::Text(a[0].as_str().unwrap_or_default().to_string()))
        }
        Some(Value::Array(a)) if !a.is_empty() && a.iter().all(Value::is_u64) => a
            .iter()
            .map(|v| {
                v.as_u64()
                    .and_then(|x| u32::try_from(x).ok())
                    .ok_or_else(wrong)
            })
            .collect::<Result<_, _>>()
            .map(Prompt::Tokens),
        Some(Value::Array(a)) if a.len() > 1 && a.iter().all(Value::is_string) => Err(
            ApiError::invalid(Some("prompt"), "only one prompt per request is supported"),
        ),
        Some(_) => Err(wrong()),
    }
}

/// `stop`: a string or an array of up to four non-empty strings.
fn stop(obj: &Map<String, Value>) -> Result<Vec<String>, ApiError> {
    let list = match obj.get("stop") {
        None | Some(Value::Null) => return Ok(vec![]),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| Fields::wrong("stop", "a string or an array of strings", v))
            })
            .collect::<Result<_, _>>()?,
        Some(v) => return Err(Fields::wrong("stop", "a string or an array of strings", v)),
    };
    if list.len() > MAX_STOP {
        return Err(ApiError::invalid(
            Some("stop"),
            format!("`stop` holds at most {MAX_STOP} strings"),
        ));
    }
    if list.iter().any(String::is_empty) {
        return Err(ApiError::invalid(
            Some("stop"),
            "`stop` strings must be non-empty",
        ));
    }
    Ok(list)
}
