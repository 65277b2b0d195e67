//! [`mixtral::Output`] as NumPy arrays. Each array takes over the engine's `Vec` (no copy);
//! the reshape is a view of it.

use mixtral::{Output, Recorded, RoutingTrace};
use numpy::{IntoPyArray, PyArrayMethods};
use pyo3::prelude::*;
use pyo3::types::PyDict;

/// `{"logits": [T, V], "router_logits": [L, T, E], "hidden_states": [L+2, T, D],
/// "routing": [L, T, K] expert ids, "routing_weights": [L, T, K]}`, the recorded ones only.
pub(crate) fn output_dict<'py>(
    py: Python<'py>,
    out: Output,
    vocab: usize,
) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    let rows = out.rows;
    d.set_item(
        "logits",
        out.logits.into_pyarray(py).reshape([rows, vocab])?,
    )?;
    if let Some(r) = out.router_logits {
        d.set_item("router_logits", recorded(py, r)?)?;
    }
    if let Some(h) = out.hidden_states {
        d.set_item("hidden_states", recorded(py, h)?)?;
    }
    if let Some(trace) = out.routing {
        let (experts, weights) = routing(py, trace)?;
        d.set_item("routing", experts)?;
        d.set_item("routing_weights", weights)?;
    }
    Ok(d)
}

fn recorded<'py>(py: Python<'py>, r: Recorded) -> PyResult<Bound<'py, PyAny>> {
    Ok(r.data.into_pyarray(py).reshape(r.dims)?.into_any())
}

/// The trace's per-layer `[T, K]` tables stacked into `[L, T, K]` arrays.
fn routing<'py>(
    py: Python<'py>,
    trace: RoutingTrace,
) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyAny>)> {
    let k = trace.top_k;
    let t = trace.n_tokens();
    let l = trace.layers.len();
    let mut experts = Vec::with_capacity(l * t * k);
    let mut weights = Vec::with_capacity(l * t * k);
    for layer in trace.layers {
        experts.extend(layer.experts);
        weights.extend(layer.weights);
    }
    Ok((
        experts.into_pyarray(py).reshape([l, t, k])?.into_any(),
        weights.into_pyarray(py).reshape([l, t, k])?.into_any(),
    ))
}
