//! The request fields that constrain the output (structured outputs): OpenAI's
//! `response_format` and vLLM's `guided_json`, `guided_regex`, `guided_choice` and
//! `guided_grammar`, read into one [`Constraint`] with the field it came from. The scheduler
//! compiles it when the request is submitted (`Scheduler::submit_with`), so a bad schema or
//! grammar is a 400 naming that field before anything is queued.

use crate::api::Endpoint;
use crate::error::ApiError;
use mixtral::Constraint;
use serde_json::{Map, Value};

/// The fields read here, in the order they are looked for.
pub(crate) const FIELDS: &[&str] = &[
    "response_format",
    "guided_json",
    "guided_regex",
    "guided_choice",
    "guided_grammar",
];

/// The most alternatives `guided_choice` may list.
const MAX_CHOICES: usize = 1024;

/// The request's constraint, if it sets one, and the field that set it.
pub(crate) fn constraint(
    endpoint: Endpoint,
    obj: &Map<String, Value>,
) -> Result<Option<(&'static str, Constraint)>, ApiError> {
    let mut found: Option<(&'static str, Constraint)> = None;
    for &name in FIELDS {
        let Some(value) = obj.get(name).filter(|v| !v.is_null()) else {
            continue;
        };
        let parsed = match name {
            "response_format" if endpoint == Endpoint::Chat => response_format(value)?,
            "response_format" => {
                return Err(ApiError::invalid(
                    Some(name),
                    "`response_format` is a chat completions field; use `guided_json` here",
                ));
            }
            "guided_json" => Some(Constraint::JsonSchema(guided_json(value)?)),
            "guided_regex" => Some(Constraint::Regex(string(name, value)?)),
            "guided_choice" => Some(Constraint::Choice(choices(value)?)),
            _ => Some(Constraint::Lark(string(name, value)?)),
        };
        let Some(parsed) = parsed else {
            continue;
        };
        if let Some((first, _)) = found {
            return Err(ApiError::invalid(
                Some(name),
                format!("`{first}` and `{name}` both constrain the output: give one"),
            ));
        }
        found = Some((name, parsed));
    }
    Ok(found)
}

/// OpenAI's `response_format`: `{"type": "text"}` (no constraint), `{"type": "json_object"}`
/// or `{"type": "json_schema", "json_schema": {"name", "schema", "strict", "description"}}`.
/// Any other key is refused, as every unknown field is.
fn response_format(value: &Value) -> Result<Option<Constraint>, ApiError> {
    let param = "response_format";
    let obj = value
        .as_object()
        .ok_or_else(|| ApiError::invalid(Some(param), "`response_format` must be an object"))?;
    let kind = obj
        .get("type")
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::invalid(Some(param), "`response_format.type` must be a string"))?;
    let allowed: &[&str] = match kind {
        "text" | "json_object" => &["type"],
        "json_schema" => &["type", "json_schema"],
        other => {
            return Err(ApiError::invalid(
                Some(param),
                format!(
                    "`response_format.type` must be `text`, `json_object` or `json_schema`, got `{}`",
                    crate::error::clip(other)
                ),
            ));
        }
    };
    only(param, obj, allowed)?;
    Ok(match kind {
        "text" => None,
        "json_object" => Some(Constraint::JsonObject),
        _ => {
            let spec = obj
                .get("json_schema")
                .and_then(Value::as_object)
                .ok_or_else(|| {
                    ApiError::invalid(
                        Some(param),
                        "`response_format.json_schema` must be an object with `name` and `schema`",
                    )
                })?;
            only(
                "response_format.json_schema",
                spec,
                &["name", "schema", "strict", "description"],
            )?;
            match spec.get("name") {
                Some(Value::String(n)) if valid_name(n) => {}
                _ => {
                    return Err(ApiError::invalid(
                        Some(param),
                        "`response_format.json_schema.name` must be 1 to 64 letters, digits, `_` or `-`",
                    ));
                }
            }
            if !matches!(
                spec.get("strict"),
                None | Some(Value::Null | Value::Bool(_))
            ) {
                return Err(ApiError::invalid(
                    Some(param),
                    "`response_format.json_schema.strict` must be a boolean",
                ));
            }
            // Decoding is always strict here: every token is masked by the schema.
            match spec.get("schema") {
                None | Some(Value::Null) => Some(Constraint::JsonSchema(Value::Object(Map::new()))),
                Some(s @ (Value::Object(_) | Value::Bool(_))) => {
                    Some(Constraint::JsonSchema(s.clone()))
                }
                Some(_) => {
                    return Err(ApiError::invalid(
                        Some(param),
                        "`response_format.json_schema.schema` must be a JSON Schema object",
                    ));
                }
            }
        }
    })
}

/// OpenAI's rule for a schema's name.
fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Refuses keys of `obj` outside `allowed`.
fn only(at: &str, obj: &Map<String, Value>, allowed: &[&str]) -> Result<(), ApiError> {
    match obj.keys().find(|k| !allowed.contains(&k.as_str())) {
        None => Ok(()),
        Some(k) => Err(ApiError::invalid(
            Some(at.split('.').next().unwrap_or(at)),
            format!(
                "`{at}.{}` is not supported by this server",
                crate::error::clip(k)
            ),
        )
        .with_code("unsupported_parameter")),
    }
}

/// vLLM's `guided_json`: a schema object, or a string holding one.
fn guided_json(value: &Value) -> Result<Value, ApiError> {
    let param = "guided_json";
    let schema = match value {
        Value::String(s) => serde_json::from_str(s).map_err(|e| {
            ApiError::invalid(Some(param), format!("`guided_json` is not JSON: {e}"))
        })?,
        v => v.clone(),
    };
    match schema {
        Value::Object(_) | Value::Bool(_) => Ok(schema),
        _ => Err(ApiError::invalid(
            Some(param),
            "`guided_json` must be a JSON Schema object",
        )),
    }
}

/// A string field.
fn string(name: &str, value: &Value) -> Result<String, ApiError> {
    value
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| ApiError::invalid(Some(name), format!("`{name}` must be a string")))
}

/// vLLM's `guided_choice`: a non-empty array of strings.
fn choices(value: &Value) -> Result<Vec<String>, ApiError> {
    let param = "guided_choice";
    let wrong = || {
        ApiError::invalid(
            Some(param),
            format!("`guided_choice` must be an array of 1 to {MAX_CHOICES} strings"),
        )
    };
    let items = value.as_array().ok_or_else(wrong)?;
    if items.is_empty() || items.len() > MAX_CHOICES {
        return Err(wrong());
    }
    items
        .iter()
        .map(|v| v.as_str().map(str::to_owned).ok_or_else(wrong))
        .collect()
}
