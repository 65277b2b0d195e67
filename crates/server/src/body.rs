//! Reading a request body as a stranger sends it: JSON only, within a size, a time and the
//! server's request-memory budget.

use crate::App;
use crate::error::ApiError;
use crate::options::REQUEST_MEMORY_FACTOR;
use axum::body::Bytes;
use axum::extract::Request;
use axum::http::{StatusCode, header};
use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The budget's unit: permits count KiB, so a `u32` of them covers 4 TiB.
const UNIT: usize = 1024;

/// A body read and the share of the request-memory budget it holds until dropped.
pub(crate) struct Body {
    pub(crate) bytes: Bytes,
    pub(crate) _memory: Memory,
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
/// `body_timeout`, 429 when the request-memory budget has no room for it now: twice its
/// bytes while they arrive, then [`REQUEST_MEMORY_FACTOR`] times them for parsing.
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
    // A declared length past the limit is refused before anything is read.
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > opts.max_body as u64) {
        return Err(too_large());
    }
    let mut memory = Memory::new(app.request_memory.clone());
    let read = collect(req.into_body(), opts.max_body, &mut memory);
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
        Ok(Err(Collect::TooLarge)) => return Err(too_large()),
        Ok(Err(Collect::Busy)) => return Err(busy()),
        Ok(Err(Collect::Broken(e))) => {
            return Err(ApiError::invalid(
                None,
                format!("the body could not be read: {e}"),
            ));
        }
        Ok(Ok(bytes)) => bytes,
    };
    // What parsing and tokenizing it may take, before it starts.
    memory
        .hold(bytes.len().saturating_mul(REQUEST_MEMORY_FACTOR))
        .map_err(|_| busy())?;
    Ok(Body {
        bytes,
        _memory: memory,
    })
}

fn busy() -> ApiError {
    ApiError::busy("the server is reading as many requests as its memory allows: try again later")
        .with_code("server_busy")
}

/// A request's share of the request-memory budget, grown as its body arrives (so a client
/// that declares 4 MiB and sends a byte a second holds a KiB, not 128 MiB, of the budget).
pub(crate) struct Memory {
    budget: Arc<Semaphore>,
    held: Option<OwnedSemaphorePermit>,
    units: usize,
}

/// No room left in the budget.
struct Full;

impl Memory {
    fn new(budget: Arc<Semaphore>) -> Memory {
        Memory {
            budget,
            held: None,
            units: 0,
        }
    }

    /// Holds at least `bytes` of the budget (never gives any back before it is dropped).
    fn hold(&mut self, bytes: usize) -> Result<(), Full> {
        let units = bytes.div_ceil(UNIT).max(1);
        if units <= self.units {
            return Ok(());
        }
        let more = u32::try_from(units - self.units).map_err(|_| Full)?;
        let permit = self
            .budget
            .clone()
            .try_acquire_many_owned(more)
            .map_err(|_| Full)?;
        match &mut self.held {
            Some(held) => held.merge(permit),
            None => self.held = Some(permit),
        }
        self.units = units;
        Ok(())
    }
}

/// Why a body could not be collected.
enum Collect {
    TooLarge,
    Busy,
    Broken(axum::Error),
}

/// The whole body, at most `max` bytes, each chunk counted against `memory` as it arrives.
async fn collect(
    mut body: axum::body::Body,
    max: usize,
    memory: &mut Memory,
) -> Result<Bytes, Collect> {
    use http_body_util::BodyExt;
    let mut buf = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(Collect::Broken)?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if buf.len().saturating_add(data.len()) > max {
            return Err(Collect::TooLarge);
        }
        // The buffer may reach twice its length while it grows.
        memory
            .hold(buf.len().saturating_add(data.len()).saturating_mul(2))
            .map_err(|_| Collect::Busy)?;
        buf.extend_from_slice(&data);
    }
    Ok(Bytes::from(buf))
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
