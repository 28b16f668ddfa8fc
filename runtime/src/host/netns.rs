//! Pinned network namespaces: the "pause" role without a pause process.
//!
//! A pod's namespace is kept alive by a bind mount of its nsfs inode onto a file under
//! `<run_dir>/netns/` — what `ip netns add` does. Nothing else holds it, so it outlives every module
//! and the peapod process itself; removing the pin (unmount + unlink) lets the kernel free it once
//! no thread or fd refers to it any more.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, setns, unshare};

#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("namespace pin {} already exists", path.display())]
    Exists { path: PathBuf },
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn io_err(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> NetnsError {
    let path = path.to_path_buf();
    move |source| NetnsError::Io { what, path, source }
}

/// Creates a new network namespace and pins it at `path`; returns an fd to it.
pub fn create_pinned(path: &Path) -> Result<OwnedFd, NetnsError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io_err("create directory", dir))?;
    }
    File::options()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| match e.kind() {
            io::ErrorKind::AlreadyExists => NetnsError::Exists {
                path: path.to_path_buf(),
            },
            _ => io_err("create pin", path)(e),
        })?;
    // The calling thread makes the namespace and goes back to its own at once.
    let made = away(
        || Ok(unshare(CloneFlags::CLONE_NEWNET)?),
        || -> io::Result<()> {
            mount(
                Some("/proc/thread-self/ns/net"),
                path,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )?;
            Ok(())
        },
    )
    .and_then(|r| r);
    if let Err(e) = made {
        let _ = std::fs::remove_file(path);
        return Err(io_err("pin namespace at", path)(e));
    }
    open(path)
}

/// Opens a pinned namespace.
pub fn open(path: &Path) -> Result<OwnedFd, NetnsError> {
    let f = File::open(path).map_err(io_err("open namespace", path))?;
    if !is_nsfs(&f) {
        return Err(io_err("open namespace", path)(io::Error::other(
            "not a namespace pin (no nsfs mount there)",
        )));
    }
    Ok(f.into())
}

/// Is `path` a live pin (a file with a namespace mounted on it)?
pub fn is_pinned(path: &Path) -> bool {
    File::open(path).is_ok_and(|f| is_nsfs(&f))
}

fn is_nsfs(f: &File) -> bool {
    nix::sys::statfs::fstatfs(f).is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::NSFS_MAGIC)
}

/// The namespace's inode number: its identity, as `ls -i` or `lsns` show it.
pub fn inode(fd: &impl AsFd) -> io::Result<u64> {
    let f = File::from(fd.as_fd().try_clone_to_owned()?);
    Ok(f.metadata()?.ino())
}

/// Unpins a namespace: detaches the mount and removes the file. Missing pins are fine.
pub fn remove_pinned(path: &Path) -> Result<(), NetnsError> {
    match umount2(path, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::Error::EINVAL) | Err(nix::Error::ENOENT) => {}
        Err(e) => return Err(io_err("unmount pin", path)(e.into())),
    }
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err("remove pin", path)(e)),
        _ => Ok(()),
    }
}

/// Moves the calling thread into the namespace. Only threads dedicated to one pod do this.
pub fn enter(fd: &impl AsFd) -> io::Result<()> {
    Ok(setns(fd, CloneFlags::CLONE_NEWNET)?)
}

/// Runs `f` on the calling thread inside the namespace `fd`, then brings the thread back: for a
/// moment's blocking work there, such as opening a socket (which stays in that namespace). No
/// thread has to be made for it.
pub fn within<R>(fd: &impl AsFd, f: impl FnOnce() -> R) -> io::Result<R> {
    away(|| enter(fd), f)
}

/// Runs `go` (which moves the calling thread to another namespace), then `f` there, then moves
/// the thread back to its own namespace, whatever happened. A thread that cannot go back aborts
/// the process: it would open a pod's sockets where the host's are expected.
fn away<R>(go: impl FnOnce() -> io::Result<()>, f: impl FnOnce() -> R) -> io::Result<R> {
    // Opened each time (a few microseconds), not kept: no descriptor lives on with the thread.
    let home: OwnedFd = File::open("/proc/thread-self/ns/net")?.into();
    /// Moves the thread back when dropped, also when `f` panics.
    struct Back(OwnedFd);
    impl Drop for Back {
        fn drop(&mut self) {
            if let Err(e) = enter(&self.0) {
                tracing::error!("a thread cannot go back to its own network namespace: {e}");
                std::process::abort();
            }
        }
    }
    go()?;
    let _back = Back(home);
    Ok(f())
}

/// What a namespace thread's runtime runs on each blocking thread it starts (after the thread
/// has entered the namespace) and stops.
#[derive(Clone, Default)]
pub struct ThreadHooks {
    pub started: Option<Arc<dyn Fn() + Send + Sync>>,
    pub stopped: Option<Arc<dyn Fn() + Send + Sync>>,
}

/// Runs `work` on a new thread named `name` inside the namespace `fd`, on a current-thread tokio
/// runtime whose blocking threads enter the namespace too before they run anything (a thread
/// left outside would open sockets on the host: the process aborts instead). `done` gets what
/// `work` returned, or why it could not run. The one way peapod runs a pod's code in its
/// namespace (the pod thread of [`crate::run::pod`] and its lanes); the sandbox's netlink
/// requests only step in to open their sockets ([`within`]).
///
/// The runtime checks for I/O after every task poll, not every 61st: a module that never yields
/// on its own is still preempted at each epoch tick (see [`crate::wasm::ticker`]), and with the
/// default interval its siblings' sockets would wait 61 such slices to be polled.
pub fn spawn<F, Fut, R>(
    name: String,
    fd: Arc<OwnedFd>,
    hooks: ThreadHooks,
    work: F,
    done: impl FnOnce(io::Result<R>) + Send + 'static,
) -> io::Result<std::thread::JoinHandle<()>>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = R>,
{
    std::thread::Builder::new().name(name).spawn(move || {
        let r = (|| {
            enter(&*fd)?;
            let for_blocking = fd.clone();
            let ThreadHooks { started, stopped } = hooks;
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .event_interval(1)
                .on_thread_start(move || {
                    if let Err(e) = enter(&*for_blocking) {
                        tracing::error!("a blocking thread cannot enter the pod's namespace: {e}");
                        std::process::abort();
                    }
                    if let Some(f) = &started {
                        f();
                    }
                })
                .on_thread_stop(move || {
                    if let Some(f) = &stopped {
                        f();
                    }
                })
                .build()?;
            let r = rt.block_on(work());
            rt.shutdown_timeout(std::time::Duration::from_secs(2));
            Ok(r)
        })();
        done(r);
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The calling thread's network namespace, by inode.
    fn here() -> u64 {
        std::fs::metadata("/proc/thread-self/ns/net").unwrap().ino()
    }

    #[test]
    fn a_thread_steps_into_a_namespace_and_back() {
        let dir = tempfile::tempdir().unwrap();
        let pin = dir.path().join("ns");
        let home = here();
        let fd = match create_pinned(&pin) {
            Ok(fd) => fd,
            Err(e) => {
                eprintln!("skipped: needs root for a network namespace ({e})");
                return;
            }
        };
        // Making it left this thread where it was.
        assert_eq!(here(), home);
        let inside = inode(&fd).unwrap();
        assert_ne!(inside, home);
        // A socket opened within stays in the namespace; the thread comes back.
        let seen = within(&fd, here).unwrap();
        assert_eq!(seen, inside);
        assert_eq!(here(), home);
        // Also when the work panics.
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            within(&fd, || panic!("inside")).unwrap();
        }));
        assert!(caught.is_err());
        assert_eq!(here(), home);
        drop(fd);
        remove_pinned(&pin).unwrap();
    }
}
