//! Volumes on the host: what a pod's `[[volumes]]` are made of, and their life with the sandbox.
//!
//! Each pod has a directory `<state_dir>/volumes/<pod>/`, made with its sandbox, kept across
//! restarts in place and daemon restarts (it is on disk, like the namespace pin it lives beside),
//! and removed with the sandbox; a new sandbox starts with it empty.
//!
//! - `empty_dir`: `<pod dir>/<volume>`, on disk (Kubernetes' default medium). With `size_limit`
//!   it is a tmpfs of that size mounted there (`nosuid,nodev,noexec`, inodes capped too): the
//!   kernel refuses a write past the limit with ENOSPC, exactly and at once, and the pod cannot
//!   touch the disk's free space or another pod's. Its pages are memory, counted in the daemon's
//!   cgroup.
//! - `host_path`: the host directory itself (made first with `type = "DirectoryOrCreate"`).
//! - `files`: `<pod dir>/<volume>/<file>`, written from the spec (mode 0444).
//! - `secret`: a directory is shown as it is; a single file `F` is bind-mounted read-only at
//!   `<run_dir>/secrets/<pod>/<volume>/<basename of F>`, so the guest sees it in a directory of
//!   its own; its content is never copied, and nothing under the state dir shows it.
//!
//! Guests reach a volume only through wasmtime-wasi's preopens, which are cap-std directories:
//! every path is resolved beneath the volume (`..`, absolute symlinks and symlinks that point out
//! are refused by the kernel's `RESOLVE_BENEATH` or cap-std's own walk), and a read-only mount
//! refuses every write, create, rename and delete.
//!
//! Who may mount host files: a `host_path` or `secret` is opened by the daemon, as root, so only
//! a root caller may name one (the pods directory is root's; an API client must be root), and it
//! is opened by [`crate::host::host_files`]: no symlink on the path, no directory on it that another
//! user may write unless the volume allows it, held open for the sandbox's life.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags};

use crate::caller::Caller;
use crate::config::Config;
use crate::host::host_files::{self, Held, OpenError};
use crate::spec::{PodSpec, Problem, VolumeKind};

#[derive(Debug, thiserror::Error)]
#[error("volume {volume}: {message}")]
pub struct VolumeError {
    pub volume: String,
    pub message: String,
}

/// `<state_dir>/volumes/<pod>`: where a pod's sandbox keeps its volumes.
pub fn pod_dir(cfg: &Config, pod: &str) -> PathBuf {
    cfg.state_dir.join("volumes").join(pod)
}

/// `<run_dir>/secrets/<pod>`: where a pod's single-file secrets are bind-mounted.
fn secrets_dir(cfg: &Config, pod: &str) -> PathBuf {
    cfg.run_dir.join("secrets").join(pod)
}

/// Does pod `pod` have volumes on this host (left by an earlier sandbox, or its own)?
pub fn exist(cfg: &Config, pod: &str) -> bool {
    pod_dir(cfg, pod).exists() || secrets_dir(cfg, pod).exists()
}

pub use crate::wire::VolumeView;

/// The views of pod `spec`'s volumes.
pub fn views(cfg: &Config, spec: &PodSpec) -> Vec<VolumeView> {
    spec.volumes
        .iter()
        .map(|v| VolumeView {
            name: v.name.clone(),
            kind: v.kind.word().into(),
            host_path: match &v.kind {
                VolumeKind::HostPath { path, .. } | VolumeKind::Secret { path, .. } => path.clone(),
                VolumeKind::EmptyDir { .. } | VolumeKind::Files(_) => {
                    pod_dir(cfg, &spec.name).join(&v.name)
                }
            },
            size_limit: match v.kind {
                VolumeKind::EmptyDir { size_limit } => size_limit,
                _ => None,
            },
        })
        .collect()
}

/// What validation needs from the host: every `host_path` is a directory (or may be made),
/// every `secret` a file or directory, opened as [`host_files::open`] does (no symlink on the
/// path, no directory on it another user may write, unless allowed), the caller may name them,
/// and none of them holds or lies inside peapod's own directories (run dir, state dir, logs: the
/// compile cache's key, the pins and the API socket must stay out of a guest's reach). One
/// problem per fault.
pub fn check(spec: &PodSpec, cfg: &Config, caller: Caller) -> Vec<Problem> {
    let mut problems = Vec::new();
    for v in &spec.volumes {
        let Some(host) = HostVolume::of(&v.kind) else {
            continue;
        };
        let (field, path) = (host.field, host.path);
        if !caller.is_root() {
            problems.push(spec.volume_problem(
                v,
                field,
                format!(
                    "only root may mount host files ({} would be opened by the daemon as root)",
                    path.display()
                ),
            ));
            continue;
        }
        let real = match host.open(false) {
            Ok(held) => held.real_path().unwrap_or_else(|_| path.to_path_buf()),
            Err(HostError::Missing) if host.create => absolute(path),
            Err(e) => {
                problems.push(spec.volume_problem(v, field, e.to_string()));
                continue;
            }
        };
        if let Some(d) = overlaps(cfg, &real) {
            problems.push(spec.volume_problem(
                v,
                field,
                format!(
                    "{} overlaps peapod's own directory {}: a guest must not reach it",
                    path.display(),
                    d.display()
                ),
            ));
        }
    }
    problems
}

/// A `host_path` or `secret` volume: the host path it names and how it may be opened.
struct HostVolume<'a> {
    field: &'static str,
    path: &'a Path,
    create: bool,
    allow_user_writable: bool,
    /// `host_path`: a directory; `secret`: a directory or a regular file.
    dir_only: bool,
}

#[derive(Debug, thiserror::Error)]
enum HostError {
    #[error("missing")]
    Missing,
    #[error("{0}")]
    Refused(String),
}

impl<'a> HostVolume<'a> {
    fn of(kind: &'a VolumeKind) -> Option<HostVolume<'a>> {
        match kind {
            VolumeKind::HostPath {
                path,
                create,
                allow_user_writable,
            } => Some(HostVolume {
                field: "host_path.path",
                path,
                create: *create,
                allow_user_writable: *allow_user_writable,
                dir_only: true,
            }),
            VolumeKind::Secret {
                path,
                allow_user_writable,
            } => Some(HostVolume {
                field: "secret.path",
                path,
                create: false,
                allow_user_writable: *allow_user_writable,
                dir_only: false,
            }),
            _ => None,
        }
    }

    /// Opens it ([`host_files::open`]; `create`: a `DirectoryOrCreate` is made) and checks its
    /// kind. `Missing` only when it does not exist and may not be made now.
    fn open(&self, create: bool) -> Result<Held, HostError> {
        let p = self.path.display();
        let held =
            match host_files::open(self.path, create && self.create, self.allow_user_writable) {
                Ok(h) => h,
                Err(OpenError::Missing(_)) if self.create && !create => {
                    return Err(HostError::Missing);
                }
                Err(OpenError::Missing(_)) if self.dir_only => {
                    return Err(HostError::Refused(format!(
                        "{p} does not exist (create it, or set type = \"DirectoryOrCreate\")"
                    )));
                }
                Err(OpenError::Missing(_)) => {
                    let e = std::io::Error::from_raw_os_error(libc::ENOENT);
                    return Err(HostError::Refused(format!("{p}: {e}")));
                }
                Err(e) => return Err(HostError::Refused(e.to_string())),
            };
        match (held.is_dir(), held.is_file(), self.dir_only) {
            (true, _, _) | (false, true, false) => Ok(held),
            (false, _, true) => Err(HostError::Refused(format!("{p} is not a directory"))),
            (false, _, false) => Err(HostError::Refused(format!(
                "{p} is not a file or directory"
            ))),
        }
    }
}

/// Which of peapod's own directories `real` (a resolved path) holds or lies inside, if any.
fn overlaps(cfg: &Config, real: &Path) -> Option<PathBuf> {
    [&cfg.run_dir, &cfg.state_dir, &cfg.logs.dir]
        .into_iter()
        .map(|d| absolute(d))
        .find(|d| real.starts_with(d) || d.starts_with(real))
}

/// `p` with symlinks resolved as far as it exists (the rest appended as written).
fn absolute(p: &Path) -> PathBuf {
    let mut missing = Vec::new();
    let mut cur = p.to_path_buf();
    loop {
        if let Ok(real) = cur.canonicalize() {
            return missing.iter().rev().fold(real, |acc, c| acc.join(c));
        }
        match (cur.file_name().map(|n| n.to_os_string()), cur.parent()) {
            (Some(name), Some(parent)) => {
                missing.push(name);
                cur = parent.to_path_buf();
            }
            _ => return p.to_path_buf(),
        }
    }
}

/// Makes pod `spec`'s volumes on the host and returns each volume's host directory, held open
/// for the sandbox's life (a `host_path` or `secret` is opened again here, checked again, and
/// what was checked is what the pod gets, whatever its name leads to later). Idempotent: what
/// exists (a recovered sandbox's volumes, with their data and mounts) is kept.
pub fn prepare(cfg: &Config, spec: &PodSpec) -> Result<BTreeMap<String, Held>, VolumeError> {
    let root = pod_dir(cfg, &spec.name);
    let mut dirs = BTreeMap::new();
    for v in &spec.volumes {
        let err = |message: String| VolumeError {
            volume: v.name.clone(),
            message,
        };
        let own = root.join(&v.name);
        let io =
            |what: &str, p: &Path, e: std::io::Error| err(format!("{what} {}: {e}", p.display()));
        let hold = |p: &Path| Held::own_dir(p).map_err(|e| io("cannot open", p, e));
        if let Some(host) = HostVolume::of(&v.kind) {
            let held = host.open(true).map_err(|e| err(e.to_string()))?;
            let real = held
                .real_path()
                .map_err(|e| io("cannot resolve", host.path, e))?;
            if let Some(d) = overlaps(cfg, &real) {
                return Err(err(format!(
                    "{} is now {}, inside peapod's own directory {}: not mounted",
                    host.path.display(),
                    real.display(),
                    d.display()
                )));
            }
            if held.is_dir() {
                dirs.insert(v.name.clone(), held);
                continue;
            }
            // A single-file secret: shown in a directory of its own, by a read-only bind mount
            // of the file that was checked.
            let name = host
                .path
                .file_name()
                .ok_or_else(|| err(format!("{} has no file name", host.path.display())))?;
            let own = secrets_dir(cfg, &spec.name).join(&v.name);
            let target = own.join(name);
            make_dir(&own).map_err(|e| io("cannot create", &own, e))?;
            if !is_mount_point(&target) {
                bind_read_only(&held.path(), &target)
                    .map_err(|e| io("cannot bind-mount the secret at", &target, e))?;
            }
            dirs.insert(v.name.clone(), hold(&own)?);
            continue;
        }
        match &v.kind {
            VolumeKind::EmptyDir { size_limit } => {
                make_dir(&own).map_err(|e| io("cannot create", &own, e))?;
                if let Some(size) = size_limit
                    && !is_mount_point(&own)
                {
                    mount_tmpfs(&own, *size).map_err(|e| io("cannot mount a tmpfs on", &own, e))?;
                }
            }
            VolumeKind::Files(files) => {
                // As the spec says already (a recovered sandbox): nothing to write, so a
                // read-only state dir does not stop the pod.
                let written = |name: &String, text: &String| {
                    std::fs::read(own.join(name)).is_ok_and(|b| b == text.as_bytes())
                };
                let same = std::fs::read_dir(&own).is_ok_and(|d| d.count() == files.len())
                    && files.iter().all(|(n, t)| written(n, t));
                if !same {
                    crate::host::tree::remove(&own, Default::default())
                        .map_err(|e| io("cannot clear", &own, e))?;
                    make_dir(&own).map_err(|e| io("cannot create", &own, e))?;
                    for (name, text) in files {
                        let f = own.join(name);
                        write_read_only(&f, text.as_bytes())
                            .map_err(|e| io("cannot write", &f, e))?;
                    }
                }
            }
            VolumeKind::HostPath { .. } | VolumeKind::Secret { .. } => unreachable!("above"),
        }
        dirs.insert(v.name.clone(), hold(&own)?);
    }
    Ok(dirs)
}

/// Removes pod `pod`'s volumes: for each of its two directories, first every mount under it
/// (tmpfs, secret binds), then the files. Nothing is deleted while a mount is left: a secret's
/// bind mount must never lead a recursive delete into the host file it shows. The files are a
/// guest's making: they go by [`crate::host::tree::remove`] (iterative, no symlink followed, bounded).
/// Blocking: call it on a blocking thread.
pub fn remove(cfg: &Config, pod: &str) -> std::io::Result<()> {
    remove_dir(&secrets_dir(cfg, pod))?;
    remove_dir(&pod_dir(cfg, pod))
}

fn remove_dir(root: &Path) -> std::io::Result<()> {
    if !root.exists() {
        return Ok(());
    }
    let mut mounts = mounts_under(root)?;
    // Deepest first.
    mounts.sort_by_key(|m| std::cmp::Reverse(m.as_os_str().len()));
    for m in &mounts {
        nix::mount::umount2(m, MntFlags::MNT_DETACH)
            .map_err(|e| std::io::Error::other(format!("cannot unmount {}: {e}", m.display())))?;
    }
    if !mounts_under(root)?.is_empty() {
        return Err(std::io::Error::other(format!(
            "{}: mounts are left under it; not removing it",
            root.display()
        )));
    }
    crate::host::tree::remove(root, Default::default())
}

/// Pods that have volumes here (to collect those of pods that are gone).
pub fn pods(cfg: &Config) -> Vec<String> {
    [cfg.state_dir.join("volumes"), cfg.run_dir.join("secrets")]
        .iter()
        .filter_map(|d| std::fs::read_dir(d).ok())
        .flat_map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
        })
        .collect()
}

fn make_dir(p: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o750)
        .create(p)
}

fn write_read_only(p: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o444)
        .open(p)?;
    f.write_all(bytes)
}

fn mount_tmpfs(p: &Path, size: u64) -> std::io::Result<()> {
    // One inode per 4 KiB of the limit (at least 1024): a guest making empty files cannot use
    // more kernel memory than its limit's worth.
    let inodes = (size / 4096).max(1024);
    let data = format!("size={size},nr_inodes={inodes},mode=0750");
    nix::mount::mount(
        Some("peapod-volume"),
        p,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some(data.as_str()),
    )
    .map_err(std::io::Error::from)
}

fn bind_read_only(src: &Path, target: &Path) -> std::io::Result<()> {
    if !target.exists() {
        write_read_only(target, b"")?;
    }
    let none: Option<&str> = None;
    nix::mount::mount(Some(src), target, none, MsFlags::MS_BIND, none)?;
    let flags = MsFlags::MS_BIND
        | MsFlags::MS_REMOUNT
        | MsFlags::MS_RDONLY
        | MsFlags::MS_NOSUID
        | MsFlags::MS_NODEV
        | MsFlags::MS_NOEXEC;
    if let Err(e) = nix::mount::mount(none, target, none, flags, none) {
        let _ = nix::mount::umount2(target, MntFlags::MNT_DETACH);
        return Err(e.into());
    }
    Ok(())
}

fn is_mount_point(p: &Path) -> bool {
    let Ok(p) = p.canonicalize() else {
        return false;
    };
    mounts_under(&p).map(|ms| ms.contains(&p)).unwrap_or(false)
}

/// Mount points at or below `root` (which exists), from `/proc/self/mountinfo`.
fn mounts_under(root: &Path) -> std::io::Result<Vec<PathBuf>> {
    let root = root.canonicalize()?;
    let text = std::fs::read_to_string("/proc/self/mountinfo")?;
    Ok(text
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(unescape(p)))
        .filter(|p| p.starts_with(&root))
        .collect())
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 4 <= b.len()
            && let Ok(v) = u8::from_str_radix(&s[i + 1..i + 4], 8)
        {
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_root_may_mount_host_files() {
        // A host directory and file of the test's own (under an emulator with a sysroot, a path
        // such as /etc would be the sysroot's).
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("key"), "k").unwrap();
        let spec = PodSpec::parse(
            Path::new("/p/pod.toml"),
            &format!(
                "[pod]\nname = \"p\"\n[[volumes]]\nname = \"etc\"\nhost_path = {{ path = {:?} }}\n\
                 [[volumes]]\nname = \"key\"\nsecret = {{ path = {:?} }}\n\
                 [[volumes]]\nname = \"tmp\"\nempty_dir = {{}}\n\
                 [[containers]]\nname = \"c\"\nmodule = \"m.wasm\"\n",
                d.path(),
                d.path().join("key")
            ),
        )
        .unwrap();
        let user = Caller {
            uid: 1000,
            gid: 1000,
            pid: 0,
        };
        let cfg = Config::default();
        let problems: Vec<String> = check(&spec, &cfg, user)
            .iter()
            .map(|p| p.to_string())
            .collect();
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(
            problems[0].starts_with("5: volumes[0].host_path.path: only root may mount host files"),
            "{problems:?}"
        );
        assert!(
            problems[1].contains("volumes[1].secret.path: only root"),
            "{problems:?}"
        );
        assert!(check(&spec, &cfg, Caller { uid: 0, ..user }).is_empty());
    }

    #[test]
    fn mountinfo_escapes_are_undone() {
        assert_eq!(unescape(r"/a\040b/c\134d"), "/a b/c\\d");
        assert_eq!(unescape("/plain"), "/plain");
        assert_eq!(unescape(r"/end\04"), r"/end\04");
    }
}
