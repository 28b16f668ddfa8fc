//! Files on a volume that must survive a power cut: a write goes to a temporary file beside the
//! target, is synced, then renamed over it, so a reader (or the next start) finds the old
//! content or the new, never half of it.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// Writes `bytes` to `path` atomically (write to `.NAME.tmp`, fsync, rename over `path`, fsync
/// the directory where WASI allows it).
pub fn write_atomic(path: impl AsRef<Path>, bytes: &[u8]) -> Result<()> {
    let path = path.as_ref();
    let tmp = temp_path(path);
    let err = |p: &Path| {
        let p = p.to_path_buf();
        move |source| Error::File { path: p, source }
    };
    let mut f = std::fs::File::create(&tmp).map_err(err(&tmp))?;
    let written = f.write_all(bytes).and_then(|()| f.sync_all());
    drop(f);
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(err(&tmp)(e));
    }
    std::fs::rename(&tmp, path).map_err(err(path))?;
    // The rename itself is durable once the directory is synced (not every file system under
    // WASI lets a directory be opened: then the rename is as durable as the host makes it).
    if let Some(dir) = path.parent()
        && let Ok(d) = std::fs::File::open(if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        })
    {
        let _ = d.sync_all();
    }
    Ok(())
}

/// The content of `path`, or `None` when there is no such file.
pub fn read_if_exists(path: impl AsRef<Path>) -> Result<Option<Vec<u8>>> {
    let path = path.as_ref();
    match std::fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(Error::File {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Removes what a write killed half-way left in `dir` (the `.NAME.tmp` files); returns how
/// many. Call it at start.
pub fn sweep_temp(dir: impl AsRef<Path>) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .filter(|e| {
            let n = e.file_name();
            let n = n.to_string_lossy();
            n.starts_with('.') && n.ends_with(".tmp")
        })
        .filter(|e| std::fs::remove_file(e.path()).is_ok())
        .count()
}

fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp"))
}
