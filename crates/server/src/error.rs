//! `ApiError`: an error as the OpenAI API reports it, `{"error": {"message", "type", "param",
//! "code"}}` with its HTTP status.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// An API error with its status.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// What went wrong, for a person.
    pub message: String,
    /// `invalid_request_error`, `rate_limit_error`, `server_error` …
    pub kind: &'static str,
    /// The request field at fault, if one is.
    pub param: Option<String>,
    /// A machine-readable code (`context_length_exceeded`, `queue_full` …).
    pub code: Option<&'static str>,
    /// Seconds a client should wait before retrying (429 and 503).
    pub retry_after: Option<u32>,
}

impl ApiError {
    /// 400: the request is wrong; `param` names the field.
    pub fn invalid(param: Option<&str>, message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            kind: "invalid_request_error",
            param: param.map(str::to_string),
            code: None,
            retry_after: None,
        }
    }

    /// The same error with a machine-readable code.
    pub fn with_code(mut self, code: &'static str) -> ApiError {
        self.code = Some(code);
        self
    }

    /// 429: the queue is full.
    pub fn busy(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::TOO_MANY_REQUESTS,
            message: message.into(),
            kind: "rate_limit_error",
            param: None,
            code: Some("queue_full"),
            retry_after: Some(1),
        }
    }

    /// 503: the server is shutting down.
    pub fn unavailable(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: message.into(),
            kind: "server_error",
            param: None,
            code: Some("shutting_down"),
            retry_after: Some(5),
        }
    }

    /// 404.
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::NOT_FOUND,
            message: message.into(),
            kind: "invalid_request_error",
            param: None,
            code: Some("not_found"),
            retry_after: None,
        }
    }

    /// 404 `model_not_found`: the request names a model this server does not serve.
    pub fn model_not_found(asked: &str, served: &str) -> ApiError {
        ApiError {
            param: Some("model".into()),
            code: Some("model_not_found"),
            ..ApiError::not_found(format!(
                "the model `{}` does not exist: this server serves `{}` (GET /v1/models)",
                clip(asked),
                clip(served)
            ))
        }
    }

    /// 403: this client or page may not use the server (`Host`, `Origin`).
    pub fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError::status(StatusCode::FORBIDDEN, message)
    }

    /// 401: no API key, or a wrong one (OpenAI's `invalid_api_key`).
    pub fn unauthorized(message: String) -> ApiError {
        ApiError::status(StatusCode::UNAUTHORIZED, message)
    }

    /// An error of any status, with the type and code OpenAI gives it.
    pub fn status(status: StatusCode, message: impl Into<String>) -> ApiError {
        let (kind, code) = match status.as_u16() {
            401 => ("invalid_request_error", Some("invalid_api_key")),
            403 => ("invalid_request_error", Some("forbidden")),
            404 => ("invalid_request_error", Some("not_found")),
            405 => ("invalid_request_error", Some("method_not_allowed")),
            408 => ("invalid_request_error", Some("request_timeout")),
            413 => ("invalid_request_error", Some("request_too_large")),
            415 => ("invalid_request_error", Some("unsupported_media_type")),
            429 => ("rate_limit_error", None),
            500.. => ("server_error", None),
            _ => ("invalid_request_error", None),
        };
        ApiError {
            status,
            message: message.into(),
            kind,
            param: None,
            code,
            retry_after: None,
        }
    }

    /// 500: our fault, never the request's.
    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: message.into(),
            kind: "server_error",
            param: None,
            code: None,
            retry_after: None,
        }
    }

    /// The same error as `/v1/completions` names its fields (`prompt`, not `messages`).
    pub fn for_endpoint(mut self, endpoint: crate::endpoint::Endpoint) -> ApiError {
        if endpoint == crate::endpoint::Endpoint::Completions
            && self.param.as_deref() == Some("messages")
        {
            self.param = Some("prompt".into());
        }
        self
    }

    /// The JSON body.
    pub fn body(&self) -> serde_json::Value {
        serde_json::json!({
            "error": {
                "message": self.message,
                "type": self.kind,
                "param": self.param,
                "code": self.code,
            }
        })
    }

    /// The error of an engine call on a request's input: what the request got wrong is a
    /// 400, a full queue a 429, a stopping scheduler a 503, anything else a 500.
    pub fn from_engine(e: &mixtral::Error) -> ApiError {
        use mixtral::Error as E;
        use mixtral::model::Error as M;
        // The message and its causes: an error's own text leaves its cause out.
        let msg = mixtral::error_chain(e);
        match e {
            E::QueueFull { .. } => ApiError::busy(msg),
            E::KvBudget { .. } => {
                ApiError::invalid(Some("max_tokens"), msg).with_code("kv_budget_exceeded")
            }
            E::Batch(_) => ApiError::unavailable(msg),
            E::Model(M::ContextOverflow { .. }) | E::PromptTooLong { .. } => {
                ApiError::invalid(Some("messages"), msg).with_code("context_length_exceeded")
            }
            E::Model(M::EmptyInput | M::TokenOutOfRange { .. }) => {
                ApiError::invalid(Some("prompt"), msg)
            }
            E::Tokenizer(_) => ApiError::invalid(Some("messages"), msg),
            E::Sampler(_) | E::InvalidOption { .. } | E::Constraint(_) => {
                ApiError::invalid(None, msg)
            }
            _ => ApiError::internal(msg),
        }
    }
}

/// The most characters of a client's own text quoted back in a message.
const MAX_QUOTED: usize = 200;

/// `text` cut to `MAX_QUOTED` (200) characters (saying how long it was), for quoting a
/// stranger's input in a message without echoing megabytes.
pub fn clip(text: &str) -> String {
    match text.char_indices().nth(MAX_QUOTED) {
        None => text.to_string(),
        Some((end, _)) => format!("{}… ({} bytes)", &text[..end], text.len()),
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, axum::Json(self.body())).into_response();
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}
