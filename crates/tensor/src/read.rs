//! Reading the small side files of a model (JSON configs, indexes, tokenizer files) as hostile
//! input: regular files only, bounded in size, every failure naming the file.

use crate::{Error, Result};
use std::io::Read;
use std::path::Path;

/// The contents of `path`, which must be a regular file (links are followed) of at most `max`
/// bytes. A directory, a FIFO (reading it would block), a device (`/dev/zero` never ends) or a
/// larger file is an error naming the file, before anything is read.
pub fn read_small_file(path: &Path, max: u64) -> Result<Vec<u8>> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    if !meta.is_file() {
        let what = if meta.is_dir() {
            "directory"
        } else {
            "special file (FIFO, socket or device)"
        };
        return Err(Error::NotARegularFile {
            path: path.into(),
            what,
        });
    }
    if meta.len() > max {
        return Err(Error::FileTooLarge {
            path: path.into(),
            len: meta.len(),
            max,
        });
    }
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    // A file that grows after the check is still read no further than the limit.
    file.take(max + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io(path, e))?;
    if bytes.len() as u64 > max {
        return Err(Error::FileTooLarge {
            path: path.into(),
            len: bytes.len() as u64,
            max,
        });
    }
    Ok(bytes)
}

/// The most bytes of an escaped name a message shows: real names are under 100; a crafted
/// file's 100 KB name would otherwise fill the terminal (and every log line) with it.
pub const MAX_NAME_SHOWN: usize = 200;

/// `name` (a tensor, shard or key name taken from a file) for a message: control and other
/// unprintable characters escaped, so that printing it cannot drive the terminal, and cut
/// after [`MAX_NAME_SHOWN`] bytes with `…` and its full length, so that it stays one short
/// line. Every message that shows a name read from a file goes through here.
pub fn escape(name: &str) -> String {
    let mut shown = String::new();
    for (i, c) in name.char_indices() {
        if shown.len() >= MAX_NAME_SHOWN {
            return format!(
                "{shown}… ({} bytes, {} not shown)",
                name.len(),
                name.len() - i
            );
        }
        shown.extend(c.escape_debug());
    }
    shown
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_small_regular_files_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("config.json");
        std::fs::write(&f, b"{}").unwrap();
        assert_eq!(read_small_file(&f, 2).unwrap(), b"{}");
        let err = read_small_file(&f, 1).unwrap_err().to_string();
        assert!(
            err.ends_with("2 bytes, more than the 1 accepted for this file"),
            "{err}"
        );
        let err = read_small_file(Path::new("/dev/zero"), 1 << 20)
            .unwrap_err()
            .to_string();
        assert!(err.contains("special file"), "{err}");
        let err = read_small_file(dir.path(), 1 << 20)
            .unwrap_err()
            .to_string();
        assert!(err.contains("directory"), "{err}");
        let fifo = dir.path().join("fifo");
        assert!(
            std::process::Command::new("mkfifo")
                .arg(&fifo)
                .status()
                .unwrap()
                .success()
        );
        let err = read_small_file(&fifo, 1 << 20).unwrap_err().to_string();
        assert!(err.contains("special file"), "{err}");
    }

    #[test]
    fn escapes_what_a_terminal_would_obey() {
        assert_eq!(escape("a\u{1b}[31mb\0c\n"), "a\\u{1b}[31mb\\0c\\n");
        assert_eq!(escape("model.layers.0.w"), "model.layers.0.w");
        assert_eq!(
            escape(&"x".repeat(MAX_NAME_SHOWN)),
            "x".repeat(MAX_NAME_SHOWN)
        );
        let long = escape(&"é".repeat(50_000));
        assert!(long.len() < MAX_NAME_SHOWN + 50, "{long}");
        assert!(
            long.ends_with("… (100000 bytes, 99800 not shown)"),
            "{long}"
        );
        // Escapes count towards the limit: a name of control bytes stays as short.
        assert!(escape(&"\u{1}".repeat(100_000)).len() < MAX_NAME_SHOWN + 50);
    }
}
