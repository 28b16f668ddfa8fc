//! Removing a directory tree that a guest made: iteratively, never following a symlink, never
//! leaving the tree's filesystem, bounded in time and depth.
//!
//! A guest owns what it writes into an `empty_dir`, and can make it hostile: a chain of 15,000+
//! nested directories takes seconds to build (`mkdir n; mv c n/c; mv n c`, repeated), and a
//! recursive removal (std's `remove_dir_all` recurses once per level) overflows the stack of the
//! thread that runs it, the daemon's. Here the walk keeps one open directory and, per level it
//! went down, the `(device, inode)` of the directory above (16 bytes a level), never a path: it
//! goes up through `..` and checks it arrived where it came from. Every open is `O_NOFOLLOW`
//! relative to the directory it is in, so a symlink is unlinked as a name, never entered, and a
//! directory on another device (a mount) stops the removal with an error instead of being
//! emptied.

use std::ffi::CString;
use std::io;
use std::os::fd::AsFd;
use std::path::Path;
use std::time::{Duration, Instant};

use nix::dir::Dir;
use nix::errno::Errno;
use nix::fcntl::{OFlag, openat};
use nix::sys::stat::{Mode, fstat};
use nix::unistd::{UnlinkatFlags, unlinkat};

/// How long and how deep one removal may go.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    /// Give up (with an error; what is left stays for a later try) after this long.
    pub time: Duration,
    /// Levels below the root at most (16 bytes of memory a level).
    pub depth: usize,
}

impl Default for Bounds {
    /// A minute, and a million levels (16 MB): far beyond anything a real pod writes, and a
    /// guest that built more gets an error, not the daemon's memory.
    fn default() -> Self {
        Bounds {
            time: Duration::from_secs(60),
            depth: 1 << 20,
        }
    }
}

/// Names read from a directory per pass (then acted on, then the directory is read again).
const BATCH: usize = 256;

fn dir_flags() -> OFlag {
    OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC
}

/// Removes directory `root` and everything beneath it (a missing `root` is done already). A
/// symlink `root` is refused; symlinks inside are removed as names.
pub fn remove(root: &Path, bounds: Bounds) -> io::Result<()> {
    let t0 = Instant::now();
    let top = match Dir::open(root, dir_flags(), Mode::empty()) {
        Ok(d) => d,
        Err(Errno::ENOENT) => return Ok(()),
        Err(e) => return Err(io::Error::other(format!("{}: {e}", root.display()))),
    };
    let dev = fstat(top.as_fd())?.st_dev;
    empty(top, dev, t0, bounds)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", root.display())))?;
    match std::fs::remove_dir(root) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        r => r,
    }
}

/// Empties directory `top` (on device `dev`).
fn empty(top: Dir, dev: u64, t0: Instant, bounds: Bounds) -> io::Result<()> {
    let mut cur = top;
    // (device, inode) of each directory above `cur`, up to the root.
    let mut above: Vec<(u64, u64)> = Vec::new();
    loop {
        if t0.elapsed() >= bounds.time {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "not removed within {}s ({} levels down when it stopped); the rest is left",
                    bounds.time.as_secs(),
                    above.len()
                ),
            ));
        }
        let names = read_batch(&mut cur)?;
        let mut child = None;
        for name in &names {
            match remove_entry(&cur, name)? {
                Removed::Yes => {}
                Removed::NotEmpty => {
                    child = Some(name);
                    break;
                }
            }
        }
        if let Some(name) = child {
            let fd = openat(cur.as_fd(), name.as_c_str(), dir_flags(), Mode::empty())
                .map_err(|e| io::Error::other(format!("open {name:?}: {e}")))?;
            let st = fstat(fd.as_fd())?;
            if st.st_dev != dev {
                return Err(io::Error::other(format!(
                    "{name:?} is on another filesystem (a mount): not removing it"
                )));
            }
            if above.len() >= bounds.depth {
                return Err(io::Error::other(format!(
                    "deeper than {} levels: not removed",
                    bounds.depth
                )));
            }
            let here = fstat(cur.as_fd())?;
            above.push(id(&here));
            cur = Dir::from_fd(fd)?;
            continue;
        }
        if !names.is_empty() {
            // Read again: more names may follow the batch.
            continue;
        }
        // `cur` is empty: back up a level, where it is removed as an empty directory.
        let Some((pdev, pino)) = above.pop() else {
            return Ok(());
        };
        let parent = Dir::openat(cur.as_fd(), "..", dir_flags(), Mode::empty())?;
        let st = fstat(parent.as_fd())?;
        if id(&st) != (pdev, pino) {
            return Err(io::Error::other(
                "the tree was moved while it was being removed: stopped",
            ));
        }
        cur = parent;
    }
}

/// (device, inode) of `st`, whatever their widths on the target (an inode is 32 bits on armv7).
#[allow(clippy::unnecessary_cast)]
fn id(st: &nix::sys::stat::FileStat) -> (u64, u64) {
    (st.st_dev as u64, st.st_ino as u64)
}

/// Up to [`BATCH`] names of `dir` (not `.` or `..`), from its start.
fn read_batch(dir: &mut Dir) -> io::Result<Vec<CString>> {
    let mut names = Vec::new();
    // The iterator rewinds the directory when dropped: each batch reads from the start, and
    // finds only what the last batch did not remove.
    for entry in dir.iter() {
        let entry = entry?;
        let name = entry.file_name();
        if name.to_bytes() == b"." || name.to_bytes() == b".." {
            continue;
        }
        names.push(name.to_owned());
        if names.len() == BATCH {
            break;
        }
    }
    Ok(names)
}

enum Removed {
    Yes,
    /// A directory with something in it.
    NotEmpty,
}

/// Unlinks `name` in `dir`: a file or symlink as a name, a directory if it is empty.
fn remove_entry(dir: &Dir, name: &CString) -> io::Result<Removed> {
    match unlinkat(dir.as_fd(), name.as_c_str(), UnlinkatFlags::NoRemoveDir) {
        Ok(()) | Err(Errno::ENOENT) => return Ok(Removed::Yes),
        Err(Errno::EISDIR) => {}
        Err(e) => return Err(io::Error::other(format!("unlink {name:?}: {e}"))),
    }
    match unlinkat(dir.as_fd(), name.as_c_str(), UnlinkatFlags::RemoveDir) {
        Ok(()) | Err(Errno::ENOENT) => Ok(Removed::Yes),
        Err(Errno::ENOTEMPTY | Errno::EEXIST) => Ok(Removed::NotEmpty),
        Err(e) => Err(io::Error::other(format!("rmdir {name:?}: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::stat::mkdirat;

    /// A chain of `depth` nested directories `d/d/d/...` under `root`, made level by level
    /// through open directories (no path grows long), with a file at the bottom.
    fn chain(root: &Path, depth: usize) {
        let mut cur = Dir::open(root, dir_flags(), Mode::empty()).unwrap();
        for _ in 0..depth {
            mkdirat(cur.as_fd(), "d", Mode::from_bits_truncate(0o755)).unwrap();
            cur = Dir::openat(cur.as_fd(), "d", dir_flags(), Mode::empty()).unwrap();
        }
        let f = openat(
            cur.as_fd(),
            "bottom",
            OFlag::O_CREAT | OFlag::O_WRONLY | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o644),
        )
        .unwrap();
        drop(f);
    }

    #[test]
    fn a_chain_deeper_than_any_stack_is_removed() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("vol");
        std::fs::create_dir(&root).unwrap();
        // std's recursive remove_dir_all overflows a 2 MiB thread stack well before this.
        // (Fewer under an emulator, where each level costs far more; the board suites set
        // PEAPOD_TEST_RUNNER.)
        let levels = if std::env::var_os("PEAPOD_TEST_RUNNER").is_some() {
            10_000
        } else {
            30_000
        };
        chain(&root, levels);
        // On a small stack, as a worker thread would have: no recursion, no overflow.
        let r = std::thread::Builder::new()
            .stack_size(64 << 10)
            .spawn(move || remove(&root, Bounds::default()).map(|()| root.exists()))
            .unwrap()
            .join()
            .unwrap();
        assert!(!r.unwrap(), "the root is gone");
    }

    #[test]
    fn symlinks_are_removed_as_names_never_followed() {
        let d = tempfile::tempdir().unwrap();
        let outside = d.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("keep"), "root's file").unwrap();
        let root = d.path().join("vol");
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("a/b/to-dir")).unwrap();
        std::os::unix::fs::symlink(outside.join("keep"), root.join("to-file")).unwrap();
        std::os::unix::fs::symlink("../../outside", root.join("a/rel")).unwrap();
        for i in 0..(BATCH * 2 + 3) {
            std::fs::write(root.join(format!("f{i}")), "x").unwrap();
        }
        remove(&root, Bounds::default()).unwrap();
        assert!(!root.exists());
        assert_eq!(
            std::fs::read_to_string(outside.join("keep")).unwrap(),
            "root's file"
        );
        // A symlink as the root itself is refused, and what it points at is left.
        std::os::unix::fs::symlink(&outside, d.path().join("link")).unwrap();
        assert!(remove(&d.path().join("link"), Bounds::default()).is_err());
        assert!(outside.join("keep").exists());
        // Missing: nothing to do.
        remove(&d.path().join("nothing"), Bounds::default()).unwrap();
    }

    #[test]
    fn depth_and_time_are_bounded() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("vol");
        std::fs::create_dir(&root).unwrap();
        chain(&root, 50);
        let shallow = Bounds {
            depth: 10,
            ..Bounds::default()
        };
        let e = remove(&root, shallow).unwrap_err();
        assert!(e.to_string().contains("deeper than 10 levels"), "{e}");
        let no_time = Bounds {
            time: Duration::ZERO,
            ..Bounds::default()
        };
        let e = remove(&root, no_time).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut, "{e}");
        // What was left is removed by a later try.
        remove(&root, Bounds::default()).unwrap();
        assert!(!root.exists());
    }
}
