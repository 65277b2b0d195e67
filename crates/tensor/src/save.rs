//! Writing tensors to a safetensors file (used for machine-readable outputs such as logits),
//! and the careful file replacement every output of this engine goes through.

use crate::{Error, Result, Tensor};
use std::borrow::Cow;
use std::io::Write;
use std::path::{Path, PathBuf};

struct View<'a>(&'a Tensor);

impl safetensors::View for View<'_> {
    fn dtype(&self) -> safetensors::Dtype {
        // `save` refuses block-quantized tensors before any view is serialized.
        self.0
            .dtype()
            .to_safetensors()
            .unwrap_or(safetensors::Dtype::U8)
    }
    fn shape(&self) -> &[usize] {
        self.0.dims()
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(self.0.as_bytes())
    }
    fn data_len(&self) -> usize {
        self.0.as_bytes().len()
    }
}

/// Writes `tensors` (name, tensor) to `path` in safetensors format, through
/// [`write_file_replacing`]. Block-quantized tensors have no safetensors dtype and are refused.
pub fn save(path: impl AsRef<Path>, tensors: &[(String, Tensor)]) -> Result<()> {
    let path = path.as_ref();
    if let Some((name, t)) = tensors
        .iter()
        .find(|(_, t)| t.dtype().to_safetensors().is_none())
    {
        return Err(Error::UnsupportedDtype {
            path: path.into(),
            name: name.clone(),
            dtype: t.dtype().to_string(),
        });
    }
    let views = tensors.iter().map(|(name, t)| (name.as_str(), View(t)));
    let bytes = safetensors::serialize(views, None).map_err(|e| Error::CorruptHeader {
        path: path.into(),
        source: Box::new(e),
    })?;
    write_file_replacing(path, &bytes)
}

/// Writes `bytes` to `path`: to a new temporary file beside it, then renamed over it, so no
/// reader ever sees half a file. Only a regular file (or nothing) may be at `path`: an existing
/// regular file is replaced and keeps its permissions; a symbolic link, a directory, a FIFO, a
/// socket or a device node is refused (renaming over `/dev/null` as root would replace the
/// device itself).
pub fn write_file_replacing(path: &Path, bytes: &[u8]) -> Result<()> {
    let existing = match std::fs::symlink_metadata(path) {
        Ok(m) => Some(m),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(Error::io(path, e)),
    };
    if let Some(m) = &existing {
        let kind = m.file_type();
        let what = if kind.is_symlink() {
            Some("symbolic link")
        } else if kind.is_dir() {
            Some("directory")
        } else if !kind.is_file() {
            Some("special file (FIFO, socket or device)")
        } else {
            None
        };
        if let Some(what) = what {
            return Err(Error::NotARegularFile {
                path: path.into(),
                what,
            });
        }
    }
    let tmp = temporary_beside(path);
    let written = (|| -> std::io::Result<()> {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)?;
        file.write_all(bytes)?;
        if let Some(m) = &existing {
            file.set_permissions(m.permissions())?;
        }
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    written.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io(path, e)
    })
}

/// A name for a temporary file in `path`'s directory that no other writer uses.
fn temporary_beside(path: &Path) -> PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let name = path
        .file_name()
        .map_or("out".into(), |n| n.to_string_lossy());
    let unique = COUNTER.fetch_add(1, Ordering::Relaxed);
    let tmp = format!(".{name}.{}.{unique}.tmp", std::process::id());
    path.with_file_name(tmp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_a_regular_file_keeping_its_permissions() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.bin");
        std::fs::write(&path, b"old").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        write_file_replacing(&path, b"new").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o640);
        // Nothing is left behind.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn refuses_links_directories_and_special_files() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        std::fs::write(&target, b"keep").unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let sub = dir.path().join("sub");
        std::fs::create_dir(&sub).unwrap();
        for (path, what) in [
            (link.as_path(), "symbolic link"),
            (sub.as_path(), "directory"),
            (Path::new("/dev/null"), "special file"),
        ] {
            let err = write_file_replacing(path, b"x").unwrap_err().to_string();
            assert!(err.contains(what) && err.contains("refusing"), "{err}");
        }
        assert_eq!(std::fs::read(&target).unwrap(), b"keep");
        assert!(
            std::fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        use std::os::unix::fs::FileTypeExt;
        assert!(
            std::fs::metadata("/dev/null")
                .unwrap()
                .file_type()
                .is_char_device()
        );
    }
}
