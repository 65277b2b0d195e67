//! `mixtral.Engine` and `mixtral.Session`.

use crate::errors::{invalid, to_py};
use crate::params::{self, GenerateKwargs};
use crate::results::{SessionSlot, Stream, generation_job};
use crate::steer;
use crate::worker::{self, Failure, Worker};
use mixtral::{CancelToken, LoadOptions, LogitsOptions, Prompt};
use pyo3::prelude::*;
use pyo3::types::PyDict;
use std::path::PathBuf;
use std::sync::Arc;

/// A loaded model: weights (memory-mapped), tokenizer, worker threads and generation
/// defaults. Every method releases the GIL while it computes, and Ctrl-C stops it.
///
/// Calls from several Python threads on one engine take turns, one forward pass at a time
/// (the engine's worker threads serve one call at a time); for many generations at once use
/// `engine.batch()`, which runs them together in every step.
#[pyclass(frozen, module = "mixtral", name = "Engine")]
pub(crate) struct Engine {
    pub(crate) inner: Arc<mixtral::Engine>,
}

/// `s` parsed by `T`'s `FromStr`, or an error naming the argument.
fn parse<T: std::str::FromStr>(name: &str, s: &str) -> PyResult<T>
where
    T::Err: std::fmt::Display,
{
    s.parse()
        .map_err(|e: T::Err| invalid(format!("{name}={s:?}: {e}")))
}

#[pymethods]
impl Engine {
    /// Loads `model`: a Hugging Face or Mistral directory, a `.gguf` file, a `.safetensors`
    /// file with its config beside it, or a Hugging Face repo id (as the CLI's `--model`).
    #[new]
    #[pyo3(signature = (
        model, *, device = "cpu", precision = "auto", threads = None, kv_dtype = None,
        quantize = None, batch_invariant = false, prefault = true, chat_format = "auto",
        repack = None
    ))]
    #[expect(
        clippy::too_many_arguments,
        reason = "the constructor's keyword arguments"
    )]
    fn new(
        py: Python<'_>,
        model: PathBuf,
        device: &str,
        precision: &str,
        threads: Option<usize>,
        kv_dtype: Option<&str>,
        quantize: Option<&str>,
        batch_invariant: bool,
        prefault: bool,
        chat_format: &str,
        repack: Option<bool>,
    ) -> PyResult<Engine> {
        let opts = LoadOptions {
            device: parse("device", device)?,
            threads,
            precision: parse("precision", precision)?,
            prefault,
            quantize: quantize.map(|q| parse("quantize", q)).transpose()?,
            kv_dtype: kv_dtype.map(|k| parse("kv_dtype", k)).transpose()?,
            batch_invariant,
            chat_format: parse("chat_format", chat_format)?,
            repack,
        };
        // Loading checks no token: Ctrl-C returns at once and the thread finishes (and drops
        // the engine) on its own.
        let loaded = worker::run(
            py,
            CancelToken::new(),
            Failure::default(),
            true,
            move || mixtral::Engine::load_with(&model, opts, |_, _| {}),
        )?;
        Ok(Engine {
            inner: Arc::new(loaded.map_err(|e| to_py(&e))?),
        })
    }

    /// Generates from `prompt` (a str, encoded with BOS first, or a list of token ids).
    /// Returns a `Completion`, or with `stream=True` a `Stream` of `TokenEvent`s.
    ///
    /// Keyword arguments (unset ones are the model's generation_config.json defaults, as the
    /// CLI's): max_tokens, temperature (0 is greedy), top_p, top_k, min_p,
    /// repetition_penalty, seed=0, stop (a str or a list), stop_token_ids, ignore_eos=False,
    /// top_logprobs=0, interventions (a list of Ablate, AblateExpert, Force, TopK),
    /// on_router (a function (layer, logits[T, E]) -> logits | None), stream=False.
    #[pyo3(signature = (prompt, **kwargs))]
    fn generate(
        &self,
        py: Python<'_>,
        prompt: &Bound<'_, PyAny>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Py<PyAny>> {
        let prompt = params::prompt(prompt)?;
        start(
            py,
            &self.inner,
            prompt,
            GenerateKwargs::parse(kwargs)?,
            None,
        )
    }

    /// Generates the assistant's answer to `messages` (`[{"role": …, "content": …}]`),
    /// rendered with the model's chat template; keyword arguments as `generate`'s.
    #[pyo3(signature = (messages, **kwargs))]
    fn chat(
        &self,
        py: Python<'_>,
        messages: &Bound<'_, PyAny>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Py<PyAny>> {
        let prompt = Prompt::Chat(params::messages(messages)?);
        start(
            py,
            &self.inner,
            prompt,
            GenerateKwargs::parse(kwargs)?,
            None,
        )
    }

    /// The token ids of `text`, BOS first unless `add_bos=False`.
    #[pyo3(signature = (text, *, add_bos = true))]
    fn tokenize(&self, py: Python<'_>, text: &str, add_bos: bool) -> PyResult<Vec<u32>> {
        let prompt = Prompt::Text(text.to_owned());
        let mut ids = py
            .detach(|| self.inner.encode(&prompt))
            .map_err(|e| to_py(&e))?;
        if !add_bos {
            ids.remove(0);
        }
        Ok(ids)
    }

    /// The text of `ids` (special tokens skipped).
    fn detokenize(&self, py: Python<'_>, ids: Vec<u32>) -> PyResult<String> {
        let tok = self.inner.require_tokenizer().map_err(|e| to_py(&e))?;
        py.detach(|| tok.decode(&ids)).map_err(|e| to_py(&e.into()))
    }

    /// Logits at every position of `tokens` (a fresh sequence; a str is encoded with BOS
    /// first), and what is asked to be recorded, under `interventions` and `on_router`:
    /// a dict of NumPy arrays, `logits` `[T, V]` float32, `router_logits` `[L, T, E]`
    /// float32 (after the interventions, before the softmax), `hidden_states` `[L+2, T, D]`
    /// float32 (0: embeddings, l+1: after layer l, L+1: after the final norm), `routing`
    /// `[L, T, K]` uint32 expert ids (most probable first) and `routing_weights` `[L, T, K]`
    /// float32. The arrays own the engine's buffers (no copy).
    #[pyo3(signature = (
        tokens, *, router_logits = false, hidden_states = false, routing = false,
        interventions = None, on_router = None
    ))]
    #[expect(clippy::too_many_arguments, reason = "the method's keyword arguments")]
    fn logits<'py>(
        &self,
        py: Python<'py>,
        tokens: &Bound<'py, PyAny>,
        router_logits: bool,
        hidden_states: bool,
        routing: bool,
        interventions: Option<&Bound<'py, PyAny>>,
        on_router: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let ids = match params::prompt(tokens)? {
            Prompt::Tokens(ids) => ids,
            text => py
                .detach(|| self.inner.encode(&text))
                .map_err(|e| to_py(&e))?,
        };
        let cancel = CancelToken::new();
        let failure = Failure::default();
        let on_router = on_router.map(params::callable).transpose()?.flatten();
        let opts = LogitsOptions {
            routing,
            router_logits,
            hidden_states,
            intervention: steer::intervention(py, interventions, on_router, &cancel, &failure)?,
            cancel: Some(cancel.clone()),
        };
        let engine = self.inner.clone();
        let out = worker::run(py, cancel, failure, false, move || {
            engine.logits(&ids, &opts)
        })?
        .map_err(|e| to_py(&e))?;
        crate::arrays::output_dict(py, out, self.inner.config().vocab_size)
    }

    /// An empty session: generations in it reuse the cached prefix of the previous one's
    /// tokens (a multi-turn chat computes only the new turn).
    fn session(&self) -> Session {
        Session {
            engine: self.inner.clone(),
            slot: Arc::new(SessionSlot::new(self.inner.session())),
        }
    }

    /// A batch scheduler over this engine: its `generate` and `chat` may be called from many
    /// Python threads at once, and their generations run together, one forward pass per
    /// step for all of them (`mixtral serve`'s scheduler).
    #[pyo3(signature = (
        *, max_batch = 16, kv_memory = None, max_queue = 256, prefill_chunk = 128,
        prefix_caching = None, reserve_max_tokens = false
    ))]
    #[expect(
        clippy::too_many_arguments,
        reason = "Python keyword arguments, one per BatchOptions field"
    )]
    fn batch(
        &self,
        max_batch: usize,
        kv_memory: Option<usize>,
        max_queue: usize,
        prefill_chunk: usize,
        prefix_caching: Option<bool>,
        reserve_max_tokens: bool,
    ) -> PyResult<crate::batch::Batch> {
        crate::batch::Batch::new(
            self.inner.clone(),
            mixtral::BatchOptions {
                max_batch,
                kv_memory,
                max_queue,
                prefill_chunk,
                prefix_caching,
                reserve_max_tokens,
            },
        )
    }

    /// The architecture, as `config.json` names it.
    #[getter]
    fn config<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let c = self.inner.config();
        let d = PyDict::new(py);
        d.set_item("vocab_size", c.vocab_size)?;
        d.set_item("hidden_size", c.hidden_size)?;
        d.set_item("intermediate_size", c.intermediate_size)?;
        d.set_item("num_hidden_layers", c.num_hidden_layers)?;
        d.set_item("num_attention_heads", c.num_attention_heads)?;
        d.set_item("num_key_value_heads", c.num_key_value_heads)?;
        d.set_item("head_dim", c.head_dim)?;
        d.set_item("num_local_experts", c.num_local_experts)?;
        d.set_item("num_experts_per_tok", c.num_experts_per_tok)?;
        d.set_item("rope_theta", c.rope_theta)?;
        d.set_item("rms_norm_eps", c.rms_norm_eps)?;
        d.set_item("max_position_embeddings", c.max_position_embeddings)?;
        d.set_item("sliding_window", c.sliding_window)?;
        d.set_item("tie_word_embeddings", c.tie_word_embeddings)?;
        d.set_item("bos_token_id", c.bos_token_id)?;
        d.set_item("eos_token_id", c.eos_token_id)?;
        Ok(d)
    }

    /// Where the model runs (`"cpu"`, `"cuda:0"`).
    #[getter]
    fn device(&self) -> String {
        self.inner.device().to_string()
    }

    /// Worker threads.
    #[getter]
    fn threads(&self) -> usize {
        self.inner.threads()
    }

    /// The model directory (or file).
    #[getter]
    fn path(&self) -> String {
        self.inner.dir().to_string_lossy().into_owned()
    }

    /// The token ids that end a generation (the model's EOS ids).
    #[getter]
    fn eos_token_ids(&self) -> Vec<u32> {
        self.inner.defaults().eos_token_ids.clone()
    }

    fn __repr__(&self) -> String {
        format!(
            "Engine(path={:?}, device={:?}, threads={})",
            self.inner.dir(),
            self.inner.device().to_string(),
            self.inner.threads()
        )
    }
}

/// One conversation's KV cache across generations. One generation at a time.
#[pyclass(frozen, module = "mixtral")]
pub(crate) struct Session {
    engine: Arc<mixtral::Engine>,
    slot: Arc<SessionSlot>,
}

#[pymethods]
impl Session {
    /// As `Engine.generate`, reusing this session's cached prefix.
    #[pyo3(signature = (prompt, **kwargs))]
    fn generate(
        &self,
        py: Python<'_>,
        prompt: &Bound<'_, PyAny>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Py<PyAny>> {
        let prompt = params::prompt(prompt)?;
        let kwargs = GenerateKwargs::parse(kwargs)?;
        start(py, &self.engine, prompt, kwargs, Some(self.slot.clone()))
    }

    /// As `Engine.chat`, reusing this session's cached prefix: send the whole conversation
    /// each turn, and only the new turn is computed.
    #[pyo3(signature = (messages, **kwargs))]
    fn chat(
        &self,
        py: Python<'_>,
        messages: &Bound<'_, PyAny>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Py<PyAny>> {
        let prompt = Prompt::Chat(params::messages(messages)?);
        let kwargs = GenerateKwargs::parse(kwargs)?;
        start(py, &self.engine, prompt, kwargs, Some(self.slot.clone()))
    }

    /// The token ids whose keys and values are cached.
    #[getter]
    fn ids(&self) -> PyResult<Vec<u32>> {
        self.slot.ids().ok_or_else(|| {
            crate::errors::BusyError::new_err("the session is in use by a generation")
        })
    }
}

/// Starts a generation of `prompt` on its own thread: a `Stream`, or its `Completion`.
fn start(
    py: Python<'_>,
    engine: &Arc<mixtral::Engine>,
    prompt: Prompt,
    kwargs: GenerateKwargs,
    session: Option<Arc<SessionSlot>>,
) -> PyResult<Py<PyAny>> {
    let cancel = CancelToken::new();
    let failure = Failure::default();
    let mut params = kwargs.sampling.params(engine);
    let interventions = kwargs.interventions.as_ref().map(|i| i.bind(py).clone());
    params.intervention = steer::intervention(
        py,
        interventions.as_ref(),
        kwargs.on_router,
        &cancel,
        &failure,
    )?;
    params.cancel = Some(cancel.clone());
    let job = generation_job(engine.clone(), prompt, params, session);
    Stream::new(Worker::spawn(cancel, failure, job)?, None).into_result(py, kwargs.stream)
}
