//! Models by Hugging Face repo id, resolved offline against a hub cache built here from the
//! fixture models in the layout `huggingface_hub` writes (blobs, symlinked snapshots, refs),
//! and single `.safetensors` files with their config beside them. No test touches the network:
//! downloading is not exercised here (no machine of this project reaches the hub).
#![cfg(unix)]

use mixtral::hub::{HubOptions, resolve};
use mixtral::{Engine, ErrorKind, LoadOptions, LogitsOptions, Prompt};
use mixtral_testkit::{fixture_model, make_hub_cache};
use std::path::{Path, PathBuf};

fn offline(cache: &Path, revision: &str) -> HubOptions {
    let mut opts = HubOptions::from_env();
    opts.revision = revision.into();
    opts.cache_dir = cache.to_path_buf();
    opts.offline = true;
    opts.progress = false;
    opts
}

fn greedy(model: &Path) -> Vec<u32> {
    let opts = LoadOptions {
        threads: Some(1),
        prefault: false,
        ..LoadOptions::default()
    };
    let engine = Engine::load_with(model, opts, |_, _| {}).unwrap();
    let params = engine.params().max_new_tokens(6).temperature(0.0);
    engine
        .generate(&Prompt::Text("The capital of France is".into()), &params)
        .unwrap()
        .map(|t| t.unwrap().id)
        .collect()
}

#[test]
fn a_repo_id_resolves_to_its_cached_snapshot_by_branch_tag_or_commit() {
    let cache = tempfile::tempdir().unwrap();
    let main = make_hub_cache(
        cache.path(),
        "mixtral-test/tiny",
        "main",
        &fixture_model("tiny-bf16"),
    );
    let v2 = make_hub_cache(
        cache.path(),
        "mixtral-test/tiny",
        "v2",
        &fixture_model("tiny-f32"),
    );
    assert_ne!(main, v2);
    let snapshots = cache.path().join("models--mixtral-test--tiny/snapshots");

    let dir = resolve("mixtral-test/tiny", &offline(cache.path(), "main")).unwrap();
    assert_eq!(dir, snapshots.join(&main));
    // The snapshot (symlinks into blobs/) loads and generates as the fixture directory does.
    assert_eq!(greedy(&dir), greedy(&fixture_model("tiny-bf16")));

    let dir = resolve("mixtral-test/tiny", &offline(cache.path(), "v2")).unwrap();
    assert_eq!(dir, snapshots.join(&v2));
    // A commit hash needs no ref.
    let dir = resolve("mixtral-test/tiny", &offline(cache.path(), &v2)).unwrap();
    assert_eq!(dir, snapshots.join(&v2));
    // One file of a repo (how a GGUF repo's file is named).
    let file = resolve(
        "mixtral-test/tiny/config.json",
        &offline(cache.path(), "main"),
    )
    .unwrap();
    assert_eq!(file, snapshots.join(&main).join("config.json"));

    let err = resolve("mixtral-test/tiny", &offline(cache.path(), "v3")).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ModelFiles);
    assert!(
        err.to_string().contains("refs/v3") && err.to_string().contains("HF_HUB_OFFLINE"),
        "{err}"
    );
    let err = resolve("mixtral-test/absent", &offline(cache.path(), "main")).unwrap_err();
    assert!(err.to_string().contains("HF_HUB_OFFLINE"), "{err}");
}

#[test]
fn an_incomplete_or_hostile_cache_is_reported_not_followed() {
    let cache = tempfile::tempdir().unwrap();
    let commit = make_hub_cache(cache.path(), "a/tiny", "main", &fixture_model("tiny-bf16"));
    let folder = cache.path().join("models--a--tiny");
    // A shard whose blob is gone (an interrupted download): the link dangles.
    let shard = folder
        .join("snapshots")
        .join(&commit)
        .join("model-00002-of-00002.safetensors");
    let blob = std::fs::read_link(&shard).unwrap();
    std::fs::remove_file(shard.parent().unwrap().join(blob)).unwrap();
    let err = resolve("a/tiny", &offline(cache.path(), "main")).unwrap_err();
    assert!(
        err.to_string().contains("model-00002-of-00002.safetensors"),
        "{err}"
    );
    // A ref that is not a commit hash is never joined to a path.
    std::fs::write(folder.join("refs/main"), "../../../../etc").unwrap();
    let err = resolve("a/tiny", &offline(cache.path(), "main")).unwrap_err();
    assert!(err.to_string().contains("not a commit hash"), "{err}");
    // A revision is a ref name, never a path out of the cache.
    for revision in ["/etc/hostname", "../../../x", ""] {
        let err = resolve("a/tiny", &offline(cache.path(), revision)).unwrap_err();
        assert!(
            err.to_string().contains("not a branch, tag or commit"),
            "{err}"
        );
    }
    // Neither a path nor a repo id.
    for spec in ["no-such-dir", "../../x/y", "a/b c"] {
        let err = resolve(spec, &offline(cache.path(), "main")).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ModelFiles, "{spec}");
        assert!(err.to_string().contains("no such file"), "{spec}: {err}");
    }
}

/// A cache with `a/tiny` at `main` from the bf16 fixture: the cache and the snapshot.
fn tiny_cache() -> (tempfile::TempDir, PathBuf) {
    let cache = tempfile::tempdir().unwrap();
    let commit = make_hub_cache(cache.path(), "a/tiny", "main", &fixture_model("tiny-bf16"));
    let snapshot = cache.path().join("models--a--tiny/snapshots").join(commit);
    (cache, snapshot)
}

/// Replaces the snapshot's `name` by a symlink to `target`.
fn relink(snapshot: &Path, name: &str, target: &Path) {
    std::fs::remove_file(snapshot.join(name)).unwrap();
    std::os::unix::fs::symlink(target, snapshot.join(name)).unwrap();
}

#[test]
fn a_snapshot_file_leading_out_of_the_cache_is_refused() {
    let outside = tempfile::tempdir().unwrap();
    let stray = outside.path().join("stray.json");
    std::fs::copy(fixture_model("tiny-bf16").join("config.json"), &stray).unwrap();
    let real_stray = std::fs::canonicalize(&stray).unwrap();
    // Every file the loader may open: the config, the index (read while resolving), a shard,
    // the tokenizer; each to a file outside the cache, or to /etc/passwd.
    for (name, target) in [
        ("config.json", stray.clone()),
        ("model.safetensors.index.json", PathBuf::from("/etc/passwd")),
        ("model-00001-of-00002.safetensors", stray.clone()),
        ("tokenizer.json", PathBuf::from("/etc/passwd")),
    ] {
        let (cache, snapshot) = tiny_cache();
        relink(&snapshot, name, &target);
        let err = resolve("a/tiny", &offline(cache.path(), "main")).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ModelFiles, "{name}");
        let shown = std::fs::canonicalize(&target).unwrap_or(target);
        let msg = err.to_string();
        assert!(
            msg.contains(&snapshot.join(name).display().to_string())
                && msg.contains(&shown.display().to_string())
                && msg.contains("outside the Hugging Face cache"),
            "{name}: {msg}"
        );
    }
    // A relative link climbing out of blobs/ is no better; nor is one file named on its own.
    let (cache, snapshot) = tiny_cache();
    let depth = snapshot.components().count();
    let climb = "../".repeat(depth) + real_stray.to_str().unwrap().trim_start_matches('/');
    relink(&snapshot, "config.json", Path::new(&climb));
    for spec in ["a/tiny", "a/tiny/config.json"] {
        let err = resolve(spec, &offline(cache.path(), "main")).unwrap_err();
        assert!(
            err.to_string().contains("config.json") && err.to_string().contains("stray.json"),
            "{spec}: {err}"
        );
    }
}

#[test]
fn a_snapshot_directory_leading_out_of_the_cache_is_refused() {
    let (cache, snapshot) = tiny_cache();
    // The snapshot's files, as a plain model directory outside the cache.
    let outside = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(&snapshot).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, outside.path().join(path.file_name().unwrap())).unwrap();
    }
    std::fs::remove_dir_all(&snapshot).unwrap();
    std::os::unix::fs::symlink(outside.path(), &snapshot).unwrap();
    for spec in ["a/tiny", "a/tiny/config.json"] {
        let err = resolve(spec, &offline(cache.path(), "main")).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ModelFiles);
        let msg = err.to_string();
        assert!(
            msg.contains(&snapshot.display().to_string())
                && msg.contains(
                    &std::fs::canonicalize(outside.path())
                        .unwrap()
                        .display()
                        .to_string()
                )
                && msg.contains("snapshots/"),
            "{spec}: {msg}"
        );
    }
}

#[test]
fn caches_with_or_without_blobs_or_behind_a_link_still_resolve() {
    // Plain files in the snapshot (a cache written without blobs/ or symlinks).
    let (cache, snapshot) = tiny_cache();
    for entry in std::fs::read_dir(&snapshot).unwrap() {
        let link = entry.unwrap().path();
        let bytes = std::fs::read(&link).unwrap();
        std::fs::remove_file(&link).unwrap();
        std::fs::write(&link, bytes).unwrap();
    }
    std::fs::remove_dir_all(cache.path().join("models--a--tiny/blobs")).unwrap();
    let dir = resolve("a/tiny", &offline(cache.path(), "main")).unwrap();
    assert_eq!(dir, snapshot);
    assert_eq!(greedy(&dir), greedy(&fixture_model("tiny-bf16")));

    // The whole cache behind a symlink (a cache moved to another disk) stays its own.
    let (real, snapshot) = tiny_cache();
    let holder = tempfile::tempdir().unwrap();
    let cache = holder.path().join("hub");
    std::os::unix::fs::symlink(real.path(), &cache).unwrap();
    let dir = resolve("a/tiny", &offline(&cache, "main")).unwrap();
    assert_eq!(
        std::fs::canonicalize(dir).unwrap(),
        std::fs::canonicalize(snapshot).unwrap()
    );
}

/// `name` in a fresh directory with `beside` copied next to it.
fn single_file(from: &Path, name: &str, beside: &[&str]) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join(name);
    let weights = ["model.safetensors", "consolidated.safetensors"]
        .iter()
        .map(|w| from.join(w))
        .find(|p| p.exists())
        .unwrap();
    std::fs::copy(weights, &file).unwrap();
    for b in beside {
        std::fs::copy(from.join(b), dir.path().join(b)).unwrap();
    }
    (dir, file)
}

#[test]
fn a_single_safetensors_file_loads_with_the_config_beside_it() {
    let ids = [1, 140, 585, 17];
    let opts = LogitsOptions::default();
    let reference = Engine::load(fixture_model("tiny-f32"))
        .unwrap()
        .logits(&ids, &opts)
        .unwrap()
        .logits;
    let (_hf, file) = single_file(
        &fixture_model("tiny-f32"),
        "tiny-f32.safetensors",
        &["config.json", "generation_config.json"],
    );
    let engine = Engine::load(&file).unwrap();
    assert!(engine.logits(&ids, &opts).unwrap().logits == reference);
    // Mistral's names with params.json, against its own directory.
    let (_mistral, file) = single_file(
        &fixture_model("tiny-f32-mistral"),
        "weights.safetensors",
        &["params.json"],
    );
    let reference = Engine::load(fixture_model("tiny-f32-mistral"))
        .unwrap()
        .logits(&ids, &opts)
        .unwrap()
        .logits;
    let engine = Engine::load(&file).unwrap();
    assert!(engine.logits(&ids, &opts).unwrap().logits == reference);
    // Without a config beside it, the error says what is expected.
    let (_none, file) = single_file(&fixture_model("tiny-f32"), "w.safetensors", &[]);
    let err = Engine::load(&file).unwrap_err();
    assert!(err.to_string().contains("beside it"), "{err}");
}

#[test]
fn one_shard_of_several_names_its_directory() {
    let shard = fixture_model("tiny-bf16").join("model-00001-of-00002.safetensors");
    let err = Engine::load(&shard).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ModelFiles);
    assert!(
        err.to_string().contains("one shard") && err.to_string().contains("pass its directory"),
        "{err}"
    );
}
