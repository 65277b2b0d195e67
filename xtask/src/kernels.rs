//! `cargo xtask kernels`: every `kernels/*.cu` through NVRTC (the compiler production uses)
//! and `ptxas -v`, for each target architecture, with a resource table and three checks.
//!
//! Fails (non-zero exit) when
//! - NVRTC rejects a source (the file name and NVRTC's log are printed);
//! - `ptxas` rejects the PTX, or reports no resources for an entry point the source declares;
//! - a hot kernel (the MoE GEMMs, the GEMV, attention) spills registers;
//! - `cuobjdump -sass` shows a `moe_gemm*` kernel without `HMMA` (tensor-core) instructions.
//!   This check is skipped, with a note, when cuobjdump is not installed.

use crate::cuda_tools::{self, ToolError};
use crate::ptxas::{self, Usage};
use cudarc::nvrtc::{CompileOptions, compile_ptx_with_opts};
use mixtral_kernels::cuda::source::{ALL, NVRTC_OPTIONS, Source};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

/// Targets by default: A100 (sm_80) and H100/H200 (sm_90).
const DEFAULT_ARCHS: &[&str] = &["sm_80", "sm_90"];
/// Architectures xtask knows, as (`ptxas -arch`, NVRTC `--gpu-architecture`).
const KNOWN_ARCHS: &[(&str, &str)] = &[
    ("sm_80", "compute_80"),
    ("sm_86", "compute_86"),
    ("sm_89", "compute_89"),
    ("sm_90", "compute_90"),
];
/// Kernels that must not spill: they carry the decode and prefill time.
const HOT_PREFIXES: &[&str] = &["moe_gemm", "moe_gemv", "matmul_gemv", "attention_"];
/// Kernels whose SASS must contain tensor-core MMA instructions.
const TENSOR_CORE_PREFIX: &str = "moe_gemm";

/// Why the command failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Finding the CUDA tools failed.
    #[error(transparent)]
    Tools(#[from] ToolError),
    /// Bad command-line arguments.
    #[error("unknown argument `{0}`; usage: cargo xtask kernels [--arch sm_80,sm_90]")]
    Usage(String),
    /// An architecture xtask does not know.
    #[error("unknown architecture `{0}` (known: sm_80, sm_86, sm_89, sm_90)")]
    Arch(String),
    /// Writing PTX or running a tool failed.
    #[error("{}: {what}", path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file or program.
        path: PathBuf,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
}

/// Runs the command; `Ok(FAILURE)` means a kernel failed a check (already reported).
pub fn run(args: &[String]) -> Result<ExitCode, Error> {
    let archs = parse_args(args)?;
    let root = cuda_tools::find_root()?;
    if let Some(root) = &root
        && let Some(code) = cuda_tools::reexec_with_library_path(root)?
    {
        return Ok(code);
    }
    let tools = cuda_tools::locate(root)?;
    let out_dir = output_dir();
    println!(
        "NVRTC from {}, ptxas {}; PTX and cubins in {}",
        tools
            .root
            .as_ref()
            .map_or("the loader's search path".into(), |r| r
                .join("lib")
                .display()
                .to_string()),
        tools.ptxas.display(),
        out_dir.display()
    );
    if tools.cuobjdump.is_none() {
        println!("note: cuobjdump not found; the tensor-core (HMMA) check is skipped");
    }
    let mut failures = 0;
    for &(sm, compute) in &archs {
        let dir = out_dir.join(sm);
        std::fs::create_dir_all(&dir).map_err(|source| Error::Io {
            what: "creating the output folder",
            path: dir.clone(),
            source,
        })?;
        println!("\n{sm}:");
        println!(
            "{:<28} {:>5} {:>9} {:>6} {:>12}  notes",
            "kernel", "regs", "smem (B)", "stack", "spill st/ld"
        );
        for src in ALL {
            failures += check_source(&tools, src, sm, compute, &dir)?;
        }
    }
    if failures > 0 {
        eprintln!("\n{failures} problem(s) found");
        return Ok(ExitCode::FAILURE);
    }
    println!("\nall kernels compiled for {}", {
        let names: Vec<&str> = archs.iter().map(|a| a.0).collect();
        names.join(", ")
    });
    Ok(ExitCode::SUCCESS)
}

fn parse_args(args: &[String]) -> Result<Vec<(&'static str, &'static str)>, Error> {
    let mut wanted: Vec<String> = DEFAULT_ARCHS.iter().map(|s| s.to_string()).collect();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--arch" => {
                let list = it.next().ok_or_else(|| Error::Usage(a.clone()))?;
                wanted = list.split(',').map(str::to_owned).collect();
            }
            other => return Err(Error::Usage(other.to_owned())),
        }
    }
    wanted
        .iter()
        .map(|w| {
            KNOWN_ARCHS
                .iter()
                .find(|(sm, _)| sm == w)
                .copied()
                .ok_or_else(|| Error::Arch(w.clone()))
        })
        .collect()
}

/// `<target dir>/xtask-kernels`: the target dir is two levels above this executable.
fn output_dir() -> PathBuf {
    let exe = std::env::current_exe().ok();
    let target = exe
        .as_deref()
        .and_then(|e| e.parent()?.parent())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| cuda_tools::repo_root().join("target"));
    target.join("xtask-kernels")
}

/// Compiles, assembles and checks one source for one architecture; returns the number of
/// problems (each already printed).
fn check_source(
    tools: &cuda_tools::Tools,
    src: &Source,
    sm: &str,
    compute: &'static str,
    dir: &Path,
) -> Result<usize, Error> {
    let opts = CompileOptions {
        arch: Some(compute),
        options: NVRTC_OPTIONS.iter().map(|s| s.to_string()).collect(),
        name: Some(src.file.to_owned()),
        ..Default::default()
    };
    let ptx = match compile_ptx_with_opts(src.nvrtc_source(), opts) {
        Ok(ptx) => ptx.to_src(),
        Err(cudarc::nvrtc::CompileError::CompileError { log, .. }) => {
            eprintln!(
                "{} ({sm}): NVRTC compile error:\n{}",
                src.file,
                log.to_string_lossy()
            );
            return Ok(1);
        }
        Err(e) => {
            eprintln!("{} ({sm}): NVRTC failed: {e}", src.file);
            return Ok(1);
        }
    };
    let ptx_path = dir.join(format!("{}.ptx", src.family()));
    let cubin = dir.join(format!("{}.cubin", src.family()));
    std::fs::write(&ptx_path, ptx).map_err(|source| Error::Io {
        what: "writing PTX",
        path: ptx_path.clone(),
        source,
    })?;
    let out = run_tool(
        &tools.ptxas,
        &["-v", "--warn-on-spills", &format!("-arch={sm}")],
        &[&ptx_path, Path::new("-o"), &cubin],
    )?;
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    if !out.status.success() {
        eprintln!("{} ({sm}): ptxas failed:\n{log}", src.file);
        return Ok(1);
    }
    let usage = ptxas::parse_verbose(&log);
    let sass = sass_of(tools, &cubin)?;
    let mut problems = 0;
    for name in src.entry_points() {
        let Some(u) = usage.iter().find(|u| u.name == name) else {
            eprintln!("{} ({sm}): ptxas reported nothing for `{name}`", src.file);
            problems += 1;
            continue;
        };
        let (note, bad) = judge(u, sass.as_ref());
        problems += usize::from(bad);
        println!(
            "{:<28} {:>5} {:>9} {:>6} {:>12}  {note}",
            u.name,
            u.registers,
            u.smem,
            u.stack,
            format!("{}/{}", u.spill_stores, u.spill_loads)
        );
    }
    Ok(problems)
}

/// The note for one kernel's row and whether it fails a check.
fn judge(u: &Usage, sass: Option<&Vec<(String, String)>>) -> (String, bool) {
    let mut notes = Vec::new();
    let mut bad = false;
    if HOT_PREFIXES.iter().any(|p| u.name.starts_with(p)) {
        notes.push("hot");
        if u.spills() {
            notes.push("FAIL: spills");
            bad = true;
        }
    }
    if u.name.starts_with(TENSOR_CORE_PREFIX) {
        match sass.and_then(|s| s.iter().find(|(n, _)| *n == u.name)) {
            Some((_, body)) if body.contains("HMMA") => notes.push("HMMA ok"),
            Some(_) => {
                notes.push("FAIL: no HMMA in SASS");
                bad = true;
            }
            None if sass.is_none() => notes.push("HMMA not checked (no cuobjdump)"),
            None => {
                notes.push("FAIL: not in SASS listing");
                bad = true;
            }
        }
    }
    (notes.join(", "), bad)
}

/// The per-function SASS of `cubin`, or `None` (with a printed note) without cuobjdump.
fn sass_of(
    tools: &cuda_tools::Tools,
    cubin: &Path,
) -> Result<Option<Vec<(String, String)>>, Error> {
    let Some(cuobjdump) = &tools.cuobjdump else {
        return Ok(None);
    };
    let out = run_tool(cuobjdump, &["-sass"], &[cubin])?;
    if !out.status.success() {
        eprintln!(
            "note: cuobjdump failed on {}: {}",
            cubin.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        return Ok(None);
    }
    Ok(Some(ptxas::sass_functions(&String::from_utf8_lossy(
        &out.stdout,
    ))))
}

fn run_tool(
    program: &Path,
    flags: &[&str],
    paths: &[&Path],
) -> Result<std::process::Output, Error> {
    Command::new(program)
        .args(flags)
        .args(paths)
        .output()
        .map_err(|source| Error::Io {
            what: "running",
            path: program.to_path_buf(),
            source,
        })
}
