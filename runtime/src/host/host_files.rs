//! The host paths a pod names (`host_path`, `secret`), opened the one safe way: a walk from `/`
//! that opens each component relative to the last with `O_NOFOLLOW`, so no symlink anywhere on
//! the path is followed, and that refuses a component a user other than root could rename or
//! replace (unless root said so: `allow_user_writable = true`). What it opens is held as an
//! `O_PATH` descriptor for the sandbox's life and shown to wasmtime and `mount` as
//! `/proc/self/fd/N`: a rename or a symlink swapped in after the check changes nothing of what
//! the pod gets.
//!
//! Why: the daemon opens these as root. A path checked at apply time and re-opened by name at
//! each start let a user who can rename in a directory on it (`~/www`) swap in a symlink to the
//! state dir, or a secret file for one to `/etc/shadow`, and restart the pod.

use std::ffi::OsStr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use nix::errno::Errno;
use nix::fcntl::{AT_FDCWD, AtFlags, OFlag, openat};
use nix::sys::stat::{FileStat, Mode, SFlag, fstat, fstatat, mkdirat};

/// A host file or directory held open (`O_PATH`) for as long as a clone of it lives.
#[derive(Debug, Clone)]
pub struct Held {
    fd: Arc<OwnedFd>,
    kind: SFlag,
}

impl Held {
    /// `/proc/self/fd/N`: opening it opens what was checked, whatever its name is now.
    pub fn path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/self/fd/{}", self.fd.as_raw_fd()))
    }

    /// The descriptor: whoever holds a clone keeps [`Held::path`] valid.
    pub fn fd(&self) -> Arc<OwnedFd> {
        self.fd.clone()
    }

    pub fn is_dir(&self) -> bool {
        self.kind == SFlag::S_IFDIR
    }

    /// A regular file.
    pub fn is_file(&self) -> bool {
        self.kind == SFlag::S_IFREG
    }

    /// Where it is now (the kernel's name for the descriptor).
    pub fn real_path(&self) -> std::io::Result<PathBuf> {
        std::fs::read_link(self.path())
    }

    /// A directory of peapod's own (under its state or run dir), opened plainly.
    pub fn own_dir(path: &Path) -> std::io::Result<Held> {
        let fd = nix::fcntl::open(
            path,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        Ok(Held {
            fd: Arc::new(fd),
            kind: SFlag::S_IFDIR,
        })
    }
}

/// Why a path was not opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("{} does not exist", .0.display())]
    Missing(PathBuf),
    #[error("{} is a symbolic link (to {}): name the real path", at.display(), to.display())]
    Symlink { at: PathBuf, to: PathBuf },
    #[error(
        "{} can be renamed or replaced by a user other than root ({why}): a pod opened there \
         could be led elsewhere; move it under a root-owned directory, or set \
         allow_user_writable = true if that user is trusted with what the pod sees",
        at.display()
    )]
    Swappable { at: PathBuf, why: String },
    #[error("{}: {message}", at.display())]
    Other { at: PathBuf, message: String },
}

/// Opens absolute `path` without following any symlink on it (see the module's comment).
/// `create_dirs`: missing directories are made (mode 0755), as `DirectoryOrCreate` asks; the
/// last component is then a directory too.
pub fn open(path: &Path, create_dirs: bool, allow_user_writable: bool) -> Result<Held, OpenError> {
    let other = |at: &Path, message: String| OpenError::Other {
        at: at.to_path_buf(),
        message,
    };
    let mut names: Vec<&OsStr> = Vec::new();
    for c in path.components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(n) => names.push(n),
            Component::ParentDir => {
                return Err(other(path, "must not contain \"..\"".into()));
            }
            Component::Prefix(_) => return Err(other(path, "is not a Unix path".into())),
        }
    }
    if !path.is_absolute() {
        return Err(other(path, "is not absolute".into()));
    }
    let dir_flags = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    // The first component is opened by its absolute name, the rest relative to the last one:
    // `/` itself is never opened by name (an emulator with a sysroot, qemu-user's `-L`, maps
    // `/` to that sysroot, though not `/tmp` where the sysroot has none).
    let root = fstatat(AT_FDCWD, "/", AtFlags::empty())
        .map_err(|e| other(Path::new("/"), e.to_string()))?;
    let mut cur: Option<OwnedFd> = None;
    let mut cur_st = root;
    let mut at = PathBuf::from("/");
    let mut mode = SFlag::S_IFDIR;
    for (i, name) in names.iter().enumerate() {
        let last = i + 1 == names.len();
        at.push(name);
        let (dir, rel): (BorrowedFd<'_>, PathBuf) = match &cur {
            Some(fd) => (fd.as_fd(), PathBuf::from(name)),
            None => (AT_FDCWD, Path::new("/").join(name)),
        };
        let st = match fstatat(dir, rel.as_path(), AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(Errno::ENOENT) if create_dirs => {
                match mkdirat(dir, rel.as_path(), Mode::from_bits_truncate(0o755)) {
                    Ok(()) | Err(Errno::EEXIST) => {}
                    Err(e) => return Err(other(&at, format!("cannot create: {e}"))),
                }
                fstatat(dir, rel.as_path(), AtFlags::AT_SYMLINK_NOFOLLOW)
                    .map_err(|e| other(&at, e.to_string()))?
            }
            Err(Errno::ENOENT) => return Err(OpenError::Missing(at)),
            Err(e) => return Err(other(&at, e.to_string())),
        };
        if kind(&st) == SFlag::S_IFLNK {
            let to = nix::fcntl::readlinkat(dir, rel.as_path())
                .map(PathBuf::from)
                .unwrap_or_default();
            return Err(OpenError::Symlink { at, to });
        }
        if !allow_user_writable && let Some(why) = swappable(&at, &cur_st, &st) {
            return Err(OpenError::Swappable { at, why });
        }
        let want_dir = !last || create_dirs;
        let flags = if want_dir {
            dir_flags
        } else {
            OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC
        };
        let fd = match openat(dir, rel.as_path(), flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::ENOTDIR) => return Err(other(&at, "is not a directory".into())),
            Err(e) => return Err(other(&at, e.to_string())),
        };
        let opened = fstat(fd.as_fd()).map_err(|e| other(&at, e.to_string()))?;
        if (opened.st_dev, opened.st_ino) != (st.st_dev, st.st_ino) {
            return Err(other(&at, "was replaced while it was being opened".into()));
        }
        mode = kind(&opened);
        cur = Some(fd);
        cur_st = opened;
    }
    let fd = match cur {
        Some(fd) => fd,
        // The path is `/` itself.
        None => nix::fcntl::open("/", dir_flags, Mode::empty())
            .map_err(|e| other(Path::new("/"), e.to_string()))?,
    };
    Ok(Held {
        fd: Arc::new(fd),
        kind: mode,
    })
}

fn kind(st: &FileStat) -> SFlag {
    SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits())
}

/// Who other than root can rename or replace entry `at` of directory `dir` (stat `parent`),
/// whose own stat is `child`: the directory's owner, or anyone its write bits let in (with the
/// sticky bit, only the entry's owner, so a root-owned entry is safe there).
fn swappable(at: &Path, parent: &FileStat, child: &FileStat) -> Option<String> {
    let dir = at.parent().unwrap_or(Path::new("/")).display();
    let sticky = parent.st_mode & 0o1000 != 0;
    let guarded = sticky && child.st_uid == 0;
    if parent.st_uid != 0 {
        Some(format!("{dir} belongs to user {}", parent.st_uid))
    } else if parent.st_mode & 0o002 != 0 && !guarded {
        Some(format!("{dir} is writable by every user"))
    } else if parent.st_mode & 0o020 != 0 && parent.st_gid != 0 && !guarded {
        Some(format!("{dir} is writable by group {}", parent.st_gid))
    } else if sticky && !guarded {
        Some(format!(
            "{} belongs to user {} in sticky {dir}",
            at.display(),
            child.st_uid
        ))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_real_path_is_held_and_survives_a_rename() {
        let d = tempfile::tempdir().unwrap();
        let www = d.path().join("www");
        std::fs::create_dir(&www).unwrap();
        std::fs::write(www.join("index.html"), "hi").unwrap();
        let held = open(&www, false, false).unwrap();
        assert!(held.is_dir());
        std::fs::rename(&www, d.path().join("moved")).unwrap();
        std::fs::create_dir(&www).unwrap();
        // What was checked is what is opened, whatever is at the name now.
        let seen = std::fs::read_to_string(held.path().join("index.html")).unwrap();
        assert_eq!(seen, "hi");
        assert_eq!(held.real_path().unwrap(), d.path().join("moved"));
    }

    #[test]
    fn a_symlink_anywhere_on_the_path_is_refused() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("real/dir")).unwrap();
        std::fs::write(d.path().join("real/secret"), "s").unwrap();
        std::os::unix::fs::symlink(d.path().join("real"), d.path().join("link")).unwrap();
        for p in ["link", "link/dir", "link/secret"] {
            let e = open(&d.path().join(p), false, true).unwrap_err();
            assert!(
                matches!(&e, OpenError::Symlink { at, .. } if *at == d.path().join("link")),
                "{p}: {e}"
            );
        }
        std::os::unix::fs::symlink("/etc/shadow", d.path().join("real/shadow")).unwrap();
        let e = open(&d.path().join("real/shadow"), false, true).unwrap_err();
        assert!(
            e.to_string()
                .contains("is a symbolic link (to /etc/shadow)"),
            "{e}"
        );
        assert!(open(&d.path().join("real/secret"), false, false).is_ok_and(|h| !h.is_dir()));
        let e = open(&d.path().join("real/../real"), false, true).unwrap_err();
        assert!(e.to_string().contains("must not contain"), "{e}");
    }

    #[test]
    fn missing_directories_are_made_when_asked() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a/b/c");
        assert!(
            matches!(open(&p, false, false), Err(OpenError::Missing(m)) if m == d.path().join("a"))
        );
        let held = open(&p, true, false).unwrap();
        assert!(held.is_dir() && p.is_dir());
    }

    /// Run as root (the tests of scripts/test are), a directory given to another user, or one
    /// that every user may write without the sticky bit, makes what is in it swappable.
    #[test]
    fn a_path_another_user_can_change_is_refused_unless_allowed() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: needs root to own files as another user");
            return;
        }
        let d = tempfile::tempdir().unwrap();
        let home = d.path().join("home");
        std::fs::create_dir_all(home.join("www")).unwrap();
        nix::unistd::chown(&home, Some(nix::unistd::Uid::from_raw(1000)), None).unwrap();
        let e = open(&home.join("www"), false, false).unwrap_err();
        assert!(
            matches!(&e, OpenError::Swappable { why, .. } if why.contains("belongs to user 1000")),
            "{e}"
        );
        assert!(open(&home.join("www"), false, true).is_ok());
        let open_dir = d.path().join("shared");
        std::fs::create_dir_all(open_dir.join("x")).unwrap();
        std::fs::set_permissions(&open_dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = open(&open_dir.join("x"), false, false).unwrap_err();
        assert!(e.to_string().contains("writable by every user"), "{e}");
        // Sticky, like /tmp: a root-owned entry cannot be moved by others.
        std::fs::set_permissions(&open_dir, std::fs::Permissions::from_mode(0o1777)).unwrap();
        assert!(open(&open_dir.join("x"), false, false).is_ok());
    }
}
