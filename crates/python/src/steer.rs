//! Router interventions as Python values (`Ablate`, `AblateExpert`, `Force`, `TopK`) and the
//! `on_router` hook, turned into one [`mixtral::Intervention`].

use crate::worker::Failure;
use mixtral::{CancelToken, ForceRouting, Intervention, RouterLogits};
use numpy::{AllowTypeChange, PyArray1, PyArrayLike2, PyArrayMethods, PyUntypedArrayMethods};
use pyo3::prelude::*;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Remove expert `expert` of layer `layer`: its router logit becomes −inf before the
/// softmax, so the top-k is taken among the rest.
#[pyclass(frozen, eq, hash, module = "mixtral")]
#[derive(Clone, PartialEq, Eq, Hash)]
pub(crate) struct Ablate {
    /// The layer.
    #[pyo3(get)]
    layer: usize,
    /// The expert removed there.
    #[pyo3(get)]
    expert: usize,
}

#[pymethods]
impl Ablate {
    #[new]
    fn new(layer: usize, expert: usize) -> Ablate {
        Ablate { layer, expert }
    }

    fn __repr__(&self) -> String {
        format!("Ablate(layer={}, expert={})", self.layer, self.expert)
    }
}

/// Remove expert `expert` in every layer.
#[pyclass(frozen, eq, hash, module = "mixtral")]
#[derive(Clone, PartialEq, Eq, Hash)]
pub(crate) struct AblateExpert {
    /// The expert removed.
    #[pyo3(get)]
    expert: usize,
}

#[pymethods]
impl AblateExpert {
    #[new]
    fn new(expert: usize) -> AblateExpert {
        AblateExpert { expert }
    }

    fn __repr__(&self) -> String {
        format!("AblateExpert(expert={})", self.expert)
    }
}

/// Route the tokens at absolute `positions` of layer `layer` to exactly `experts` (in that
/// order, as many as experts per token), weighted by the softmax over their own logits.
#[pyclass(frozen, eq, module = "mixtral")]
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Force {
    /// The layer.
    #[pyo3(get)]
    layer: usize,
    /// Absolute positions in the sequence.
    #[pyo3(get)]
    positions: Vec<usize>,
    /// The experts chosen there.
    #[pyo3(get)]
    experts: Vec<u32>,
}

#[pymethods]
impl Force {
    #[new]
    fn new(layer: usize, positions: Vec<usize>, experts: Vec<u32>) -> Force {
        Force {
            layer,
            positions,
            experts,
        }
    }

    fn __repr__(&self) -> String {
        format!(
            "Force(layer={}, positions={:?}, experts={:?})",
            self.layer, self.positions, self.experts
        )
    }
}

/// Route every token of every layer to `k` experts (1 … E) instead of the model's number.
#[pyclass(frozen, eq, hash, module = "mixtral")]
#[derive(Clone, PartialEq, Eq, Hash)]
pub(crate) struct TopK {
    /// Experts per token.
    #[pyo3(get)]
    k: usize,
}

#[pymethods]
impl TopK {
    #[new]
    fn new(k: usize) -> TopK {
        TopK { k }
    }

    fn __repr__(&self) -> String {
        format!("TopK(k={})", self.k)
    }
}

/// Set by an `atexit` handler (registered when the module is imported): from then on no
/// engine thread takes the GIL, so a computation still running while the interpreter shuts
/// down never calls into it (its hooks are skipped and it is cancelled).
pub(crate) static EXITING: AtomicBool = AtomicBool::new(false);

/// The [`Intervention`] of a list of intervention values and an optional router hook.
/// The model checks the values' ranges (layers, experts, `k`) when it runs.
pub(crate) fn intervention(
    py: Python<'_>,
    values: Option<&Bound<'_, PyAny>>,
    on_router: Option<Py<PyAny>>,
    cancel: &CancelToken,
    failure: &Failure,
) -> PyResult<Intervention> {
    let mut out = Intervention::default();
    if let Some(values) = values {
        for value in values.try_iter()? {
            let value = value?;
            if let Ok(a) = value.cast::<Ablate>() {
                let a = a.get();
                out.ablate.push((a.layer, a.expert));
            } else if let Ok(a) = value.cast::<AblateExpert>() {
                out.ablate_everywhere.push(a.get().expert);
            } else if let Ok(f) = value.cast::<Force>() {
                let f = f.get();
                out.force.push(ForceRouting {
                    layer: f.layer,
                    positions: f.positions.clone(),
                    experts: f.experts.clone(),
                });
            } else if let Ok(k) = value.cast::<TopK>() {
                if out.experts_per_token.replace(k.get().k).is_some() {
                    return Err(crate::errors::invalid(
                        "interventions: more than one TopK (give one)",
                    ));
                }
            } else {
                return Err(pyo3::exceptions::PyTypeError::new_err(format!(
                    "interventions: expected Ablate, AblateExpert, Force or TopK, got {}",
                    value.get_type().name()?
                )));
            }
        }
    }
    if let Some(callback) = on_router {
        let with_positions = takes_positions(callback.bind(py))?;
        out.hook = Some(router_hook(
            callback,
            with_positions,
            cancel.clone(),
            failure.clone(),
        ));
    }
    Ok(out)
}

/// Whether `callback` takes a third argument (the rows' positions): decided once, with
/// `inspect.signature(callback).bind(0, None, None)`.
fn takes_positions(callback: &Bound<'_, PyAny>) -> PyResult<bool> {
    let py = callback.py();
    let signature = match py.import("inspect")?.call_method1("signature", (callback,)) {
        Ok(s) => s,
        // Builtins without a signature: called with two arguments.
        Err(_) => return Ok(false),
    };
    Ok(signature
        .call_method1("bind", (0, py.None(), py.None()))
        .is_ok())
}

/// A [`mixtral::RouterHook`] that calls `callback(layer, logits)` (or `callback(layer,
/// logits, positions)`) with each layer's `[T, E]` router logits as a NumPy array (a copy:
/// the engine's buffer does not outlive the call). The callback edits the array in place
/// and returns `None`, or returns a new `[T, E]` array-like; either is checked and copied
/// back. An exception (or a wrong shape) is kept in `failure` and cancels the computation,
/// whose caller raises it.
fn router_hook(
    callback: Py<PyAny>,
    with_positions: bool,
    cancel: CancelToken,
    failure: Failure,
) -> mixtral::RouterHook {
    Arc::new(move |r: &mut RouterLogits<'_>| {
        if failure.is_set() || cancel.is_cancelled() {
            return;
        }
        if EXITING.load(Ordering::Relaxed) {
            cancel.cancel();
            return;
        }
        let called = Python::try_attach(|py| {
            crate::worker::in_hook(|| call_hook(py, &callback, with_positions, r))
        });
        match called {
            Some(Ok(())) => {}
            Some(Err(err)) => {
                failure.set(err);
                cancel.cancel();
            }
            // The interpreter is shutting down.
            None => cancel.cancel(),
        }
    })
}

fn call_hook(
    py: Python<'_>,
    callback: &Py<PyAny>,
    with_positions: bool,
    r: &mut RouterLogits<'_>,
) -> PyResult<()> {
    let e = r.n_experts;
    let t = r.logits.len() / e.max(1);
    let array = PyArray1::from_slice(py, r.logits).reshape([t, e])?;
    let returned = if with_positions {
        let positions = PyArray1::from_iter(py, r.positions.iter().map(|&p| p as u64));
        callback.call1(py, (r.layer, array.clone(), positions))?
    } else {
        callback.call1(py, (r.layer, array.clone()))?
    };
    let returned = returned.bind(py);
    // `None`: the array was edited in place. It is read back through the same checks as a
    // returned one: the callback may have changed its dtype or shape.
    let edited = if returned.is_none() {
        array.into_any()
    } else {
        returned.clone()
    };
    let edited: PyArrayLike2<'_, f32, AllowTypeChange> = edited.extract().map_err(|_| {
        crate::errors::invalid(format!(
            "on_router(layer={}) returned {}, not None or a [{t}, {e}] array of numbers",
            r.layer,
            returned
                .get_type()
                .name()
                .map_or_else(|_| "?".into(), |n| n.to_string())
        ))
    })?;
    if edited.shape() != [t, e] {
        return Err(crate::errors::invalid(format!(
            "on_router(layer={}) left an array of shape {:?}; expected [{t}, {e}] (tokens, experts)",
            r.layer,
            edited.shape()
        )));
    }
    for (dst, src) in r.logits.iter_mut().zip(edited.as_array().iter()) {
        *dst = *src;
    }
    Ok(())
}
