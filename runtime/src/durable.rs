//! Files that must be whole after a crash: written to a temp file beside the target, fsynced,
//! renamed over it, and the directory fsynced. And the lock files that serialize their writers.

use std::fs::File;
use std::io::{self, Write};
use std::path::Path;

use nix::fcntl::{Flock, FlockArg};

/// A temp file is `.<name>.<pid>.tmp`, beside the file it replaces.
const TEMP_SUFFIX: &str = ".tmp";

/// Replaces `path` with `bytes` atomically and durably.
pub(crate) fn write(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = dir.join(format!(".{name}.{}{TEMP_SUFFIX}", std::process::id()));
    let r = (|| {
        let mut file = File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if r.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    r?;
    File::open(dir)?.sync_all()
}

/// Removes the temp files in `dir` that a process killed in the middle of a [`write`] left: those
/// of processes that no longer run.
pub(crate) fn sweep(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let pid = name
            .strip_suffix(TEMP_SUFFIX)
            .filter(|_| name.starts_with('.'))
            .and_then(|rest| rest.rsplit_once('.'))
            .and_then(|(_, pid)| pid.parse::<u32>().ok());
        if pid.is_some_and(|p| !Path::new(&format!("/proc/{p}")).exists()) {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// Opens `path` (created if missing) and takes an exclusive `flock` on it, waiting for it when
/// `wait`, else `Ok(None)` when another process holds it. On a read-only file system the existing
/// file is opened for reading (a lock needs no write access), so readers still serialize.
pub(crate) fn lock(path: &Path, wait: bool) -> io::Result<Option<Flock<File>>> {
    let file = match File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::ReadOnlyFilesystem => {
            File::open(path).map_err(|_| e)?
        }
        Err(e) => return Err(e),
    };
    let arg = if wait {
        FlockArg::LockExclusive
    } else {
        FlockArg::LockExclusiveNonblock
    };
    match Flock::lock(file, arg) {
        Ok(l) => Ok(Some(l)),
        Err((_, nix::Error::EWOULDBLOCK)) if !wait => Ok(None),
        Err((_, e)) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sweep_removes_only_dead_writers_temp_files() {
        let d = tempfile::tempdir().unwrap();
        write(&d.path().join("kept"), b"x").unwrap();
        // pid 0 never names a running process; ours does.
        let dead = d.path().join(".kept.0.tmp");
        let alive = d.path().join(format!(".kept.{}.tmp", std::process::id()));
        let other = d.path().join("notes.0.tmp");
        for f in [&dead, &alive, &other] {
            std::fs::write(f, b"").unwrap();
        }
        sweep(d.path());
        assert!(!dead.exists());
        assert!(alive.exists() && other.exists());
        assert_eq!(std::fs::read(d.path().join("kept")).unwrap(), b"x");
    }
}
