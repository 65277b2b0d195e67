//! Python exceptions: `MixtralError`, and one subclass per [`mixtral::ErrorKind`].

use mixtral::ErrorKind;
use pyo3::prelude::*;

pyo3::create_exception!(
    mixtral,
    MixtralError,
    pyo3::exceptions::PyException,
    "Every error the engine raises (its subclasses say which kind)."
);
pyo3::create_exception!(
    mixtral,
    ModelFilesError,
    MixtralError,
    "The model files: missing, unreadable, malformed, or not a Mixtral checkpoint."
);
pyo3::create_exception!(
    mixtral,
    InvalidInputError,
    MixtralError,
    "A request's input or parameters: tokens, prompt, messages, sampling, options, context."
);
pyo3::create_exception!(
    mixtral,
    BusyError,
    MixtralError,
    "No room now (a batch's queue is full): retry later."
);
pyo3::create_exception!(mixtral, CancelledError, MixtralError, "Stopped on request.");
pyo3::create_exception!(mixtral, DeviceError, MixtralError, "The GPU or its driver.");
pyo3::create_exception!(
    mixtral,
    InternalError,
    MixtralError,
    "The engine itself: threads, a stopped batch."
);

/// Adds the exception types to the module.
pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("MixtralError", py.get_type::<MixtralError>())?;
    m.add("ModelFilesError", py.get_type::<ModelFilesError>())?;
    m.add("InvalidInputError", py.get_type::<InvalidInputError>())?;
    m.add("BusyError", py.get_type::<BusyError>())?;
    m.add("CancelledError", py.get_type::<CancelledError>())?;
    m.add("DeviceError", py.get_type::<DeviceError>())?;
    m.add("InternalError", py.get_type::<InternalError>())?;
    Ok(())
}

/// The exception for a facade error, of the class of its kind.
pub(crate) fn to_py(e: &mixtral::Error) -> PyErr {
    let message = mixtral::error_chain(e);
    match e.kind() {
        ErrorKind::ModelFiles => ModelFilesError::new_err(message),
        ErrorKind::InvalidInput => InvalidInputError::new_err(message),
        ErrorKind::Busy => BusyError::new_err(message),
        ErrorKind::Cancelled => CancelledError::new_err(message),
        ErrorKind::Device => DeviceError::new_err(message),
        _ => InternalError::new_err(message),
    }
}

/// An [`InvalidInputError`] for an argument the binding itself checks.
pub(crate) fn invalid(message: impl Into<String>) -> PyErr {
    InvalidInputError::new_err(message.into())
}
