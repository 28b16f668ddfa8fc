//! Volumes in the pod spec: the `[[volumes]]` list, and each container's `volume_mounts` and
//! `env_from_files`. Validation here is pure (names, kinds, paths as text); what needs the host
//! (does a `host_path` exist?) is checked by [`crate::host::volumes::check`], and what the host does
//! with a volume is in [`crate::host::volumes`].
//!
//! ```toml
//! [[volumes]]
//! name = "data"
//! empty_dir = {}                              # or { size_limit = "64MiB" }
//! [[volumes]]
//! name = "site"
//! host_path = { path = "/srv/site" }          # type = "DirectoryOrCreate": made if missing
//!                                             # allow_user_writable = true: see below
//! [[volumes]]
//! name = "cfg"
//! files = { "app.conf" = "mode=edge\n" }      # read-only
//! [[volumes]]
//! name = "token"
//! secret = { path = "/etc/peapod/secrets/token" }   # a file or directory, read-only
//!
//! [[containers]]
//! volume_mounts = [{ name = "data", mount_path = "/data" }, { name = "cfg", mount_path = "/etc/app" }]
//! env_from_files = { TOKEN = "/run/secrets/token" }
//! ```
//!
//! A `host_path` or `secret` path has no symlink on it, and no directory on it that a user other
//! than root may write (that user could swap what the pod is given) unless the volume says
//! `allow_user_writable = true` (see [`crate::host::host_files`]).

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;

use serde::Deserialize;

use super::{Key, NAME_RULE, is_dns1123_label};
use crate::config::{Size, parse_size};

/// One `[[volumes]]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeSpec {
    /// DNS-1123 label, unique in the pod.
    pub name: String,
    pub kind: VolumeKind,
    /// Index in the file's `[[volumes]]` list.
    pub index: usize,
    /// Line of the volume's kind (its `path` for `host_path` and `secret`), for problems found
    /// later on the host.
    pub line: Option<usize>,
}

/// What a volume is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VolumeKind {
    /// A directory of the pod's sandbox, empty in every new sandbox, shared by the containers
    /// that mount it: on disk in the state dir, or a tmpfs of `size_limit` bytes.
    EmptyDir { size_limit: Option<u64> },
    /// A directory of the host; `create`: made if missing (`type = "DirectoryOrCreate"`);
    /// `allow_user_writable`: root accepts a path another user may change.
    HostPath {
        path: PathBuf,
        create: bool,
        allow_user_writable: bool,
    },
    /// Read-only files with exactly these contents (a config map).
    Files(BTreeMap<String, String>),
    /// A host file or directory, shown read-only; its content is never copied anywhere.
    Secret {
        path: PathBuf,
        allow_user_writable: bool,
    },
}

impl VolumeKind {
    /// `files` and `secret` volumes are read-only whatever the mount says.
    pub fn read_only(&self) -> bool {
        matches!(self, VolumeKind::Files(_) | VolumeKind::Secret { .. })
    }

    pub fn word(&self) -> &'static str {
        match self {
            VolumeKind::EmptyDir { .. } => "empty_dir",
            VolumeKind::HostPath { .. } => "host_path",
            VolumeKind::Files(_) => "files",
            VolumeKind::Secret { .. } => "secret",
        }
    }
}

/// A volume mounted into a container at `mount_path` (absolute, normalized).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountSpec {
    pub volume: String,
    pub mount_path: String,
    /// Writes refused (always so for `files` and `secret`).
    pub read_only: bool,
}

/// An environment variable whose value is read, at each start of the container, from the file
/// at `path` inside one of its mounts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvFromFile {
    pub var: String,
    pub path: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawVolume {
    name: String,
    empty_dir: Option<RawEmptyDir>,
    host_path: Option<RawHostPath>,
    files: Option<BTreeMap<String, String>>,
    secret: Option<RawSecret>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEmptyDir {
    size_limit: Option<Size>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHostPath {
    path: PathBuf,
    #[serde(rename = "type", default)]
    kind: HostPathType,
    #[serde(default)]
    allow_user_writable: bool,
}

/// Kubernetes' `hostPath.type`, the two that make sense for a directory.
#[derive(Deserialize, Default, PartialEq)]
enum HostPathType {
    #[default]
    Directory,
    DirectoryOrCreate,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSecret {
    path: PathBuf,
    #[serde(default)]
    allow_user_writable: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMount {
    name: String,
    mount_path: String,
    #[serde(default)]
    read_only: bool,
}

use super::Report;

/// Validates the `[[volumes]]` list; `line_of` finds a field's line.
pub(super) fn volumes(
    raw: Vec<RawVolume>,
    line_of: &dyn Fn(&[Key]) -> Option<usize>,
    problem: &mut Report<'_>,
) -> Vec<VolumeSpec> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for (i, v) in raw.into_iter().enumerate() {
        let at = |field: &'static str| [Key::F("volumes"), Key::I(i), Key::F(field)];
        if !is_dns1123_label(&v.name) {
            problem(&at("name"), format!("{:?} {NAME_RULE}", v.name));
        } else if !seen.insert(v.name.clone()) {
            problem(
                &at("name"),
                format!("{:?} is used by another volume of this pod", v.name),
            );
        }
        let given: Vec<&str> = [
            ("empty_dir", v.empty_dir.is_some()),
            ("host_path", v.host_path.is_some()),
            ("files", v.files.is_some()),
            ("secret", v.secret.is_some()),
        ]
        .iter()
        .filter(|(_, set)| *set)
        .map(|(k, _)| *k)
        .collect();
        match given[..] {
            [_] => {}
            [] => {
                problem(
                    &at("name"),
                    format!(
                        "volume {:?} needs one of empty_dir, host_path, files or secret",
                        v.name
                    ),
                );
                continue;
            }
            _ => {
                problem(
                    &at(given[1]),
                    format!(
                        "volume {:?} has {}: a volume is exactly one kind",
                        v.name,
                        given.join(" and ")
                    ),
                );
                continue;
            }
        }
        let absolute = |path: &PathBuf, keys: &[Key], problem: &mut Report<'_>| {
            if !path.is_absolute() {
                problem(
                    keys,
                    format!("{:?} must be an absolute path", path.display()),
                );
            }
        };
        let (kind, line) = if let Some(e) = v.empty_dir {
            let keys = [
                Key::F("volumes"),
                Key::I(i),
                Key::F("empty_dir"),
                Key::F("size_limit"),
            ];
            let size_limit = match e.size_limit {
                None => None,
                Some(size) => {
                    let parsed = match size {
                        Size::Bytes(n) => Ok(n),
                        Size::Text(t) => parse_size(&t),
                    };
                    match parsed {
                        Ok(0) => {
                            problem(&keys, "must be more than 0".into());
                            None
                        }
                        Ok(n) => Some(n),
                        Err(m) => {
                            problem(&keys, m);
                            None
                        }
                    }
                }
            };
            (
                VolumeKind::EmptyDir { size_limit },
                line_of(&at("empty_dir")),
            )
        } else if let Some(h) = v.host_path {
            let keys = [
                Key::F("volumes"),
                Key::I(i),
                Key::F("host_path"),
                Key::F("path"),
            ];
            absolute(&h.path, &keys, problem);
            (
                VolumeKind::HostPath {
                    path: h.path,
                    create: h.kind == HostPathType::DirectoryOrCreate,
                    allow_user_writable: h.allow_user_writable,
                },
                line_of(&keys),
            )
        } else if let Some(files) = v.files {
            for name in files.keys() {
                if !is_file_name(name) {
                    problem(
                        &at("files"),
                        format!(
                            "{name:?} is not a file name (1-255 bytes, no '/', not \".\" or \"..\")"
                        ),
                    );
                }
            }
            (VolumeKind::Files(files), line_of(&at("files")))
        } else if let Some(s) = v.secret {
            let keys = [
                Key::F("volumes"),
                Key::I(i),
                Key::F("secret"),
                Key::F("path"),
            ];
            absolute(&s.path, &keys, problem);
            (
                VolumeKind::Secret {
                    path: s.path,
                    allow_user_writable: s.allow_user_writable,
                },
                line_of(&keys),
            )
        } else {
            unreachable!("exactly one kind was checked above")
        };
        out.push(VolumeSpec {
            name: v.name,
            kind,
            index: i,
            line,
        });
    }
    out
}

/// Validates container `c`'s `volume_mounts` against the pod's volumes.
pub(super) fn mounts(
    (list, c): (&'static str, usize),
    raw: Vec<RawMount>,
    volumes: &[VolumeSpec],
    problem: &mut Report<'_>,
) -> Vec<MountSpec> {
    let mut paths = HashSet::new();
    let mut out = Vec::new();
    for (j, m) in raw.into_iter().enumerate() {
        let at = |field: &'static str| {
            [
                Key::F(list),
                Key::I(c),
                Key::F("volume_mounts"),
                Key::I(j),
                Key::F(field),
            ]
        };
        let volume = volumes.iter().find(|v| v.name == m.name);
        if volume.is_none() {
            problem(
                &at("name"),
                format!("no volume named {:?} in this pod's [[volumes]]", m.name),
            );
        }
        if let Err(e) = check_guest_path(&m.mount_path) {
            problem(&at("mount_path"), e);
        } else if !paths.insert(m.mount_path.clone()) {
            problem(
                &at("mount_path"),
                format!(
                    "{:?} is already a mount path of this container",
                    m.mount_path
                ),
            );
        }
        out.push(MountSpec {
            read_only: m.read_only || volume.is_some_and(|v| v.kind.read_only()),
            volume: m.name,
            mount_path: m.mount_path,
        });
    }
    out
}

/// Validates container `c`'s `env_from_files`: each path lies inside one of its mounts, and no
/// variable is also set by `env`.
pub(super) fn env_from_files(
    (list, c): (&'static str, usize),
    raw: BTreeMap<String, String>,
    mounts: &[MountSpec],
    env: &BTreeMap<String, String>,
    problem: &mut Report<'_>,
) -> Vec<EnvFromFile> {
    let keys = [Key::F(list), Key::I(c), Key::F("env_from_files")];
    let mut out = Vec::new();
    for (var, path) in raw {
        if var.is_empty() || var.contains('=') || var.contains('\0') {
            problem(
                &keys,
                format!("{var:?} is not a valid variable name (empty, or has '=' or NUL)"),
            );
        } else if env.contains_key(&var) {
            problem(&keys, format!("{var} is also set in env"));
        }
        if let Err(e) = check_guest_path(&path) {
            problem(&keys, format!("{var}: {e}"));
        } else if mount_of(mounts, &path).is_none() {
            problem(
                &keys,
                format!("{var}: {path:?} is not inside any of this container's volume_mounts"),
            );
        }
        out.push(EnvFromFile { var, path });
    }
    out
}

/// The mount that holds guest path `path` (the innermost when mounts nest), and the path
/// relative to it; `None` when no mount holds it or it is a mount path itself.
pub fn mount_of<'m>(mounts: &'m [MountSpec], path: &str) -> Option<(&'m MountSpec, String)> {
    mounts
        .iter()
        .filter_map(|m| {
            let rest = if m.mount_path == "/" {
                path.strip_prefix('/')
            } else {
                path.strip_prefix(m.mount_path.as_str())?.strip_prefix('/')
            }?;
            (!rest.is_empty()).then(|| (m, rest.to_string()))
        })
        .max_by_key(|(m, _)| m.mount_path.len())
}

/// A guest path: absolute and plain (no empty, `.` or `..` component, no trailing `/`).
fn check_guest_path(p: &str) -> Result<(), String> {
    if !p.starts_with('/') {
        return Err(format!("{p:?} must be an absolute path (start with '/')"));
    }
    if p != "/"
        && (p.contains('\0')
            || p[1..]
                .split('/')
                .any(|c| c.is_empty() || c == "." || c == ".."))
    {
        return Err(format!(
            "{p:?} must be a plain absolute path (no '.', '..' or empty parts, no trailing '/')"
        ));
    }
    Ok(())
}

fn is_file_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 255 && s != "." && s != ".." && !s.contains(['/', '\0'])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mount(path: &str) -> MountSpec {
        MountSpec {
            volume: "v".into(),
            mount_path: path.into(),
            read_only: false,
        }
    }

    #[test]
    fn innermost_mount_holds_a_path() {
        let ms = [mount("/etc"), mount("/etc/app"), mount("/data")];
        let (m, rest) = mount_of(&ms, "/etc/app/x.conf").unwrap();
        assert_eq!(
            (m.mount_path.as_str(), rest.as_str()),
            ("/etc/app", "x.conf")
        );
        let (m, rest) = mount_of(&ms, "/etc/hosts").unwrap();
        assert_eq!((m.mount_path.as_str(), rest.as_str()), ("/etc", "hosts"));
        assert!(
            mount_of(&ms, "/data").is_none(),
            "a mount path itself is no file"
        );
        assert!(mount_of(&ms, "/database/x").is_none());
        assert!(mount_of(&ms, "/run/x").is_none());
        let root = [mount("/")];
        assert_eq!(mount_of(&root, "/a/b").unwrap().1, "a/b");
    }

    #[test]
    fn guest_paths_are_plain_and_absolute() {
        for ok in ["/", "/data", "/etc/app", "/a.b/c-d"] {
            assert!(check_guest_path(ok).is_ok(), "{ok}");
        }
        for bad in [
            "data", "", "/data/", "/a//b", "/a/../b", "/./a", "/a/.", "/a\0b",
        ] {
            assert!(check_guest_path(bad).is_err(), "{bad:?}");
        }
    }
}
