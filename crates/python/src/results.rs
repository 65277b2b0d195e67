//! What `generate` returns: a [`Completion`], or with `stream=True` a [`Stream`] of
//! [`TokenEvent`]s; and the thread that drives a generation ([`generation_job`]).

use crate::worker::Worker;
use mixtral::CancelToken;
use mixtral::{Engine, GenerateParams, Generation, Prompt};
use pyo3::prelude::*;
use pyo3::types::PyDict;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::mpsc::SyncSender;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// What a generation's thread sends.
pub(crate) enum GenEvent {
    /// The next token.
    Token(mixtral::Token),
    /// The end, after the last token.
    Done(Usage),
    /// The generation failed; nothing follows.
    Failed(Fail),
}

/// Why a generation failed.
pub(crate) enum Fail {
    /// The engine's error.
    Engine(Arc<mixtral::Error>),
    /// Its session is in use by another generation that is still running.
    Busy(&'static str),
    /// A panic in the engine (a bug): the message.
    Panic(String),
}

impl Fail {
    fn to_py(&self) -> PyErr {
        match self {
            Fail::Engine(e) => crate::errors::to_py(e),
            Fail::Busy(m) => crate::errors::BusyError::new_err(*m),
            Fail::Panic(m) => crate::errors::InternalError::new_err(format!(
                "the engine panicked (a bug; please report it): {m}"
            )),
        }
    }
}

/// The message of a caught panic.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    match (
        payload.downcast_ref::<&str>(),
        payload.downcast_ref::<String>(),
    ) {
        (Some(s), _) => (*s).to_owned(),
        (_, Some(s)) => s.clone(),
        _ => "(no message)".into(),
    }
}

/// Token counts and timings of one generation.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Usage {
    pub reason: &'static str,
    pub prompt_tokens: usize,
    /// Prompt tokens reused from a session's cache.
    pub cached_tokens: usize,
    pub completion_tokens: usize,
    pub prefill_s: f64,
    pub decode_s: f64,
}

impl Usage {
    fn to_dict<'py>(self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        d.set_item("prompt_tokens", self.prompt_tokens)?;
        d.set_item("completion_tokens", self.completion_tokens)?;
        d.set_item("total_tokens", self.prompt_tokens + self.completion_tokens)?;
        d.set_item("cached_tokens", self.cached_tokens)?;
        d.set_item("prefill_seconds", self.prefill_s)?;
        d.set_item("decode_seconds", self.decode_s)?;
        Ok(d)
    }
}

/// A session's cache, lent to one generation at a time.
#[derive(Default)]
pub(crate) struct SessionSlot {
    state: Mutex<Lent>,
    returned: Condvar,
}

#[derive(Default)]
struct Lent {
    /// `None` while a generation holds it.
    session: Option<mixtral::Session>,
    /// That generation's token.
    holder: Option<CancelToken>,
}

/// How long a generation waits for a cancelled one (a dropped stream) to give its session
/// back: it does within one layer, so this only bounds a bug.
const GIVE_BACK: Duration = Duration::from_secs(60);

impl SessionSlot {
    pub(crate) fn new(session: mixtral::Session) -> SessionSlot {
        SessionSlot {
            state: Mutex::new(Lent {
                session: Some(session),
                holder: None,
            }),
            returned: Condvar::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Lent> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The session, for the generation `cancel` stops. A generation that was cancelled (its
    /// stream dropped) is waited for; one still running is an error.
    fn lend(&self, cancel: &CancelToken) -> Result<mixtral::Session, Fail> {
        let mut lent = self.lock();
        let deadline = Instant::now() + GIVE_BACK;
        loop {
            if let Some(session) = lent.session.take() {
                lent.holder = Some(cancel.clone());
                return Ok(session);
            }
            let cancelled = lent.holder.as_ref().is_some_and(CancelToken::is_cancelled);
            let left = deadline.saturating_duration_since(Instant::now());
            if !cancelled || left.is_zero() {
                return Err(Fail::Busy(
                    "the session is in use by another generation (one at a time: finish, \
                     cancel or drop its stream first)",
                ));
            }
            lent = self
                .returned
                .wait_timeout(lent, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    fn give_back(&self, session: mixtral::Session) {
        let mut lent = self.lock();
        lent.session = Some(session);
        lent.holder = None;
        self.returned.notify_all();
    }

    /// The cached ids, unless a generation holds the session.
    pub(crate) fn ids(&self) -> Option<Vec<u32>> {
        self.lock().session.as_ref().map(|s| s.ids().to_vec())
    }
}

/// The thread body of a generation of `prompt` (in `session` when given): its tokens, then
/// `Done`, or `Failed`. It stops when the receiver is gone. A panic in the engine fails the
/// generation (and gives the session back empty: its cache may be half-written).
pub(crate) fn generation_job(
    engine: Arc<Engine>,
    prompt: Prompt,
    params: GenerateParams,
    session: Option<Arc<SessionSlot>>,
) -> impl FnOnce(SyncSender<GenEvent>) + Send + 'static {
    move |tx| {
        let cancel = params.cancel.clone().unwrap_or_default();
        let run = |s: Option<&mut mixtral::Session>| {
            catch_unwind(AssertUnwindSafe(|| {
                match s {
                    Some(s) => engine.generate_in(s, &prompt, &params),
                    None => engine.generate(&prompt, &params),
                }
                .and_then(|g| drive(g, &tx))
                .map_err(|e| Fail::Engine(Arc::new(e)))
            }))
        };
        let outcome = match &session {
            None => run(None),
            Some(slot) => match slot.lend(&cancel) {
                Err(fail) => Ok(Err(fail)),
                Ok(mut s) => {
                    let outcome = run(Some(&mut s));
                    slot.give_back(if outcome.is_ok() { s } else { engine.session() });
                    outcome
                }
            },
        };
        // Sent after the session is back in its slot: the caller may use it at once.
        let _ = tx.send(match outcome {
            Ok(Ok(usage)) => GenEvent::Done(usage),
            Ok(Err(fail)) => GenEvent::Failed(fail),
            Err(panic) => GenEvent::Failed(Fail::Panic(panic_message(&*panic))),
        });
    }
}

/// Sends `generation`'s tokens; returns its usage.
fn drive(mut generation: Generation<'_>, tx: &SyncSender<GenEvent>) -> mixtral::Result<Usage> {
    for token in generation.by_ref() {
        if tx.send(GenEvent::Token(token?)).is_err() {
            // The receiver is gone: nobody reads the usage.
            generation.interrupt();
            break;
        }
    }
    let stats = generation.stats();
    Ok(Usage {
        reason: generation.finish_reason().map_or("stop", |r| r.as_str()),
        prompt_tokens: stats.prompt_tokens,
        cached_tokens: stats.prompt_tokens - stats.prefill_tokens,
        completion_tokens: stats.generated_tokens,
        prefill_s: stats.prefill_time.as_secs_f64(),
        decode_s: stats.decode_time.as_secs_f64(),
    })
}

/// One generated token.
#[pyclass(frozen, module = "mixtral")]
pub(crate) struct TokenEvent {
    /// Its id.
    #[pyo3(get)]
    id: u32,
    /// The text it completes, safe to print now (empty while a multi-byte character or a
    /// possible stop string is held back).
    #[pyo3(get)]
    text: String,
    /// Its log-probability under the sampling distribution's model logits.
    #[pyo3(get)]
    logprob: f32,
    /// The most likely alternatives, `[(id, logprob)]`, when `top_logprobs` was asked for.
    #[pyo3(get)]
    top_logprobs: Vec<(u32, f32)>,
}

#[pymethods]
impl TokenEvent {
    fn __repr__(&self) -> String {
        format!(
            "TokenEvent(id={}, text={:?}, logprob={:.4})",
            self.id, self.text, self.logprob
        )
    }
}

impl From<mixtral::Token> for TokenEvent {
    fn from(t: mixtral::Token) -> TokenEvent {
        TokenEvent {
            id: t.id,
            text: t.text,
            logprob: t.logprob,
            top_logprobs: t.top_logprobs,
        }
    }
}

/// A finished generation.
#[pyclass(frozen, module = "mixtral")]
pub(crate) struct Completion {
    /// The generated text (stop strings removed).
    #[pyo3(get)]
    text: String,
    /// The generated ids.
    #[pyo3(get)]
    token_ids: Vec<u32>,
    /// Each generated token's log-probability.
    #[pyo3(get)]
    logprobs: Vec<f32>,
    /// `"stop"` (EOS, a stop string or token), `"length"` (`max_tokens` or the context) or
    /// `"interrupted"`.
    #[pyo3(get)]
    finish_reason: &'static str,
    usage: Usage,
}

#[pymethods]
impl Completion {
    /// `{"prompt_tokens", "completion_tokens", "total_tokens", "cached_tokens",
    /// "prefill_seconds", "decode_seconds"}`.
    #[getter]
    fn usage<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        self.usage.to_dict(py)
    }

    fn __repr__(&self) -> String {
        format!(
            "Completion(text={:?}, finish_reason={:?}, tokens={})",
            self.text,
            self.finish_reason,
            self.token_ids.len()
        )
    }
}

/// The tokens of a running generation, as they are computed: iterate it (`for event in
/// stream`). Once it is exhausted, `finish_reason` and `usage` are set. `cancel()` (from any
/// thread), dropping it, or Ctrl-C while it waits stops the generation.
#[pyclass(frozen, module = "mixtral")]
pub(crate) struct Stream {
    worker: Worker<GenEvent>,
    usage: Mutex<Option<Usage>>,
    /// What must outlive the generation (the `Batch` whose scheduler runs it).
    _owner: Option<Py<PyAny>>,
}

impl Stream {
    pub(crate) fn new(worker: Worker<GenEvent>, owner: Option<Py<PyAny>>) -> Stream {
        Stream {
            worker,
            usage: Mutex::new(None),
            _owner: owner,
        }
    }

    fn usage_now(&self) -> Option<Usage> {
        *self.usage.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The next token, `None` at the end.
    fn next_token(&self, py: Python<'_>) -> PyResult<Option<mixtral::Token>> {
        match self.worker.next(py)? {
            Some(GenEvent::Token(t)) => Ok(Some(t)),
            Some(GenEvent::Done(usage)) => {
                *self.usage.lock().unwrap_or_else(|p| p.into_inner()) = Some(usage);
                Ok(None)
            }
            Some(GenEvent::Failed(fail)) => Err(fail.to_py()),
            // Ended before (a second `next` after the end) or without a word (a bug).
            None if self.usage_now().is_some() => Ok(None),
            None => Err(crate::errors::InternalError::new_err(
                "the generation's thread ended without finishing (a panic in the engine)",
            )),
        }
    }

    /// What a `generate` call returns: this stream, or with `stream=False` its completion.
    pub(crate) fn into_result(self, py: Python<'_>, stream: bool) -> PyResult<Py<PyAny>> {
        if stream {
            Ok(Py::new(py, self)?.into_any())
        } else {
            Ok(Py::new(py, self.complete(py)?)?.into_any())
        }
    }

    /// Runs the generation to its end.
    fn complete(self, py: Python<'_>) -> PyResult<Completion> {
        let (mut text, mut token_ids, mut logprobs) = (String::new(), vec![], vec![]);
        while let Some(t) = self.next_token(py)? {
            text.push_str(&t.text);
            token_ids.push(t.id);
            logprobs.push(t.logprob);
        }
        let usage = self.usage_now().unwrap_or_default();
        Ok(Completion {
            text,
            token_ids,
            logprobs,
            finish_reason: usage.reason,
            usage,
        })
    }
}

#[pymethods]
impl Stream {
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__(&self, py: Python<'_>) -> PyResult<Option<TokenEvent>> {
        Ok(self.next_token(py)?.map(TokenEvent::from))
    }

    /// Why the generation ended, once it has (`None` before).
    #[getter]
    fn finish_reason(&self) -> Option<&'static str> {
        self.usage_now().map(|u| u.reason)
    }

    /// Token counts and timings, once the generation has ended (`None` before).
    #[getter]
    fn usage<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyDict>>> {
        self.usage_now().map(|u| u.to_dict(py)).transpose()
    }

    /// Stops the generation, from any thread: it ends after the current token
    /// (`finish_reason` "interrupted"), or, during the prompt, the stream raises
    /// `CancelledError`.
    fn cancel(&self) {
        self.worker.cancel();
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.worker.cancel();
    }
}
