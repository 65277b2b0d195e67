//! A snapshot of the Hugging Face cache is trusted only as far as it stays inside its repo's
//! folder: its files are symlinks into `blobs/` (or plain files, in caches written without
//! blobs), and nothing else. A link to `/etc/passwd`, or a snapshot directory that is a link
//! to some other folder, would make the loader read what the cache was never given, so it is
//! refused before any file of the snapshot is opened.

use crate::{Error, Result};
use std::path::{Component, Path, PathBuf};

const FILE_RULE: &str = "a snapshot file must resolve inside the repo's blobs/ or its snapshot";
const DIR_RULE: &str = "a snapshot directory must resolve inside the repo's snapshots/";

/// Checks the snapshot that `path` lies in (`path` is `FOLDER/snapshots/COMMIT` or a file
/// below it, FOLDER being the repo's `models--OWNER--NAME`): the snapshot directory must
/// resolve inside `FOLDER/snapshots`, and the file `path` names, or every entry of the
/// snapshot when `path` is the snapshot itself (the loader opens entries by name), inside
/// `FOLDER/blobs` or the snapshot. A link that dangles is left to the checks that report
/// missing files: it leads nowhere that could be read.
///
/// # Errors
/// [`Error::SnapshotEscape`] naming the first entry that leads out, and where it leads;
/// [`Error::ModelNotFound`] when `path` is not inside `FOLDER/snapshots/COMMIT` at all.
pub(super) fn check(folder: &Path, path: &Path) -> Result<()> {
    let snapshots = folder.join("snapshots");
    let commit = match path.strip_prefix(&snapshots).map(Path::components) {
        Ok(mut parts) => match parts.next() {
            Some(Component::Normal(commit)) => commit.to_os_string(),
            _ => return Err(outside_snapshots(path, &snapshots)),
        },
        Err(_) => return Err(outside_snapshots(path, &snapshots)),
    };
    let snapshot = snapshots.join(commit);
    let real_snapshots = canonical(&snapshots)?;
    let real_snapshot = canonical(&snapshot)?;
    if real_snapshot.parent() != Some(real_snapshots.as_path()) {
        return Err(Error::SnapshotEscape {
            path: snapshot,
            target: real_snapshot,
            allowed: DIR_RULE,
        });
    }
    // A cache written without blobs has none: then only the snapshot itself is allowed.
    let real_blobs = std::fs::canonicalize(folder.join("blobs")).ok();
    let inside = |target: &Path| {
        target.starts_with(&real_snapshot)
            || real_blobs.as_ref().is_some_and(|b| target.starts_with(b))
    };
    let files: Vec<PathBuf> = if path == snapshot {
        std::fs::read_dir(&snapshot)
            .map_err(|e| unreadable(&snapshot, &e))?
            .map(|entry| {
                entry
                    .map(|e| e.path())
                    .map_err(|e| unreadable(&snapshot, &e))
            })
            .collect::<Result<_>>()?
    } else {
        // Every step between the snapshot and the file, since each may be a link.
        let mut steps = Vec::new();
        let mut step = snapshot.clone();
        for part in path
            .strip_prefix(&snapshot)
            .unwrap_or(Path::new(""))
            .components()
        {
            step.push(part);
            steps.push(step.clone());
        }
        steps
    };
    for file in files {
        // A dangling link leads to nothing readable: the missing-file checks report it.
        if let Ok(target) = std::fs::canonicalize(&file)
            && !inside(&target)
        {
            return Err(Error::SnapshotEscape {
                path: file,
                target,
                allowed: FILE_RULE,
            });
        }
    }
    Ok(())
}

fn canonical(path: &Path) -> Result<PathBuf> {
    std::fs::canonicalize(path).map_err(|e| unreadable(path, &e))
}

fn unreadable(path: &Path, e: &std::io::Error) -> Error {
    Error::ModelNotFound {
        model: path.display().to_string(),
        reason: format!("cannot read this Hugging Face cache snapshot: {e}"),
    }
}

fn outside_snapshots(path: &Path, snapshots: &Path) -> Error {
    Error::ModelNotFound {
        model: path.display().to_string(),
        reason: format!("not inside the cache's {}", snapshots.display()),
    }
}
