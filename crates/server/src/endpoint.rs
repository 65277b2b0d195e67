//! `Endpoint`: which OpenAI endpoint a request came to. Its own file because the request
//! parser and the error bodies (which differ per endpoint) both use it, and neither should
//! import the other.

/// Which endpoint a request came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// `/v1/chat/completions`.
    Chat,
    /// `/v1/completions`.
    Completions,
}
