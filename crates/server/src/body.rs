//! Reading a request body as a stranger sends it: JSON only, within a size, a time and the
//! server's request-memory budget.

use crate::App;
use crate::error::ApiError;
use crate::options::REQUEST_MEMORY_FACTOR;
use axum::body::Bytes;
use axum::extract::Request;
use axum::http::{StatusCode, header};
use tokio::sync::OwnedSemaphorePermit;

/// The budget's unit: permits count KiB, so a `u32` of them covers 4 TiB.
const UNIT: usize = 1024;

/// A body read and the share of the request-memory budget it holds until dropped.
pub(crate) struct Body {
    pub(crate) bytes: Bytes,
    pub(crate) _memory: OwnedSemaphorePermit,
}

/// Whether a `Content-Type` value is JSON (`application/json`, any parameters). Anything
/// else is refused: a browser sends `text/plain` and form bodies cross-origin without asking
/// first, JSON only after a CORS preflight the server can refuse.
fn is_json(value: &str) -> bool {
    value
        .split(';')
        .next()
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"))
}

/// The body of a POST: 415 unless JSON, 413 over `max_body`, 408 when slower than
/// `body_timeout`, 429 when the request-memory budget has no room for it now.
pub(crate) async fn read(app: &App, req: Request) -> Result<Body, ApiError> {
    let opts = &app.options;
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    if !content_type.is_some_and(is_json) {
        return Err(ApiError::status(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "the body must be JSON with `Content-Type: application/json`, got {}",
                content_type.map_or("none".into(), |t| format!("`{}`", crate::error::clip(t)))
            ),
        ));
    }
    let too_large = || {
        ApiError::status(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the body is larger than the {} bytes a request may have",
                opts.max_body
            ),
        )
    };
    // The declared length when there is one (a lie is caught by the read's own limit).
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    let expected = match declared {
        Some(n) if n > opts.max_body as u64 => return Err(too_large()),
        Some(n) => n as usize,
        None => opts.max_body,
    };
    let memory = expected
        .saturating_mul(REQUEST_MEMORY_FACTOR)
        .div_ceil(UNIT)
        .max(1);
    let permits = u32::try_from(memory).unwrap_or(u32::MAX);
    let memory = app
        .request_memory
        .clone()
        .try_acquire_many_owned(permits)
        .map_err(|_| {
            ApiError::busy(
                "the server is reading as many requests as its memory allows: try again later",
            )
            .with_code("server_busy")
        })?;
    let read = axum::body::to_bytes(req.into_body(), opts.max_body);
    let bytes = match tokio::time::timeout(opts.body_timeout, read).await {
        Err(_) => {
            return Err(ApiError::status(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "the body did not arrive within {} s",
                    opts.body_timeout.as_secs_f64()
                ),
            ));
        }
        Ok(Err(e)) if is_length_limit(&e) => return Err(too_large()),
        Ok(Err(e)) => {
            return Err(ApiError::invalid(
                None,
                format!("the body could not be read: {e}"),
            ));
        }
        Ok(Ok(bytes)) => bytes,
    };
    Ok(Body {
        bytes,
        _memory: memory,
    })
}

/// Whether a body read stopped at the length limit (rather than at a broken connection).
fn is_length_limit(e: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if s.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = s.source();
    }
    false
}

/// Permits for a budget of `bytes`.
pub(crate) fn budget_permits(bytes: usize) -> usize {
    (bytes / UNIT).clamp(1, tokio::sync::Semaphore::MAX_PERMITS)
}

#[cfg(test)]
mod tests {
    use super::is_json;

    #[test]
    fn only_json_content_types_pass() {
        for ok in [
            "application/json",
            "Application/JSON; charset=utf-8",
            " application/json ;x=y",
        ] {
            assert!(is_json(ok), "{ok}");
        }
        for bad in [
            "text/plain",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
            "application/jsonx",
            "",
        ] {
            assert!(!is_json(bad), "{bad}");
        }
    }
}
