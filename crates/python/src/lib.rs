//! The `mixtral` Python module: the engine's facade ([`mixtral::Engine`]) for research code.
//!
//! It adds no second engine: every call goes through the facade a Rust user calls, on a
//! thread of its own while the GIL is released, so other Python threads run and Ctrl-C
//! (`KeyboardInterrupt`) stops a computation within one layer ([`worker`]). Results come back
//! as NumPy arrays that own the engine's buffers (no copy, [`arrays`]).

mod arrays;
mod batch;
mod engine;
mod errors;
mod params;
mod results;
mod steer;
mod worker;

use pyo3::prelude::*;

/// `import mixtral`.
#[pymodule(name = "mixtral")]
fn mixtral_module(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_class::<engine::Engine>()?;
    m.add_class::<engine::Session>()?;
    m.add_class::<batch::Batch>()?;
    m.add_class::<results::Completion>()?;
    m.add_class::<results::TokenEvent>()?;
    m.add_class::<results::Stream>()?;
    m.add_class::<steer::Ablate>()?;
    m.add_class::<steer::AblateExpert>()?;
    m.add_class::<steer::Force>()?;
    m.add_class::<steer::TopK>()?;
    errors::register(m)?;
    // At exit, engine threads stop taking the GIL (steer::EXITING).
    let at_exit = pyo3::types::PyCFunction::new_closure(
        m.py(),
        Some(c"_mixtral_at_exit"),
        None,
        |_args, _kwargs| {
            steer::EXITING.store(true, std::sync::atomic::Ordering::Relaxed);
        },
    )?;
    m.py()
        .import("atexit")?
        .call_method1("register", (at_exit,))?;
    Ok(())
}
