//! The access log: one line per request on standard error, written when its response has
//! been sent (or abandoned by the client), with what the request cost.

use axum::body::{Body, Bytes, HttpBody};
use axum::http::StatusCode;
use hyper::body::{Frame, SizeHint};
use std::io::Write;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How access log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum LogFormat {
    /// `key=value` pairs (logfmt), one request per line.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
    /// No access log.
    Off,
}

impl std::str::FromStr for LogFormat {
    type Err = String;

    /// `text`, `json` or `off`.
    fn from_str(s: &str) -> Result<LogFormat, String> {
        match s {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            "off" => Ok(LogFormat::Off),
            _ => Err(format!(
                "unknown log format `{s}` (expected text, json or off)"
            )),
        }
    }
}

/// What a generation reports for its request's line.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Usage {
    pub prompt_tokens: usize,
    pub cached_tokens: usize,
    pub completion_tokens: usize,
    pub time_to_first_token: Option<Duration>,
    pub finish_reason: &'static str,
}

/// Where a request's handler leaves its [`Usage`] (a request extension).
#[derive(Clone, Default)]
pub(crate) struct Record(Arc<Mutex<Option<Usage>>>);

impl Record {
    pub(crate) fn set(&self, usage: Usage) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(usage);
    }

    fn get(&self) -> Option<Usage> {
        *self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The longest path written (a stranger's URI is up to the header limit).
const MAX_PATH: usize = 200;

/// One request's line, written when dropped: with the response body, so a stream's line
/// comes when the stream ends (or its client leaves).
pub(crate) struct Line {
    format: LogFormat,
    method: String,
    path: String,
    status: StatusCode,
    start: Instant,
    record: Record,
}

impl Line {
    pub(crate) fn new(
        format: LogFormat,
        method: &axum::http::Method,
        uri: &axum::http::Uri,
        start: Instant,
        record: Record,
    ) -> Line {
        let mut path: String = uri.path().chars().take(MAX_PATH).collect();
        if uri.path().len() > path.len() {
            path.push('…');
        }
        Line {
            format,
            method: method.as_str().chars().take(16).collect(),
            path,
            status: StatusCode::OK,
            start,
            record,
        }
    }

    /// The response's body, which writes this line once it is done.
    pub(crate) fn attach(mut self, status: StatusCode, body: Body) -> Body {
        self.status = status;
        Body::new(Logged {
            inner: body,
            _line: self,
        })
    }

    fn render(&self, now: SystemTime) -> String {
        let ts = now
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64();
        let total_ms = self.start.elapsed().as_secs_f64() * 1e3;
        let usage = self.record.get();
        let ttft_ms = usage
            .and_then(|u| u.time_to_first_token)
            .map(|d| d.as_secs_f64() * 1e3);
        match self.format {
            LogFormat::Json => {
                let mut v = serde_json::json!({
                    "ts": (ts * 1e3).round() / 1e3,
                    "method": self.method,
                    "path": self.path,
                    "status": self.status.as_u16(),
                    "total_ms": (total_ms * 10.0).round() / 10.0,
                });
                if let Some(u) = usage {
                    v["prompt_tokens"] = u.prompt_tokens.into();
                    v["cached_tokens"] = u.cached_tokens.into();
                    v["completion_tokens"] = u.completion_tokens.into();
                    v["ttft_ms"] = ttft_ms.map(|t| (t * 10.0).round() / 10.0).into();
                    v["finish_reason"] = u.finish_reason.into();
                }
                v.to_string()
            }
            _ => {
                // Quoted as Rust debug strings, so a stranger's path cannot forge a field or a
                // line.
                let mut line = format!(
                    "ts={ts:.3} method={:?} path={:?} status={} total_ms={total_ms:.1}",
                    self.method,
                    self.path,
                    self.status.as_u16()
                );
                if let Some(u) = usage {
                    line.push_str(&format!(
                        " prompt_tokens={} cached_tokens={} completion_tokens={}",
                        u.prompt_tokens, u.cached_tokens, u.completion_tokens
                    ));
                    if let Some(t) = ttft_ms {
                        line.push_str(&format!(" ttft_ms={t:.1}"));
                    }
                    line.push_str(&format!(" finish_reason={}", u.finish_reason));
                }
                line
            }
        }
    }
}

impl Drop for Line {
    fn drop(&mut self) {
        if self.format == LogFormat::Off {
            return;
        }
        let mut line = self.render(SystemTime::now());
        line.push('\n');
        // One write of the whole line: lines of concurrent requests never interleave.
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }
}

/// A response body that carries its request's [`Line`] until it is dropped.
struct Logged {
    inner: Body,
    _line: Line,
}

impl HttpBody for Logged {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
