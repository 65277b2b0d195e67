//! Turning a kernel [`Source`] into PTX for one architecture: NVRTC at run time (cached once
//! per process per source and architecture), or PTX written ahead of time by
//! `cargo xtask gpu-check` for a machine without NVRTC.

use super::library::{contain, probe_nvrtc};
use super::source::{NVRTC_OPTIONS, Source};
use super::{Error, Result};
use cudarc::nvrtc::{CompileError, CompileOptions, compile_ptx_with_opts};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// A folder of precompiled PTX, `<dir>/<sm_XY>/<family>.ptx`, used when NVRTC cannot be loaded.
pub const PTX_DIR_VAR: &str = "MIXTRAL_CUDA_PTX_DIR";

/// The NVRTC virtual architecture for compute capability `major.minor`, e.g. `compute_90`.
///
/// PTX for the virtual architecture is JIT-compiled by the driver for the exact chip when the
/// module loads (and cached by the driver), so one compile serves every chip of that family.
pub fn arch_name(major: u32, minor: u32) -> &'static str {
    match (major, minor) {
        (8, 0) => "compute_80",
        (8, 6) => "compute_86",
        (8, 7) => "compute_87",
        (8, 9) => "compute_89",
        (9, 0) => "compute_90",
        (10, 0) => "compute_100",
        (12, 0) => "compute_120",
        // cudarc wants a `&'static str`; an unknown architecture is leaked once per process.
        _ => Box::leak(format!("compute_{major}{minor}").into_boxed_str()),
    }
}

/// The `sm_XY` folder name precompiled PTX for `arch` (`compute_XY`) lives under.
pub fn sm_name(arch: &str) -> String {
    format!("sm_{}", arch.strip_prefix("compute_").unwrap_or(arch))
}

/// PTX compiled so far in this process, by (file, arch).
type Cache = Mutex<BTreeMap<(&'static str, &'static str), Arc<str>>>;
static CACHE: Cache = Mutex::new(BTreeMap::new());

/// `src` compiled by NVRTC for `arch` (e.g. `compute_90`), with [`NVRTC_OPTIONS`]; compiled
/// once per process, later calls return the cached text. This is the path the backend takes,
/// and what the no-GPU tests and `cargo xtask gpu-check` call.
pub fn compile_ptx(src: &'static Source, arch: &'static str) -> Result<Arc<str>> {
    let mut cache = CACHE.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(ptx) = cache.get(&(src.file, arch)) {
        return Ok(ptx.clone());
    }
    probe_nvrtc()?;
    let opts = CompileOptions {
        arch: Some(arch),
        options: NVRTC_OPTIONS.iter().map(|s| s.to_string()).collect(),
        name: Some(src.file.to_owned()),
        ..Default::default()
    };
    let ptx = contain("NVRTC compile", || {
        compile_ptx_with_opts(src.nvrtc_source(), opts).map_err(|e| match e {
            CompileError::CompileError { log, .. } => Error::Compile {
                file: src.file,
                arch: arch.to_owned(),
                log: log.to_string_lossy().into_owned(),
            },
            other => Error::Nvrtc {
                file: src.file,
                arch: arch.to_owned(),
                message: format!("{other:?}"),
            },
        })
    })?;
    let ptx: Arc<str> = ptx.to_src().into();
    cache.insert((src.file, arch), ptx.clone());
    Ok(ptx)
}

/// PTX for `src`: NVRTC when it loads, else the file under `$MIXTRAL_CUDA_PTX_DIR` (when set),
/// else the NVRTC error.
pub(crate) fn ptx_for(src: &'static Source, arch: &'static str) -> Result<Arc<str>> {
    match compile_ptx(src, arch) {
        Err(Error::NoNvrtc { tried }) => match std::env::var_os(PTX_DIR_VAR) {
            Some(dir) => {
                let path = PathBuf::from(dir)
                    .join(sm_name(arch))
                    .join(format!("{}.ptx", src.family()));
                std::fs::read_to_string(&path)
                    .map(Arc::from)
                    .map_err(|source| Error::PtxRead {
                        path: path.display().to_string(),
                        source,
                    })
            }
            None => Err(Error::NoNvrtc { tried }),
        },
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arch_names() {
        assert_eq!(arch_name(9, 0), "compute_90");
        assert_eq!(arch_name(8, 0), "compute_80");
        assert_eq!(arch_name(11, 3), "compute_113");
        assert_eq!(sm_name("compute_90"), "sm_90");
    }
}
