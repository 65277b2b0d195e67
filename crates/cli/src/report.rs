//! Printing errors for people: the message and its chain of causes, one per line, no backtrace.

use std::error::Error;

/// Writes `error: …` and each `caused by: …` to stderr.
pub(crate) fn error(err: &(dyn Error + 'static)) {
    let mut shown = err.to_string();
    eprintln!("error: {shown}");
    let mut source = err.source();
    while let Some(cause) = source {
        // A message that quotes its cause, or a transparent wrapper: print the text once.
        let text = cause.to_string();
        if !shown.ends_with(&text) {
            eprintln!("  caused by: {text}");
            shown = text;
        }
        source = cause.source();
    }
}

/// A byte count in binary units.
pub(crate) fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.2} {}", UNITS[unit])
    }
}

/// A parameter count in millions or billions.
pub(crate) fn count(n: u64) -> String {
    if n >= 1_000_000_000 {
        format!("{:.2} B", n as f64 / 1e9)
    } else {
        format!("{:.2} M", n as f64 / 1e6)
    }
}
