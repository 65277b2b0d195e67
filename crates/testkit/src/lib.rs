//! Test helpers shared by the Mixtral crates: closeness checks, seeded data, fixture paths.
//!
//! A dev-dependency only, and it depends on none of our crates, so there are no
//! dev-dependency cycles. Everything works on plain slices.

use std::path::PathBuf;

/// The repository's `tests/fixtures` folder (reference data from transformers et al.), or
/// `$MIXTRAL_FIXTURES_DIR` where test binaries run away from the source tree (a GPU machine).
pub fn fixtures_dir() -> PathBuf {
    std::env::var_os("MIXTRAL_FIXTURES_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures"))
        })
}

/// The fixture model directory `name` (`tiny-f32`, `tiny-bf16`, `tiny-variant-f32`).
pub fn fixture_model(name: &str) -> PathBuf {
    fixtures_dir().join("models").join(name)
}

/// Largest `|x|`.
pub fn max_abs(x: &[f32]) -> f32 {
    x.iter().fold(0f32, |m, v| m.max(v.abs()))
}

/// KL(softmax(p) ‖ softmax(q)) in nats, computed in f64: how far logits `q` are from the
/// reference `p` as distributions (the fixtures' READMEs measure engines with it).
pub fn kl_div(p: &[f32], q: &[f32]) -> f64 {
    let log_softmax = |z: &[f32]| {
        let m = z.iter().fold(f64::MIN, |m, &v| m.max(f64::from(v)));
        let lse = z
            .iter()
            .map(|&v| (f64::from(v) - m).exp())
            .sum::<f64>()
            .ln()
            + m;
        z.iter().map(|&v| f64::from(v) - lse).collect::<Vec<f64>>()
    };
    let (lp, lq) = (log_softmax(p), log_softmax(q));
    lp.iter().zip(&lq).map(|(a, b)| a.exp() * (a - b)).sum()
}

/// Index of the largest element (the first one on ties).
pub fn argmax(x: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in x.iter().enumerate() {
        if v > x[best] {
            best = i;
        }
    }
    best
}

/// The worst element-wise disagreement between two equally long slices.
#[derive(Clone, Copy, Debug)]
pub struct Worst {
    /// Where it is.
    pub index: usize,
    /// Our value there.
    pub got: f32,
    /// The reference value there.
    pub want: f32,
    /// `max |got - want| / max |want|`.
    pub rel: f32,
}

/// Finds the largest `|got - want|` and scales it by `max |want|` (the fixtures' metric).
pub fn worst(got: &[f32], want: &[f32]) -> Worst {
    assert_eq!(got.len(), want.len(), "compared slices differ in length");
    let mut w = Worst {
        index: 0,
        got: 0.0,
        want: 0.0,
        rel: 0.0,
    };
    let mut max_diff = -1f32;
    for (i, (&g, &r)) in got.iter().zip(want).enumerate() {
        let d = if g.is_nan() || r.is_nan() {
            f32::INFINITY
        } else {
            (g - r).abs()
        };
        if d > max_diff {
            max_diff = d;
            w = Worst {
                index: i,
                got: g,
                want: r,
                rel: 0.0,
            };
        }
    }
    w.rel = max_diff / max_abs(want).max(f32::MIN_POSITIVE);
    w
}

/// Fails with the worst index, got, want and `what` when `max |got - want| > rel_tol · max |want|`.
pub fn check_rel(what: &str, got: &[f32], want: &[f32], rel_tol: f32) -> Result<Worst, String> {
    let w = worst(got, want);
    if w.rel <= rel_tol {
        Ok(w)
    } else {
        Err(format!(
            "{what}: max |diff| / max |ref| = {:.3e} > {rel_tol:.1e} (worst at {}: got {}, want {})",
            w.rel, w.index, w.got, w.want
        ))
    }
}

/// Fails when `|got - want| > atol + rtol · |want|` anywhere, naming the worst element.
pub fn check_close(
    what: &str,
    got: &[f32],
    want: &[f32],
    atol: f32,
    rtol: f32,
) -> Result<(), String> {
    assert_eq!(got.len(), want.len(), "{what}: lengths differ");
    let mut worst: Option<(usize, f32)> = None;
    for (i, (&g, &r)) in got.iter().zip(want).enumerate() {
        let excess = (g - r).abs() - (atol + rtol * r.abs());
        if excess > 0.0 || excess.is_nan() {
            let e = if excess.is_nan() {
                f32::INFINITY
            } else {
                excess
            };
            if worst.is_none_or(|(_, w)| e > w) {
                worst = Some((i, e));
            }
        }
    }
    match worst {
        None => Ok(()),
        Some((i, _)) => Err(format!(
            "{what}: element {i} got {} want {} (atol {atol:e}, rtol {rtol:e})",
            got[i], want[i]
        )),
    }
}

/// A fixture's JSON list of token ids.
pub fn json_ids(v: &serde_json::Value) -> Vec<u32> {
    let list = v
        .as_array()
        .unwrap_or_else(|| panic!("not a list of ids: {v}"));
    list.iter()
        .map(|x| {
            x.as_u64()
                .and_then(|id| u32::try_from(id).ok())
                .expect("a token id")
        })
        .collect()
}

/// `n` values uniform in `[-1, 1)` from a seeded SplitMix64 stream.
pub fn uniform(n: usize, seed: u64) -> Vec<f32> {
    let mut state = seed;
    (0..n)
        .map(|_| {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            ((z >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// An element-wise tolerance: `|got - want| ≤ atol + rtol · |want|`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Tol {
    /// Absolute part (matters where `want` is near zero).
    pub atol: f32,
    /// Relative part.
    pub rtol: f32,
}

impl Tol {
    /// Two f32 computations of sums of `len` terms of magnitude up to about 1, summed in
    /// different orders: rounding grows like `√len`, so both parts scale with it.
    pub fn reduction_f32(len: usize) -> Tol {
        let s = (len.max(1) as f32).sqrt();
        Tol {
            atol: 4e-6 * s,
            rtol: 4e-6 * s,
        }
    }

    /// [`check_close`] with this tolerance.
    pub fn check(self, what: &str, got: &[f32], want: &[f32]) -> Result<(), String> {
        check_close(what, got, want, self.atol, self.rtol)
    }
}

/// Runs `f` on a zeroed output of `n` elements and returns it (a one-line way to call a
/// destination-passing kernel in a test).
pub fn run(n: usize, f: impl FnOnce(&mut [f32])) -> Vec<f32> {
    let mut y = vec![0f32; n];
    f(&mut y);
    y
}

/// Turns `dir`, which holds tiny-bf16's `tokenizer.json`, into the ChatML fine-tune of
/// `tests/fixtures/tokenizer/chatml`: the fine-tune's two added tokens appended to the
/// tokenizer's (the fixture stores only those, not a second vocabulary), its
/// `tokenizer_config.json` and `chat_template.jinja` copied in. Returns the fixture's folder
/// (for its `expected.json`).
pub fn make_chatml(dir: &std::path::Path) -> PathBuf {
    let fixture = fixtures_dir().join("tokenizer/chatml");
    let read = |p: PathBuf| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(&p).unwrap_or_else(|e| panic!("{p:?}: {e}")))
            .unwrap_or_else(|e| panic!("{p:?}: {e}"))
    };
    let mut tokenizer = read(dir.join("tokenizer.json"));
    let extra = read(fixture.join("added_tokens.json"));
    let added = tokenizer["added_tokens"]
        .as_array_mut()
        .expect("added_tokens");
    added.extend(extra.as_array().expect("a list").iter().cloned());
    std::fs::write(dir.join("tokenizer.json"), tokenizer.to_string()).unwrap();
    for name in ["tokenizer_config.json", "chat_template.jinja"] {
        std::fs::copy(fixture.join(name), dir.join(name)).unwrap();
    }
    fixture
}

/// A Python that can import `module`: the one `env_var` names (CI sets it, and a test that
/// needs it must then pass), else `python3` when it can import the module, else `None` (the
/// test says so and skips).
pub fn python_with(env_var: &str, module: &str) -> Option<String> {
    if let Ok(p) = std::env::var(env_var) {
        return Some(p);
    }
    let ok = std::process::Command::new("python3")
        .args(["-c", &format!("import {module}")])
        .output()
        .is_ok_and(|o| o.status.success());
    ok.then(|| "python3".to_string())
}

/// Copies the files of directory `from` into `to` (created if missing): a writable copy of
/// a fixture model for a test to change.
pub fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap_or_else(|e| panic!("{from:?}: {e}")) {
        let path = entry.unwrap().path();
        std::fs::copy(&path, to.join(path.file_name().unwrap())).unwrap();
    }
}

/// Puts the files of `model_dir` into a Hugging Face hub cache at `cache` as the Python
/// `huggingface_hub` library lays them out: each file's bytes once under
/// `models--OWNER--NAME/blobs/`, the revision's `snapshots/COMMIT/FILE` as relative symlinks to
/// them, and `refs/REVISION` holding the commit hash (no newline). Returns the commit hash,
/// made from `revision` so that two revisions get two snapshots.
#[cfg(unix)]
pub fn make_hub_cache(
    cache: &std::path::Path,
    repo_id: &str,
    revision: &str,
    model_dir: &std::path::Path,
) -> String {
    let folder = cache.join(format!("models--{}", repo_id.replace('/', "--")));
    let fnv = |bytes: &[u8], seed: u64| {
        bytes.iter().fold(0xcbf2_9ce4_8422_2325 ^ seed, |h, &b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        })
    };
    let commit = format!(
        "{:016x}{:016x}{:08x}",
        fnv(revision.as_bytes(), 1),
        fnv(revision.as_bytes(), 2),
        0
    );
    let snapshot = folder.join("snapshots").join(&commit);
    for dir in [folder.join("blobs"), folder.join("refs"), snapshot.clone()] {
        std::fs::create_dir_all(&dir).unwrap();
    }
    for entry in std::fs::read_dir(model_dir).unwrap() {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        let blob = format!("{:016x}{:016x}", fnv(&bytes, 3), fnv(&bytes, 4));
        let blob_path = folder.join("blobs").join(&blob);
        if !blob_path.exists() {
            std::fs::write(&blob_path, &bytes).unwrap();
        }
        std::os::unix::fs::symlink(
            format!("../../blobs/{blob}"),
            snapshot.join(path.file_name().unwrap()),
        )
        .unwrap();
    }
    std::fs::write(folder.join("refs").join(revision), &commit).unwrap();
    commit
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worst_finds_the_largest_difference() {
        let w = worst(&[1.0, 2.0, 3.0], &[1.0, 2.5, 4.0]);
        assert_eq!(w.index, 2);
        assert_eq!(w.rel, 0.25);
        assert!(check_rel("x", &[1.0, 2.0, 3.0], &[1.0, 2.5, 4.0], 0.2).is_err());
    }

    #[test]
    fn nan_never_passes() {
        assert!(check_rel("x", &[f32::NAN], &[1.0], 1.0).is_err());
        assert!(check_close("x", &[f32::NAN], &[1.0], 1.0, 1.0).is_err());
    }

    #[test]
    fn uniform_is_seeded_and_in_range() {
        let a = uniform(1000, 7);
        assert_eq!(a, uniform(1000, 7));
        assert_ne!(a, uniform(1000, 8));
        assert!(a.iter().all(|v| (-1.0..1.0).contains(v)));
    }
}
