//! `mixtral.Batch`: the batch scheduler, for many generations at once from Python threads.

use crate::errors::to_py;
use crate::params::{self, GenerateKwargs};
use crate::results::{Fail, GenEvent, Stream, Usage};
use crate::worker::{Failure, Worker};
use mixtral::{BatchOptions, Event, Prompt, Scheduler};
use pyo3::prelude::*;
use pyo3::types::PyDict;
use std::sync::Arc;

/// A batch scheduler (from `Engine.batch()`): `generate` and `chat` as the engine's, safe to
/// call from many Python threads at once; the running generations share every forward pass.
/// Each sequence samples from its own logits with its own seed; its tokens equal the
/// engine's alone to about one ulp of the logits (bit for bit with `batch_invariant=True`).
/// Router interventions are not batched (use `Engine.generate`).
#[pyclass(frozen, module = "mixtral")]
pub(crate) struct Batch {
    /// Taken out when the batch is dropped, to be shut down with the GIL released.
    scheduler: Option<Scheduler>,
}

impl Batch {
    pub(crate) fn new(engine: Arc<mixtral::Engine>, opts: BatchOptions) -> PyResult<Batch> {
        Ok(Batch {
            scheduler: Some(Scheduler::new(engine, opts).map_err(|e| to_py(&e))?),
        })
    }

    fn scheduler(&self) -> &Scheduler {
        self.scheduler
            .as_ref()
            .expect("only Drop takes the scheduler")
    }

    /// Submits `prompt`; the stream keeps `slf` (and so the scheduler) alive.
    fn submit(
        slf: &Bound<'_, Self>,
        prompt: Prompt,
        kwargs: GenerateKwargs,
    ) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        let this = slf.get();
        let steer = crate::steer::intervention(
            py,
            kwargs.interventions.as_ref().map(|i| i.bind(py)),
            kwargs.on_router.as_ref().map(|f| f.clone_ref(py)),
            &mixtral::CancelToken::new(),
            &Failure::default(),
        )?;
        if !steer.is_none() {
            return Err(crate::errors::invalid(
                "interventions and on_router are not batched: use Engine.generate",
            ));
        }
        let engine = this.scheduler().engine();
        let params = kwargs.sampling.params(engine);
        let ids = py
            .detach(|| engine.encode(&prompt))
            .map_err(|e| to_py(&e))?;
        let prompt_tokens = ids.len();
        // The scheduler calls the sink on its thread; the stream's worker thread only holds
        // the channel open until the request ends.
        let (tx, rx) = std::sync::mpsc::channel::<Event>();
        let sink: mixtral::Sink = Box::new(move |event| tx.send(event).is_ok());
        let cancel = this
            .scheduler()
            .submit_with(ids, &params, sink)
            .map_err(|e| to_py(&e))?;
        let worker = Worker::spawn(cancel.clone(), Failure::default(), move |out| {
            for event in rx {
                let (message, last) = match event {
                    Event::Token(t) => (GenEvent::Token(t), false),
                    Event::Done(done) => {
                        let first = done.time_to_first_token.map_or(0.0, |d| d.as_secs_f64());
                        let usage = Usage {
                            reason: done.reason.as_str(),
                            prompt_tokens,
                            cached_tokens: done.cached_tokens,
                            completion_tokens: done.generated_tokens,
                            prefill_s: first,
                            decode_s: done.total_time.as_secs_f64() - first,
                        };
                        (GenEvent::Done(usage), true)
                    }
                    Event::Error(e) => (GenEvent::Failed(Fail::Engine(e)), true),
                };
                if out.send(message).is_err() {
                    cancel.cancel();
                    return;
                }
                if last {
                    return;
                }
            }
        })?;
        Stream::new(worker, Some(slf.clone().unbind().into_any())).into_result(py, kwargs.stream)
    }
}

#[pymethods]
impl Batch {
    /// As `Engine.generate` (without interventions), batched with the other running
    /// generations.
    #[pyo3(signature = (prompt, **kwargs))]
    fn generate(
        slf: &Bound<'_, Self>,
        prompt: &Bound<'_, PyAny>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Py<PyAny>> {
        let prompt = params::prompt(prompt)?;
        Batch::submit(slf, prompt, GenerateKwargs::parse(kwargs)?)
    }

    /// As `Engine.chat` (without interventions), batched with the other running generations.
    #[pyo3(signature = (messages, **kwargs))]
    fn chat(
        slf: &Bound<'_, Self>,
        messages: &Bound<'_, PyAny>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Py<PyAny>> {
        let prompt = Prompt::Chat(params::messages(messages)?);
        Batch::submit(slf, prompt, GenerateKwargs::parse(kwargs)?)
    }

    /// `{"queued", "active", "kv_blocks_used", "kv_blocks_cached", "kv_blocks_total",
    /// "requests_total", "generated_tokens_total", "prefix_caching", "prefix_cache_queries",
    /// "prefix_cache_hits", "prefix_cache_tokens", "preemptions"}`.
    #[getter]
    fn metrics<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let m = self.scheduler().metrics();
        let d = PyDict::new(py);
        d.set_item("queued", m.queued)?;
        d.set_item("active", m.active)?;
        d.set_item("kv_blocks_used", m.kv_blocks_used)?;
        d.set_item("kv_blocks_cached", m.kv_blocks_cached)?;
        d.set_item("kv_blocks_total", m.kv_blocks_total)?;
        d.set_item("requests_total", m.requests_total)?;
        d.set_item("generated_tokens_total", m.generated_tokens_total)?;
        d.set_item("prefix_caching", m.prefix_caching)?;
        d.set_item("preemptions", m.preemptions)?;
        d.set_item("prefix_cache_queries", m.prefix_cache_queries)?;
        d.set_item("prefix_cache_hits", m.prefix_cache_hits)?;
        d.set_item("prefix_cache_tokens", m.prefix_cache_tokens)?;
        Ok(d)
    }
}

impl Drop for Batch {
    /// Drops the scheduler (which cancels what is left and joins its thread) with the GIL
    /// released: the thread's current step may be waiting for the GIL itself (a hooked call
    /// on the same engine).
    fn drop(&mut self) {
        if let Some(scheduler) = self.scheduler.take() {
            Python::attach(|py| py.detach(move || drop(scheduler)));
        }
    }
}
