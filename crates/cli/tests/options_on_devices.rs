//! Every option that changes numerics or outputs, on every device this machine has: each one
//! runs, or is refused with the typed "not supported" error, never silently ignored. CUDA is
//! walked when a GPU answers (`--device cuda` loads); otherwise it is skipped with the
//! loader's reason printed, and `MIXTRAL_REQUIRE_GPU=1` makes that a failure.

mod common;

use common::{fixture, mixtral, s};
use std::process::Output;

/// Each option to walk: a name, the subcommand (`generate` two tokens or `logits`), and the
/// option's own arguments.
const CASES: &[(&str, &str, &[&str])] = &[
    ("plain", "generate", &[]),
    ("precision f32", "generate", &["--precision", "f32"]),
    ("precision bf16", "generate", &["--precision", "bf16"]),
    ("precision int8", "generate", &["--precision", "int8"]),
    ("kv f32", "generate", &["--kv-dtype", "f32"]),
    ("kv f16", "generate", &["--kv-dtype", "f16"]),
    ("kv bf16", "generate", &["--kv-dtype", "bf16"]),
    ("batch invariant", "generate", &["--batch-invariant"]),
    ("quantize q8_0", "generate", &["--quantize", "q8_0"]),
    ("ablate", "generate", &["--ablate", "0:1"]),
    ("ablate expert", "generate", &["--ablate-expert", "3"]),
    (
        "experts per token",
        "generate",
        &["--experts-per-token", "1"],
    ),
    ("router logits", "logits", &["--router-logits"]),
    ("hidden states", "logits", &["--hidden-states"]),
    (
        "logits ablated",
        "logits",
        &["--ablate-expert", "3", "--router-logits"],
    ),
];

/// Whether `out` is the typed refusal of an option the device has no path for.
fn refused(out: &Output) -> bool {
    !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("is not supported on")
}

/// Runs every case on `device` (a `--device` value); `all_run`: no refusal is allowed.
fn walk(device: &str, all_run: bool) {
    let model = fixture("tiny-f32");
    let dir = tempfile::tempdir().unwrap();
    for &(what, command, options) in CASES {
        let out_file = dir
            .path()
            .join(format!("{}.safetensors", what.replace(' ', "-")));
        let mut args = vec![command, "--tokens", "1,2,3"];
        match command {
            "logits" => args.extend(["--out", s(&out_file)]),
            _ => args.extend(["--max-new-tokens", "2"]),
        }
        args.extend(options);
        args.extend(["--model", s(&model), "--device", device]);
        let out = mixtral(&args);
        let verdict = match (out.status.success(), refused(&out)) {
            (true, _) => "runs",
            (false, true) if !all_run => "refused (Unsupported)",
            _ => panic!(
                "{device} {what}: did not run (and only a GPU may refuse):\n{}",
                String::from_utf8_lossy(&out.stderr)
            ),
        };
        println!("{device:>6} {what:<18} {verdict}");
    }
}

#[test]
fn every_option_runs_or_is_refused_on_the_cpu() {
    walk("cpu", true);
}

#[test]
fn every_option_runs_or_is_refused_on_cuda() {
    let model = fixture("tiny-f32");
    let probe = mixtral(&[
        "generate",
        "--tokens",
        "1",
        "--max-new-tokens",
        "1",
        "--model",
        s(&model),
        "--device",
        "cuda",
    ]);
    if !probe.status.success() {
        let why = String::from_utf8_lossy(&probe.stderr);
        if std::env::var_os("MIXTRAL_REQUIRE_GPU").is_some() {
            panic!("MIXTRAL_REQUIRE_GPU is set but --device cuda does not load: {why}");
        }
        println!("skipped on cuda: {}", why.trim());
        return;
    }
    walk("cuda", false);
}
