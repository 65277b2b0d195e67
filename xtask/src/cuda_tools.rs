//! Finding the CUDA tools `cargo xtask kernels` needs: NVRTC (a shared library, loaded by
//! cudarc with dlopen), `ptxas`, and optionally `cuobjdump`.
//!
//! The root is `$MIXTRAL_CUDA_ROOT`, or else the pip toolchain that
//! `xtask/install-cuda-tools.sh` installs (`.venv-cuda/lib/python3*/site-packages/nvidia/cu13`
//! under the repository), or else whatever the system provides (`LD_LIBRARY_PATH`, `PATH`).
//!
//! NVRTC itself dlopens `libnvrtc-builtins.so.13.0` through the loader's search path, and the
//! loader reads `LD_LIBRARY_PATH` only at process start. So when the root's `lib/` is not on
//! `LD_LIBRARY_PATH`, xtask runs itself again with it prepended ([`reexec_with_library_path`]).

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

/// The NVRTC library cudarc loads for `cuda-13000` (it also tries other names; this is the one
/// the pip package ships).
pub const NVRTC_LIB: &str = "libnvrtc.so.13";
/// Set in the environment of the re-executed xtask, so it never loops.
const REEXEC_MARKER: &str = "MIXTRAL_XTASK_REEXEC";
/// Overrides the toolkit root: a folder with `lib/libnvrtc.so.13` and `bin/ptxas`.
pub const ROOT_VAR: &str = "MIXTRAL_CUDA_ROOT";

/// What went wrong while looking for the tools.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ToolError {
    /// `$MIXTRAL_CUDA_ROOT` names a folder without NVRTC.
    #[error("{ROOT_VAR}={}: no lib/{NVRTC_LIB} there", root.display())]
    BadRoot {
        /// The folder.
        root: PathBuf,
    },
    /// NVRTC could not be loaded.
    #[error(
        "NVRTC ({NVRTC_LIB}) cannot be loaded. Install the pip toolchain with \
         `xtask/install-cuda-tools.sh` (it creates .venv-cuda/ in the repository, which xtask \
         finds by itself), or set {ROOT_VAR} to a CUDA 13 folder holding lib/{NVRTC_LIB} and \
         bin/ptxas, or put a CUDA 13 lib64/ on LD_LIBRARY_PATH"
    )]
    NoNvrtc,
    /// `ptxas` was found nowhere.
    #[error(
        "ptxas not found in {ROOT_VAR}/bin or on PATH; run `xtask/install-cuda-tools.sh` \
         (pip package nvidia-cuda-nvcc)"
    )]
    NoPtxas,
    /// Running xtask again with `LD_LIBRARY_PATH` set failed.
    #[error("could not re-run xtask with LD_LIBRARY_PATH={path}")]
    Reexec {
        /// The library path it tried.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Where the tools live, once found.
#[derive(Debug, Clone)]
pub struct Tools {
    /// The toolkit root, if one was found (otherwise NVRTC comes from the loader's path).
    pub root: Option<PathBuf>,
    /// The `ptxas` to run.
    pub ptxas: PathBuf,
    /// The `cuobjdump` to run, when installed.
    pub cuobjdump: Option<PathBuf>,
}

/// The repository root (xtask lives in `<root>/xtask`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask is one folder below the repository root")
        .to_path_buf()
}

/// `$MIXTRAL_CUDA_ROOT`, else the newest `.venv-cuda/lib/python3*/site-packages/nvidia/cu13`.
pub fn find_root() -> Result<Option<PathBuf>, ToolError> {
    if let Some(root) = std::env::var_os(ROOT_VAR).filter(|v| !v.is_empty()) {
        let root = PathBuf::from(root);
        return match root.join("lib").join(NVRTC_LIB).is_file() {
            true => Ok(Some(root)),
            false => Err(ToolError::BadRoot { root }),
        };
    }
    let lib = repo_root().join(".venv-cuda").join("lib");
    let Ok(entries) = std::fs::read_dir(&lib) else {
        return Ok(None);
    };
    let mut found: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with("python3"))
        .map(|e| e.path().join("site-packages/nvidia/cu13"))
        .filter(|p| p.join("lib").join(NVRTC_LIB).is_file())
        .collect();
    found.sort();
    Ok(found.pop())
}

/// When `root/lib` is not on `LD_LIBRARY_PATH`, runs this same xtask again with it prepended
/// and returns its exit code; `None` means carry on in this process.
pub fn reexec_with_library_path(root: &Path) -> Result<Option<ExitCode>, ToolError> {
    let lib = root.join("lib");
    let current = std::env::var_os("LD_LIBRARY_PATH").unwrap_or_default();
    if std::env::split_paths(&current).any(|p| p == lib)
        || std::env::var_os(REEXEC_MARKER).is_some()
    {
        return Ok(None);
    }
    let paths = std::iter::once(lib).chain(std::env::split_paths(&current));
    let joined = std::env::join_paths(paths).expect("library paths hold no ':'");
    let shown = joined.to_string_lossy().into_owned();
    let wrap = |source| ToolError::Reexec {
        path: shown.clone(),
        source,
    };
    let exe = std::env::current_exe().map_err(wrap)?;
    let status = Command::new(exe)
        .args(std::env::args_os().skip(1))
        .env("LD_LIBRARY_PATH", &joined)
        .env(REEXEC_MARKER, "1")
        .status()
        .map_err(wrap)?;
    Ok(Some(match status.code() {
        Some(0) => ExitCode::SUCCESS,
        Some(c) => ExitCode::from(u8::try_from(c).unwrap_or(1)),
        None => ExitCode::FAILURE,
    }))
}

/// Whether cudarc can load NVRTC. cudarc panics (rather than returning `Err`) when the library
/// is missing, so the first call runs under `catch_unwind` with the panic message silenced.
pub fn nvrtc_loads() -> bool {
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let loaded = std::panic::catch_unwind(|| {
        cudarc::nvrtc::compile_ptx("extern \"C\" __global__ void probe() {}").is_ok()
    });
    std::panic::set_hook(hook);
    loaded.unwrap_or(false)
}

/// Finds `name` in `root/bin`, else on `PATH`.
fn find_tool(root: Option<&Path>, name: &str) -> Option<PathBuf> {
    let in_root = root.map(|r| r.join("bin").join(name));
    let on_path: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).map(|d| d.join(name)).collect())
        .unwrap_or_default();
    in_root.into_iter().chain(on_path).find(|p| p.is_file())
}

/// Checks NVRTC loads and finds `ptxas` (required) and `cuobjdump` (optional).
pub fn locate(root: Option<PathBuf>) -> Result<Tools, ToolError> {
    if !nvrtc_loads() {
        return Err(ToolError::NoNvrtc);
    }
    let ptxas = find_tool(root.as_deref(), "ptxas").ok_or(ToolError::NoPtxas)?;
    let cuobjdump = find_tool(root.as_deref(), "cuobjdump");
    Ok(Tools {
        root,
        ptxas,
        cuobjdump,
    })
}
