//! Errors of the CUDA backend: a missing driver or NVRTC, compile errors with NVRTC's log,
//! shapes the kernels cannot take, and out-of-memory with the bytes asked for.

use cudarc::driver::DriverError;

/// Everything the CUDA backend can report. Nothing here panics on user input: cudarc's own
/// panics (a missing library) are probed for first and contained as a second guard.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No CUDA driver library could be loaded (a machine without an NVIDIA GPU).
    #[error("no CUDA driver: could not load {}", tried.join(", "))]
    NoDriver {
        /// The library names and paths tried, each with the loader's reason.
        tried: Vec<String>,
    },
    /// NVRTC (`libnvrtc.so.13`) could not be loaded, and no precompiled PTX was found.
    #[error(
        "no NVRTC: could not load {}; set MIXTRAL_CUDA_ROOT to a CUDA 13 folder with \
         lib/libnvrtc.so.13, or MIXTRAL_CUDA_PTX_DIR to PTX written by `cargo xtask gpu-check`",
        tried.join(", ")
    )]
    NoNvrtc {
        /// The library names and paths tried, each with the loader's reason.
        tried: Vec<String>,
    },
    /// The driver loaded but has no device with this ordinal.
    #[error("no CUDA device {ordinal} (the driver reports {count})")]
    NoDevice {
        /// The ordinal asked for.
        ordinal: usize,
        /// Devices the driver sees.
        count: usize,
    },
    /// cudarc panicked (it does so when a library or symbol is missing); the panic was caught.
    #[error("{what}: the CUDA library panicked: {message}")]
    Panicked {
        /// What was being done.
        what: &'static str,
        /// The panic message.
        message: String,
    },
    /// A CUDA driver call failed.
    #[error("{what}: CUDA driver error")]
    Driver {
        /// What was being done.
        what: String,
        /// The driver's error.
        #[source]
        source: DriverError,
    },
    /// A device allocation did not fit.
    #[error(
        "out of GPU memory: {what} needs {bytes} bytes ({:.2} GiB); {free} of {total} bytes free",
        *bytes as f64 / (1u64 << 30) as f64
    )]
    OutOfMemory {
        /// What the memory was for.
        what: String,
        /// Bytes asked for.
        bytes: usize,
        /// Free device memory when it failed (0 when unknown).
        free: usize,
        /// Total device memory (0 when unknown).
        total: usize,
    },
    /// NVRTC rejected a kernel source.
    #[error("{file} ({arch}): NVRTC compile error:\n{log}")]
    Compile {
        /// The kernel file, e.g. `moe.cu`.
        file: &'static str,
        /// The target, e.g. `compute_90`.
        arch: String,
        /// NVRTC's log.
        log: String,
    },
    /// NVRTC failed for another reason than the source (bad option, internal error).
    #[error("{file} ({arch}): NVRTC failed: {message}")]
    Nvrtc {
        /// The kernel file.
        file: &'static str,
        /// The target.
        arch: String,
        /// NVRTC's message.
        message: String,
    },
    /// Reading precompiled PTX failed.
    #[error("{path}: cannot read precompiled PTX")]
    PtxRead {
        /// The file.
        path: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A compiled module lacks an entry point the launcher expects.
    #[error("{file}: no kernel `{name}` in the compiled module")]
    MissingKernel {
        /// The kernel file.
        file: &'static str,
        /// The entry point.
        name: &'static str,
    },
    /// A buffer is too short for the shape of the call.
    #[error("{op}: `{arg}` holds {found} elements, the call needs {expected}")]
    Shape {
        /// The op, e.g. `rms_norm`.
        op: &'static str,
        /// The argument.
        arg: &'static str,
        /// Elements needed.
        expected: usize,
        /// Elements held.
        found: usize,
    },
    /// A size the kernel cannot handle (the kernels trust these; the launcher checks them).
    #[error("{op}: {what} = {value}, but the kernel needs {rule}")]
    Limit {
        /// The op.
        op: &'static str,
        /// The quantity, e.g. `head_dim`.
        what: &'static str,
        /// Its value.
        value: usize,
        /// The rule it breaks, e.g. `≤ 128`.
        rule: &'static str,
    },
    /// Positions or ids given from the host are not what the kernel may index with.
    #[error("{op}: {what}")]
    Input {
        /// The op.
        op: &'static str,
        /// What is wrong, with the values involved.
        what: String,
    },
}

/// The result type of the CUDA backend.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Wraps a driver error from `what`.
    pub(crate) fn driver(what: impl Into<String>) -> impl FnOnce(DriverError) -> Error {
        let what = what.into();
        move |source| Error::Driver { what, source }
    }
}

/// `Err(Limit)` unless `ok`.
pub(crate) fn limit(
    ok: bool,
    op: &'static str,
    what: &'static str,
    value: usize,
    rule: &'static str,
) -> Result<()> {
    match ok {
        true => Ok(()),
        false => Err(Error::Limit {
            op,
            what,
            value,
            rule,
        }),
    }
}

/// `Err(Shape)` unless a buffer of `found` elements holds the `expected` the call reads or
/// writes (longer buffers are fine: workspaces are sized for the largest call).
pub(crate) fn at_least(
    op: &'static str,
    arg: &'static str,
    found: usize,
    expected: usize,
) -> Result<()> {
    match found >= expected {
        true => Ok(()),
        false => Err(Error::Shape {
            op,
            arg,
            expected,
            found,
        }),
    }
}
