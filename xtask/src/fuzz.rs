//! `cargo xtask fuzz [--seconds N] [--minimize] [TARGET...]`: run the cargo-fuzz targets of
//! `fuzz/` (the parsers of untrusted files: GGUF, safetensors header and shard index,
//! `config.json`/`params.json`, `--chat` files, chat templates) for N seconds each, and print
//! per target how many inputs it executed and whether it crashed.
//!
//! Needs the nightly toolchain and cargo-fuzz (`rustup toolchain install nightly`,
//! `cargo install cargo-fuzz`); CI does not fuzz, it replays the committed corpus on stable
//! (`crates/*/tests/fuzz_corpus.rs`).
//!
//! Each target reads the committed seeds of `fuzz/corpus/<target>/` and writes what it finds
//! to the scratch corpus `fuzz/target/corpus/<target>/` (git-ignored), so fuzzing never dirties
//! the tree. `--minimize` then rewrites `fuzz/corpus/<target>/` as at most
//! [`MAX_CORPUS_FILES`] inputs of both, chosen greedily for the most coverage edges, then the
//! most libFuzzer features (edge hit counts); hand-named seeds (any name that is not libFuzzer's
//! 40-hex-digit hash) are always kept. A crash, hang (an input running past [`TIMEOUT_S`]) or
//! out-of-memory (over [`RSS_LIMIT_MB`]) stops that target with its input saved under
//! `fuzz/artifacts/<target>/`, and the command exits non-zero; a fixed crash's input goes to
//! `fuzz/regressions/<target>/`, which the replay tests expect to fail to parse.

use crate::cuda_tools::repo_root;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

/// Every target with its largest input, bytes (`-max_len`): room for the structures each
/// parser walks (a GGUF header with many keys and tensors; JSON of a few kilobytes).
pub const TARGETS: &[(&str, usize)] = &[
    ("gguf", 65536),
    ("safetensors", 16384),
    ("safetensors_index", 8192),
    ("config", 8192),
    ("chat", 8192),
    ("template", 4096),
];
/// Seconds per target when `--seconds` is not given.
const DEFAULT_SECONDS: u64 = 60;
/// One input running longer than this, seconds, is a hang.
pub const TIMEOUT_S: u64 = 10;
/// More resident memory than this, MiB (or one allocation as large), is an out-of-memory.
pub const RSS_LIMIT_MB: u64 = 2048;
/// Most inputs `--minimize` keeps in a committed corpus (which CI replays on every test run).
pub const MAX_CORPUS_FILES: usize = 200;

const USAGE: &str = "usage: cargo xtask fuzz [--seconds N] [--minimize] [TARGET...]\n       \
    targets: gguf safetensors safetensors_index config chat template (default: all)";

/// Why the command failed (a crash found is not an error: it is reported, and the exit code
/// says so).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A command line this tool does not understand.
    #[error("{0}\n{USAGE}")]
    Usage(String),
    /// A command could not start, or failed other than by a fuzzer finding.
    #[error("`{command}` failed ({status}){hint}")]
    Command {
        /// The command line.
        command: String,
        /// Its exit status, or why it did not start.
        status: String,
        /// What may be missing.
        hint: &'static str,
    },
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
    /// libFuzzer's merge control file is not in the format this tool reads.
    #[error("{}: unexpected merge control file ({reason})", path.display())]
    Control {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> Error + 'a {
    move |source| Error::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// What to run.
struct Args {
    seconds: u64,
    minimize: bool,
    targets: Vec<(&'static str, usize)>,
}

fn parse(args: &[String]) -> Result<Args, Error> {
    let mut seconds = DEFAULT_SECONDS;
    let mut minimize = false;
    let mut targets = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--seconds" => {
                let v = it
                    .next()
                    .ok_or_else(|| Error::Usage("--seconds needs a value".into()))?;
                seconds = v.parse().ok().filter(|&s| s > 0).ok_or_else(|| {
                    Error::Usage(format!("--seconds `{v}`: not a positive integer"))
                })?;
            }
            "--minimize" => minimize = true,
            name if !name.starts_with('-') => {
                let target = TARGETS
                    .iter()
                    .find(|(t, _)| *t == name)
                    .ok_or_else(|| Error::Usage(format!("unknown target `{name}`")))?;
                if !targets.contains(target) {
                    targets.push(*target);
                }
            }
            other => return Err(Error::Usage(format!("unknown argument `{other}`"))),
        }
    }
    if targets.is_empty() {
        targets = TARGETS.to_vec();
    }
    Ok(Args {
        seconds,
        minimize,
        targets,
    })
}

/// How one target's run ended.
#[derive(Debug, Default, PartialEq)]
struct Outcome {
    /// Inputs executed (libFuzzer's `stat::number_of_executed_units`, else its last `#N`).
    execs: Option<u64>,
    /// Executions per second over the run.
    execs_per_s: Option<u64>,
    /// What libFuzzer or the sanitizer reported, if the run found something: `deadly signal`
    /// (a panic or abort), `timeout`, `out-of-memory (…)`, `AddressSanitizer: …`.
    finding: Option<String>,
    /// Where the offending input was written.
    artifact: Option<String>,
}

impl Outcome {
    /// Reads one line of libFuzzer's output.
    fn read(&mut self, line: &str) {
        let stat = |name: &str| {
            line.strip_prefix(name)
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        if let Some(n) = stat("stat::number_of_executed_units:") {
            self.execs = Some(n);
        } else if let Some(n) = stat("stat::average_exec_per_sec:") {
            self.execs_per_s = Some(n);
        } else if let Some(rest) = line.strip_prefix('#') {
            // Progress (`#1048576\tpulse  cov: …`, `#123\tDONE …`): a lower bound until the
            // final stats.
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            if let Ok(n) = digits.parse::<u64>()
                && rest[digits.len()..].starts_with(char::is_whitespace)
            {
                self.execs = Some(self.execs.map_or(n, |e| e.max(n)));
            }
        } else if let Some(i) = line.find("ERROR: libFuzzer: ") {
            self.finding = Some(line[i + "ERROR: libFuzzer: ".len()..].trim().to_string());
        } else if let Some(i) = line.find("ERROR: AddressSanitizer: ")
            && self.finding.is_none()
        {
            self.finding = Some(line[i + "ERROR: ".len()..].trim().to_string());
        } else if let Some(i) = line.find("Test unit written to ") {
            self.artifact = Some(line[i + "Test unit written to ".len()..].trim().to_string());
        }
    }
}

pub fn run(args: &[String]) -> Result<ExitCode, Error> {
    let args = parse(args)?;
    let fuzz_dir = repo_root().join("fuzz");
    let hint =
        "\n(fuzzing needs `rustup toolchain install nightly` and `cargo install cargo-fuzz`)";
    let mut build = cargo_fuzz(&fuzz_dir, &["build"]);
    // One target builds only itself; several build all at once.
    if let [(target, _)] = args.targets.as_slice() {
        build.arg(target);
    }
    status(&mut build, "cargo +nightly fuzz build", hint)?;
    let mut outcomes = Vec::new();
    for &(target, max_len) in &args.targets {
        let scratch = fuzz_dir.join("target/corpus").join(target);
        let seeds = fuzz_dir.join("corpus").join(target);
        std::fs::create_dir_all(&scratch).map_err(io("creating", &scratch))?;
        let flags = [
            format!("-max_total_time={}", args.seconds),
            format!("-max_len={max_len}"),
            format!("-timeout={TIMEOUT_S}"),
            format!("-rss_limit_mb={RSS_LIMIT_MB}"),
            "-print_final_stats=1".to_string(),
        ];
        let mut cmd = cargo_fuzz(&fuzz_dir, &["run", target]);
        cmd.arg(&scratch).arg(&seeds).arg("--").args(&flags);
        println!("== {target}: {} s", args.seconds);
        let outcome = fuzz(&mut cmd, target)?;
        if args.minimize && outcome.finding.is_none() {
            minimize(&fuzz_dir, target, max_len)?;
        }
        outcomes.push((target, outcome));
    }
    println!("\n{}", table(&outcomes));
    let found = outcomes.iter().any(|(_, o)| o.finding.is_some());
    Ok(if found {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// `cargo +nightly fuzz <args>` in `fuzz_dir`. The nightly toolchain is named explicitly, as
/// cargo-fuzz's sanitizer flags need it and rustup's `RUSTUP_TOOLCHAIN` from the outer cargo
/// would otherwise pick stable.
fn cargo_fuzz(fuzz_dir: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new("cargo");
    cmd.current_dir(fuzz_dir)
        .env_remove("RUSTUP_TOOLCHAIN")
        .args(["+nightly", "fuzz"])
        .args(args);
    cmd
}

/// Runs `cmd`, failing with its command line when it cannot start or exits non-zero.
fn status(cmd: &mut Command, name: &str, hint: &'static str) -> Result<(), Error> {
    let fail = |status: String| Error::Command {
        command: name.to_string(),
        status,
        hint,
    };
    let s = cmd.status().map_err(|e| fail(e.to_string()))?;
    if s.success() {
        Ok(())
    } else {
        Err(fail(s.to_string()))
    }
}

/// Runs one fuzzing command, passing its output through and reading libFuzzer's reports. A
/// non-zero exit is a finding when libFuzzer reported one, else an error.
fn fuzz(cmd: &mut Command, target: &str) -> Result<Outcome, Error> {
    let shown = format!("cargo +nightly fuzz run {target}");
    let fail = |status: String| Error::Command {
        command: shown.clone(),
        status,
        hint: "",
    };
    let mut child = cmd
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| fail(e.to_string()))?;
    let mut outcome = Outcome::default();
    let mut stderr = BufReader::new(child.stderr.take().expect("stderr is piped"));
    let mut line = Vec::new();
    loop {
        line.clear();
        match stderr.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        // libFuzzer prints crashing inputs escaped, but a panic message may hold any bytes.
        let text = String::from_utf8_lossy(&line);
        eprint!("{text}");
        outcome.read(text.trim_end());
    }
    let exit = child.wait().map_err(|e| fail(e.to_string()))?;
    if !exit.success() && outcome.finding.is_none() {
        return Err(fail(exit.to_string()));
    }
    Ok(outcome)
}

/// Rewrites `fuzz/corpus/<target>/` from itself and the scratch corpus: libFuzzer's merge
/// records each input's coverage in a control file, and [`cover`] picks the inputs to keep.
fn minimize(fuzz_dir: &Path, target: &str, max_len: usize) -> Result<(), Error> {
    let seeds = fuzz_dir.join("corpus").join(target);
    let scratch = fuzz_dir.join("target/corpus").join(target);
    let work = fuzz_dir.join("target/minimize").join(target);
    let _ = std::fs::remove_dir_all(&work);
    let out = work.join("out");
    std::fs::create_dir_all(&out).map_err(io("creating", &out))?;
    let control = work.join("control");
    let mut merge = cargo_fuzz(fuzz_dir, &["run", target]);
    merge.arg(&out).arg(&seeds).arg(&scratch).arg("--").args([
        "-merge=1".to_string(),
        format!("-merge_control_file={}", control.display()),
        format!("-max_len={max_len}"),
    ]);
    status(
        &mut merge,
        &format!("cargo +nightly fuzz run {target} -- -merge=1"),
        "",
    )?;
    let text = std::fs::read_to_string(&control).map_err(io("reading", &control))?;
    let inputs = read_control(&text).map_err(|reason| Error::Control {
        path: control.clone(),
        reason,
    })?;
    let keep = cover(&inputs, MAX_CORPUS_FILES);
    // By name: the scratch corpus may hold a committed input again (same bytes, same name).
    let name = |i: &Input| {
        i.path
            .file_name()
            .expect("a corpus file has a name")
            .to_owned()
    };
    let kept: HashSet<_> = keep.iter().map(|&i| name(&inputs[i])).collect();
    for input in inputs.iter().filter(|i| i.path.starts_with(&seeds)) {
        if !kept.contains(&name(input)) {
            std::fs::remove_file(&input.path).map_err(io("removing", &input.path))?;
        }
    }
    for &i in &keep {
        let to = seeds.join(name(&inputs[i]));
        if !to.exists() {
            std::fs::copy(&inputs[i].path, &to).map_err(io("copying", &inputs[i].path))?;
        }
    }
    let count = |feature: fn(&Input) -> &[u32], chosen: &[usize]| {
        let all: HashSet<u32> = inputs
            .iter()
            .flat_map(|i| feature(i).iter().copied())
            .collect();
        let got: HashSet<u32> = chosen
            .iter()
            .flat_map(|&i| feature(&inputs[i]).iter().copied())
            .collect();
        format!("{}/{}", got.len(), all.len())
    };
    println!(
        "{target}: corpus/{target} now holds {} of {} inputs, covering {} edges and {} features",
        kept.len(),
        inputs.len(),
        count(Input::edges, &keep),
        count(Input::features, &keep),
    );
    Ok(())
}

/// One input of a merge, as its control file describes it.
#[derive(Debug, Default, PartialEq)]
struct Input {
    path: PathBuf,
    /// Coverage edges (`COV` lines: indices of the instrumented program counters hit).
    edges: Vec<u32>,
    /// libFuzzer features (`FT` lines: edges with bucketed hit counts, and more).
    features: Vec<u32>,
}

impl Input {
    fn edges(&self) -> &[u32] {
        &self.edges
    }

    fn features(&self) -> &[u32] {
        &self.features
    }
}

/// Reads a libFuzzer merge control file: the input count, the count in the first corpus,
/// one path per input, then per input `STARTED i size`, `FT i features…` and `COV i pcs…`
/// (an input that crashed the merge has only `STARTED`).
fn read_control(text: &str) -> Result<Vec<Input>, String> {
    let mut lines = text.lines();
    let mut number = |what: &str| {
        lines
            .next()
            .and_then(|l| l.trim().parse::<usize>().ok())
            .ok_or_else(|| format!("no {what}"))
    };
    let n = number("input count")?;
    number("first corpus count")?;
    let mut inputs: Vec<Input> = (0..n)
        .map(|_| {
            lines.next().map(|p| Input {
                path: PathBuf::from(p),
                ..Input::default()
            })
        })
        .collect::<Option<_>>()
        .ok_or("fewer paths than inputs")?;
    for line in lines {
        let mut words = line.split_whitespace();
        let kind = words.next();
        if !matches!(kind, Some("FT" | "COV")) {
            continue;
        }
        let i: usize = words
            .next()
            .and_then(|w| w.parse().ok())
            .filter(|&i| i < n)
            .ok_or_else(|| format!("bad input index in `{line}`"))?;
        let values = words
            .map(|w| w.parse::<u32>().map_err(|_| format!("bad number `{w}`")))
            .collect::<Result<Vec<_>, _>>()?;
        match kind {
            Some("FT") => inputs[i].features = values,
            _ => inputs[i].edges = values,
        }
    }
    Ok(inputs)
}

/// True for a name libFuzzer gives an input it writes (the SHA-1 of its bytes).
fn is_hash_name(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.len() == 40 && n.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The inputs to keep: every hand-named seed, then, up to `max` in all, greedily the input
/// adding the most edges not yet covered, then the one adding the most features; ties go to
/// the smaller input, then the earlier. Gains only shrink as inputs are taken, so each round
/// re-scores only the heap's top (lazy greedy).
fn cover(inputs: &[Input], max: usize) -> Vec<usize> {
    let size = |i: usize| std::fs::metadata(&inputs[i].path).map_or(u64::MAX, |m| m.len());
    let mut keep: Vec<usize> = (0..inputs.len())
        .filter(|&i| !is_hash_name(&inputs[i].path))
        .collect();
    let limit = max.max(keep.len());
    let kinds: [fn(&Input) -> &[u32]; 2] = [Input::edges, Input::features];
    for feature in kinds {
        let mut covered: HashSet<u32> = keep
            .iter()
            .flat_map(|&i| feature(&inputs[i]).iter().copied())
            .collect();
        let gain = |i: usize, covered: &HashSet<u32>| {
            feature(&inputs[i])
                .iter()
                .filter(|f| !covered.contains(f))
                .count()
        };
        // Largest gain first, then the smaller input, then the earlier one.
        let mut heap: BinaryHeap<(usize, Reverse<u64>, Reverse<usize>)> = (0..inputs.len())
            .filter(|i| !keep.contains(i))
            .map(|i| (gain(i, &covered), Reverse(size(i)), Reverse(i)))
            .collect();
        while keep.len() < limit {
            let Some((g, s, Reverse(i))) = heap.pop() else {
                break;
            };
            let now = gain(i, &covered);
            if now == 0 {
                continue;
            }
            if now < g {
                heap.push((now, s, Reverse(i)));
                continue;
            }
            keep.push(i);
            covered.extend(feature(&inputs[i]).iter().copied());
        }
    }
    keep
}

/// The summary: one row per target.
fn table(outcomes: &[(&str, Outcome)]) -> String {
    let mut out = format!(
        "{:<18} {:>13} {:>9}  result\n",
        "target", "executions", "exec/s"
    );
    let num = |n: Option<u64>| n.map_or("?".to_string(), |n| n.to_string());
    for (target, o) in outcomes {
        let result = match (&o.finding, &o.artifact) {
            (None, _) => "ok".to_string(),
            (Some(f), Some(a)) => format!("FOUND {f}: {a}"),
            (Some(f), None) => format!("FOUND {f}"),
        };
        out.push_str(&format!(
            "{target:<18} {:>13} {:>9}  {result}\n",
            num(o.execs),
            num(o.execs_per_s)
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(lines: &str) -> Outcome {
        let mut o = Outcome::default();
        lines.lines().for_each(|l| o.read(l));
        o
    }

    #[test]
    fn final_stats_are_read() {
        let o = read(
            "#1048576\tpulse  cov: 1 ft: 2 corp: 3/4b exec/s: 5 rss: 6Mb\n\
             #1234567\tDONE   cov: 1 ft: 2 corp: 3/4b exec/s: 5 rss: 6Mb\n\
             Done 1234567 runs in 61 second(s)\n\
             stat::number_of_executed_units: 1234568\n\
             stat::average_exec_per_sec:     20239\n\
             stat::new_units_added:          12\n",
        );
        assert_eq!(
            o,
            Outcome {
                execs: Some(1234568),
                execs_per_s: Some(20239),
                finding: None,
                artifact: None
            }
        );
    }

    #[test]
    fn a_crash_is_read_with_its_input() {
        let o = read(
            "#2000\tNEW    cov: 1 ft: 2 corp: 3/4b lim: 4 exec/s: 0 rss: 6Mb L: 3/3 MS: 1 ChangeBit-\n\
             thread '<unnamed>' panicked at src/lib.rs:1:1:\n\
             ==12==ERROR: libFuzzer: deadly signal\n\
             artifact_prefix='/f/artifacts/gguf/'; Test unit written to /f/artifacts/gguf/crash-ab\n\
             stat::number_of_executed_units: 2001\n",
        );
        assert_eq!(o.execs, Some(2001));
        assert_eq!(o.finding.as_deref(), Some("deadly signal"));
        assert_eq!(o.artifact.as_deref(), Some("/f/artifacts/gguf/crash-ab"));
        let t = table(&[("gguf", o)]);
        assert!(
            t.contains("FOUND deadly signal: /f/artifacts/gguf/crash-ab"),
            "{t}"
        );
    }

    #[test]
    fn control_files_are_read() {
        let text = "3\n1\n/c/seed.json\n/s/aa\n/s/bb\n\
                    STARTED 0 10\nFT 0 7 8\nCOV 0 1 2\n\
                    STARTED 1 4\n\
                    STARTED 2 5\nFT 2 9\nCOV 2 3\n";
        let inputs = read_control(text).unwrap();
        assert_eq!(inputs.len(), 3);
        assert_eq!(inputs[0].path, Path::new("/c/seed.json"));
        assert_eq!(
            (&inputs[0].edges[..], &inputs[0].features[..]),
            (&[1, 2][..], &[7, 8][..])
        );
        assert!(inputs[1].edges.is_empty() && inputs[1].features.is_empty());
        assert_eq!(inputs[2].edges, [3]);
        assert!(read_control("2\n0\n/s/aa\n").is_err());
        assert!(read_control("1\n0\n/s/aa\nFT 1 3\n").is_err());
    }

    #[test]
    fn cover_keeps_seeds_then_the_most_edges_then_features() {
        let hash = |c: char| format!("/s/{}", c.to_string().repeat(40));
        let input = |path: String, edges: &[u32], features: &[u32]| Input {
            path: PathBuf::from(path),
            edges: edges.to_vec(),
            features: features.to_vec(),
        };
        let inputs = [
            input(hash('a'), &[1], &[1]),
            input("/c/seed.json".into(), &[1], &[1]),
            input(hash('b'), &[2, 3, 4], &[2]),
            input(hash('c'), &[3, 5], &[3]),
            input(hash('d'), &[5], &[4, 5, 6]),
            input(hash('e'), &[], &[4]),
        ];
        assert!(is_hash_name(&inputs[0].path) && !is_hash_name(&inputs[1].path));
        // The seed; b (3 new edges); c or d (1 new edge each: c); then d for its features.
        assert_eq!(cover(&inputs, 4), [1, 2, 3, 4]);
        assert_eq!(cover(&inputs, 2), [1, 2]);
        // Nothing left to gain: e adds only a feature d already has.
        assert_eq!(cover(&inputs, 10), [1, 2, 3, 4]);
    }

    #[test]
    fn arguments_are_checked() {
        let args = |a: &[&str]| parse(&a.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        let all = args(&[]).unwrap();
        assert_eq!(
            (all.seconds, all.targets.len()),
            (DEFAULT_SECONDS, TARGETS.len())
        );
        let some = args(&["--seconds", "5", "chat", "gguf", "chat"]).unwrap();
        assert_eq!(some.seconds, 5);
        assert_eq!(some.targets, [("chat", 8192), ("gguf", 65536)]);
        assert!(matches!(args(&["json"]), Err(Error::Usage(_))));
        assert!(matches!(args(&["--seconds", "0"]), Err(Error::Usage(_))));
        assert!(matches!(args(&["--seconds"]), Err(Error::Usage(_))));
    }
}
