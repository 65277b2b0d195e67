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

pub mod api;
pub mod error;
mod metrics;
mod respond;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use error::ApiError;
use mixtral::Scheduler;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The largest request body accepted (a prompt of a full 32k context is well under this).
const MAX_BODY: usize = 16 << 20;

/// The server's state: the scheduler and what the responses name.
#[derive(Debug)]
pub struct App {
    scheduler: Arc<Scheduler>,
    model: String,
    created: u64,
    next_id: AtomicU64,
    closing: AtomicBool,
    /// Error responses by status: 400, 404, 429, 500, 503.
    errors: [AtomicU64; 5],
}

impl App {
    /// State for a server of `scheduler`'s model, named `model` in responses.
    pub fn new(scheduler: Arc<Scheduler>, model: impl Into<String>) -> Arc<App> {
        Arc::new(App {
            scheduler,
            model: model.into(),
            created: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            next_id: AtomicU64::new(0),
            closing: AtomicBool::new(false),
            errors: Default::default(),
        })
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
        let slot = match e.status.as_u16() {
            400 => 0,
            404 => 1,
            429 => 2,
            503 => 4,
            _ => 3,
        };
        self.errors[slot].fetch_add(1, Ordering::Relaxed);
        e.into_response()
    }

    fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }
}

/// The routes, for embedding in an application's own server.
pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/v1/completions", post(completions))
        .route("/v1/models", get(models))
        .route("/health", get(health))
        .route("/metrics", get(metrics::handler))
        .fallback(not_found)
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .with_state(app)
}

/// Serves `app` on `listener` until `shutdown` completes; then stops accepting, lets the
/// running requests finish for up to `deadline`, cancels what is left, and returns once
/// every connection has closed.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Arc<App>,
    shutdown: impl Future<Output = impl Sized> + Send + 'static,
    deadline: Duration,
) -> std::io::Result<()> {
    let closing = app.clone();
    let signal = async move {
        shutdown.await;
        closing.close();
        let scheduler = closing.scheduler.clone();
        // Off the async threads: waiting blocks.
        tokio::task::spawn_blocking(move || {
            if !scheduler.wait_idle(deadline) {
                scheduler.cancel_all();
            }
        });
    };
    axum::serve(listener, router(app))
        .with_graceful_shutdown(signal)
        .await
}

async fn chat(State(app): State<Arc<App>>, body: Bytes) -> Response {
    respond::complete(app, api::Endpoint::Chat, body).await
}

async fn completions(State(app): State<Arc<App>>, body: Bytes) -> Response {
    respond::complete(app, api::Endpoint::Completions, body).await
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
