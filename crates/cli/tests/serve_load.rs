//! `mixtral serve` under load on loopback: 64 concurrent clients × 4 requests of mixed prompt
//! lengths all complete with the right token counts and no errors, memory stays within the
//! KV budget plus the idle server's footprint plus 10%; and when half the clients hang up
//! mid-stream the rest are served and every block comes back.

mod common;

use common::fixture;
use common::server::{Server, request, send};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::sync::{Arc, Barrier};

const CLIENTS: usize = 64;
const REQUESTS: usize = 4;
/// The KV budget: 128 blocks of the tiny model's 512 KiB (f32 keys and values, 256
/// positions).
const KV_MEMORY: u64 = 64 << 20;

fn tiny() -> String {
    fixture("tiny-bf16").display().to_string()
}

/// Request `r` of client `c`: prompts from 1 to ~600 tokens, streamed or not, chat or not.
fn body(c: usize, r: usize) -> (String, &'static str, usize, bool) {
    let words = [0, 3, 40, 150, 300][(c + r) % 5];
    let prompt = format!("client {c} request {r}{}", " lorem ipsum".repeat(words));
    let max = 4 + (c * 7 + r * 3) % 13;
    let stream = (c + r).is_multiple_of(2);
    if c.is_multiple_of(3) {
        let body = serde_json::json!({
            "messages": [{"role": "user", "content": prompt}],
            "max_tokens": max, "ignore_eos": true, "stream": stream,
            "temperature": 0.7, "seed": c,
            "stream_options": {"include_usage": true},
        });
        (body.to_string(), "/v1/chat/completions", max, stream)
    } else {
        let body = serde_json::json!({
            "prompt": prompt, "max_tokens": max, "ignore_eos": true, "stream": stream,
            "stream_options": {"include_usage": true},
        });
        (body.to_string(), "/v1/completions", max, stream)
    }
}

/// Sends request `r` of client `c` and checks it completes with exactly its `max_tokens`.
fn complete(port: u16, c: usize, r: usize) {
    let (body, path, max, stream) = body(c, r);
    let resp = request(port, "POST", path, Some(&body));
    assert_eq!(resp.status, 200, "client {c} request {r}: {}", resp.body);
    assert_eq!(
        completion_tokens(&resp, stream),
        max as u64,
        "client {c} request {r}"
    );
}

/// Generated tokens a response reports in `usage`.
fn completion_tokens(resp: &common::server::Response, stream: bool) -> u64 {
    let usage = if stream {
        let events = resp.events();
        assert_eq!(
            events.last().map(String::as_str),
            Some("[DONE]"),
            "{}",
            resp.body
        );
        let last: Value = serde_json::from_str(&events[events.len() - 2]).unwrap();
        last["usage"].clone()
    } else {
        resp.json()["usage"].clone()
    };
    usage["completion_tokens"].as_u64().unwrap()
}

#[test]
fn sixty_four_clients_complete_every_request_within_the_memory_budget() {
    let kv = KV_MEMORY.to_string();
    // With prefix caching every page of the pool ends up resident (64 MiB here), so what
    // else the server holds must fit the 10% margin:
    // - glibc gives each thread that allocates under contention an arena of its own (up to
    //   8 per core) and keeps what they free: 20-30 MiB under this load. docs/running.md
    //   advises operators to cap them as this test does.
    // - A step's activations (kept by the scheduler for the next step) scale with its rows:
    //   with 16 sequences prefilling 128-row chunks at once the peak was 132 to 150 MiB,
    //   with 32-row chunks 130 to 135 (this 2-core VM). The chunk bounds them here; a
    //   per-step token budget (vLLM's max_num_batched_tokens) would for every setting.
    let server = Server::start_under(
        &["env", "MALLOC_ARENA_MAX=2"],
        &[
            "--model",
            &tiny(),
            "--max-batch",
            "16",
            "--kv-memory",
            &kv,
            "--prefill-chunk",
            "32",
        ],
    );
    // The idle footprint: the weights paged in and every buffer warmed by a first request.
    let warm = server.post(
        "/v1/completions",
        r#"{"prompt": "warm up", "max_tokens": 4}"#,
    );
    assert_eq!(warm.status, 200);
    let idle = server.peak_rss();
    let port = server.port;
    let start = Arc::new(Barrier::new(CLIENTS));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let start = start.clone();
            std::thread::spawn(move || {
                start.wait();
                for r in 0..REQUESTS {
                    complete(port, c, r);
                }
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
    let total = (CLIENTS * REQUESTS + 1) as f64;
    assert_eq!(server.metric("mixtral_requests_total"), total);
    // The scheduler counts a step's finished requests and frees their blocks at the end of
    // the step, after sending their last events: a client can have its answer a moment
    // before the counters show it (seen once in CI: 255 of 257).
    server.wait_for("mixtral_requests_finished_total", |v| v == total);
    server.wait_for("mixtral_kv_blocks_used", |v| v == 0.0);
    for status in [400, 404, 429, 500, 503] {
        let name = format!("mixtral_http_errors_total{{status=\"{status}\"}}");
        assert_eq!(server.metric(&name), 0.0, "{name}");
    }
    let peak = server.peak_rss();
    let bound = (idle + KV_MEMORY) as f64 * 1.1;
    assert!(
        peak as f64 <= bound,
        "peak RSS {peak} over (idle {idle} + KV budget {KV_MEMORY}) + 10%"
    );
    eprintln!(
        "peak RSS {} MiB, idle {} MiB, budget {} MiB",
        peak >> 20,
        idle >> 20,
        KV_MEMORY >> 20
    );
}

#[test]
fn clients_that_hang_up_mid_stream_free_their_blocks_and_the_rest_are_served() {
    let server = Server::start(&["--model", &tiny(), "--max-batch", "16"]);
    let port = server.port;
    let start = Arc::new(Barrier::new(CLIENTS));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let start = start.clone();
            std::thread::spawn(move || {
                start.wait();
                if c.is_multiple_of(2) {
                    // A long stream, abandoned after its first token.
                    let body = r#"{"prompt": "a long story", "max_tokens": 3000, "ignore_eos": true, "stream": true}"#;
                    let stream = send(port, "POST", "/v1/completions", Some(body));
                    let mut lines = BufReader::new(stream).lines();
                    assert!(lines.any(|l| l.unwrap().starts_with("data: {")), "client {c}");
                } else {
                    for r in 0..2 {
                        complete(port, c, r);
                    }
                }
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
    server.wait_for("mixtral_active_sequences", |v| v == 0.0);
    server.wait_for("mixtral_queue_length", |v| v == 0.0);
    assert_eq!(server.metric("mixtral_kv_blocks_used"), 0.0);
    let total = server.metric("mixtral_requests_total");
    assert_eq!(total, (CLIENTS / 2 + CLIENTS) as f64);
    assert_eq!(server.metric("mixtral_requests_finished_total"), total);
    // The abandoned streams stopped early: far fewer tokens than 32 × 3000.
    assert!(server.metric("mixtral_generation_tokens_total") < (CLIENTS / 2 * 3000) as f64 / 4.0);
    let r = server.post(
        "/v1/completions",
        r#"{"prompt": "still there?", "max_tokens": 3}"#,
    );
    assert_eq!(r.status, 200, "{}", r.body);
}
