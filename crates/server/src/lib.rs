//! An OpenAI-compatible HTTP server over the engine's continuous-batching
//! [`mixtral::Scheduler`]: what `mixtral serve` runs.
//!
//! - `POST /v1/chat/completions`: `messages` rendered in the Mixtral instruct format (exactly
//!   as `mixtral chat` and [`mixtral::Prompt::Chat`]);
//! - `POST /v1/completions`: `prompt` a string (BOS prepended, as `mixtral generate
//!   --prompt`) or token ids;
//! - both with `stream: true` (server-sent events ending `data: [DONE]`) or not, and
//!   `max_tokens`, `temperature`, `top_p`, `seed`, `stop`, `n` = 1, `logprobs` /
//!   `top_logprobs`, `presence_penalty`, `frequency_penalty`, `stream_options.include_usage`,
//!   plus vLLM's `top_k` and `ignore_eos`; fields left out take the model's defaults
//!   (`generation_config.json`, greedy unless it samples), as vLLM does;
//! - `GET /v1/models`, `GET /health`, and `GET /metrics` in Prometheus' text format.
//!
//! Errors are OpenAI's `{"error": {"message", "type", "param", "code"}}`: what the request
//! got wrong is a 400, a full queue a 429 with `Retry-After`, a server shutting down a 503. A
//! client that disconnects cancels its generation.
//!
//! Clients are strangers ([`Options`], and `docs/security.md`): only `Host` names of the
//! bound address are answered (DNS rebinding), a request with an `Origin` header is refused
//! unless that origin is allowed (CORS), POST bodies must be `application/json`, `/v1/…`
//! routes may require an API key; headers, bodies, connections and the memory spent reading
//! requests are bounded.
//!
//! ```no_run
//! use mixtral::{BatchOptions, Engine, Scheduler};
//! use std::sync::Arc;
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let engine = Arc::new(Engine::load("path/to/model")?);
//! let scheduler = Arc::new(Scheduler::new(engine, BatchOptions::default())?);
//! let app = mixtral_server::App::new(scheduler, "mixtral");
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! let stop = async {
//!     let _ = tokio::signal::ctrl_c().await;
//! };
//! let deadline = std::time::Duration::from_secs(10);
//! mixtral_server::serve(listener, app, stop, deadline).await?;
//! # Ok(()) }
//! ```

mod access;
pub mod api;
mod body;
mod endpoint;
pub mod error;
mod guided;
mod listen;
mod log;
mod metrics;
mod options;
mod respond;
mod tools;

pub use log::LogFormat;
pub use options::{Options, REQUEST_MEMORY_FACTOR};

use access::HostRule;
use axum::Router;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use error::ApiError;
use mixtral::Scheduler;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The statuses `/metrics` counts error responses of; any other counts as 500.
const ERROR_STATUSES: [u16; 11] = [400, 401, 403, 404, 405, 408, 413, 415, 429, 500, 503];

/// The server's state: the scheduler and what the responses name.
#[derive(Debug)]
pub struct App {
    scheduler: Arc<Scheduler>,
    model: String,
    created: u64,
    next_id: AtomicU64,
    closing: AtomicBool,
    /// Error responses by status, as [`ERROR_STATUSES`] lists them.
    errors: [AtomicU64; ERROR_STATUSES.len()],
    options: Options,
    /// The `Host` names answered: from `options`, else from the bound address.
    hosts: OnceLock<HostRule>,
    /// The request-memory budget, in KiB permits.
    request_memory: Arc<tokio::sync::Semaphore>,
}

impl App {
    /// State for a server of `scheduler`'s model, named `model` in responses, with the
    /// default [`Options`].
    pub fn new(scheduler: Arc<Scheduler>, model: impl Into<String>) -> Arc<App> {
        App::with_options(scheduler, model, Options::default())
    }

    /// State for a server with these access rules and limits.
    pub fn with_options(
        scheduler: Arc<Scheduler>,
        model: impl Into<String>,
        options: Options,
    ) -> Arc<App> {
        let hosts = OnceLock::new();
        if let Some(names) = &options.allowed_hosts {
            let _ = hosts.set(HostRule::from_names(names));
        }
        Arc::new(App {
            scheduler,
            model: model.into(),
            created: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            next_id: AtomicU64::new(0),
            closing: AtomicBool::new(false),
            errors: Default::default(),
            request_memory: Arc::new(tokio::sync::Semaphore::new(body::budget_permits(
                options.request_memory,
            ))),
            options,
            hosts,
        })
    }

    /// The access rules and limits.
    pub fn options(&self) -> &Options {
        &self.options
    }

    /// The scheduler.
    pub fn scheduler(&self) -> &Arc<Scheduler> {
        &self.scheduler
    }

    /// Refuses new requests from now on (503), and closes the scheduler.
    pub fn close(&self) {
        self.closing.store(true, Ordering::Relaxed);
        self.scheduler.close();
    }

    fn error(&self, e: ApiError) -> Response {
        e.into_response()
    }

    /// Counts an error response (every response passes [`access::guard`], which calls this).
    fn count(&self, status: StatusCode) {
        if status.as_u16() < 400 {
            return;
        }
        let slot = ERROR_STATUSES
            .iter()
            .position(|&s| s == status.as_u16())
            .or_else(|| ERROR_STATUSES.iter().position(|&s| s == 500));
        if let Some(slot) = slot {
            self.errors[slot].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The server listens on `addr`: without `allowed_hosts`, its names are the ones answered.
    fn bind(&self, addr: std::net::SocketAddr) {
        let _ = self.hosts.set(HostRule::for_bound(addr));
    }

    /// The `Host` names answered (for a router embedded without [`serve`] or
    /// `allowed_hosts`: `localhost` and address literals).
    fn hosts(&self) -> &HostRule {
        self.hosts.get().unwrap_or(&HostRule::Literals)
    }

    /// Whether a page from `origin` may call the server.
    fn cors_allows(&self, origin: &str) -> bool {
        self.options
            .cors_origins
            .iter()
            .any(|o| o == "*" || o == origin)
    }

    fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }
}

/// The routes with the access checks ([`Options`]), for embedding in an application's own
/// server. (Header timeouts and the connection cap are [`serve`]'s.)
pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/v1/completions", post(completions))
        .route("/v1/models", get(models))
        .route("/health", get(health))
        .route("/metrics", get(metrics::handler))
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            access::guard,
        ))
        .with_state(app)
}

/// Serves `app` on `listener` until `shutdown` completes; then stops accepting, lets the
/// running requests finish for up to `deadline`, cancels what is left, and returns once
/// every connection has closed (or a short grace after the deadline, whatever clients do).
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Arc<App>,
    shutdown: impl Future<Output = impl Sized> + Send + 'static,
    deadline: Duration,
) -> std::io::Result<()> {
    listen::serve(listener, app, shutdown, deadline).await
}

async fn chat(State(app): State<Arc<App>>, req: Request) -> Response {
    respond::complete(app, api::Endpoint::Chat, req).await
}

async fn completions(State(app): State<Arc<App>>, req: Request) -> Response {
    respond::complete(app, api::Endpoint::Completions, req).await
}

async fn models(State(app): State<Arc<App>>) -> Response {
    axum::Json(serde_json::json!({
        "object": "list",
        "data": [{
            "id": app.model,
            "object": "model",
            "created": app.created,
            "owned_by": "mixtral-rs",
            "max_model_len": app.scheduler.engine().config().max_position_embeddings,
        }],
    }))
    .into_response()
}

async fn health(State(app): State<Arc<App>>) -> Response {
    if app.closing.load(Ordering::Relaxed) {
        return app.error(ApiError::unavailable("the server is shutting down"));
    }
    if !app.scheduler.is_running() {
        return app.error(ApiError::internal("the scheduler has stopped"));
    }
    axum::Json(serde_json::json!({"status": "ok"})).into_response()
}

async fn not_found(State(app): State<Arc<App>>, uri: axum::http::Uri) -> Response {
    app.error(ApiError::not_found(format!("no route for {}", uri.path())))
}
