//! Models named by Hugging Face repo id (`mistralai/Mixtral-8x7B-Instruct-v0.1`): found in the
//! local Hugging Face cache first, downloaded into it otherwise (feature `download`, on by
//! default), both through the `hf-hub` crate.
//!
//! The cache is the one the Python `huggingface_hub` library and `hf-hub` share:
//! `$HF_HUB_CACHE`, else `$HF_HOME/hub`, else `~/.cache/huggingface/hub`; inside it
//! `models--OWNER--NAME/` holds `blobs/` (files by hash), `refs/REVISION` (a commit hash per
//! branch or tag) and `snapshots/COMMIT/` (the repo's files as symlinks into `blobs/`). A
//! snapshot directory is a model directory as it stands, so resolving a repo id means finding
//! the snapshot of the asked revision and checking it holds a whole model: the loader then
//! opens it like any other directory (it only ever opens plain file names inside it). Before
//! any file of a snapshot is read, `snapshot::check` makes sure the snapshot and its files
//! stay inside the repo's folder of the cache.
//!
//! Offline first: a complete snapshot in the cache is used without asking the network;
//! `HF_HUB_OFFLINE=1` (or [`HubOptions::offline`]) forbids the network altogether.

mod snapshot;

use crate::{Error, Result};
use std::path::{Path, PathBuf};

/// Files a model directory may use besides its weights (fetched when the repo has them).
const MODEL_FILES: &[&str] = &[
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer.model",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "model.safetensors.index.json",
    "params.json",
];

/// The most bytes of a safetensors index read while checking a snapshot.
const MAX_INDEX_BYTES: u64 = 64 << 20;

/// Where and how repo ids are resolved. Start from [`HubOptions::from_env`] and change the
/// fields you need.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct HubOptions {
    /// Branch, tag, `refs/pr/N` or commit hash (`main` by default).
    pub revision: String,
    /// The hub cache directory (the one holding `models--…` folders).
    pub cache_dir: PathBuf,
    /// Never use the network: only what the cache holds.
    pub offline: bool,
    /// Show download progress bars on stderr.
    pub progress: bool,
    /// The access token sent with downloads (gated repos such as mistralai's need one).
    pub token: Option<String>,
}

impl HubOptions {
    /// Options from the environment, read as Python's `huggingface_hub` reads it:
    /// - cache: `HF_HUB_CACHE`, else the older `HUGGINGFACE_HUB_CACHE`, else `HF_HOME/hub`,
    ///   where `HF_HOME` defaults to `$XDG_CACHE_HOME/huggingface`, else
    ///   `~/.cache/huggingface`;
    /// - token: `HF_TOKEN`, else the file `HF_TOKEN_PATH` names, else `HF_HOME/token` (what
    ///   `huggingface-cli login` writes); empty values count as unset;
    /// - offline: `HF_HUB_OFFLINE` set to `1`, `true`, `yes` or `on`;
    /// - revision `main`; progress bars when stderr is a terminal.
    pub fn from_env() -> HubOptions {
        let var = |k: &str| {
            std::env::var_os(k)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        let hf_home = var("HF_HOME").unwrap_or_else(|| {
            var("XDG_CACHE_HOME")
                .or_else(|| var("HOME").map(|h| h.join(".cache")))
                .unwrap_or_else(|| PathBuf::from(".cache"))
                .join("huggingface")
        });
        let cache_dir = var("HF_HUB_CACHE")
            .or_else(|| var("HUGGINGFACE_HUB_CACHE"))
            .unwrap_or_else(|| hf_home.join("hub"));
        let token = std::env::var("HF_TOKEN")
            .ok()
            .filter(|t| !t.trim().is_empty())
            .or_else(|| {
                let path = var("HF_TOKEN_PATH").unwrap_or_else(|| hf_home.join("token"));
                // A token is a line of text: anything larger is not one.
                mixtral_tensor::read_small_file(&path, 4096)
                    .ok()
                    .and_then(|b| String::from_utf8(b).ok())
            })
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty());
        let offline = std::env::var("HF_HUB_OFFLINE").is_ok_and(|v| {
            matches!(
                v.trim().to_ascii_lowercase().as_str(),
                "1" | "true" | "yes" | "on"
            )
        });
        HubOptions {
            revision: "main".into(),
            cache_dir,
            offline,
            progress: std::io::IsTerminal::is_terminal(&std::io::stderr()),
            token,
        }
    }
}

/// Whether `revision` may name a ref file inside the cache: a branch, tag, `refs/pr/N` or
/// commit hash, never an absolute path or a `..` step out of `refs/`.
fn valid_revision(revision: &str) -> bool {
    !revision.is_empty()
        && revision.len() <= 256
        && revision.split('/').all(|part| {
            !part.is_empty()
                && part != "."
                && part != ".."
                && part
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        })
}

impl Default for HubOptions {
    /// [`HubOptions::from_env`].
    fn default() -> HubOptions {
        HubOptions::from_env()
    }
}

/// The start of every message about a repo id that could not be resolved: the spelling may
/// have been meant as a path.
const NEITHER: &str = "no such file or directory, and as a Hugging Face repo id it is";

/// Why a model could not be found.
fn not_found(spec: &str, reason: impl Into<String>) -> Error {
    Error::ModelNotFound {
        model: spec.to_string(),
        reason: reason.into(),
    }
}

/// A repo id and, optionally, one file of the repo: `OWNER/NAME` or `OWNER/NAME/FILE.gguf`.
#[derive(Debug, PartialEq, Eq)]
struct RepoRef<'a> {
    id: &'a str,
    file: Option<&'a str>,
}

/// Parses `spec` as a repo reference; `None` when it cannot be one (so it was meant as a
/// path). Each part is what the hub allows in names (ASCII letters, digits, `-`, `_`, `.`),
/// never `.` or `..`, so nothing built from it can leave the cache.
fn parse_repo(spec: &str) -> Option<RepoRef<'_>> {
    let ok = |part: &str| {
        !part.is_empty()
            && part != "."
            && part != ".."
            && part.len() <= 96
            && part
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    };
    let mut parts = spec.splitn(3, '/');
    let (owner, name) = (parts.next()?, parts.next()?);
    let file = parts.next();
    if !ok(owner) || !ok(name) || file.is_some_and(|f| !f.split('/').all(ok)) {
        return None;
    }
    Some(RepoRef {
        id: &spec[..owner.len() + 1 + name.len()],
        file,
    })
}

/// Resolves a model argument to a local path: an existing path as it is; otherwise a repo id
/// (`OWNER/NAME`, or `OWNER/NAME/FILE` for one file of the repo, such as a GGUF file) through
/// the Hugging Face cache, downloading what is missing unless offline.
///
/// # Errors
/// [`Error::ModelNotFound`] when `spec` is neither an existing path nor a repo id, or the
/// repo is not (wholly) in the cache and the network is off limits or failed.
pub fn resolve(spec: &str, opts: &HubOptions) -> Result<PathBuf> {
    let path = Path::new(spec);
    if std::fs::symlink_metadata(path).is_ok() {
        return Ok(path.to_path_buf());
    }
    if !valid_revision(&opts.revision) {
        return Err(not_found(
            spec,
            format!(
                "revision `{}` is not a branch, tag or commit name",
                opts.revision.escape_debug()
            ),
        ));
    }
    let Some(repo) = parse_repo(spec) else {
        return Err(not_found(
            spec,
            "no such file or directory (nor a Hugging Face repo id OWNER/NAME)",
        ));
    };
    let missing = match cached(&repo, opts)? {
        Ok(path) => return Ok(path),
        Err(missing) => missing,
    };
    if opts.offline {
        return Err(not_found(
            spec,
            format!(
                "{NEITHER} not in the Hugging Face cache {} at revision `{}` ({missing}), and HF_HUB_OFFLINE \
                 forbids downloading it",
                opts.cache_dir.display(),
                opts.revision
            ),
        ));
    }
    download(spec, &repo, opts, &missing)
}

/// Where a cached file of the revision is: hf-hub follows `refs/REVISION` for a branch or
/// tag; a commit hash names its snapshot directly (huggingface_hub writes no ref for it).
/// `Err` says why the file is not there.
fn cached_file(
    repo: &RepoRef<'_>,
    opts: &HubOptions,
    file: &str,
) -> std::result::Result<PathBuf, String> {
    let hf_repo = hf_hub::Repo::with_revision(
        repo.id.to_string(),
        hf_hub::RepoType::Model,
        opts.revision.clone(),
    );
    let folder = repo_folder(repo, opts);
    let commit = match std::fs::read_to_string(folder.join("refs").join(&opts.revision)) {
        // hf-hub joins the ref's text to the path unchecked: only a commit hash is trusted.
        Ok(hash) if is_commit_hash(&hash) => {
            let cache = hf_hub::Cache::new(opts.cache_dir.clone());
            return cache.repo(hf_repo).get(file).ok_or_else(|| {
                format!(
                    "{file} is not in snapshot {}",
                    folder.join("snapshots").join(hash).display()
                )
            });
        }
        Ok(_) => {
            return Err(format!(
                "refs/{} in {} is not a commit hash",
                opts.revision,
                folder.display()
            ));
        }
        Err(_) if is_commit_hash(&opts.revision) => &opts.revision,
        Err(_) => return Err(format!("no refs/{} in {}", opts.revision, folder.display())),
    };
    let path = folder.join("snapshots").join(commit).join(file);
    // `exists` follows the symlink: a link whose blob is gone is missing.
    match path.exists() {
        true => Ok(path),
        false => Err(format!("{} does not exist", path.display())),
    }
}

/// The repo's folder in the cache: `models--OWNER--NAME`.
fn repo_folder(repo: &RepoRef<'_>, opts: &HubOptions) -> PathBuf {
    let hf_repo = hf_hub::Repo::new(repo.id.to_string(), hf_hub::RepoType::Model);
    opts.cache_dir.join(hf_repo.folder_name())
}

fn is_commit_hash(s: &str) -> bool {
    s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The cached model: `Ok(Ok(path))`, or `Ok(Err(what is missing))`.
fn cached(repo: &RepoRef<'_>, opts: &HubOptions) -> Result<std::result::Result<PathBuf, String>> {
    if let Some(file) = repo.file {
        return match cached_file(repo, opts, file) {
            Ok(path) => snapshot::check(&repo_folder(repo, opts), &path).map(|()| Ok(path)),
            Err(why) => Ok(Err(why)),
        };
    }
    // The snapshot directory is where its config lies (either layout's).
    let config =
        cached_file(repo, opts, "config.json").or_else(|_| cached_file(repo, opts, "params.json"));
    let dir = match config {
        Ok(path) => path.parent().map(Path::to_path_buf).unwrap_or_default(),
        Err(why) => return Ok(Err(why)),
    };
    // Before the index is read: it, like every file of the snapshot, may lead anywhere.
    snapshot::check(&repo_folder(repo, opts), &dir)?;
    Ok(missing_weights(&dir)?.map_or(Ok(dir.clone()), Err))
}

/// What a snapshot lacks to be a whole model directory, or `None`.
fn missing_weights(dir: &Path) -> Result<Option<String>> {
    let has = |name: &str| dir.join(name).exists();
    if has("config.json") {
        let index = dir.join("model.safetensors.index.json");
        if index.exists() {
            let text = mixtral_tensor::read_small_file(&index, MAX_INDEX_BYTES)?;
            let json: serde_json::Value =
                serde_json::from_slice(&text).map_err(|e| Error::ModelNotFound {
                    model: index.display().to_string(),
                    reason: format!("unreadable index: {e}"),
                })?;
            let mut shards: Vec<&str> = json["weight_map"]
                .as_object()
                .map(|m| m.values().filter_map(|v| v.as_str()).collect())
                .unwrap_or_default();
            shards.sort_unstable();
            shards.dedup();
            let absent: Vec<&str> = shards.into_iter().filter(|s| !has(s)).collect();
            return Ok((!absent.is_empty())
                .then(|| format!("shards not downloaded: {}", absent.join(", "))));
        }
        return Ok((!has("model.safetensors")).then(|| "no model.safetensors".to_string()));
    }
    if has("params.json") {
        let any = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| {
                let name = e.file_name();
                let name = name.to_string_lossy();
                name.starts_with("consolidated")
                    && name.ends_with(".safetensors")
                    && e.path().exists()
            });
        return Ok((!any).then(|| "no consolidated*.safetensors".to_string()));
    }
    Ok(Some(format!(
        "{} has neither config.json nor params.json",
        dir.display()
    )))
}

/// The weight files of a repo worth fetching, from its file list: the safetensors of the
/// layout it has (Hugging Face's `model*.safetensors` when it has a `config.json`, Mistral's
/// `consolidated*.safetensors` otherwise), plus the small files the loader reads.
#[cfg_attr(not(feature = "download"), allow(dead_code))]
fn files_to_fetch<'a>(listing: &[&'a str]) -> Vec<&'a str> {
    let hf = listing.contains(&"config.json");
    listing
        .iter()
        .copied()
        .filter(|f| {
            MODEL_FILES.contains(f)
                || (f.ends_with(".safetensors")
                    && !f.contains('/')
                    && f.starts_with(if hf { "model" } else { "consolidated" }))
        })
        .collect()
}

#[cfg(feature = "download")]
fn download(spec: &str, repo: &RepoRef<'_>, opts: &HubOptions, missing: &str) -> Result<PathBuf> {
    use hf_hub::api::sync::ApiBuilder;
    let fail = |what: &str, e: &dyn std::fmt::Display| {
        let e = e.to_string();
        // Gated repos (mistralai's among them) answer 401/403 without a token or licence.
        let hint = if e.contains("401") || e.contains("403") {
            " (a gated repo: accept its licence on huggingface.co, then log in with \
             `huggingface-cli login` or set HF_TOKEN)"
        } else {
            ""
        };
        not_found(
            spec,
            format!("{NEITHER} not in the Hugging Face cache ({missing}); {what}: {e}{hint}"),
        )
    };
    let cache = hf_hub::Cache::new(opts.cache_dir.clone());
    let mut builder = ApiBuilder::from_cache(cache)
        .with_progress(opts.progress)
        .with_token(opts.token.clone());
    if let Ok(endpoint) = std::env::var("HF_ENDPOINT") {
        builder = builder.with_endpoint(endpoint);
    }
    let api = builder
        .build()
        .map_err(|e| fail("starting the client", &e))?;
    let api_repo = api.repo(hf_hub::Repo::with_revision(
        repo.id.to_string(),
        hf_hub::RepoType::Model,
        opts.revision.clone(),
    ));
    if let Some(file) = repo.file {
        let path = api_repo
            .get(file)
            .map_err(|e| fail(&format!("downloading {file}"), &e))?;
        snapshot::check(&repo_folder(repo, opts), &path)?;
        return Ok(path);
    }
    let info = api_repo
        .info()
        .map_err(|e| fail("listing the repo on the hub", &e))?;
    let listing: Vec<&str> = info.siblings.iter().map(|s| s.rfilename.as_str()).collect();
    let has_weights = listing.iter().any(|f| f.ends_with(".safetensors"));
    let ggufs: Vec<&str> = listing
        .iter()
        .copied()
        .filter(|f| f.ends_with(".gguf"))
        .collect();
    if !has_weights && !ggufs.is_empty() {
        return Err(not_found(
            spec,
            format!(
                "the repo holds GGUF files: name one as {}/FILE ({})",
                repo.id,
                ggufs.join(", ")
            ),
        ));
    }
    let mut dir = None;
    for file in files_to_fetch(&listing) {
        let path = api_repo
            .get(file)
            .map_err(|e| fail(&format!("downloading {file}"), &e))?;
        dir = path.parent().map(Path::to_path_buf);
    }
    let dir = dir.ok_or_else(|| {
        not_found(
            spec,
            "the repo has no config.json, params.json or safetensors weights (for a GGUF repo, \
             name the file: OWNER/NAME/FILE.gguf)",
        )
    })?;
    // The download may have kept files the cache already had: those may lead anywhere.
    snapshot::check(&repo_folder(repo, opts), &dir)?;
    match missing_weights(&dir)? {
        None => Ok(dir),
        Some(why) => Err(not_found(spec, format!("downloaded, but {why}"))),
    }
}

#[cfg(not(feature = "download"))]
fn download(spec: &str, _: &RepoRef<'_>, opts: &HubOptions, missing: &str) -> Result<PathBuf> {
    Err(not_found(
        spec,
        format!(
            "{NEITHER} not in the Hugging Face cache {} ({missing}), and this build has no \
             `download` feature",
            opts.cache_dir.display()
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_ids_parse_and_paths_do_not() {
        let r = parse_repo("mistralai/Mixtral-8x7B-Instruct-v0.1").unwrap();
        assert_eq!(
            (r.id, r.file),
            ("mistralai/Mixtral-8x7B-Instruct-v0.1", None)
        );
        let r = parse_repo("TheBloke/M-GGUF/m.Q4_K_M.gguf").unwrap();
        assert_eq!((r.id, r.file), ("TheBloke/M-GGUF", Some("m.Q4_K_M.gguf")));
        for not_a_repo in [
            "model",
            "/abs/path",
            "./rel/path",
            "a/../b",
            "a/b/../../etc",
            "a//b",
            "a/b c",
            "../x/y",
            "a/b/",
        ] {
            assert_eq!(parse_repo(not_a_repo), None, "{not_a_repo}");
        }
    }

    #[test]
    fn revisions_stay_inside_refs() {
        for ok in ["main", "v0.1", "refs/pr/12", &"ab".repeat(20)] {
            assert!(valid_revision(ok), "{ok}");
        }
        for bad in [
            "",
            "/etc/hostname",
            "../../x",
            "a/../../b",
            "a//b",
            "main\n",
            "a b",
        ] {
            assert!(!valid_revision(bad), "{bad:?}");
        }
    }

    #[test]
    fn fetches_the_layout_the_repo_has() {
        let hf = [
            "config.json",
            "model-00001-of-00002.safetensors",
            "model-00002-of-00002.safetensors",
            "model.safetensors.index.json",
            "consolidated.00.pt",
            "pytorch_model-00001-of-00002.bin",
            "tokenizer.json",
            "README.md",
        ];
        assert_eq!(
            files_to_fetch(&hf),
            [
                "config.json",
                "model-00001-of-00002.safetensors",
                "model-00002-of-00002.safetensors",
                "model.safetensors.index.json",
                "tokenizer.json"
            ]
        );
        let mistral = [
            "params.json",
            "consolidated.safetensors",
            "tokenizer.model",
            "x/y.safetensors",
        ];
        assert_eq!(
            files_to_fetch(&mistral),
            ["params.json", "consolidated.safetensors", "tokenizer.model"]
        );
    }
}
