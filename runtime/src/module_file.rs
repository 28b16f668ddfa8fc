//! Reading the files a pod names (modules, spec files) without trusting them: the one loader
//! `peapod run` and the daemon share.
//!
//! - Only regular files are read. A FIFO, a device (`/dev/zero`), a directory or a socket is
//!   refused by `stat` before it is opened, and the open itself is `O_NONBLOCK`, so no path can
//!   block the caller or feed it without end. The size is capped (`limits.max_module_size`),
//!   and checked again while reading, for a file that grows.
//! - A file named by an API client is read with that client's rights ([`Caller`]): a thread of
//!   its own takes the client's filesystem uid, gid and groups, so the kernel answers exactly as
//!   it would answer the client (a root-only file is "permission denied", whether it exists or
//!   not in a directory the client cannot search).
//! - Whether the file may hold precompiled code ([`Read::trusted`]): only when the file and its
//!   directory belong to root and no one else may write them. Callers add their own reason to
//!   trust (an API client that is root, `peapod run` by root). A `.cwasm` is native code that
//!   the daemon runs as root.

use crate::caller::Caller;
use std::fs::File;
use std::io::{self, Read as _};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Default cap on a module file: generous for a Pi (a big Rust component is a few MiB).
pub use crate::config::DEFAULT_MAX_MODULE_SIZE;
/// Cap on a pod spec file.
pub const MAX_SPEC_SIZE: u64 = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("cannot read {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{} is {what}, not a regular file", path.display())]
    NotRegular { path: PathBuf, what: &'static str },
    #[error("{} is {size} bytes, over the limit of {max} (limits.max_module_size)", path.display())]
    TooLarge { path: PathBuf, size: u64, max: u64 },
}

/// A file's bytes, their SHA-256 (computed once, as they are read: the pod's digest, the
/// modules' store, the loaded-module table and the compile cache all key on it), and whether
/// root vouches for them.
#[derive(Debug)]
pub struct Read {
    pub bytes: Vec<u8>,
    pub sha256: [u8; 32],
    /// The file and its directory are root's alone: it may hold precompiled (native) code.
    pub trusted: bool,
}

impl Read {
    /// `bytes`, hashed.
    pub fn new(bytes: Vec<u8>, trusted: bool) -> Self {
        Read {
            sha256: crate::hash::sha256(&bytes),
            bytes,
            trusted,
        }
    }
}

fn kind(mode: u32) -> &'static str {
    match mode & libc::S_IFMT {
        libc::S_IFDIR => "a directory",
        libc::S_IFIFO => "a FIFO",
        libc::S_IFCHR => "a character device",
        libc::S_IFBLK => "a block device",
        libc::S_IFSOCK => "a socket",
        libc::S_IFLNK => "a symbolic link",
        _ => "a regular file",
    }
}

/// Reads a regular file of at most `max` bytes, with the rights of `caller`.
pub fn read(path: &Path, max: u64, caller: Caller) -> Result<Read, ReadError> {
    let me = Caller::myself();
    if caller.uid == me.uid && caller.gid == me.gid {
        read_here(path, max)
    } else {
        let path = path.to_path_buf();
        std::thread::scope(|s| {
            s.spawn(|| {
                become_caller(caller).map_err(|source| ReadError::Io {
                    path: path.clone(),
                    source,
                })?;
                read_here(&path, max)
            })
            .join()
            .unwrap_or_else(|_| {
                Err(ReadError::Io {
                    path: path.clone(),
                    source: io::Error::other("reader thread panicked"),
                })
            })
        })
    }
}

/// Reads a text file (a pod spec) the same way: regular, capped, never blocking.
pub fn read_text(path: &Path, caller: Caller) -> Result<String, ReadError> {
    let r = read(path, MAX_SPEC_SIZE, caller)?;
    String::from_utf8(r.bytes).map_err(|_| ReadError::Io {
        path: path.into(),
        source: io::Error::new(io::ErrorKind::InvalidData, "not UTF-8 text"),
    })
}

fn read_here(path: &Path, max: u64) -> Result<Read, ReadError> {
    let io = |source| ReadError::Io {
        path: path.into(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(io)?;
    if !meta.is_file() {
        return Err(ReadError::NotRegular {
            path: path.into(),
            what: kind(meta.mode()),
        });
    }
    let file = File::options()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC)
        .open(path)
        .map_err(io)?;
    let opened = file.metadata().map_err(io)?;
    if !opened.is_file() {
        // Swapped between the stat and the open.
        return Err(ReadError::NotRegular {
            path: path.into(),
            what: kind(opened.mode()),
        });
    }
    let too_large = |size| ReadError::TooLarge {
        path: path.into(),
        size,
        max,
    };
    if opened.len() > max {
        return Err(too_large(opened.len()));
    }
    let mut bytes = Vec::with_capacity(opened.len() as usize);
    file.take(max + 1).read_to_end(&mut bytes).map_err(io)?;
    if bytes.len() as u64 > max {
        return Err(too_large(bytes.len() as u64));
    }
    let dir_ok = path
        .canonicalize()
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .and_then(|d| std::fs::metadata(d).ok())
        .is_some_and(|d| root_only(&d));
    Ok(Read::new(bytes, root_only(&opened) && dir_ok))
}

/// Owned by root, writable by no one else.
fn root_only(m: &std::fs::Metadata) -> bool {
    m.uid() == 0 && m.mode() & 0o022 == 0
}

/// Gives the calling thread (only it) the caller's filesystem identity. Raw syscalls on
/// purpose: glibc's `setgroups` changes every thread of the process.
fn become_caller(c: Caller) -> io::Result<()> {
    let groups = groups_of(c);
    #[cfg(target_arch = "arm")]
    let (sys_setgroups, sys_setfsgid, sys_setfsuid) = (
        libc::SYS_setgroups32,
        libc::SYS_setfsgid32,
        libc::SYS_setfsuid32,
    );
    #[cfg(not(target_arch = "arm"))]
    let (sys_setgroups, sys_setfsgid, sys_setfsuid) =
        (libc::SYS_setgroups, libc::SYS_setfsgid, libc::SYS_setfsuid);
    // SAFETY: plain syscalls on this thread's credentials; `groups` outlives the call.
    unsafe {
        if libc::syscall(sys_setgroups, groups.len(), groups.as_ptr()) != 0 {
            return Err(io::Error::last_os_error());
        }
        libc::syscall(sys_setfsgid, c.gid);
        libc::syscall(sys_setfsuid, c.uid);
        // set*fs*id return the previous id and never fail visibly: read them back.
        let gid = libc::syscall(sys_setfsgid, u32::MAX);
        let uid = libc::syscall(sys_setfsuid, u32::MAX);
        if uid as u32 != c.uid || gid as u32 != c.gid {
            return Err(io::Error::other(format!(
                "cannot take the caller's identity (uid {}, gid {})",
                c.uid, c.gid
            )));
        }
    }
    Ok(())
}

/// The caller's supplementary groups, from `/proc/<pid>/status` when that process is still the
/// caller's; else its primary group alone.
fn groups_of(c: Caller) -> Vec<libc::gid_t> {
    let status = std::fs::read_to_string(format!("/proc/{}/status", c.pid)).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| {
                v.split_whitespace()
                    .filter_map(|x| x.parse().ok())
                    .collect()
            })
            .unwrap_or_else(Vec::new)
    };
    let uids: Vec<u32> = field("Uid:");
    if c.pid > 0 && uids.first() == Some(&c.uid) {
        field("Groups:")
    } else {
        vec![c.gid]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_regular_files_within_the_cap() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("m.wasm");
        std::fs::write(&f, b"\0asm\x01\0\0\0").unwrap();
        let me = Caller::myself();
        assert_eq!(read(&f, 8, me).unwrap().bytes.len(), 8);
        let e = read(&f, 7, me).unwrap_err().to_string();
        assert!(e.contains("over the limit of 7"), "{e}");
        let e = read(dir.path(), 100, me).unwrap_err().to_string();
        assert!(e.contains("is a directory, not a regular file"), "{e}");
        let e = read(Path::new("/dev/zero"), 100, me)
            .unwrap_err()
            .to_string();
        assert!(e.contains("character device"), "{e}");
        let fifo = dir.path().join("fifo.wasm");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let e = read(&fifo, 100, me).unwrap_err().to_string();
        assert!(e.contains("is a FIFO"), "{e}");
        let link = dir.path().join("zero.wasm");
        std::os::unix::fs::symlink("/dev/zero", &link).unwrap();
        let e = read(&link, 100, me).unwrap_err().to_string();
        assert!(e.contains("character device"), "{e}");
    }
}
