//! Finding `libcuda.so.1` and `libnvrtc.so.13` before cudarc does.
//!
//! cudarc (with `dynamic-loading`) panics instead of returning `Err` when it cannot open a
//! library, so the backend opens them first with `libloading`. A library found by path (outside
//! the loader's search path) is opened with `RTLD_GLOBAL` and kept open: cudarc's own
//! `dlopen("libnvrtc.so.13")` then finds it by its soname, and so does NVRTC's `dlopen` of
//! `libnvrtc-builtins.so.13.0`, which is preloaded from the same folder. That is what lets a
//! process use the pip toolchain without `LD_LIBRARY_PATH` (which the loader reads only at
//! process start, hence xtask's re-exec).
//!
//! Each probe runs once per process; its result (the list of what was tried, on failure) is
//! cached.

use super::{Error, Result};
use libloading::os::unix::{Library, RTLD_GLOBAL, RTLD_NOW};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

/// The driver's soname.
pub const DRIVER_LIB: &str = "libcuda.so.1";
/// NVRTC's soname for CUDA 13 (cudarc's `cuda-13000` bindings).
pub const NVRTC_LIB: &str = "libnvrtc.so.13";
/// The NVRTC builtins NVRTC itself opens by soname.
const NVRTC_BUILTINS: &str = "libnvrtc-builtins.so.13.0";
/// A CUDA folder with `lib/libnvrtc.so.13` (the pip layout) or `lib64/` (a toolkit).
pub const ROOT_VAR: &str = "MIXTRAL_CUDA_ROOT";

/// Folders where drivers install `libcuda.so.1` outside the default search path.
const DRIVER_DIRS: &[&str] = &[
    "/usr/local/nvidia/lib64",
    "/usr/local/nvidia/lib",
    "/usr/lib/x86_64-linux-gnu",
    "/usr/lib64",
    "/usr/lib/wsl/lib",
];

/// Libraries opened by path, kept open for the life of the process.
static KEPT: Mutex<Vec<Library>> = Mutex::new(Vec::new());

/// Opens `name` (a path, or a bare name for the loader's search path) with `RTLD_GLOBAL`.
fn open_global(name: &Path) -> std::result::Result<(), String> {
    // SAFETY: opening a library runs its initialisers; these are the CUDA driver and NVRTC
    // libraries (or their builtins), whose initialisers have no preconditions on our side.
    let lib = unsafe { Library::open(Some(name), RTLD_NOW | RTLD_GLOBAL) };
    match lib {
        Ok(lib) => {
            KEPT.lock().unwrap_or_else(|p| p.into_inner()).push(lib);
            Ok(())
        }
        Err(e) => Err(format!("{} ({e})", name.display())),
    }
}

/// Tries each of `dirs` (for NVRTC, after preloading `before` from the same folder) and the
/// loader's search path (first when `search_first`, else last); returns the failures if none
/// opens.
fn probe(
    name: &str,
    dirs: &[PathBuf],
    before: Option<&str>,
    search_first: bool,
) -> std::result::Result<(), Vec<String>> {
    let mut tried = Vec::new();
    if search_first {
        match open_global(Path::new(name)) {
            Ok(()) => return Ok(()),
            Err(e) => tried.push(e),
        }
    }
    for dir in dirs {
        let path = dir.join(name);
        if !path.is_file() {
            tried.push(format!("{} (no such file)", path.display()));
            continue;
        }
        if let Some(dep) = before {
            // Best effort: without it NVRTC fails later with its own message.
            let _ = open_global(&dir.join(dep));
        }
        match open_global(&path) {
            Ok(()) => return Ok(()),
            Err(e) => tried.push(e),
        }
    }
    if !search_first {
        match open_global(Path::new(name)) {
            Ok(()) => return Ok(()),
            Err(e) => tried.push(e),
        }
    }
    Err(tried)
}

/// Opens the CUDA driver library once per process.
pub fn probe_driver() -> Result<()> {
    static DONE: OnceLock<std::result::Result<(), Vec<String>>> = OnceLock::new();
    let dirs: Vec<PathBuf> = DRIVER_DIRS.iter().map(PathBuf::from).collect();
    DONE.get_or_init(|| probe(DRIVER_LIB, &dirs, None, true))
        .clone()
        .map_err(|tried| Error::NoDriver { tried })
}

/// Opens NVRTC (and its builtins) once per process, from [`nvrtc_dirs`] or the search path.
pub fn probe_nvrtc() -> Result<()> {
    static DONE: OnceLock<std::result::Result<(), Vec<String>>> = OnceLock::new();
    DONE.get_or_init(|| probe(NVRTC_LIB, &nvrtc_dirs(), Some(NVRTC_BUILTINS), false))
        .clone()
        .map_err(|tried| Error::NoNvrtc { tried })
}

/// Folders that may hold `libnvrtc.so.13`, most specific first: `$MIXTRAL_CUDA_ROOT/lib{,64}`,
/// `$CUDA_PATH/lib64`, `$CUDA_HOME/lib64`, `/usr/local/cuda/lib64` (then the loader's own
/// search path). Nothing is compiled in: an installed binary looks where its user says. The
/// pip toolchain `xtask/install-cuda-tools.sh` installs is found by pointing
/// `MIXTRAL_CUDA_ROOT` at it (`cargo xtask` does so by itself).
pub fn nvrtc_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    for var in [ROOT_VAR, "CUDA_PATH", "CUDA_HOME"] {
        if let Some(root) = std::env::var_os(var).filter(|v| !v.is_empty()) {
            let root = PathBuf::from(root);
            dirs.push(root.join("lib"));
            dirs.push(root.join("lib64"));
        }
    }
    dirs.push(PathBuf::from("/usr/local/cuda/lib64"));
    dirs
}

/// Runs `f`, turning a panic into `Err(Panicked)` without printing it. cudarc panics when a
/// library or symbol is missing; the probes above make that unlikely, this makes it harmless.
///
/// The panic hook is process-wide, so swapping it is serialised; a panic on another thread
/// while `f` runs would also go unprinted (its test still fails).
pub(crate) fn contain<T>(what: &'static str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    static HOOK: Mutex<()> = Mutex::new(());
    let _guard = HOOK.lock().unwrap_or_else(|p| p.into_inner());
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    std::panic::set_hook(previous);
    result.unwrap_or_else(|payload| {
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "(no message)".into());
        Err(Error::Panicked { what, message })
    })
}
