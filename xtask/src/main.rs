//! Project automation (`cargo xtask <command>`).
//!
//! Commands:
//! - `kernels [--arch sm_80,sm_90]`: compile every `kernels/*.cu` with NVRTC, assemble it with
//!   `ptxas -v`, print registers, shared memory and spills per kernel, fail on a compile error,
//!   on a spill in a hot kernel, or on a GEMM kernel without tensor-core (`HMMA`) instructions.
//! - `gpu-check`: build the CUDA test binaries, the GPU benchmark and fallback PTX into
//!   `target/gpu-check/` with one `run.sh` that a GPU machine runs in a single lease.
//! - `bench [FILTER] [--model DIR] [--threads N]`: run the criterion kernel benchmarks and
//!   print one markdown table with each entry's ratio to its group's same-run baseline (also
//!   written to `target/bench-report.md`); with `--model`, `mixtral bench` at both activation
//!   precisions too.
//! - `gen-model --preset NAME --out DIR`: write a random-weight checkpoint in Hugging Face format
//!   (`bench-1b`, `mixtral-8x7b`, `tiny`), streamed to disk.
//! - `fuzz [--seconds N] [--minimize] [TARGET...]`: run the cargo-fuzz targets of `fuzz/`
//!   (GGUF, safetensors header and index, config.json/params.json, chat files) N seconds each
//!   (default 60; nightly + cargo-fuzz), print each one's executions, exit non-zero on a crash,
//!   hang or out-of-memory; with `--minimize`, rewrite `fuzz/corpus/<target>/` as the 200
//!   inputs found so far that cover the most.

mod bench;
mod cuda_tools;
mod fuzz;
mod gen_model;
mod gpu_check;
mod kernels;
mod ptxas;

use std::process::ExitCode;

const USAGE: &str = "usage: cargo xtask bench [FILTER] [--model DIR] [--threads N]
       cargo xtask kernels [--arch sm_80,sm_90]
       cargo xtask gpu-check
       cargo xtask gen-model --preset bench-1b|mixtral-8x7b|tiny --out DIR [--layers N] [--dtype bf16|f32]
       cargo xtask fuzz [--seconds N] [--minimize] [gguf|safetensors|safetensors_index|config|chat...]";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result: Result<ExitCode, Box<dyn std::error::Error>> =
        match args.first().map(String::as_str) {
            Some("bench") => bench::run(&args[1..]).map_err(Into::into),
            Some("kernels") => kernels::run(&args[1..]).map_err(Into::into),
            Some("gpu-check") => gpu_check::run(&args[1..]).map_err(Into::into),
            Some("gen-model") => gen_model::run(&args[1..]).map_err(Into::into),
            Some("fuzz") => fuzz::run(&args[1..]).map_err(Into::into),
            Some("-h" | "--help") => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            _ => {
                eprintln!("{USAGE}");
                return ExitCode::from(2);
            }
        };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            let mut source = e.source();
            while let Some(s) = source {
                eprintln!("  caused by: {s}");
                source = s.source();
            }
            ExitCode::FAILURE
        }
    }
}
