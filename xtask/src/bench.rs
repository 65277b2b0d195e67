//! `cargo xtask bench`: run the criterion kernel benchmarks and summarise them as one markdown
//! table, each entry with its ratio to the baseline measured in the same group and run; with
//! `--model DIR`, also `mixtral bench` on that checkpoint at both activation precisions.
//!
//! Criterion keeps every result under `target/criterion/<group>/<function>/new/`
//! (`benchmark.json`: ids and throughput; `estimates.json`: the mean time in ns), so the table
//! is read back from there after the run. Absolute figures from a shared machine are noisy;
//! the ratios within a group are what compare.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

/// Errors of `cargo xtask bench`.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// A command line this tool does not understand.
    #[error("{0}\nusage: cargo xtask bench [FILTER] [--model DIR] [--threads N]")]
    Usage(String),
    /// `cargo bench` or `mixtral bench` could not start or failed.
    #[error("`{command}` failed ({status})")]
    Command { command: String, status: String },
    /// A criterion result file could not be read.
    #[error("reading {path}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A criterion result file is not the JSON criterion writes.
    #[error("parsing {path}: {reason}")]
    Parse { path: PathBuf, reason: String },
}

/// What to run.
struct Args {
    /// Criterion filter (a substring of `group/function`), if any.
    filter: Option<String>,
    /// A checkpoint for `mixtral bench`.
    model: Option<PathBuf>,
    /// `--threads` for `mixtral bench`.
    threads: Option<String>,
}

fn parse(args: &[String]) -> Result<Args, BenchError> {
    let mut out = Args {
        filter: None,
        model: None,
        threads: None,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = |flag: &str| {
            it.next()
                .cloned()
                .ok_or_else(|| BenchError::Usage(format!("{flag} needs a value")))
        };
        match a.as_str() {
            "--model" => out.model = Some(PathBuf::from(value("--model")?)),
            "--threads" => out.threads = Some(value("--threads")?),
            f if !f.starts_with('-') && out.filter.is_none() => out.filter = Some(f.to_string()),
            other => return Err(BenchError::Usage(format!("unknown argument `{other}`"))),
        }
    }
    Ok(out)
}

/// One criterion result.
#[derive(Debug)]
struct Entry {
    group: String,
    function: String,
    /// Mean time per iteration, ns.
    mean_ns: f64,
    /// Bytes or elements (FLOPs) per iteration, with the unit.
    throughput: Option<(f64, &'static str)>,
}

impl Entry {
    /// Throughput in GB/s or GFLOP/s (per ns = per second × 1e-9).
    fn rate(&self) -> Option<(f64, &'static str)> {
        self.throughput.map(|(n, unit)| (n / self.mean_ns, unit))
    }
}

pub fn run(args: &[String]) -> Result<ExitCode, BenchError> {
    let args = parse(args)?;
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask sits inside the workspace")
        .to_path_buf();
    let mut cargo = Command::new(env!("CARGO"));
    cargo
        .current_dir(&root)
        .args(["bench", "-p", "mixtral-benches", "--bench", "kernels", "--"]);
    cargo.args(args.filter.iter());
    status(&mut cargo, "cargo bench -p mixtral-benches")?;
    let mut entries = Vec::new();
    collect(&root.join("target/criterion"), &mut entries)?;
    if let Some(f) = &args.filter {
        entries.retain(|e| format!("{}/{}", e.group, e.function).contains(f.as_str()));
    }
    entries.sort_by(|a, b| (&a.group, &a.function).cmp(&(&b.group, &b.function)));
    let mut report = table(&entries);
    if let Some(model) = &args.model {
        report.push_str(&model_bench(&root, model, args.threads.as_deref())?);
    }
    println!("\n{report}");
    let path = root.join("target/bench-report.md");
    std::fs::write(&path, &report).map_err(|source| BenchError::Read {
        path: path.clone(),
        source,
    })?;
    println!("written to {}", path.display());
    Ok(ExitCode::SUCCESS)
}

/// Runs `cmd`, failing with its command line when it cannot start or exits non-zero.
fn status(cmd: &mut Command, name: &str) -> Result<(), BenchError> {
    let fail = |status: String| BenchError::Command {
        command: name.to_string(),
        status,
    };
    let s = cmd.status().map_err(|e| fail(e.to_string()))?;
    if s.success() {
        Ok(())
    } else {
        Err(fail(s.to_string()))
    }
}

/// Every `new/benchmark.json` under `dir`, with its `estimates.json`.
fn collect(dir: &Path, out: &mut Vec<Entry>) -> Result<(), BenchError> {
    let read_dir = match std::fs::read_dir(dir) {
        Ok(r) => r,
        Err(_) => return Ok(()), // no results (yet) below here
    };
    for item in read_dir.flatten() {
        let path = item.path();
        if path.is_dir() {
            if path.file_name().is_some_and(|n| n == "new") {
                if let Some(e) = entry(&path)? {
                    out.push(e);
                }
            } else {
                collect(&path, out)?;
            }
        }
    }
    Ok(())
}

fn read_json(path: &Path) -> Result<Value, BenchError> {
    let text = std::fs::read_to_string(path).map_err(|source| BenchError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|e| BenchError::Parse {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

/// One result directory (`…/new`), or `None` when it lacks criterion's files.
fn entry(dir: &Path) -> Result<Option<Entry>, BenchError> {
    let (bench, estimates) = (dir.join("benchmark.json"), dir.join("estimates.json"));
    if !bench.is_file() || !estimates.is_file() {
        return Ok(None);
    }
    let b = read_json(&bench)?;
    let e = read_json(&estimates)?;
    let bad = |what: &str, path: &Path| BenchError::Parse {
        path: path.to_path_buf(),
        reason: format!("no {what}"),
    };
    let text = |v: &Value, key: &str| v[key].as_str().map(str::to_string);
    let group = text(&b, "group_id").ok_or_else(|| bad("group_id", &bench))?;
    let function = text(&b, "function_id").ok_or_else(|| bad("function_id", &bench))?;
    let mean_ns = e["mean"]["point_estimate"]
        .as_f64()
        .ok_or_else(|| bad("mean.point_estimate", &estimates))?;
    let t = &b["throughput"];
    let throughput = if let Some(n) = t["Bytes"].as_f64() {
        Some((n, "GB/s"))
    } else {
        t["Elements"].as_f64().map(|n| (n, "GFLOP/s"))
    };
    Ok(Some(Entry {
        group,
        function,
        mean_ns,
        throughput,
    }))
}

/// The group's baseline: the plain read / memcpy of the same bytes where the group has one,
/// else the reference, else the scalar path.
fn baseline<'a>(group: &[&'a Entry]) -> Option<&'a Entry> {
    ["read-baseline", "memcpy", "reference", "cpu-scalar"]
        .iter()
        .find_map(|name| group.iter().find(|e| e.function == *name).copied())
}

/// The markdown table: one row per entry, its time, rate and speed relative to the baseline.
fn table(entries: &[Entry]) -> String {
    let mut s = String::from(
        "| group | implementation | time | rate | vs baseline in the same run |\n\
         | --- | --- | --- | --- | --- |\n",
    );
    let mut i = 0;
    while i < entries.len() {
        let n = entries[i..]
            .iter()
            .take_while(|e| e.group == entries[i].group)
            .count();
        let group: Vec<&Entry> = entries[i..i + n].iter().collect();
        let base = baseline(&group);
        for e in &group {
            let rate = e
                .rate()
                .map_or("".into(), |(r, unit)| format!("{r:.1} {unit}"));
            let ratio = match base {
                Some(b) if std::ptr::eq(*e, b) => "baseline".to_string(),
                Some(b) => format!("{:.2}× ({})", b.mean_ns / e.mean_ns, b.function),
                None => String::new(),
            };
            s.push_str(&format!(
                "| {} | {} | {} | {rate} | {ratio} |\n",
                e.group,
                e.function,
                time(e.mean_ns)
            ));
        }
        i += n;
    }
    s
}

fn time(ns: f64) -> String {
    match ns {
        n if n >= 1e6 => format!("{:.2} ms", n / 1e6),
        n if n >= 1e3 => format!("{:.1} µs", n / 1e3),
        n => format!("{n:.0} ns"),
    }
}

/// `mixtral bench` on `model` at both activation precisions, as table rows.
fn model_bench(root: &Path, model: &Path, threads: Option<&str>) -> Result<String, BenchError> {
    let mut build = Command::new(env!("CARGO"));
    build
        .current_dir(root)
        .args(["build", "--release", "-p", "mixtral-cli"]);
    status(&mut build, "cargo build --release -p mixtral-cli")?;
    let mut s = format!(
        "\n`mixtral bench --model {} --prompt-len 512 --gen 128`\n\n\
         | precision | prefill tokens/s | decode tokens/s | decode floor tokens/s | of floor | peak RSS |\n\
         | --- | --- | --- | --- | --- | --- |\n",
        model.display()
    );
    for precision in ["f32", "bf16"] {
        let mut cmd = Command::new(root.join("target/release/mixtral"));
        cmd.args(["bench", "--model"]).arg(model).args([
            "--prompt-len",
            "512",
            "--gen",
            "128",
            "--json",
            "--precision",
            precision,
        ]);
        if let Some(t) = threads {
            cmd.args(["--threads", t]);
        }
        let name = format!("mixtral bench --precision {precision}");
        let out = cmd.output().map_err(|e| BenchError::Command {
            command: name.clone(),
            status: e.to_string(),
        })?;
        if !out.status.success() {
            return Err(BenchError::Command {
                command: name,
                status: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        let j: Value = serde_json::from_slice(&out.stdout).map_err(|e| BenchError::Parse {
            path: PathBuf::from("<mixtral bench stdout>"),
            reason: e.to_string(),
        })?;
        let f = |k: &str| j[k].as_f64().unwrap_or(f64::NAN);
        s.push_str(&format!(
            "| {precision} | {:.1} | {:.1} | {:.1} | {:.0}% | {:.2} GB |\n",
            f("prefill_tokens_per_s"),
            f("decode_tokens_per_s"),
            f("decode_floor_tokens_per_s"),
            100.0 * f("decode_fraction_of_floor"),
            f("peak_rss_bytes") / 1e9
        ));
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(group: &str, function: &str, mean_ns: f64, bytes: f64) -> Entry {
        Entry {
            group: group.into(),
            function: function.into(),
            mean_ns,
            throughput: Some((bytes, "GB/s")),
        }
    }

    #[test]
    fn table_gives_each_entry_its_ratio_to_the_groups_baseline() {
        let entries = [
            e("gemv/x", "cpu-avx2", 2000.0, 4000.0),
            e("gemv/x", "read-baseline", 1000.0, 4000.0),
            e("rope/y", "cpu-avx2", 10.0, 1.0),
            e("rope/y", "reference", 40.0, 1.0),
        ];
        let t = table(&entries);
        assert!(
            t.contains("| gemv/x | cpu-avx2 | 2.0 µs | 2.0 GB/s | 0.50× (read-baseline) |"),
            "{t}"
        );
        assert!(
            t.contains("| gemv/x | read-baseline | 1.0 µs | 4.0 GB/s | baseline |"),
            "{t}"
        );
        assert!(
            t.contains("| rope/y | cpu-avx2 | 10 ns | 0.1 GB/s | 4.00× (reference) |"),
            "{t}"
        );
    }

    #[test]
    fn arguments() {
        let a = parse(&["gemv".into(), "--model".into(), "m".into()]).unwrap();
        assert_eq!(a.filter.as_deref(), Some("gemv"));
        assert_eq!(a.model, Some(PathBuf::from("m")));
        assert!(parse(&["--model".into()]).is_err());
        assert!(parse(&["--bogus".into()]).is_err());
    }
}
