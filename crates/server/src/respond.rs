//! Running a parsed request on the scheduler and answering it: one JSON body, or
//! server-sent events as tokens come.

use crate::App;
use crate::api::{self, Endpoint, Job};
use crate::error::ApiError;
use axum::extract::Request;
use axum::response::sse::{Event as Sse, KeepAlive};
use axum::response::{IntoResponse, Response};
use mixtral::tools::{ParsedCall, ParsedOutput, ToolCallParser, ToolFormat};
use mixtral::{CancelToken, Event, Finished, Sink, Token};
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};

/// Cancels the request when dropped: the response (stream) it belongs to is gone, because
/// the client disconnected or the request ended.
struct CancelOnDrop(CancelToken);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

/// OpenAI's `finish_reason`: `stop`, `length`, or vLLM's `abort` for a request cancelled by
/// the server (at shutdown) rather than ended by the model.
fn finish_reason(reason: &mixtral::FinishReason) -> &'static str {
    match reason {
        mixtral::FinishReason::Interrupted => "abort",
        other => other.as_str(),
    }
}

/// `finish_reason` of an output that made `calls`: `tool_calls` when the model ended its
/// turn (a call cut off by the token limit is still `length`).
fn finish_with_calls(reason: &mixtral::FinishReason, calls: &[ParsedCall]) -> &'static str {
    match finish_reason(reason) {
        "stop" if !calls.is_empty() => "tool_calls",
        other => other,
    }
}

/// A call as OpenAI writes it: `{"id", "type": "function", "function": {"name",
/// "arguments"}}`, the arguments as JSON text.
fn call_json(call: &ParsedCall) -> Value {
    json!({
        "id": call.id,
        "type": "function",
        "function": {"name": call.name, "arguments": call.arguments},
    })
}

/// What every response of one request names.
struct Meta {
    app: Arc<App>,
    id: String,
    /// One timestamp for every chunk of the response.
    created: u64,
    endpoint: Endpoint,
    prompt_tokens: usize,
    logprobs: bool,
    include_usage: bool,
    /// Where the access log line learns the request's tokens.
    record: Option<crate::log::Record>,
    /// How to read tool calls from the output, when the request offers tools.
    tool_format: Option<ToolFormat>,
}

pub(crate) async fn complete(app: Arc<App>, endpoint: Endpoint, req: Request) -> Response {
    if app.closing.load(Ordering::Relaxed) {
        return app.error(ApiError::unavailable("the server is shutting down"));
    }
    if !app.scheduler.is_running() {
        return app.error(ApiError::internal("the scheduler has stopped"));
    }
    let record = req.extensions().get::<crate::log::Record>().cloned();
    let body = match crate::body::read(&app, req).await {
        Ok(body) => body,
        Err(e) => return app.error(e),
    };
    let engine = app.scheduler.engine().clone();
    // Tokenizing a long prompt takes a while: off the async threads, which serve every stream.
    // The body's share of the request-memory budget is held until parsing is done.
    let parsed =
        tokio::task::spawn_blocking(move || api::parse(&engine, endpoint, &body.bytes)).await;
    let job = match parsed {
        Ok(Ok(job)) => job,
        Ok(Err(e)) => return app.error(e),
        Err(e) => return app.error(ApiError::internal(format!("request parser failed: {e}"))),
    };
    let Job {
        ids,
        params,
        stream,
        include_usage,
        logprobs,
        model,
        constraint_field,
        tool_format,
    } = job;
    if let Some(model) = model.filter(|m| *m != app.model) {
        // As OpenAI and vLLM answer: a client naming another model would otherwise get this
        // one's answers as if they were that model's.
        return app.error(ApiError::model_not_found(&model, &app.model));
    }
    let prompt_tokens = ids.len();
    let (tx, rx) = unbounded_channel();
    let sink: Sink = Box::new(move |event| tx.send(event).is_ok());
    let cancel = match app.scheduler.submit_with(ids, &params, sink) {
        Ok(cancel) => CancelOnDrop(cancel),
        Err(e) => {
            let error = match (&e, constraint_field) {
                // Compiled here, by the scheduler's check: the error names the request's field.
                (mixtral::Error::Constraint(_), Some(field)) => {
                    ApiError::invalid(Some(field), e.to_string())
                }
                _ => ApiError::from_engine(&e).for_endpoint(endpoint),
            };
            return app.error(error);
        }
    };
    let prefix = match endpoint {
        Endpoint::Chat => "chatcmpl",
        Endpoint::Completions => "cmpl",
    };
    let meta = Meta {
        id: format!("{prefix}-{}", app.next_id()),
        created: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        app,
        endpoint,
        prompt_tokens,
        logprobs,
        include_usage,
        record,
        tool_format,
    };
    if stream {
        let events = Events {
            parser: tool_format.map(ToolCallParser::new),
            rx,
            meta,
            out: VecDeque::new(),
            started: false,
            ended: false,
            offset: 0,
            _cancel: cancel,
        };
        axum::response::Sse::new(events)
            .keep_alive(KeepAlive::default())
            .into_response()
    } else {
        collect(meta, rx, cancel).await
    }
}

/// Waits for the whole answer.
async fn collect(meta: Meta, mut rx: UnboundedReceiver<Event>, _cancel: CancelOnDrop) -> Response {
    let mut tokens: Vec<Token> = vec![];
    while let Some(event) = rx.recv().await {
        match event {
            Event::Token(t) => tokens.push(t),
            Event::Done(done) => {
                let (body, finish) = meta.whole(&tokens, &done);
                meta.log(&done, finish);
                return axum::Json(body).into_response();
            }
            Event::Error(e) => {
                return meta
                    .app
                    .error(ApiError::internal(mixtral::error_chain(&*e)));
            }
        }
    }
    meta.app.error(ApiError::internal("the scheduler stopped"))
}

impl Meta {
    /// Tells the access log what the request cost.
    /// `finish` is the response's `finish_reason` (`tool_calls` when the output was calls).
    fn log(&self, done: &Finished, finish: &'static str) {
        if let Some(record) = &self.record {
            record.set(crate::log::Usage {
                prompt_tokens: self.prompt_tokens,
                cached_tokens: done.cached_tokens,
                completion_tokens: done.generated_tokens,
                time_to_first_token: done.time_to_first_token,
                finish_reason: finish,
            });
        }
    }

    /// OpenAI's `usage`, with `prompt_tokens_details.cached_tokens` (prompt tokens whose
    /// keys and values an earlier request left in the prefix cache).
    fn usage(&self, done: &Finished) -> Value {
        let generated = done.generated_tokens;
        json!({
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": generated,
            "total_tokens": self.prompt_tokens + generated,
            "prompt_tokens_details": {"cached_tokens": done.cached_tokens},
        })
    }

    /// The token's text as the tokenizer's piece (SentencePiece's `▁` as a space).
    fn piece(&self, id: u32) -> String {
        let engine = self.app.scheduler.engine();
        engine
            .tokenizer()
            .and_then(|t| t.id_to_piece(id))
            .map_or_else(|| format!("<{id}>"), |p| p.replace('\u{2581}', " "))
    }

    /// Chat's `logprobs` object for `tokens`.
    fn chat_logprobs(&self, tokens: &[Token]) -> Value {
        if !self.logprobs {
            return Value::Null;
        }
        let entry = |id: u32, logprob: f32| {
            let token = self.piece(id);
            json!({"token": token, "logprob": logprob, "bytes": token.as_bytes()})
        };
        let content: Vec<Value> = tokens
            .iter()
            .map(|t| {
                let mut e = entry(t.id, t.logprob);
                e["top_logprobs"] = t
                    .top_logprobs
                    .iter()
                    .map(|&(id, lp)| entry(id, lp))
                    .collect();
                e
            })
            .collect();
        json!({ "content": content })
    }

    /// Completions' (legacy) `logprobs` object for `tokens`, `offset` characters in.
    fn completion_logprobs(&self, tokens: &[Token], mut offset: usize) -> Value {
        if !self.logprobs {
            return Value::Null;
        }
        let mut text_offset = vec![];
        for t in tokens {
            text_offset.push(offset);
            offset += t.text.chars().count();
        }
        json!({
            "tokens": tokens.iter().map(|t| self.piece(t.id)).collect::<Vec<_>>(),
            "token_logprobs": tokens.iter().map(|t| t.logprob).collect::<Vec<_>>(),
            "top_logprobs": tokens.iter().map(|t| {
                t.top_logprobs.iter().map(|&(id, lp)| (self.piece(id), json!(lp))).collect::<serde_json::Map<_, _>>()
            }).collect::<Vec<_>>(),
            "text_offset": text_offset,
        })
    }

    /// The non-streamed response, and its `finish_reason`.
    fn whole(&self, tokens: &[Token], done: &Finished) -> (Value, &'static str) {
        let (text, calls) = match self.tool_format {
            Some(format) => {
                let mut parser = ToolCallParser::new(format);
                let mut text: String = tokens.iter().map(|t| parser.push(t.id, &t.text)).collect();
                let ParsedOutput { content, calls } = parser.finish();
                text.push_str(&content);
                (text, calls)
            }
            None => (tokens.iter().map(|t| t.text.as_str()).collect(), vec![]),
        };
        let finish = finish_with_calls(&done.reason, &calls);
        let (object, choice) = match self.endpoint {
            Endpoint::Chat => {
                let mut message = json!({"role": "assistant", "content": text});
                if !calls.is_empty() {
                    if text.is_empty() {
                        message["content"] = Value::Null;
                    }
                    message["tool_calls"] = calls.iter().map(call_json).collect();
                }
                (
                    "chat.completion",
                    json!({
                        "index": 0,
                        "message": message,
                        "logprobs": self.chat_logprobs(tokens),
                        "finish_reason": finish,
                    }),
                )
            }
            Endpoint::Completions => (
                "text_completion",
                json!({
                    "index": 0,
                    "text": text,
                    "logprobs": self.completion_logprobs(tokens, 0),
                    "finish_reason": finish,
                }),
            ),
        };
        let body = json!({
            "id": self.id,
            "object": object,
            "created": self.created,
            "model": self.app.model,
            "choices": [choice],
            "usage": self.usage(done),
        });
        (body, finish)
    }

    /// One streamed chunk: a token (`token`), the first chunk of a chat (`role`), or the
    /// last (`finish`).
    fn chunk(
        &self,
        token: Option<&Token>,
        text: &str,
        first: bool,
        finish: Option<&str>,
        offset: usize,
    ) -> Value {
        let tokens = token.map(std::slice::from_ref).unwrap_or_default();
        let (object, choice) = match self.endpoint {
            Endpoint::Chat => {
                let delta = match (first, finish) {
                    (true, _) => json!({"role": "assistant", "content": ""}),
                    (false, Some(_)) => json!({}),
                    (false, None) => json!({"content": text}),
                };
                let logprobs = if token.is_some() {
                    self.chat_logprobs(tokens)
                } else {
                    Value::Null
                };
                (
                    "chat.completion.chunk",
                    json!({"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": finish}),
                )
            }
            Endpoint::Completions => {
                let logprobs = if token.is_some() {
                    self.completion_logprobs(tokens, offset)
                } else {
                    Value::Null
                };
                (
                    "text_completion",
                    json!({"index": 0, "text": text, "logprobs": logprobs, "finish_reason": finish}),
                )
            }
        };
        let mut chunk = json!({
            "id": self.id,
            "object": object,
            "created": self.created,
            "model": self.app.model,
            "choices": [choice],
        });
        if self.include_usage {
            chunk["usage"] = Value::Null;
        }
        chunk
    }

    /// The usage chunk after the last (`stream_options.include_usage`).
    fn usage_chunk(&self, done: &Finished) -> Value {
        let object = match self.endpoint {
            Endpoint::Chat => "chat.completion.chunk",
            Endpoint::Completions => "text_completion",
        };
        json!({
            "id": self.id,
            "object": object,
            "created": self.created,
            "model": self.app.model,
            "choices": [],
            "usage": self.usage(done),
        })
    }
}

/// The server-sent events of one request: chunks as tokens come, then `[DONE]`. Dropping it
/// (the client went away) cancels the request.
struct Events {
    rx: UnboundedReceiver<Event>,
    /// Splits tool calls from text, when the request offers tools.
    parser: Option<ToolCallParser>,
    meta: Meta,
    out: VecDeque<Sse>,
    started: bool,
    ended: bool,
    /// Characters of text streamed so far, for completions' `text_offset`.
    offset: usize,
    _cancel: CancelOnDrop,
}

impl Events {
    fn push(&mut self, value: &Value) {
        self.out.push_back(Sse::default().data(value.to_string()));
    }

    fn on(&mut self, event: Event) {
        if !self.started && self.meta.endpoint == Endpoint::Chat {
            let first = self.meta.chunk(None, "", true, None, 0);
            self.push(&first);
        }
        self.started = true;
        match event {
            Event::Token(t) => {
                let text = match &mut self.parser {
                    Some(parser) => parser.push(t.id, &t.text),
                    None => t.text.clone(),
                };
                // A token held back as a possible call says nothing yet (unless its
                // log-probability was asked for).
                if text.is_empty() && self.parser.is_some() && !self.meta.logprobs {
                    return;
                }
                let chunk = self.meta.chunk(Some(&t), &text, false, None, self.offset);
                self.offset += text.chars().count();
                self.push(&chunk);
            }
            Event::Done(done) => {
                let parsed = self.parser.take().map(ToolCallParser::finish);
                let ParsedOutput { content, calls } = parsed.unwrap_or_default();
                if !content.is_empty() {
                    let chunk = self.meta.chunk(None, &content, false, None, self.offset);
                    self.push(&chunk);
                }
                for (index, call) in calls.iter().enumerate() {
                    // A whole call per delta: clients join a call's `arguments` fragments,
                    // and one fragment is a valid sequence of them.
                    let mut delta = call_json(call);
                    delta["index"] = json!(index);
                    let mut chunk = self.meta.chunk(None, "", false, None, self.offset);
                    chunk["choices"][0]["delta"] = json!({"tool_calls": [delta]});
                    self.push(&chunk);
                }
                let finish = finish_with_calls(&done.reason, &calls);
                self.meta.log(&done, finish);
                let last = self.meta.chunk(None, "", false, Some(finish), self.offset);
                self.push(&last);
                if self.meta.include_usage {
                    let usage = self.meta.usage_chunk(&done);
                    self.push(&usage);
                }
                self.end();
            }
            Event::Error(e) => {
                let error = ApiError::internal(mixtral::error_chain(&*e)).body();
                self.push(&error);
                self.end();
            }
        }
    }

    fn end(&mut self) {
        self.out.push_back(Sse::default().data("[DONE]"));
        self.ended = true;
    }
}

impl tokio_stream::Stream for Events {
    type Item = Result<Sse, Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if let Some(e) = this.out.pop_front() {
                return Poll::Ready(Some(Ok(e)));
            }
            if this.ended {
                return Poll::Ready(None);
            }
            match this.rx.poll_recv(cx) {
                Poll::Ready(Some(event)) => this.on(event),
                Poll::Ready(None) => {
                    let error = ApiError::internal("the scheduler stopped").body();
                    this.push(&error);
                    this.end();
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}
