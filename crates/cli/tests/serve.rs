//! `mixtral serve` on loopback: the official `openai` Python client gets what `mixtral
//! generate` gives, every bad request gets its status and OpenAI error body, a full queue is a
//! 429, and SIGTERM lets running requests finish before a clean exit.

mod common;

use common::server::{Server, send};
use common::{fixture, mixtral, stdout_json};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::time::Duration;

fn tiny() -> String {
    fixture("tiny-bf16").display().to_string()
}

/// The Python with the `openai` package (`MIXTRAL_OPENAI_PYTHON` in CI).
fn openai_python() -> Option<String> {
    mixtral_testkit::python_with("MIXTRAL_OPENAI_PYTHON", "openai")
}

/// Runs `python tests/serve/SCRIPT ARGS…` (a client script that prints one line per check
/// and "N checks passed") and asserts it passed, showing `server`'s log if not.
fn run_client(python: &str, script: &str, args: &[&str], server: &Server) {
    let path = format!("{}/tests/serve/{script}", env!("CARGO_MANIFEST_DIR"));
    let out = std::process::Command::new(python)
        .arg(path)
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\nstderr: {}\nserver: {}",
        String::from_utf8_lossy(&out.stderr),
        server.stderr()
    );
    assert!(stdout.contains("checks passed"), "{stdout}");
}

/// `mixtral generate --json` on the same prompt, greedy.
fn generate(prompt_args: &[&str], max: usize) -> Value {
    let max = max.to_string();
    let mut args = vec!["generate", "--model", &*Box::leak(tiny().into_boxed_str())];
    args.extend_from_slice(prompt_args);
    args.extend(["--max-new-tokens", &max, "--temperature", "0", "--json"]);
    stdout_json(&mixtral(&args))
}

#[test]
fn the_openai_client_gets_what_generate_gives() {
    let Some(python) = openai_python() else {
        eprintln!("note: no Python with the `openai` package (set MIXTRAL_OPENAI_PYTHON); skipped");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let messages = json!([
        {"role": "system", "content": "You answer briefly."},
        {"role": "user", "content": "What is the capital of France?"}
    ]);
    let chat_file = dir.path().join("chat.json");
    std::fs::write(&chat_file, messages.to_string()).unwrap();
    let chat = generate(&["--chat", chat_file.to_str().unwrap()], 12);
    let completion = generate(&["--prompt", "Once upon a time"], 10);
    let entry = |g: &Value, extra: (&str, Value), max: usize| {
        json!({
            extra.0: extra.1,
            "max_tokens": max,
            "text": g["text"],
            "finish_reason": g["finish_reason"],
            "prompt_tokens": g["prompt_tokens"],
            "generated": g["ids"].as_array().unwrap().len(),
        })
    };
    let expected = json!({
        "model": "tiny-bf16",
        "chat": entry(&chat, ("messages", messages), 12),
        "completion": entry(&completion, ("prompt", json!("Once upon a time")), 10),
    });
    let exp_file = dir.path().join("expected.json");
    std::fs::write(&exp_file, expected.to_string()).unwrap();
    let server = Server::start(&["--model", &tiny()]);
    let args = [&*server.url(), exp_file.to_str().unwrap()];
    run_client(&python, "openai_client.py", &args, &server);
}

/// Structured outputs through the `openai` client, validated by `jsonschema`
/// (`tests/serve/structured_outputs.py`): a random-weight model's answers under
/// `response_format` `json_schema` validate 20 of 20, `parse()` with a Pydantic model works,
/// `json_object`, `guided_regex`, `guided_choice` and `guided_grammar` hold, and bad
/// constraints are 400s naming their field.
#[test]
fn structured_outputs_hold_for_the_openai_client() {
    let Some(python) = mixtral_testkit::python_with("MIXTRAL_OPENAI_PYTHON", "openai, jsonschema")
    else {
        eprintln!(
            "note: no Python with `openai` and `jsonschema` (set MIXTRAL_OPENAI_PYTHON); skipped"
        );
        return;
    };
    let server = Server::start(&["--model", &tiny()]);
    run_client(
        &python,
        "structured_outputs.py",
        &[&server.url(), "tiny-bf16"],
        &server,
    );
}

/// Tool calls through the `openai` client (`tests/serve/tool_calls.py`): a random-weight
/// model with a v1 vocabulary, under a named `tool_choice` or `required`, makes calls whose
/// arguments validate (`jsonschema`), streamed or not; the agent loop (call with `content:
/// null`, `tool` result, next turn) is read back; bad tool requests are 400s naming their
/// field.
#[test]
fn tool_calls_hold_for_the_openai_client() {
    let Some(python) = mixtral_testkit::python_with("MIXTRAL_OPENAI_PYTHON", "openai, jsonschema")
    else {
        eprintln!(
            "note: no Python with `openai` and `jsonschema` (set MIXTRAL_OPENAI_PYTHON); skipped"
        );
        return;
    };
    let server = Server::start(&["--model", &tiny()]);
    run_client(
        &python,
        "tool_calls.py",
        &[&server.url(), "tiny-bf16"],
        &server,
    );
}

/// Paged KV through the `openai` client (`tests/serve/paged_kv.py`): a budget that holds two
/// sequences at their longest serves 16 concurrent clients, each getting the tokens a
/// one-at-a-time server gives (both batch-invariant: bit for bit), with preemptions.
#[test]
fn paged_kv_serves_sixteen_clients_in_a_two_sequence_budget() {
    let Some(python) = openai_python() else {
        eprintln!("note: no Python with the `openai` package (set MIXTRAL_OPENAI_PYTHON); skipped");
        return;
    };
    let (prompt, max_tokens) = (40usize, 100usize);
    let alone = Server::start(&[
        "--model",
        &tiny(),
        "--batch-invariant",
        "--max-batch",
        "1",
        "--prefix-caching",
        "off",
    ]);
    let block = alone.metric("mixtral_kv_block_bytes") as usize;
    let longest = (prompt + max_tokens).div_ceil(64);
    let budget = (2 * longest * block).to_string();
    let tight = Server::start(&[
        "--model",
        &tiny(),
        "--batch-invariant",
        "--kv-memory",
        &budget,
    ]);
    let (prompt, max_tokens) = (prompt.to_string(), max_tokens.to_string());
    let args = [
        &*tight.url(),
        &alone.url(),
        "tiny-bf16",
        &prompt,
        &max_tokens,
    ];
    run_client(&python, "paged_kv.py", &args, &tight);
}

/// LangChain (`tests/serve/langchain_tools.py`): `bind_tools` with a named tool,
/// `with_structured_output` by JSON schema and by function calling, and a tool loop, on a
/// random-weight model.
#[test]
fn langchain_binds_tools_and_structured_output() {
    let Some(python) = mixtral_testkit::python_with("MIXTRAL_OPENAI_PYTHON", "langchain_openai")
    else {
        eprintln!("note: no Python with `langchain_openai` (set MIXTRAL_OPENAI_PYTHON); skipped");
        return;
    };
    let server = Server::start(&["--model", &tiny()]);
    run_client(
        &python,
        "langchain_tools.py",
        &[&server.url(), "tiny-bf16"],
        &server,
    );
}

/// A conversation that ends with an assistant message is continued, not answered: the
/// server's answer equals `mixtral generate --chat` on the same messages, and the prompt holds
/// the assistant's words (more tokens than the conversation without them, no end of turn).
#[test]
fn a_chat_that_ends_with_the_assistant_continues_its_words() {
    let dir = tempfile::tempdir().unwrap();
    let user = json!({"role": "user", "content": "Count to five."});
    let assistant = json!({"role": "assistant", "content": "One, two,"});
    let write = |name: &str, messages: Value| {
        let path = dir.path().join(name);
        std::fs::write(&path, messages.to_string()).unwrap();
        path.display().to_string()
    };
    let continued = generate(&["--chat", &write("c.json", json!([user, assistant]))], 8);
    let answered = generate(&["--chat", &write("a.json", json!([user]))], 8);
    let server = Server::start(&["--model", &tiny()]);
    let body = json!({"messages": [user, assistant], "max_tokens": 8, "temperature": 0});
    let r = server.post("/v1/chat/completions", &body.to_string());
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    assert_eq!(v["choices"][0]["message"]["content"], continued["text"]);
    assert_eq!(v["usage"]["prompt_tokens"], continued["prompt_tokens"]);
    let (with, without) = (
        continued["prompt_tokens"].as_u64().unwrap(),
        answered["prompt_tokens"].as_u64().unwrap(),
    );
    assert!(with > without, "{with} vs {without}");
}

/// A bad request: path, body, status, the `param` and `code` its error names.
type Case<'a> = (&'a str, String, u16, Option<&'a str>, Option<&'a str>);

#[test]
fn bad_requests_get_their_status_and_an_openai_error() {
    let server = Server::start(&["--model", &tiny()]);
    let chat = "/v1/chat/completions";
    let comp = "/v1/completions";
    let ok_msgs = r#""messages": [{"role": "user", "content": "hi"}]"#;
    let long_prompt = "word ".repeat(40_000);
    let long = format!(r#"{{"prompt": "{long_prompt}"}}"#);
    // (path, body, status, param, code)
    let cases: Vec<Case> = vec![
        (chat, "{not json".into(), 400, None, None),
        (chat, "[1, 2]".into(), 400, None, None),
        (chat, "{}".into(), 400, Some("messages"), None),
        (
            chat,
            r#"{"messages": []}"#.into(),
            400,
            Some("messages"),
            None,
        ),
        (
            chat,
            r#"{"messages": "hi"}"#.into(),
            400,
            Some("messages"),
            None,
        ),
        (
            chat,
            r#"{"messages": [{"role": "robot", "content": "hi"}]}"#.into(),
            400,
            Some("messages[0].role"),
            None,
        ),
        (
            chat,
            r#"{"messages": [{"role": "user"}]}"#.into(),
            400,
            Some("messages[0].content"),
            None,
        ),
        (
            chat,
            r#"{"messages": [{"role": "user", "content": 5}]}"#.into(),
            400,
            Some("messages[0].content"),
            None,
        ),
        (
            chat,
            r#"{"messages": [{"role": "assistant", "content": "hi"}]}"#.into(),
            400,
            Some("messages"),
            None,
        ),
        (
            chat,
            format!(r#"{{{ok_msgs}, "max_tokens": 0}}"#),
            400,
            Some("max_tokens"),
            None,
        ),
        (
            chat,
            format!(r#"{{{ok_msgs}, "max_tokens": -3}}"#),
            400,
            Some("max_tokens"),
            None,
        ),
        (
            chat,
            format!(r#"{{{ok_msgs}, "max_tokens": 1000000}}"#),
            400,
            Some("max_tokens"),
            None,
        ),
        (
            chat,
            format!(r#"{{{ok_msgs}, "max_tokens": "ten"}}"#),
            400,
            Some("max_tokens"),
            None,
        ),
        (
            chat,
            format!(r#"{{{ok_msgs}, "temperature": "hot"}}"#),
            400,
            Some("temperature"),
            None,
        ),
        (
            chat,
            format!(r#"{{{ok_msgs}, "temperature": 3}}"#),
            400,
            Some("temperature"),
            None,
        ),
        (
            chat,
            format!(r#"{{{ok_msgs}, "top_p": 0}}"#),
            400,
            Some("top_p"),
            None,
        ),
        (
            chat,
            format!(r#"{{{ok_msgs}, "n": 2}}"#),
            400,
            Some("n"),
            None,
        ),
        (
            chat,
            format!(r#"{{{ok_msgs}, "stream": "yes"}}"#),
            400,
            Some("stream"),
            None,
        ),
        (
            chat,
            format!(r#"{{{ok_msgs}, "stop": 5}}"#),
            400,
            Some("stop"),
            None,
        ),
        (
            chat,
            format!(r#"{{{ok_msgs}, "stop": ["a","b","c","d","e"]}}"#),
            400,
            Some("stop"),
            None,
        ),
        (
            chat,
            format!(r#"{{{ok_msgs}, "stop": [""]}}"#),
            400,
            Some("stop"),
            None,
        ),
        (
            chat,
            format!(r#"{{{ok_msgs}, "seed": 1.5}}"#),
            400,
            Some("seed"),
            None,
        ),
        (
            chat,
            format!(r#"{{{ok_msgs}, "top_logprobs": 3}}"#),
            400,
            Some("top_logprobs"),
            None,
        ),
        (
            chat,
            format!(r#"{{{ok_msgs}, "logprobs": true, "top_logprobs": 21}}"#),
            400,
            Some("top_logprobs"),
            None,
        ),
        (
            chat,
            format!(r#"{{{ok_msgs}, "model": 7}}"#),
            400,
            Some("model"),
            None,
        ),
        (comp, "{}".into(), 400, Some("prompt"), None),
        (
            comp,
            r#"{"prompt": ["a", "b"]}"#.into(),
            400,
            Some("prompt"),
            None,
        ),
        (
            comp,
            r#"{"prompt": {"text": "a"}}"#.into(),
            400,
            Some("prompt"),
            None,
        ),
        (
            comp,
            r#"{"prompt": [1, 999999]}"#.into(),
            400,
            Some("prompt"),
            None,
        ),
        (
            comp,
            r#"{"prompt": "hi", "logprobs": 6}"#.into(),
            400,
            Some("logprobs"),
            None,
        ),
        (
            comp,
            r#"{"prompt": "hi", "echo": true}"#.into(),
            400,
            Some("echo"),
            None,
        ),
        (
            comp,
            long,
            400,
            Some("prompt"),
            Some("context_length_exceeded"),
        ),
        ("/v1/nothing", "{}".into(), 404, None, Some("not_found")),
    ];
    for (path, body, status, param, code) in cases {
        let r = server.post(path, &body);
        let shown = &body[..body.len().min(80)];
        assert_eq!(r.status, status, "{path} {shown}: {}", r.body);
        let v = r.json();
        let e = &v["error"];
        assert!(
            e["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{shown}: {v}"
        );
        assert_eq!(e["type"], "invalid_request_error", "{shown}: {v}");
        assert_eq!(e["param"].as_str(), param, "{shown}: {v}");
        assert_eq!(e["code"].as_str(), code, "{shown}: {v}");
    }
    // Still serving, and every refusal was counted.
    let r = server.post(chat, &format!(r#"{{{ok_msgs}, "max_tokens": 2}}"#));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        server.metric("mixtral_http_errors_total{status=\"400\"}"),
        32.0
    );
    assert_eq!(
        server.request("GET", "/health", None).json()["status"],
        "ok"
    );
}

#[test]
fn a_full_queue_is_a_429_with_retry_after() {
    let server = Server::start(&[
        "--model",
        &tiny(),
        "--max-batch",
        "1",
        "--max-queue",
        "1",
        "--kv-memory",
        "1G",
    ]);
    let long = r#"{"prompt": "a", "max_tokens": 30000, "ignore_eos": true, "stream": true}"#;
    let running = send(server.port, "POST", "/v1/completions", Some(long));
    server.wait_for("mixtral_active_sequences", |v| v == 1.0);
    let queued = send(server.port, "POST", "/v1/completions", Some(long));
    server.wait_for("mixtral_queue_length", |v| v == 1.0);
    let r = server.post("/v1/completions", r#"{"prompt": "a", "max_tokens": 2}"#);
    assert_eq!(r.status, 429, "{}", r.body);
    assert_eq!(r.header("retry-after").as_deref(), Some("1"));
    assert_eq!(r.json()["error"]["code"], "queue_full");
    // Hanging up cancels both long requests and frees their memory.
    drop((running, queued));
    server.wait_for("mixtral_queue_length", |v| v == 0.0);
    server.wait_for("mixtral_kv_blocks_used", |v| v == 0.0);
    let r = server.post("/v1/completions", r#"{"prompt": "a", "max_tokens": 2}"#);
    assert_eq!(r.status, 200, "{}", r.body);
}

/// Streams a completion of `max_tokens` from a server with `--shutdown-timeout timeout`,
/// sends SIGTERM after the first token, and returns the stream's `finish_reason` (the last
/// chunk before `[DONE]`, which must come) and whether the server then exited with 0 (within
/// 30 s).
fn sigterm_during_a_stream(timeout: &str, max_tokens: usize) -> (Value, bool) {
    let mut server = Server::start(&["--model", &tiny(), "--shutdown-timeout", timeout]);
    let body = json!({"prompt": "a", "max_tokens": max_tokens, "ignore_eos": true, "stream": true});
    let stream = send(
        server.port,
        "POST",
        "/v1/completions",
        Some(&body.to_string()),
    );
    let mut lines = BufReader::new(stream).lines();
    // Wait for the first token, then ask the server to stop.
    assert!(lines.by_ref().any(|l| l.unwrap().starts_with("data: {")));
    server.sigterm();
    let rest: Vec<String> = lines.map(|l| l.unwrap()).collect();
    let data: Vec<&String> = rest.iter().filter(|l| l.starts_with("data: ")).collect();
    assert_eq!(data.last().map(|s| s.as_str()), Some("data: [DONE]"));
    let last: Value = serde_json::from_str(&data[data.len() - 2][6..]).unwrap();
    let status = server.wait_exit(Duration::from_secs(30));
    (
        last["choices"][0]["finish_reason"].clone(),
        status.success(),
    )
}

#[test]
fn sigterm_lets_running_requests_finish_then_exits_0() {
    let (finish, exited_0) = sigterm_during_a_stream("60", 400);
    assert_eq!(finish, "length", "finished, not cut");
    assert!(exited_0);
}

#[test]
fn sigterm_cancels_what_outlives_the_deadline() {
    let (finish, exited_0) = sigterm_during_a_stream("0.2", 30000);
    assert_eq!(finish, "abort");
    assert!(exited_0);
}

#[test]
fn with_batch_invariance_a_seeded_request_among_others_samples_what_generate_does() {
    let max = "16";
    let alone = stdout_json(&mixtral(&[
        "generate",
        "--model",
        &tiny(),
        "--batch-invariant",
        "--prompt",
        "Once upon a time",
        "--temperature",
        "0.9",
        "--top-p",
        "0.95",
        "--seed",
        "7",
        "--max-new-tokens",
        max,
        "--ignore-eos",
        "--json",
    ]));
    let server = Server::start(&["--model", &tiny(), "--batch-invariant"]);
    // Other requests of other lengths keep the batch busy around it.
    let others: Vec<_> = (0..6)
        .map(|i| {
            let body = json!({
                "prompt": "word ".repeat(1 + 37 * i), "max_tokens": 40, "ignore_eos": true,
                "stream": true,
            });
            send(
                server.port,
                "POST",
                "/v1/completions",
                Some(&body.to_string()),
            )
        })
        .collect();
    let body = json!({
        "prompt": "Once upon a time", "max_tokens": 16, "ignore_eos": true,
        "temperature": 0.9, "top_p": 0.95, "seed": 7,
    });
    let r = server.post("/v1/completions", &body.to_string());
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["choices"][0]["text"], alone["text"]);
    drop(others);
}

/// Waits (up to 30 s) until the server's standard error holds `n` lines that start with `{`.
fn json_log_lines(server: &Server, n: usize) -> Vec<Value> {
    let start = std::time::Instant::now();
    loop {
        let lines: Vec<Value> = server
            .stderr()
            .lines()
            .filter(|l| l.starts_with('{'))
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect();
        if lines.len() >= n {
            return lines;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{} of {n} log lines: {}",
            lines.len(),
            server.stderr()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn every_request_gets_an_access_log_line_once_answered() {
    let server = Server::start(&["--model", &tiny(), "--log-format", "json"]);
    let whole = server.post(
        "/v1/completions",
        r#"{"prompt": "Hello", "max_tokens": 5, "ignore_eos": true}"#,
    );
    assert_eq!(whole.status, 200, "{}", whole.body);
    let streamed = server.post(
        "/v1/chat/completions",
        r#"{"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3, "ignore_eos": true, "stream": true}"#,
    );
    assert_eq!(streamed.status, 200, "{}", streamed.body);
    let missing = server.request("GET", "/nowhere%0Ainjected", None);
    assert_eq!(missing.status, 404);
    let lines = json_log_lines(&server, 3);
    let line = |path: &str| {
        lines
            .iter()
            .find(|l| l["path"].as_str().is_some_and(|p| p.starts_with(path)))
            .unwrap_or_else(|| panic!("no line for {path}: {lines:?}"))
    };
    let prompt_tokens = whole.json()["usage"]["prompt_tokens"].clone();
    let completion = line("/v1/completions");
    assert_eq!(completion["method"], "POST");
    assert_eq!(completion["status"], 200);
    assert_eq!(completion["prompt_tokens"], prompt_tokens);
    assert_eq!(completion["completion_tokens"], 5);
    assert_eq!(completion["cached_tokens"], 0);
    assert_eq!(completion["finish_reason"], "length");
    assert!(completion["ttft_ms"].as_f64().unwrap() <= completion["total_ms"].as_f64().unwrap());
    let chat = line("/v1/chat/completions");
    assert_eq!(chat["completion_tokens"], 3);
    let missing = line("/nowhere");
    assert_eq!(missing["status"], 404);
    assert!(missing.get("prompt_tokens").is_none());
    // A stranger's path stays inside its field: one line per request, none forged.
    assert_eq!(
        server
            .stderr()
            .lines()
            .filter(|l| l.contains("injected"))
            .count(),
        1
    );
}

#[test]
fn the_text_access_log_quotes_what_strangers_send() {
    let server = Server::start(&["--model", &tiny()]);
    let r = server.request("GET", "/v1/models", None);
    assert_eq!(r.status, 200);
    let r = server.request("GET", "/a%22b%20status=200", None);
    assert_eq!(r.status, 404);
    let start = std::time::Instant::now();
    while server
        .stderr()
        .lines()
        .filter(|l| l.starts_with("ts="))
        .count()
        < 2
    {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{}",
            server.stderr()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let log = server.stderr();
    assert!(
        log.contains(r#"method="GET" path="/v1/models" status=200"#),
        "{log}"
    );
    assert!(
        log.contains(r#"path="/a%22b%20status=200" status=404"#),
        "{log}"
    );
}

#[test]
fn a_request_for_another_model_is_a_404_naming_the_served_one() {
    let server = Server::start(&["--model", &tiny(), "--served-model-name", "mixtral-tiny"]);
    let r = server.post(
        "/v1/chat/completions",
        r#"{"model": "gpt-4o", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}"#,
    );
    assert_eq!(r.status, 404, "{}", r.body);
    let e = &r.json()["error"];
    assert_eq!(e["code"], "model_not_found");
    assert_eq!(e["param"], "model");
    assert!(
        e["message"].as_str().unwrap().contains("`mixtral-tiny`"),
        "{e}"
    );
    for model in [r#""model": "mixtral-tiny","#, ""] {
        let body = format!(r#"{{{model} "prompt": "Hi", "max_tokens": 2}}"#);
        let r = server.post("/v1/completions", &body);
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.json()["model"], "mixtral-tiny");
    }
}

/// Prefix caching through the `openai` client (`tests/serve/prefix_cache.py`): each request
/// of a growing conversation after the first computes only its new turn (and the rest of a
/// partial page), by its `cached_tokens` and the server's prompt-token counter, and answers
/// what a server without the cache answers (both batch-invariant: bit for bit).
#[test]
fn the_openai_client_sees_a_conversation_served_from_the_prefix_cache() {
    let Some(python) = openai_python() else {
        eprintln!("note: no Python with the `openai` package (set MIXTRAL_OPENAI_PYTHON); skipped");
        return;
    };
    let start = |caching: &str| {
        let args = [
            "--model",
            &tiny(),
            "--batch-invariant",
            "--prefix-caching",
            caching,
        ];
        Server::start(&args)
    };
    let (hot, cold) = (start("on"), start("off"));
    let args = [&*hot.url(), &cold.url(), "tiny-bf16"];
    run_client(&python, "prefix_cache.py", &args, &hot);
}

/// `cache_salt` (vLLM's): the same prompt under another salt, or none, reuses nothing; under
/// the same salt it does; a salt that is not a string of 1 to 256 bytes is a 400 naming it.
#[test]
fn cache_salts_keep_tenants_apart() {
    let server = Server::start(&["--model", &tiny()]);
    let prompt = "lighthouse ".repeat(100);
    let cached = |salt: Value| {
        let body = json!({"prompt": prompt, "max_tokens": 2, "cache_salt": salt});
        let r = server.post("/v1/completions", &body.to_string());
        assert_eq!(r.status, 200, "{}", r.body);
        r.json()["usage"]["prompt_tokens_details"]["cached_tokens"]
            .as_u64()
            .unwrap()
    };
    assert_eq!(cached(json!("tenant-a")), 0);
    assert_eq!(cached(json!("tenant-b")), 0);
    assert_eq!(cached(Value::Null), 0);
    assert!(cached(json!("tenant-a")) >= 64);
    assert!(cached(Value::Null) >= 64);
    for bad in [json!(""), json!("x".repeat(257)), json!(7), json!(["a"])] {
        let body = json!({"prompt": "Hi", "max_tokens": 2, "cache_salt": bad});
        let r = server.post("/v1/completions", &body.to_string());
        assert_eq!(r.status, 400, "{}", r.body);
        assert_eq!(r.json()["error"]["param"], "cache_salt", "{}", r.body);
    }
}

#[test]
fn a_growing_conversation_is_served_from_the_prefix_cache() {
    let server = Server::start(&[
        "--model",
        &tiny(),
        "--log-format",
        "json",
        "--prefix-caching",
        "on",
        "--batch-invariant",
    ]);
    let cold = Server::start(&[
        "--model",
        &tiny(),
        "--prefix-caching",
        "off",
        "--batch-invariant",
    ]);
    // Long enough for several whole 64-token pages.
    let story =
        "Tell me a long story about a lighthouse keeper and the ships that pass by at night. ";
    let mut messages = vec![json!({"role": "user", "content": story.repeat(8)})];
    let mut cached = vec![];
    let mut prompt = vec![];
    for turn in ["And then?", "How does it end?", ""] {
        let body =
            json!({"messages": messages, "max_tokens": 8, "temperature": 0, "ignore_eos": true});
        let r = server.post("/v1/chat/completions", &body.to_string());
        assert_eq!(r.status, 200, "{}", r.body);
        let v = r.json();
        // A cold server's answer to the same conversation, bit for bit (batch-invariant).
        let c = cold.post("/v1/chat/completions", &body.to_string());
        assert_eq!(c.status, 200, "{}", c.body);
        assert_eq!(c.json()["choices"], v["choices"], "turn {}", prompt.len());
        assert_eq!(
            c.json()["usage"]["prompt_tokens_details"]["cached_tokens"],
            0
        );
        cached.push(
            v["usage"]["prompt_tokens_details"]["cached_tokens"]
                .as_u64()
                .unwrap(),
        );
        prompt.push(v["usage"]["prompt_tokens"].as_u64().unwrap());
        let answer = v["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .to_string();
        if turn.is_empty() {
            break;
        }
        messages.push(json!({"role": "assistant", "content": answer.trim().to_string() + "."}));
        messages.push(json!({"role": "user", "content": turn}));
    }
    // Each turn after the first reuses at least the whole pages of the previous turn's
    // prompt (the cache holds it and the answer; the re-rendered answer may tokenize
    // differently from the generated ids, so only the prompt is certain), in whole pages,
    // and never the new prompt's last token, which is run again for its logits.
    assert_eq!(cached[0], 0);
    for t in 1..3 {
        assert!(prompt[t - 1] >= 128, "{prompt:?}");
        assert!(
            cached[t] >= prompt[t - 1] / 64 * 64,
            "{cached:?} {prompt:?}"
        );
        assert!(cached[t] < prompt[t], "{cached:?} {prompt:?}");
        assert_eq!(cached[t] % 64, 0, "{cached:?}");
    }
    assert_eq!(server.metric("mixtral_prefix_cache_hits_total"), 2.0);
    // Computed: every prompt token but the cached ones (the new turn and the rest of the
    // last partial page), which the cold server computed in full.
    let total: u64 = prompt.iter().sum();
    let reused: u64 = cached.iter().sum();
    assert_eq!(
        server.metric("mixtral_prompt_tokens_total"),
        (total - reused) as f64
    );
    assert_eq!(cold.metric("mixtral_prompt_tokens_total"), total as f64);
    assert_eq!(
        server.metric("mixtral_prefix_cache_tokens_total"),
        (cached[1] + cached[2]) as f64
    );
    let lines = json_log_lines(&server, 3);
    let logged: Vec<u64> = lines
        .iter()
        .filter_map(|l| l["cached_tokens"].as_u64())
        .collect();
    assert_eq!(logged, cached);
}
