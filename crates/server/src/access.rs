//! The checks every request passes before a route sees it, and the one place every answer
//! passes after: `Host` (against DNS rebinding), `Origin` and CORS (against web pages
//! driving the server), the API key; then every error body becomes OpenAI's JSON and is
//! counted.

use crate::App;
use crate::error::ApiError;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

/// Which `Host` names are answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum HostRule {
    /// Any (`*` in `allowed_hosts`).
    Any,
    /// `localhost` and any IP address, no other DNS name: a wildcard bind, or a router
    /// embedded without [`crate::serve`]. A DNS-rebinding page reaches the server through a
    /// name of its own, never through an address literal.
    Literals,
    /// These names, lowercase, without port or brackets.
    Names(Vec<String>),
}

impl HostRule {
    /// The names a server bound to `addr` answers to.
    pub(crate) fn for_bound(addr: std::net::SocketAddr) -> HostRule {
        let ip = addr.ip();
        if ip.is_unspecified() {
            HostRule::Literals
        } else if ip.is_loopback() {
            let mut names: Vec<String> = ["localhost", "127.0.0.1", "::1"].map(String::from).into();
            names.push(ip.to_string());
            HostRule::Names(names)
        } else {
            HostRule::Names(vec![ip.to_string()])
        }
    }

    /// From `--allowed-hosts`.
    pub(crate) fn from_names(names: &[String]) -> HostRule {
        if names.iter().any(|n| n == "*") {
            return HostRule::Any;
        }
        // Entries are read as `Host` values are, so `name:8080` and `[::1]` match too.
        HostRule::Names(names.iter().map(|n| host_name(n)).collect())
    }

    fn allows(&self, host: &str) -> bool {
        match self {
            HostRule::Any => true,
            HostRule::Literals => host == "localhost" || host.parse::<std::net::IpAddr>().is_ok(),
            HostRule::Names(names) => names.iter().any(|n| *n == host),
        }
    }
}

/// The host name of a `Host` value: lowercase, without port, brackets or a trailing dot.
pub(crate) fn host_name(value: &str) -> String {
    let value = value.trim();
    let name = match value.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or_default(),
        None => match value.rsplit_once(':') {
            Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
            _ => value,
        },
    };
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// Equal, in a time that depends only on the longer length, not on where or whether the
/// two differ (a short key is compared as if padded, its length difference folded in).
fn same_key(a: &[u8], b: &[u8]) -> bool {
    let n = a.len().max(b.len());
    let mut diff = (a.len() ^ b.len()) as u64;
    for i in 0..n {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= u64::from(x ^ y);
    }
    diff == 0
}

/// Whether `key` is one of `keys`, comparing with every key (no early return, so the time
/// does not say which key matched or how many were tried).
fn any_key_matches(keys: &[String], key: &str) -> bool {
    keys.iter().fold(false, |found, k| {
        same_key(k.as_bytes(), key.as_bytes()) | found
    })
}

fn header_str(headers: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The middleware: checks, then the route, then OpenAI JSON for any error body; the
/// request's access log line goes with the response body.
pub(crate) async fn guard(State(app): State<Arc<App>>, mut req: Request, next: Next) -> Response {
    let record = crate::log::Record::default();
    let line = crate::log::Line::new(
        app.options.log_format,
        req.method(),
        req.uri(),
        std::time::Instant::now(),
        record.clone(),
    );
    req.extensions_mut().insert(record);
    let origin = header_str(req.headers(), header::ORIGIN).map(str::to_string);
    let response = match check(&app, &req, origin.as_deref()) {
        Err(e) => e.into_response(),
        Ok(Some(preflight)) => preflight,
        Ok(None) => next.run(req).await,
    };
    let response = json_errors(response).await;
    let (parts, body) = response.into_parts();
    let body = line.attach(parts.status, body);
    let mut response = Response::from_parts(parts, body);
    app.count(response.status());
    if !app.options.cors_origins.is_empty() {
        // The answer depends on the Origin: a shared cache must not give one origin's
        // answer (with or without the CORS header) to another.
        response
            .headers_mut()
            .append(header::VARY, HeaderValue::from_static("origin"));
    }
    if let Some(origin) = origin.filter(|o| app.cors_allows(o)) {
        add_cors(response.headers_mut(), &origin);
    }
    response
}

/// `Ok(Some(…))`: the answer to a CORS preflight; `Ok(None)`: on to the route.
fn check(app: &App, req: &Request, origin: Option<&str>) -> Result<Option<Response>, ApiError> {
    let host = header_str(req.headers(), header::HOST)
        .or(req.uri().authority().map(|a| a.as_str()))
        .ok_or_else(|| ApiError::invalid(None, "the request has no Host header"))?;
    let name = host_name(host);
    if !app.hosts().allows(&name) {
        return Err(ApiError::forbidden(format!(
            "host `{}` is not served here (a server on loopback answers only its own names; \
             add others with --allowed-hosts)",
            crate::error::clip(&name)
        )));
    }
    if let Some(origin) = origin {
        if !app.cors_allows(origin) {
            return Err(ApiError::forbidden(format!(
                "cross-origin requests from `{}` are not allowed (see --cors-origin)",
                crate::error::clip(origin)
            )));
        }
        if req.method() == Method::OPTIONS
            && req
                .headers()
                .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
        {
            let asked = header_str(req.headers(), header::ACCESS_CONTROL_REQUEST_HEADERS);
            return Ok(Some(preflight(asked)));
        }
    }
    if !app.options.api_keys.is_empty() && req.uri().path().starts_with("/v1/") {
        // The scheme is case-insensitive (RFC 9110 §11.1).
        let given = header_str(req.headers(), header::AUTHORIZATION)
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, key)| key.trim());
        match given {
            None => {
                return Err(ApiError::unauthorized(
                    "You didn't provide an API key. You need to provide your API key in an \
                 Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
                        .into(),
                ));
            }
            Some(key) if !any_key_matches(&app.options.api_keys, key) => {
                return Err(ApiError::unauthorized("Incorrect API key provided.".into()));
            }
            Some(_) => {}
        }
    }
    Ok(None)
}

/// The answer to an allowed origin's preflight. The headers it asks for are allowed as
/// asked (OpenAI's JS client sends `x-stainless-*` and `openai-organization`) when they are
/// plain header names; the origin is trusted, and the server reads only the ones it knows.
fn preflight(asked: Option<&str>) -> Response {
    let mut r = StatusCode::NO_CONTENT.into_response();
    let h = r.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, POST, OPTIONS"),
    );
    let names = asked
        .filter(|a| a.len() <= 1024)
        .filter(|a| {
            a.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_, ".contains(&b))
        })
        .unwrap_or("authorization, content-type");
    if let Ok(v) = HeaderValue::from_str(names) {
        h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, v);
    }
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("600"),
    );
    r
}

fn add_cors(h: &mut HeaderMap, origin: &str) {
    if let Ok(v) = HeaderValue::from_str(origin) {
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, v);
        h.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static("retry-after"),
        );
    }
}

/// An error response whose body is not JSON (axum's own 405, 413 and rejections are empty
/// or plain text) becomes OpenAI's error body, keeping the status, its headers and the text.
async fn json_errors(response: Response) -> Response {
    let status = response.status();
    let is_json = header_str(response.headers(), header::CONTENT_TYPE)
        .is_some_and(|t| t.starts_with("application/json"));
    if status.as_u16() < 400 || is_json {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    // Our own plain-text errors are short; anything longer is cut.
    let text = axum::body::to_bytes(body, 4096).await.unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let reason = status.canonical_reason().unwrap_or("error");
    let message = match text.trim() {
        "" => reason.to_string(),
        t => format!("{reason}: {}", crate::error::clip(t)),
    };
    let e = ApiError::status(status, message);
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Response::from_parts(parts, Body::from(e.body().to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_lose_port_brackets_case_and_trailing_dot() {
        assert_eq!(host_name("LocalHost:8080"), "localhost");
        assert_eq!(host_name("127.0.0.1"), "127.0.0.1");
        assert_eq!(host_name("[::1]:8080"), "::1");
        assert_eq!(host_name("evil.example.:80"), "evil.example");
        assert_eq!(host_name("a:b"), "a:b");
    }

    #[test]
    fn a_loopback_bind_answers_only_loopback_names() {
        let rule = HostRule::for_bound("127.0.0.1:8080".parse().unwrap());
        for ok in ["localhost", "127.0.0.1", "::1"] {
            assert!(rule.allows(ok), "{ok}");
        }
        for bad in ["evil.example", "localhost.evil.example", "127.0.0.2", ""] {
            assert!(!rule.allows(bad), "{bad}");
        }
        let wildcard = HostRule::for_bound("0.0.0.0:1".parse().unwrap());
        for ok in ["localhost", "10.1.2.3", "::1", "fe80::1"] {
            assert!(wildcard.allows(ok), "{ok}");
        }
        for bad in ["evil.example", "10.1.2.3.evil.example", ""] {
            assert!(!wildcard.allows(bad), "{bad}");
        }
        let named = HostRule::from_names(&["Model.Example".into()]);
        assert!(named.allows("model.example") && !named.allows("localhost"));
        assert_eq!(HostRule::from_names(&["*".into()]), HostRule::Any);
    }

    #[test]
    fn keys_compare_whole() {
        assert!(same_key(b"sk-1", b"sk-1"));
        assert!(!same_key(b"sk-1", b"sk-2"));
        assert!(!same_key(b"sk-1", b"sk-12"));
        assert!(!same_key(b"", b"x"));
        assert!(!same_key(b"sk-1\0", b"sk-1"));
        let keys = ["k1".to_string(), "k2".to_string()];
        assert!(any_key_matches(&keys, "k2") && !any_key_matches(&keys, "k3"));
    }

    #[test]
    fn allowed_host_entries_are_read_like_host_values() {
        let named = HostRule::from_names(&["model.example:8080".into(), "[::1]".into()]);
        assert!(named.allows("model.example") && named.allows("::1"));
    }
}
