//! Replaying the committed inputs in the stable test suite, without cargo-fuzz: the
//! `crates/*/tests/fuzz_corpus.rs` tests include this file (and the checks) with `#[path]`.

use std::collections::BTreeSet;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

/// The targets, as named under `corpus/` and `regressions/`.
pub const TARGETS: [&str; 6] = [
    "gguf",
    "safetensors",
    "safetensors_index",
    "config",
    "chat",
    "template",
];

/// Every file directly in `dir`, sorted by name; panics when `dir` is missing or holds no file
/// (a replay of nothing would pass whatever the parsers do).
pub fn files(dir: &Path) -> Vec<PathBuf> {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let mut files: Vec<PathBuf> = entries
        .map(|e| {
            e.unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
                .path()
        })
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{}: no inputs", dir.display());
    files
}

/// Runs `check` on `path`'s bytes, turning a panic into `Err` with the file's name.
fn run(
    path: &Path,
    check: &dyn Fn(&[u8]) -> Result<(), String>,
) -> Result<Result<(), String>, String> {
    let data = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    catch_unwind(AssertUnwindSafe(|| check(&data)))
        .map_err(|_| format!("{} panicked", path.display()))
}

/// Runs `check` on every file of `<fuzz_dir>/corpus/<target>/`. Fails naming every input that
/// panicked, and when no input parses (a check that rejects everything proves little).
pub fn corpus(fuzz_dir: &Path, target: &str, check: impl Fn(&[u8]) -> Result<(), String>) {
    let inputs = files(&fuzz_dir.join("corpus").join(target));
    let mut panicked = Vec::new();
    let mut parsed = 0;
    for path in &inputs {
        match run(path, &check) {
            Ok(Ok(())) => parsed += 1,
            Ok(Err(_)) => {}
            Err(msg) => panicked.push(msg),
        }
    }
    assert!(panicked.is_empty(), "{target}: {}", panicked.join("\n"));
    assert!(
        parsed > 0,
        "{target}: none of {} inputs parses",
        inputs.len()
    );
    println!(
        "{target}: {} inputs, {parsed} parse, none panics",
        inputs.len()
    );
}

/// Runs `check` on every file of `<fuzz_dir>/regressions/<target>/` (the reproducers of fixed
/// crashes). `expected` lists each file with a piece of the error it must now give; a file
/// not listed, or listed and missing, fails the test. With nothing listed the folder may be
/// absent (no crash found yet).
pub fn regressions(
    fuzz_dir: &Path,
    target: &str,
    expected: &[(&str, &str)],
    check: impl Fn(&[u8]) -> Result<(), String>,
) {
    let dir = fuzz_dir.join("regressions").join(target);
    if expected.is_empty() && !dir.exists() {
        return;
    }
    let found: BTreeSet<String> = files(&dir)
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    let listed: BTreeSet<String> = expected.iter().map(|(f, _)| f.to_string()).collect();
    assert_eq!(
        found,
        listed,
        "{}: files vs. expected errors",
        dir.display()
    );
    for (file, error) in expected {
        let path = dir.join(file);
        match run(&path, &check) {
            Ok(Err(e)) => assert!(
                e.contains(error),
                "{}: error {e:?} lacks {error:?}",
                path.display()
            ),
            Ok(Ok(())) => panic!(
                "{}: parses, expected an error with {error:?}",
                path.display()
            ),
            Err(msg) => panic!("{msg}"),
        }
    }
}

/// Fails when a folder of `<fuzz_dir>/regressions/` names no target (its inputs would never
/// be replayed).
pub fn check_regression_folders(fuzz_dir: &Path) {
    let dir = fuzz_dir.join("regressions");
    let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        assert!(
            TARGETS.contains(&name.as_str()),
            "regressions/{name}: not a fuzz target"
        );
    }
}
