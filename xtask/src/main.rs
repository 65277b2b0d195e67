//! Project automation (`cargo xtask <command>`).
//!
//! Commands:
//! - `kernels [--arch sm_80,sm_90]`: compile every `kernels/*.cu` with NVRTC, assemble it with
//!   `ptxas -v`, print registers, shared memory and spills per kernel, fail on a compile error,
//!   on a spill in a hot kernel, or on a GEMM kernel without tensor-core (`HMMA`) instructions.

mod cuda_tools;
mod kernels;
mod ptxas;

use std::process::ExitCode;

const USAGE: &str = "usage: cargo xtask kernels [--arch sm_80,sm_90]";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("kernels") => kernels::run(&args[1..]),
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
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                eprintln!("  caused by: {s}");
                source = s.source();
            }
            ExitCode::FAILURE
        }
    }
}
