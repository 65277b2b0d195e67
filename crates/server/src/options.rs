//! [`Options`]: who may use the server and what a connection or a request may cost.

use std::time::Duration;

/// The server's access rules and resource limits. [`Options::default`] is safe on loopback:
/// no key, only the bound address's host names, no cross-origin access, bounded timeouts,
/// connections and request memory.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Options {
    /// Keys accepted in `Authorization: Bearer KEY` on `/v1/…` routes; empty: no key needed.
    pub api_keys: Vec<String>,
    /// Host names (without port) the `Host` header may name; `*` allows any. `None`: the
    /// names of the bound address ([`crate::serve`] derives them: `localhost`, `127.0.0.1`
    /// and `::1` on loopback, the address itself otherwise, `localhost` and any address
    /// literal on `0.0.0.0` / `::` or for a router embedded without `serve`). A server
    /// answering any DNS name can be reached by DNS rebinding.
    pub allowed_hosts: Option<Vec<String>>,
    /// Origins (`https://app.example`) a browser page may call the server from, answered
    /// with CORS headers; `*` allows any. Empty: a request carrying any `Origin` header is
    /// refused, so no web page can drive the server.
    pub cors_origins: Vec<String>,
    /// The longest a client may take to send a request's headers.
    pub header_timeout: Duration,
    /// The longest a client may take to send a request's body.
    pub body_timeout: Duration,
    /// The most connections open at once; further ones wait in the listen backlog.
    pub max_connections: usize,
    /// The largest request body, in bytes (a full 32k-token prompt is well under 1 MiB).
    pub max_body: usize,
    /// Memory all requests being read, parsed and tokenized may take together, in bytes: a
    /// request is counted at [`REQUEST_MEMORY_FACTOR`] times its body, and one that does not
    /// fit is a 429 instead of an allocation that could abort the process.
    pub request_memory: usize,
    /// The access log on standard error: a line per request, when its response has been
    /// sent (`key=value` pairs, JSON, or none).
    pub log_format: crate::LogFormat,
}

/// What parsing and tokenizing a request may cost per byte of its body, at most: a JSON array
/// of token ids becomes `serde_json` values of 32 bytes per 2-byte element, text a few copies
/// of itself (the value, the messages, the rendered template) plus the tokenizer's buffers.
pub const REQUEST_MEMORY_FACTOR: usize = 32;

impl Default for Options {
    fn default() -> Options {
        Options {
            api_keys: vec![],
            allowed_hosts: None,
            cors_origins: vec![],
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            max_connections: 512,
            max_body: 4 << 20,
            request_memory: 1 << 30,
            log_format: crate::LogFormat::Text,
        }
    }
}
