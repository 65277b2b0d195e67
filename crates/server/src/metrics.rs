//! `GET /metrics`: the scheduler's state in Prometheus' text exposition format.

use crate::App;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use std::fmt::Write;
use std::sync::Arc;
use std::sync::atomic::Ordering;

pub(crate) async fn handler(State(app): State<Arc<App>>) -> Response {
    let m = app.scheduler.metrics();
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, value: f64| {
        let _ = writeln!(out, "# HELP mixtral_{name} {help}");
        let _ = writeln!(out, "# TYPE mixtral_{name} {kind}");
        let _ = writeln!(out, "mixtral_{name} {value}");
    };
    metric(
        "queue_length",
        "gauge",
        "Requests waiting to start.",
        m.queued as f64,
    );
    metric(
        "active_sequences",
        "gauge",
        "Sequences in the running batch.",
        m.active as f64,
    );
    metric(
        "kv_blocks_used",
        "gauge",
        "KV cache blocks held by running sequences (a shared page counts once).",
        m.kv_blocks_used as f64,
    );
    metric(
        "kv_blocks_cached",
        "gauge",
        "KV cache pages no sequence holds, kept for their prefixes (evicted when needed).",
        m.kv_blocks_cached as f64,
    );
    metric(
        "prefix_cache_queries_total",
        "counter",
        "Requests admitted, each looking for a cached prefix.",
        m.prefix_cache_queries as f64,
    );
    metric(
        "prefix_cache_hits_total",
        "counter",
        "Requests that started from a cached prefix.",
        m.prefix_cache_hits as f64,
    );
    metric(
        "prefix_cache_tokens_total",
        "counter",
        "Prompt tokens taken from cached prefixes instead of computed.",
        m.prefix_cache_tokens as f64,
    );
    metric(
        "preemptions_total",
        "counter",
        "Running sequences preempted for memory (recomputed when readmitted).",
        m.preemptions as f64,
    );
    metric(
        "kv_blocks_total",
        "gauge",
        "KV cache blocks in the budget.",
        m.kv_blocks_total as f64,
    );
    metric(
        "kv_block_bytes",
        "gauge",
        "Bytes per KV cache block.",
        m.kv_block_bytes as f64,
    );
    metric(
        "requests_total",
        "counter",
        "Requests accepted by the scheduler.",
        m.requests_total as f64,
    );
    metric(
        "requests_finished_total",
        "counter",
        "Requests that ended (finished, cancelled or failed).",
        m.requests_finished as f64,
    );
    metric(
        "prompt_tokens_total",
        "counter",
        "Prompt tokens computed.",
        m.prompt_tokens_total as f64,
    );
    metric(
        "generation_tokens_total",
        "counter",
        "Tokens generated.",
        m.generated_tokens_total as f64,
    );
    metric(
        "steps_total",
        "counter",
        "Batched forward steps run.",
        m.steps_total as f64,
    );
    metric(
        "generation_tokens_per_second",
        "gauge",
        "Tokens generated per second over the last few seconds.",
        m.generated_tokens_per_s,
    );
    let _ = writeln!(
        out,
        "# HELP mixtral_http_errors_total Error responses by status."
    );
    let _ = writeln!(out, "# TYPE mixtral_http_errors_total counter");
    for (status, n) in crate::ERROR_STATUSES.iter().zip(&app.errors) {
        let _ = writeln!(
            out,
            "mixtral_http_errors_total{{status=\"{status}\"}} {}",
            n.load(Ordering::Relaxed)
        );
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}
