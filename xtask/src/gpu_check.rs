//! `cargo xtask gpu-check`: builds everything a GPU machine needs to check the CUDA backend in
//! one lease, into `target/gpu-check/`, and writes the one script that runs it.
//!
//! The folder holds the stripped release test binaries `cuda_ops` (every op against its
//! reference twin), `devices` (the whole model against transformers' logits, the cached path,
//! greedy decoding and batched-equals-alone, on every device) and `research` (router logits,
//! hidden states and interventions against transformers' hooks, on every device), the
//! `gpu_bench` example, PTX for sm_80 and sm_90 compiled here by the runtime's own NVRTC path
//! (used only if the GPU machine has no `libnvrtc.so.13`), and `run.sh`. The fixtures are not
//! copied: they are tracked files and travel with the working tree, so the script points the
//! tests at the tree's `tests/fixtures`. The command checks that tree + folder fit the 64 MiB a
//! device call carries.

use crate::cuda_tools::repo_root;
use mixtral_kernels::cuda::{Error as CudaError, compile, fill, source};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

/// What travels to the device machine, at most.
const CARRY_LIMIT: u64 = 64 << 20;
/// Where the folder goes, relative to the repository root (ignored by git through `/target`).
pub const FOLDER: &str = "target/gpu-check";
/// NVRTC targets written as fallback PTX.
const ARCHS: &[&str] = &["compute_80", "compute_90"];

/// Why the command failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Running cargo (or strip, git) failed to start or exited non-zero.
    #[error("`{command}` failed{}", if output.is_empty() { String::new() } else { format!(":\n{output}") })]
    Command {
        /// The command line.
        command: String,
        /// Its stderr (tail).
        output: String,
    },
    /// The build produced no executable for a target.
    #[error("cargo reported no executable for {0}")]
    NoExecutable(&'static str),
    /// A file operation failed.
    #[error("{}: {what}", path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Compiling a kernel for the fallback PTX failed (not merely: NVRTC missing).
    #[error(transparent)]
    Cuda(#[from] CudaError),
    /// Bad arguments.
    #[error("unknown argument `{0}`; usage: cargo xtask gpu-check")]
    Usage(String),
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> Error + 'a {
    move |source| Error::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// Runs `cargo <args> --message-format=json` and returns the executables of artifacts whose
/// target name is `name`.
fn build(args: &[&str], name: &'static str) -> Result<PathBuf, Error> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let shown = format!("cargo {}", args.join(" "));
    println!("$ {shown}");
    let out = Command::new(&cargo)
        .args(args)
        .arg("--message-format=json-render-diagnostics")
        .current_dir(repo_root())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| Error::Command {
            command: shown.clone(),
            output: e.to_string(),
        })?;
    if !out.status.success() {
        return Err(Error::Command {
            command: shown,
            output: String::new(),
        });
    }
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .filter(|l| l.contains("\"reason\":\"compiler-artifact\""))
        .filter(|l| l.contains(&format!("\"name\":\"{name}\"")))
        .find_map(|l| json_string(l, "executable"))
        .map(PathBuf::from)
        .ok_or(Error::NoExecutable(name))
}

/// The string value of `"key":"…"` in one line of cargo's JSON (paths: `\\` and `\"` escapes).
fn json_string(line: &str, key: &str) -> Option<String> {
    let start = line.find(&format!("\"{key}\":\""))? + key.len() + 4;
    let mut out = String::new();
    let mut chars = line[start..].chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => return Some(out),
            '\\' => out.push(chars.next()?),
            c => out.push(c),
        }
    }
    None
}

/// Copies `exe` to `dst`, stripped of debug info when `strip` is available (it halves the
/// size that travels).
fn install(exe: &Path, dst: &Path) -> Result<u64, Error> {
    std::fs::copy(exe, dst).map_err(io("copying a binary", dst))?;
    let stripped = Command::new("strip")
        .arg("--strip-debug")
        .arg(dst)
        .status()
        .is_ok_and(|s| s.success());
    if !stripped {
        println!(
            "note: `strip` unavailable or failed; {} travels unstripped",
            dst.display()
        );
    }
    Ok(std::fs::metadata(dst).map_err(io("reading", dst))?.len())
}

/// Writes PTX for every source and architecture; `Ok(false)` when NVRTC is not installed here.
fn write_ptx(dir: &Path) -> Result<bool, Error> {
    let sources = source::ALL.iter().chain([&fill::SOURCE]);
    for src in sources {
        for &arch in ARCHS {
            let ptx = match compile::compile_ptx(src, arch) {
                Err(CudaError::NoNvrtc { .. }) => return Ok(false),
                r => r?,
            };
            let sub = dir.join(compile::sm_name(arch));
            std::fs::create_dir_all(&sub).map_err(io("creating", &sub))?;
            let path = sub.join(format!("{}.ptx", src.family()));
            std::fs::write(&path, ptx.as_bytes()).map_err(io("writing PTX", &path))?;
        }
    }
    Ok(true)
}

/// Bytes of the files a device call sends: tracked and untracked-not-ignored files.
fn tree_bytes(root: &Path) -> Result<u64, Error> {
    let out = Command::new("git")
        .args([
            "ls-files",
            "-z",
            "--cached",
            "--others",
            "--exclude-standard",
        ])
        .current_dir(root)
        .output()
        .map_err(|e| Error::Command {
            command: "git ls-files".into(),
            output: e.to_string(),
        })?;
    Ok(out
        .stdout
        .split(|&b| b == 0)
        .filter(|p| !p.is_empty())
        .filter_map(|p| std::fs::metadata(root.join(String::from_utf8_lossy(p).as_ref())).ok())
        .map(|m| m.len())
        .sum())
}

fn folder_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => folder_bytes(&e.path()),
            _ => e.metadata().map_or(0, |m| m.len()),
        })
        .sum()
}

/// Runs the command.
pub fn run(args: &[String]) -> Result<ExitCode, Error> {
    if let Some(a) = args.first() {
        return Err(Error::Usage(a.clone()));
    }
    let root = repo_root();
    let dir = root.join(FOLDER);
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(io("clearing", &dir))?;
    }
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).map_err(io("creating", &bin))?;

    let test = |pkg, name| {
        build(
            &["test", "--release", "--no-run", "-p", pkg, "--test", name],
            name,
        )
    };
    let binaries = [
        ("cuda_ops", test("mixtral-kernels", "cuda_ops")?),
        ("devices", test("mixtral-model", "devices")?),
        ("research", test("mixtral-model", "research")?),
        ("gguf", test("mixtral-model", "gguf")?),
        (
            "gpu_bench",
            build(
                &[
                    "build",
                    "--release",
                    "-p",
                    "mixtral-model",
                    "--example",
                    "gpu_bench",
                ],
                "gpu_bench",
            )?,
        ),
    ];
    for (name, exe) in &binaries {
        let size = install(exe, &bin.join(name))?;
        println!("{name}: {:.1} MiB", size as f64 / (1 << 20) as f64);
    }
    match write_ptx(&dir.join("ptx"))? {
        true => println!(
            "PTX for {} written (fallback when the GPU machine has no NVRTC)",
            ARCHS.join(", ")
        ),
        false => println!(
            "note: NVRTC not found here (run xtask/install-cuda-tools.sh); no fallback PTX, so the \
             GPU machine must provide libnvrtc.so.13"
        ),
    }
    let script = dir.join("run.sh");
    std::fs::write(&script, SCRIPT).map_err(io("writing", &script))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))
            .map_err(io("making executable", &script))?;
    }

    let (tree, folder) = (tree_bytes(&root)?, folder_bytes(&dir));
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    println!(
        "\ntravels: working tree {:.1} MiB + {FOLDER} {:.1} MiB = {:.1} MiB (limit 64 MiB)",
        mib(tree),
        mib(folder),
        mib(tree + folder)
    );
    if tree + folder > CARRY_LIMIT {
        eprintln!("error: over the 64 MiB a device call carries");
        return Ok(ExitCode::FAILURE);
    }
    println!(
        "\nrun on the GPU machine (device tool): command `bash {FOLDER}/run.sh`, carry [\"{FOLDER}\"], timeout_s 540"
    );
    println!("full log: $OUT/gpu-check.log; summary line `== gpu-check: PASS|FAIL`");
    Ok(ExitCode::SUCCESS)
}

/// The script, run from the repository root on the GPU machine. Each step has its own time
/// limit; the tests take well under theirs, so the whole run stays near 8 minutes.
const SCRIPT: &str = r#"#!/usr/bin/env bash
# Written by `cargo xtask gpu-check`. Runs the CUDA op tests, the fixture-model tests and a
# short benchmark on GPU 0; the full log goes to $OUT/gpu-check.log (or target/gpu-check/out).
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
out="${OUT:-$here/out}"
mkdir -p "$out"

step() {  # step NAME SECONDS COMMAND...: one timed step; a failure marks the run failed
    local name="$1" limit="$2" t0=$SECONDS rc
    shift 2
    echo
    echo "== $name (limit ${limit} s)"
    timeout --kill-after=10 "$limit" "$@"
    rc=$?
    echo "== $name: exit $rc after $((SECONDS - t0)) s"
    [ "$rc" -eq 0 ] || failed="$failed $name"
}

main() {
    failed=""
    echo "== gpu-check $(date -u +%FT%TZ) on $(hostname)"
    nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used --format=csv,noheader || true
    # NVRTC: a CUDA 13 libnvrtc.so.13 from the machine's toolkit or pip packages when there is
    # one; otherwise the backend falls back to the PTX compiled by xtask ($MIXTRAL_CUDA_PTX_DIR).
    if [ -z "${MIXTRAL_CUDA_ROOT:-}" ]; then
        for d in /usr/local/cuda /usr/local/cuda-13* /opt/*/.venv/lib/python3*/site-packages/nvidia/cu13 \
                 /usr/local/lib/python3*/dist-packages/nvidia/cu13 /usr/lib/python3/dist-packages/nvidia/cu13; do
            if [ -e "$d/lib/libnvrtc.so.13" ] || [ -e "$d/lib64/libnvrtc.so.13" ]; then
                export MIXTRAL_CUDA_ROOT="$d"
                break
            fi
        done
    fi
    echo "MIXTRAL_CUDA_ROOT=${MIXTRAL_CUDA_ROOT:-(none found: loader path, then precompiled PTX)}"
    export MIXTRAL_CUDA_PTX_DIR="$here/ptx" MIXTRAL_FIXTURES_DIR="$repo/tests/fixtures"
    export MIXTRAL_REQUIRE_GPU=1 RUST_BACKTRACE=1
    step cuda_ops 120 "$here/bin/cuda_ops" --test-threads=1 --nocapture
    step devices 180 "$here/bin/devices" --test-threads=1 --nocapture
    step research 120 "$here/bin/research" --test-threads=1 --nocapture
    step gguf 90 "$here/bin/gguf" --test-threads=1 --nocapture
    step gpu_bench 240 "$here/bin/gpu_bench" ${BENCH_ARGS:-}
    echo
    if [ -z "$failed" ]; then echo "== gpu-check: PASS"; else echo "== gpu-check: FAIL:$failed"; fi
    [ -z "$failed" ]
}

main 2>&1 | tee "$out/gpu-check.log"
exit "${PIPESTATUS[0]}"
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_executable_from_cargo_json() {
        let line = r#"{"reason":"compiler-artifact","target":{"name":"cuda_ops"},"executable":"/t/a\\b \"c\"/cuda_ops-1","fresh":true}"#;
        assert_eq!(
            json_string(line, "executable").as_deref(),
            Some(r#"/t/a\b "c"/cuda_ops-1"#)
        );
        assert_eq!(json_string(r#"{"executable":null}"#, "executable"), None);
    }

    #[test]
    fn script_invocation_fits_the_device_command_limit() {
        let command = format!("bash {FOLDER}/run.sh");
        assert!(command.len() < 2000);
        assert!(SCRIPT.starts_with("#!/usr/bin/env bash\n"));
        assert!(SCRIPT.contains("$OUT") && SCRIPT.contains("MIXTRAL_REQUIRE_GPU=1"));
    }
}
