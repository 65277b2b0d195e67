//! Python arguments to the facade's values: prompts, messages, sampling parameters.

use crate::errors::invalid;
use mixtral::{GenerateParams, Message, Overrides, Prompt, Role};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};

/// A prompt: a string (encoded with BOS first) or a sequence of token ids (used as given).
pub(crate) fn prompt(value: &Bound<'_, PyAny>) -> PyResult<Prompt> {
    if let Ok(text) = value.cast::<PyString>() {
        return Ok(Prompt::Text(text.extract::<String>()?));
    }
    match value.extract::<Vec<u32>>() {
        Ok(ids) => Ok(Prompt::Tokens(ids)),
        Err(_) => Err(pyo3::exceptions::PyTypeError::new_err(
            "prompt: expected a str or a list of token ids (non-negative ints)",
        )),
    }
}

/// A conversation: a sequence of `{"role": "system" | "user" | "assistant", "content": str}`.
pub(crate) fn messages(value: &Bound<'_, PyAny>) -> PyResult<Vec<Message>> {
    let mut out = Vec::new();
    for (i, item) in value.try_iter()?.enumerate() {
        let item = item?;
        let dict = item.cast::<PyDict>().map_err(|_| {
            pyo3::exceptions::PyTypeError::new_err(format!(
                "messages[{i}]: expected a dict with `role` and `content`"
            ))
        })?;
        let field = |name: &str| -> PyResult<String> {
            dict.get_item(name)?
                .ok_or_else(|| invalid(format!("messages[{i}]: no `{name}`")))?
                .extract::<String>()
                .map_err(|_| invalid(format!("messages[{i}].{name}: expected a str")))
        };
        let role = match field("role")?.as_str() {
            "system" => Role::System,
            "user" => Role::User,
            "assistant" => Role::Assistant,
            other => {
                return Err(invalid(format!(
                    "messages[{i}].role: `{other}` (expected system, user or assistant)"
                )));
            }
        };
        out.push(Message::new(role, field("content")?));
    }
    Ok(out)
}

/// The sampling and stopping keyword arguments of `generate` and `chat`: the CLI's options
/// (unset ones keep the model's `generation_config.json` defaults), and two only the
/// module takes.
#[derive(Clone, Default)]
pub(crate) struct Sampling {
    pub overrides: Overrides,
    pub stop_token_ids: Vec<u32>,
    pub top_logprobs: usize,
    /// `json_schema=`, `regex=`, `choice=` or `grammar=`.
    pub constraint: Option<mixtral::Constraint>,
    /// `cache_salt=`: a batch's requests share cached prefixes only with the same salt.
    pub cache_salt: Option<String>,
}

impl Sampling {
    /// `engine`'s defaults with these set; the seed is 0 unless given, as the CLI's.
    pub(crate) fn params(&self, engine: &mixtral::Engine) -> GenerateParams {
        let mut p = engine.params_with(&Overrides {
            seed: Some(self.overrides.seed.unwrap_or(0)),
            ..self.overrides.clone()
        });
        p.sampling.top_logprobs = self.top_logprobs;
        p.stop_token_ids = self.stop_token_ids.clone();
        p.constraint = self.constraint.clone();
        p.cache_salt = self.cache_salt.clone();
        p
    }
}

/// An output constraint keyword argument: `json_schema=` (a dict, or a JSON string),
/// `regex=` (a str), `choice=` (a list of str) or `grammar=` (a Lark grammar, a str).
fn constraint(name: &str, value: &Bound<'_, PyAny>) -> PyResult<mixtral::Constraint> {
    use mixtral::Constraint;
    Ok(match name {
        "json_schema" => {
            let text: String = match value.cast::<PyString>() {
                Ok(s) => s.extract()?,
                Err(_) => value
                    .py()
                    .import("json")?
                    .call_method1("dumps", (value,))?
                    .extract()?,
            };
            let schema = serde_json::from_str(&text)
                .map_err(|e| invalid(format!("json_schema is not JSON: {e}")))?;
            Constraint::JsonSchema(schema)
        }
        "regex" => Constraint::Regex(value.extract()?),
        "choice" => Constraint::Choice(value.extract()?),
        _ => Constraint::Lark(value.extract()?),
    })
}

/// `stop=`: one string or a sequence of them.
pub(crate) fn stop_strings(value: Option<&Bound<'_, PyAny>>) -> PyResult<Vec<String>> {
    match value {
        None => Ok(vec![]),
        Some(v) if v.is_none() => Ok(vec![]),
        Some(v) => match v.cast::<PyString>() {
            Ok(s) => Ok(vec![s.extract::<String>()?]),
            Err(_) => v.extract::<Vec<String>>().map_err(|_| {
                pyo3::exceptions::PyTypeError::new_err("stop: a str or a list of str")
            }),
        },
    }
}

/// The keyword arguments every `generate` and `chat` takes (read by hand in one place, so
/// the engine's, a session's and a batch's methods cannot drift apart; `mixtral.pyi` gives
/// editors their signature).
pub(crate) struct GenerateKwargs {
    pub sampling: Sampling,
    pub stream: bool,
    /// `interventions=`: a list of intervention values.
    pub interventions: Option<Py<PyAny>>,
    /// `on_router=`: a callable.
    pub on_router: Option<Py<PyAny>>,
}

impl GenerateKwargs {
    /// The names accepted, for the error on any other.
    const NAMES: &'static str = "max_tokens, temperature, top_p, top_k, min_p, \
        repetition_penalty, seed, stop, stop_token_ids, ignore_eos, top_logprobs, \
        json_schema, regex, choice, grammar, cache_salt, interventions, on_router, stream";

    pub(crate) fn parse(kwargs: Option<&Bound<'_, PyDict>>) -> PyResult<GenerateKwargs> {
        let mut k = GenerateKwargs {
            sampling: Sampling::default(),
            stream: false,
            interventions: None,
            on_router: None,
        };
        let Some(kwargs) = kwargs else {
            return Ok(k);
        };
        for (name, value) in kwargs.iter() {
            let name: String = name.extract()?;
            let o = &mut k.sampling.overrides;
            // The extraction's own exception class (TypeError, OverflowError), named.
            let arg = |e: PyErr| {
                let py = value.py();
                PyErr::from_type(e.get_type(py), format!("{name}: {}", e.value(py)))
            };
            match name.as_str() {
                "max_tokens" => o.max_new_tokens = value.extract().map_err(arg)?,
                "temperature" => o.temperature = value.extract().map_err(arg)?,
                "top_p" => o.top_p = value.extract().map_err(arg)?,
                "top_k" => o.top_k = value.extract().map_err(arg)?,
                "min_p" => o.min_p = value.extract().map_err(arg)?,
                "repetition_penalty" => o.repetition_penalty = value.extract().map_err(arg)?,
                "seed" => o.seed = value.extract().map_err(arg)?,
                "stop" => o.stop_strings = stop_strings(Some(&value))?,
                "stop_token_ids" => {
                    k.sampling.stop_token_ids = value
                        .extract::<Option<Vec<u32>>>()
                        .map_err(arg)?
                        .unwrap_or_default()
                }
                "ignore_eos" => o.ignore_eos = value.extract().map_err(arg)?,
                "json_schema" | "regex" | "choice" | "grammar" if value.is_none() => {}
                "json_schema" | "regex" | "choice" | "grammar" => {
                    if k.sampling.constraint.is_some() {
                        return Err(invalid(
                            "give one of json_schema, regex, choice and grammar".to_string(),
                        ));
                    }
                    k.sampling.constraint = Some(constraint(&name, &value).map_err(arg)?);
                }
                "top_logprobs" => k.sampling.top_logprobs = value.extract().map_err(arg)?,
                "cache_salt" => k.sampling.cache_salt = value.extract().map_err(arg)?,
                "stream" => k.stream = value.extract().map_err(arg)?,
                "interventions" => k.interventions = (!value.is_none()).then(|| value.unbind()),
                "on_router" => k.on_router = callable(&value)?,
                other => {
                    return Err(pyo3::exceptions::PyTypeError::new_err(format!(
                        "unexpected keyword argument `{other}` (expected one of: {})",
                        GenerateKwargs::NAMES
                    )));
                }
            }
        }
        Ok(k)
    }
}

/// `on_router=`: `None` or a callable.
pub(crate) fn callable(value: &Bound<'_, PyAny>) -> PyResult<Option<Py<PyAny>>> {
    if value.is_none() {
        Ok(None)
    } else if value.is_callable() {
        Ok(Some(value.clone().unbind()))
    } else {
        Err(pyo3::exceptions::PyTypeError::new_err(
            "on_router: expected a function (layer, logits) -> logits | None",
        ))
    }
}
