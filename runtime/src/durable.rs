//! Files that must be whole after a crash, and the lock files that serialize their writers.
//!
//! Two strengths: [`write()`] survives a power loss (temp file beside the target, fsynced, renamed
//! over it, the directory fsynced): for what must outlive the machine's state, such as an
//! applied pod. [`replace`] survives the process' crash only (temp file renamed over the target,
//! no flush): for what describes kernel objects that a power loss takes with it — the leases of
//! pinned namespaces, the crash guard's marks of this boot's daemon. A crashed process loses
//! nothing written (the page cache is the kernel's), and readers see the old file or the new one,
//! each whole. After a power loss such a file may be an older version or, on a file system that
//! does not order a rename after its data, torn: [`written_before_boot`] tells its readers so.

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use nix::fcntl::{Flock, FlockArg};

/// A temp file is `.<name>.<pid>.tmp`, beside the file it replaces.
const TEMP_SUFFIX: &str = ".tmp";

/// Test hook for crash recovery: with `PEAPOD_CRASH_AT=<point>` in its environment the process
/// kills itself with SIGKILL at that point, as a power cut or the OOM killer would. Only in
/// builds with the `test-hooks` feature (the tests'); a release build has no such hook.
#[cfg(feature = "test-hooks")]
pub(crate) fn crash_point(point: &str) {
    if std::env::var("PEAPOD_CRASH_AT").is_ok_and(|v| v == point) {
        tracing::warn!("PEAPOD_CRASH_AT={point}: killing myself");
        let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
    }
}

#[cfg(not(feature = "test-hooks"))]
pub(crate) fn crash_point(_: &str) {}

/// Replaces `path` with `bytes` atomically and durably.
pub(crate) fn write(path: &Path, bytes: &[u8]) -> io::Result<()> {
    swap(path, bytes, true)?;
    File::open(path.parent().unwrap_or(Path::new(".")))?.sync_all()
}

/// Replaces `path` with `bytes` atomically, without flushing them to the disk (see the module's
/// comment for when that is enough). A flush costs ~1 ms on an idle disk and grows with what the
/// rest of the machine writes (4-5 ms with 1000 pods' sidecars writing): paid on every pod start
/// and stop for nothing a power loss would leave alive.
pub(crate) fn replace(path: &Path, bytes: &[u8]) -> io::Result<()> {
    swap(path, bytes, false)
}

/// Writes `bytes` to a temp file beside `path` (fsynced when `flush`) and renames it over
/// `path`; on failure the temp file is removed.
fn swap(path: &Path, bytes: &[u8], flush: bool) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = dir.join(format!(".{name}.{}{TEMP_SUFFIX}", std::process::id()));
    let r = (|| {
        // Root's alone whoever's umask: a pod's record holds its env (passwords).
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(bytes)?;
        if flush {
            file.sync_all()?;
        }
        std::fs::rename(&tmp, path)
    })();
    if r.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    r
}

/// Makes directory `dir` (and its parents) if it is missing and leaves it `0700` whoever started
/// peapod and whatever their umask: the state dir holds the pods' records (their env), the
/// compile cache's key and the leases; the logs dir what guests print. An API client reads
/// them through the daemon.
pub(crate) fn private_dir(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let m = std::fs::metadata(dir)?;
    if m.permissions().mode() & 0o777 != 0o700 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// Whether `path` was last written before the machine booted: then what a [`replace`]d file
/// says of kernel objects (namespaces, their pins) is all gone, and a torn file is no loss.
pub(crate) fn written_before_boot(path: &Path) -> bool {
    let Ok(modified) = std::fs::metadata(path).and_then(|m| m.modified()) else {
        return false;
    };
    boot_time().is_some_and(|boot| modified < boot)
}

/// When the machine booted (`btime` of `/proc/stat`, whole seconds).
fn boot_time() -> Option<std::time::SystemTime> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let secs = stat
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    Some(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs))
}

/// Removes the temp files in `dir` that a process killed in the middle of a [`write()`] or a
/// [`replace`] left: those of processes that no longer run.
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

    /// Round 2, finding 8: a daemon started by hand (umask 022) left the state dir 0755 and the
    /// pods' records 0644, so any user read a pod's env. Whatever the umask, they are root's.
    #[test]
    fn records_and_the_state_dir_are_private_whatever_the_umask() {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let d = tempfile::tempdir().unwrap();
        let state = d.path().join("state");
        std::fs::create_dir(&state).unwrap();
        std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o755)).unwrap();
        private_dir(&state).unwrap();
        assert_eq!(mode(&state), 0o700, "an existing loose dir is tightened");
        let fresh = d.path().join("a/b");
        private_dir(&fresh).unwrap();
        assert_eq!(mode(&fresh), 0o700);
        // (Under the test's umask, 022 or looser: a plain create would give 0644.)
        write(&state.join("pod.json"), b"{}").unwrap();
        replace(&state.join("leases"), b"x").unwrap();
        assert_eq!(mode(&state.join("pod.json")), 0o600);
        assert_eq!(mode(&state.join("leases")), 0o600);
    }

    #[test]
    fn replace_swaps_the_whole_file_and_leaves_no_temp_file() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("leases.json");
        replace(&f, b"old").unwrap();
        replace(&f, b"new").unwrap();
        assert_eq!(std::fs::read(&f).unwrap(), b"new");
        let names: Vec<_> = std::fs::read_dir(d.path()).unwrap().flatten().collect();
        assert_eq!(names.len(), 1, "{names:?}");
        assert!(replace(&d.path().join("missing/x"), b"x").is_err());
    }

    #[test]
    fn a_file_is_written_before_boot_only_when_its_time_says_so() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("leases.json");
        assert!(!written_before_boot(&f), "a missing file");
        std::fs::write(&f, b"x").unwrap();
        assert!(!written_before_boot(&f), "written now");
        let then = std::time::UNIX_EPOCH + std::time::Duration::from_secs(86_400);
        File::options()
            .write(true)
            .open(&f)
            .unwrap()
            .set_modified(then)
            .unwrap();
        assert!(written_before_boot(&f));
    }
}
