//! The pod spec: the TOML file a user writes, parsed and validated before anything touches the kernel.
//!
//! ```toml
//! [pod]
//! name = "demo"                # DNS-1123 label, unique on the host
//! restart_policy = "Always"    # default for its containers: Always | OnFailure | Never
//!
//! [[containers]]
//! name = "app"                 # DNS-1123 label, unique in the pod
//! module = "app.wasm"          # a .wasm (component or core module), relative to this file
//! args = ["--port", "8080"]    # optional: argv[1..]
//! env = { PORT = "8080" }      # optional
//! restart_policy = "OnFailure" # optional override
//! memory_limit_mib = 128       # optional: all linear memories and tables together
//! open_files_limit = 1024      # optional: open sockets, files and streams [default: config]
//! ```
//!
//! Every problem is reported as `file:line: field: what is wrong`, and all problems of a file are
//! reported at once. Parsing is pure: [`PodSpec::load`] reads the spec file and nothing else (the
//! modules are read and compiled by the executor, which reports through [`PodSpec::problem`]).
//!
//! ```
//! let spec = peapod::spec::PodSpec::parse(
//!     std::path::Path::new("/etc/peapod/pods/demo.toml"),
//!     r#"
//!         [pod]
//!         name = "demo"
//!         [[containers]]
//!         name = "app"
//!         module = "app.wasm"
//!         restart_policy = "OnFailure"
//!     "#,
//! ).unwrap();
//! assert_eq!(spec.containers[0].module, std::path::Path::new("/etc/peapod/pods/app.wasm"));
//! assert_eq!(spec.containers[0].restart_policy, peapod::spec::RestartPolicy::OnFailure);
//! ```

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

pub use crate::labels;
pub use crate::labels::is_dns1123_label;
pub mod manifest;
mod ports;
mod read;
mod supervision;
mod volumes;
mod words;
pub use ports::{PortSpec, Protocol, Published};
pub use supervision::{DEFAULT_GRACE, Probe, ProbeAction, Probes, parse_millicores};
pub use volumes::{EnvFromFile, MountSpec, VolumeKind, VolumeSpec, mount_of};

/// When a container that ended is started again (Kubernetes' `restartPolicy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize, Default)]
pub enum RestartPolicy {
    /// Restart after every exit, clean or not.
    #[default]
    Always,
    /// Restart after a non-zero exit or a trap; a clean exit ends the container.
    OnFailure,
    /// Never restart.
    Never,
}

/// The shortest time from one start of a container to the next: a module that exits at once
/// cannot restart more than 100 times a second (a lower `initial` or `max` is raised to this,
/// with a warning). A run that lasted longer than this is restarted at once.
pub const MIN_BACKOFF: Duration = Duration::from_millis(10);

/// The largest `memory_limit_mib`: 64 GiB (a 32-bit wasm memory holds at most 4 GiB).
pub const MAX_MEMORY_LIMIT_MIB: u64 = 64 << 10;

/// Exponential backoff between restarts of one container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Delay before the first restart (default 50 ms: an edge app should be back at once).
    pub initial: Duration,
    /// The delay doubles on each restart up to this cap (default 5 minutes, as Kubernetes).
    pub max: Duration,
    /// A run at least this long resets the delay to `initial` (default 10 minutes).
    pub reset_after: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_millis(50),
            max: Duration::from_secs(300),
            reset_after: Duration::from_secs(600),
        }
    }
}

/// Default memory cap of one container's store.
pub const DEFAULT_MEMORY_LIMIT_MIB: u64 = 128;

/// A validated pod spec.
#[derive(Debug, Clone)]
pub struct PodSpec {
    /// The file it came from (as given), for messages.
    pub source: PathBuf,
    pub name: String,
    /// `[pod] labels`: what selectors (`peapod get pods -l app=web`) pick the pod by.
    pub labels: BTreeMap<String, String>,
    pub restart_policy: RestartPolicy,
    pub backoff: Backoff,
    /// How long a stop waits for containers with a `pre_stop` hook to exit.
    pub termination_grace_period: Duration,
    /// Every container: the `[[init_containers]]` first, in order, then the `[[containers]]`
    /// (see [`ContainerSpec::kind`]).
    pub containers: Vec<ContainerSpec>,
    /// `[[volumes]]`: what containers may mount (see [`volumes`]).
    pub volumes: Vec<VolumeSpec>,
    /// `[update]`: how an apply that replaces this pod is proven, or undone.
    pub update: UpdatePolicy,
    /// Values that were accepted but changed (e.g. a backoff raised to [`MIN_BACKOFF`]), in the
    /// form of problems: whoever loads the spec shows them.
    pub warnings: Vec<Problem>,
}

/// `[update]`: an apply that replaces a running pod (a new module, a new spec) is a rollout. The
/// new version is proven once it has been ready (every container running and passing its
/// readiness probe) for `min_ready` without a restart; if that has not happened `deadline`
/// after the apply, or it restarts [`CRASH_LOOP_RESTARTS`] times first, the daemon rolls back
/// to the version before by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpdatePolicy {
    pub deadline: Duration,
    pub min_ready: Duration,
}

/// Restarts of one container within a rollout's deadline that roll it back (a crash loop).
pub const CRASH_LOOP_RESTARTS: u32 = 3;
/// `[update] deadline` unless set.
pub const DEFAULT_UPDATE_DEADLINE: Duration = Duration::from_secs(60);
/// `[update] min_ready` unless set.
pub const DEFAULT_MIN_READY: Duration = Duration::from_secs(5);

impl Default for UpdatePolicy {
    fn default() -> Self {
        UpdatePolicy {
            deadline: DEFAULT_UPDATE_DEADLINE,
            min_ready: DEFAULT_MIN_READY,
        }
    }
}

/// What part a container plays in its pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// An `[[init_containers]]` entry: runs to completion before the next entry starts.
    Init,
    /// An `[[init_containers]]` entry with `restart_policy = "Always"` (a native sidecar):
    /// started in order, kept running beside the app, stopped after it.
    Sidecar,
    /// A `[[containers]]` entry.
    App,
}

/// One container (WASI module) of a pod, with the pod's defaults applied.
#[derive(Debug, Clone)]
pub struct ContainerSpec {
    pub name: String,
    pub kind: Kind,
    /// The module's path, resolved against the spec file's directory.
    pub module: PathBuf,
    /// Line of the `module` field, so module problems found later point at it.
    pub module_line: Option<usize>,
    /// `module = "oci://..."`: the module comes from a registry (then `module` is the stored
    /// blob once the reference is resolved, see `crate::images`).
    pub image: Option<Image>,
    /// `argv[1..]`; `argv[0]` is the container name.
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub restart_policy: RestartPolicy,
    /// Cap on the linear memories and tables of a run, all together, in bytes.
    pub memory_limit: u64,
    /// Cap on a run's open WASI handles; `None`: the runtime's default.
    pub open_files: Option<usize>,
    /// The pod's volumes this container sees, and where; none: no file system at all.
    pub volume_mounts: Vec<MountSpec>,
    /// Variables read from files of its mounts at each start.
    pub env_from_files: Vec<EnvFromFile>,
    pub probes: Probes,
    /// Millicores (`cpu_limit = "250m"`); `None`: no cap.
    pub cpu_limit: Option<u32>,
    /// `lifecycle.pre_stop.http_get`: called when the container is stopped.
    pub pre_stop: Option<ProbeAction>,
    /// Its `ports`; those with a `host_port` are published on the host.
    pub ports: Vec<PortSpec>,
    /// Index in its list (`[[containers]]` or `[[init_containers]]`).
    pub index: usize,
}

impl ContainerSpec {
    /// The list it came from, as the spec file names it.
    pub fn list(&self) -> &'static str {
        match self.kind {
            Kind::App => "containers",
            Kind::Init | Kind::Sidecar => "init_containers",
        }
    }
}

/// A module named by an OCI reference (`module = "oci://REGISTRY/REPO:TAG"` or
/// `...@sha256:DIGEST`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    /// The reference as written, without `oci://`.
    pub reference: String,
    /// What it resolved to when the pod was applied: the manifest's digest and the module
    /// layer's (`sha256:...`); `None` until then.
    pub resolved: Option<ResolvedImage>,
}

/// The digests an [`Image`] resolved to.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ResolvedImage {
    pub manifest: String,
    pub module: String,
}

impl Image {
    /// `module = "oci://..."` text: `None` when it is a file path; the reference or why it is
    /// not one.
    pub fn parse(module: &str) -> Option<Result<Image, String>> {
        module.strip_prefix(IMAGE_SCHEME).map(Image::checked)
    }

    /// A reference as a command line or an API body gives it: `oci://` or not.
    pub fn reference(text: &str) -> Result<Image, String> {
        let text = text.trim();
        Image::checked(text.strip_prefix(IMAGE_SCHEME).unwrap_or(text))
    }

    /// `reference` (without the scheme), if [`check_reference`] takes it.
    fn checked(reference: &str) -> Result<Image, String> {
        check_reference(reference).map(|()| Image {
            reference: reference.to_string(),
            resolved: None,
        })
    }

    /// The reference pinned to the manifest it resolved to (`REGISTRY/REPO:TAG@sha256:...`),
    /// or as written.
    pub fn pinned(&self) -> String {
        match &self.resolved {
            Some(r) if !self.reference.contains('@') => {
                format!("{}@{}", self.reference, r.manifest)
            }
            _ => self.reference.clone(),
        }
    }
}

/// The scheme of a module from a registry.
pub const IMAGE_SCHEME: &str = "oci://";

/// A reference names its registry (a host with a dot or a port, or `localhost`: no registry
/// is assumed) and a tag or a digest (no `latest` is assumed either: what a board runs must
/// not change under it without an apply).
fn check_reference(r: &str) -> Result<(), String> {
    const FORM: &str = "write oci://REGISTRY/REPO:TAG or oci://REGISTRY/REPO@sha256:DIGEST";
    let parsed = oci_client::Reference::try_from(r)
        .map_err(|e| format!("{r:?} is not an OCI reference ({e}); {FORM}"))?;
    let first = r.split('/').next().unwrap_or_default();
    if !r.contains('/') || !(first.contains('.') || first.contains(':') || first == "localhost") {
        return Err(format!(
            "{r:?} names no registry (no registry is assumed); {FORM}"
        ));
    }
    // (The parser fills in `latest` for a reference without a tag: look at the text.)
    let last = r.rsplit('/').next().unwrap_or_default();
    if !last.contains(':') && parsed.digest().is_none() {
        return Err(format!(
            "{r:?} has no tag or digest (\"latest\" is not assumed); {FORM}"
        ));
    }
    Ok(())
}

/// One thing wrong with a spec file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub line: Option<usize>,
    /// Dotted path of the field, e.g. `containers[1].name`.
    pub field: String,
    pub message: String,
}

/// Why a spec file was refused.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("{}: cannot read pod spec: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}", render(path, problems))]
    Invalid {
        path: PathBuf,
        problems: Vec<Problem>,
    },
}

impl SpecError {
    pub fn invalid(path: &Path, problems: Vec<Problem>) -> Self {
        SpecError::Invalid {
            path: path.to_path_buf(),
            problems,
        }
    }
}

fn render(path: &Path, problems: &[Problem]) -> String {
    let lines: Vec<String> = problems
        .iter()
        .map(|p| format!("{}:{p}", path.display()))
        .collect();
    lines.join("\n")
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(line) = self.line {
            write!(f, "{line}:")?;
        }
        write!(f, " {}: {}", self.field, self.message)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    pod: RawPod,
    #[serde(default)]
    init_containers: Vec<RawContainer>,
    #[serde(default)]
    containers: Vec<RawContainer>,
    #[serde(default)]
    volumes: Vec<volumes::RawVolume>,
    update: Option<RawUpdate>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawUpdate {
    deadline: Option<supervision::RawDuration>,
    min_ready: Option<supervision::RawDuration>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPod {
    name: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    restart_policy: RestartPolicy,
    #[serde(default)]
    restart_backoff: RawBackoff,
    termination_grace_period: Option<supervision::RawDuration>,
    /// `[pod.update]`: the same as a top-level `[update]`.
    update: Option<RawUpdate>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawBackoff {
    initial: Option<String>,
    max: Option<String>,
    reset_after: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawContainer {
    name: String,
    module: PathBuf,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    restart_policy: Option<RestartPolicy>,
    memory_limit_mib: Option<u64>,
    open_files_limit: Option<usize>,
    #[serde(default)]
    volume_mounts: Vec<volumes::RawMount>,
    #[serde(default)]
    env_from_files: BTreeMap<String, String>,
    liveness_probe: Option<supervision::RawProbe>,
    readiness_probe: Option<supervision::RawProbe>,
    startup_probe: Option<supervision::RawProbe>,
    cpu_limit: Option<String>,
    lifecycle: Option<supervision::RawLifecycle>,
    #[serde(default)]
    ports: Vec<ports::RawPort>,
}

const NAME_RULE: &str = "must be a DNS-1123 label: 1-63 characters of a-z, 0-9 and '-', \
                         starting and ending with a letter or digit";

impl PodSpec {
    /// Reads and validates a spec file. Module files are not read here.
    pub fn load(path: &Path) -> Result<PodSpec, SpecError> {
        use crate::caller::Caller;
        use crate::module_file::{ReadError, read_text};
        let text = read_text(path, Caller::myself()).map_err(|e| SpecError::Read {
            path: path.to_path_buf(),
            source: match e {
                ReadError::Io { source, .. } => source,
                other => std::io::Error::other(other.to_string()),
            },
        })?;
        PodSpec::parse(path, &text)
    }

    /// Validates spec text that came from `path` (used to resolve module paths and in messages):
    /// the pod spec's TOML, or a Kubernetes Pod manifest (see [`manifest`]).
    pub fn parse(path: &Path, text: &str) -> Result<PodSpec, SpecError> {
        if manifest::is_manifest(text) {
            let ctx = manifest::Context {
                relative_modules: true,
                ..manifest::Context::default()
            };
            return PodSpec::from_manifest(path, text, &ctx);
        }
        PodSpec::parse_toml(path, text)
    }

    /// A Kubernetes Pod manifest, translated and then checked as the TOML would be; every
    /// problem names the manifest's field.
    pub fn from_manifest(
        path: &Path,
        text: &str,
        ctx: &manifest::Context,
    ) -> Result<PodSpec, SpecError> {
        let pod = manifest::read(text).map_err(|p| SpecError::invalid(path, vec![p]))?;
        PodSpec::from_pod(path, &pod, ctx).map(|(spec, _)| spec)
    }

    /// A Pod (as [`manifest::read`] gives it) as a spec, and the spec's TOML.
    pub fn from_pod(
        path: &Path,
        pod: &serde_json::Value,
        ctx: &manifest::Context,
    ) -> Result<(PodSpec, String), SpecError> {
        let toml =
            manifest::translate(pod, ctx).map_err(|problems| SpecError::invalid(path, problems))?;
        match PodSpec::parse_toml(path, &toml) {
            Ok(spec) => Ok((spec, toml)),
            Err(SpecError::Invalid { path, problems }) => Err(SpecError::Invalid {
                path,
                problems: (problems.into_iter())
                    .map(|p| Problem {
                        line: None,
                        field: manifest::manifest_field(&p.field),
                        message: p.message,
                    })
                    .collect(),
            }),
            Err(other) => Err(other),
        }
    }

    fn parse_toml(path: &Path, text: &str) -> Result<PodSpec, SpecError> {
        let lines = Lines::new(text);
        let parsed = match toml::de::DeTable::parse(text) {
            Err(e) => {
                let mut p = lines.toml_problem(&e, "");
                if words::looks_like_yaml(text) {
                    p.message = format!("{}; {}", p.message, words::YAML_HINT);
                }
                return Err(SpecError::invalid(path, vec![p]));
            }
            Ok(doc) => doc,
        };
        // Every field serde refuses, at once; the checks below go on when the rest was read.
        let refused = |refusals: Vec<read::Refusal>| -> Vec<Problem> {
            (refusals.into_iter())
                .map(|r| {
                    let mut p = lines.toml_problem(&r.error, &r.field);
                    p.message = words::plain(&p.message);
                    p
                })
                .collect()
        };
        let (raw, mut problems): (RawFile, _) = match read::read(parsed.clone()) {
            Ok((raw, refusals)) => (raw, refused(refusals)),
            Err(refusals) => {
                let mut problems = refused(refusals);
                for p in &mut problems {
                    name_container(text, p);
                }
                return Err(SpecError::invalid(path, problems));
            }
        };
        let doc = {
            let span = parsed.span();
            toml::Spanned::new(span, toml::de::DeValue::Table(parsed.into_inner()))
        };
        let line_of = |keys: &[Key]| lines.line_of(&doc, keys);

        let mut problem = |keys: &[Key], message: String| {
            problems.push(Problem {
                line: line_of(keys),
                field: render_keys(keys),
                message,
            })
        };

        if !is_dns1123_label(&raw.pod.name) {
            problem(
                &[Key::F("pod"), Key::F("name")],
                format!("{:?} {NAME_RULE}", raw.pod.name),
            );
        }
        for (key, value) in &raw.pod.labels {
            let keys = [Key::F("pod"), Key::F("labels")];
            if let Some(p) = labels::key_problem(key).or_else(|| labels::value_problem(key, value))
            {
                problem(&keys, p);
            }
        }
        let mut backoff = Backoff::default();
        for (field, value, slot) in [
            (
                "initial",
                &raw.pod.restart_backoff.initial,
                &mut backoff.initial,
            ),
            ("max", &raw.pod.restart_backoff.max, &mut backoff.max),
            (
                "reset_after",
                &raw.pod.restart_backoff.reset_after,
                &mut backoff.reset_after,
            ),
        ] {
            if let Some(value) = value {
                match humantime::parse_duration(value) {
                    Ok(d) => *slot = d,
                    Err(e) => problem(
                        &[Key::F("pod"), Key::F("restart_backoff"), Key::F(field)],
                        format!(
                            "{value:?} is not a duration ({e}); write e.g. \"50ms\", \"10s\", \"5m\""
                        ),
                    ),
                }
            }
        }
        let mut warnings = Vec::new();
        for (field, slot) in [("initial", &mut backoff.initial), ("max", &mut backoff.max)] {
            if *slot < MIN_BACKOFF {
                let keys = [Key::F("pod"), Key::F("restart_backoff"), Key::F(field)];
                warnings.push(Problem {
                    line: line_of(&keys),
                    field: render_keys(&keys),
                    message: format!(
                        "{} is below the floor of {}; using {} (a container starts at most once per {})",
                        humantime::format_duration(*slot),
                        humantime::format_duration(MIN_BACKOFF),
                        humantime::format_duration(MIN_BACKOFF),
                        humantime::format_duration(MIN_BACKOFF)
                    ),
                });
                *slot = MIN_BACKOFF;
            }
        }
        if backoff.initial > backoff.max {
            problem(
                &[Key::F("pod"), Key::F("restart_backoff"), Key::F("initial")],
                format!(
                    "initial delay {} is longer than max {}",
                    humantime::format_duration(backoff.initial),
                    humantime::format_duration(backoff.max)
                ),
            );
        }
        if raw.containers.is_empty() {
            problem(
                &[Key::F("containers")],
                "a pod needs at least one [[containers]] entry".into(),
            );
        }

        let termination_grace_period = supervision::duration(
            raw.pod.termination_grace_period.as_ref(),
            DEFAULT_GRACE,
            &[Key::F("pod"), Key::F("termination_grace_period")],
            &mut problem,
        );
        let (raw_update, update_keys): (RawUpdate, &[Key]) = match (raw.update, raw.pod.update) {
            (Some(_), Some(_)) => {
                problem(
                    &[Key::F("pod"), Key::F("update")],
                    "say [update] once: either at the top or as [pod.update]".into(),
                );
                (RawUpdate::default(), &[Key::F("update")])
            }
            (Some(u), None) => (u, &[Key::F("update")]),
            (None, Some(u)) => (u, &[Key::F("pod"), Key::F("update")]),
            (None, None) => (RawUpdate::default(), &[Key::F("update")]),
        };
        let at = |field: &'static str| [update_keys, &[Key::F(field)]].concat();
        let update = UpdatePolicy {
            deadline: supervision::duration(
                raw_update.deadline.as_ref(),
                DEFAULT_UPDATE_DEADLINE,
                &at("deadline"),
                &mut problem,
            ),
            min_ready: supervision::duration(
                raw_update.min_ready.as_ref(),
                DEFAULT_MIN_READY,
                &at("min_ready"),
                &mut problem,
            ),
        };
        if update.deadline <= update.min_ready {
            problem(
                &at("deadline"),
                format!(
                    "{} must be longer than update.min_ready ({}): a version must have time to prove itself",
                    humantime::format_duration(update.deadline),
                    humantime::format_duration(update.min_ready)
                ),
            );
        }
        let pod_volumes = volumes::volumes(raw.volumes, &line_of, &mut problem);

        let dir = path.parent().unwrap_or(Path::new("."));
        let mut seen = HashSet::new();
        let mut published = Vec::new();
        let mut containers = Vec::new();
        let all = (raw.init_containers.into_iter().enumerate())
            .map(|(i, c)| ("init_containers", i, c))
            .chain(
                raw.containers
                    .into_iter()
                    .enumerate()
                    .map(|(i, c)| ("containers", i, c)),
            );
        for (list, i, c) in all {
            let at = |field: &'static str| [Key::F(list), Key::I(i), Key::F(field)];
            let kind = match (list, c.restart_policy) {
                ("containers", _) => Kind::App,
                (_, Some(RestartPolicy::Always)) => Kind::Sidecar,
                _ => Kind::Init,
            };
            if !is_dns1123_label(&c.name) {
                problem(&at("name"), format!("{:?} {NAME_RULE}", c.name));
            } else if !seen.insert(c.name.clone()) {
                problem(
                    &at("name"),
                    format!(
                        "{:?} is used by another container of this pod (init containers included)",
                        c.name
                    ),
                );
            }
            if c.module.as_os_str().is_empty() {
                problem(&at("module"), "must name a .wasm file".into());
            }
            let image = match c.module.to_str().and_then(Image::parse) {
                Some(Ok(image)) => Some(image),
                Some(Err(e)) => {
                    problem(&at("module"), e);
                    None
                }
                None => None,
            };
            for key in c.env.keys() {
                if key.is_empty() || key.contains('=') || key.contains('\0') {
                    problem(
                        &at("env"),
                        format!("{key:?} is not a valid variable name (empty, or has '=' or NUL)"),
                    );
                }
            }
            match c.memory_limit_mib {
                Some(0) => problem(&at("memory_limit_mib"), "must be at least 1".into()),
                Some(m) if m > MAX_MEMORY_LIMIT_MIB => problem(
                    &at("memory_limit_mib"),
                    format!("{m} is over the largest limit, {MAX_MEMORY_LIMIT_MIB} (64 GiB)"),
                ),
                _ => {}
            }
            if c.open_files_limit == Some(0) {
                problem(
                    &at("open_files_limit"),
                    "must be at least 1 (stdout and stderr are handles too)".into(),
                );
            }
            let volume_mounts =
                volumes::mounts((list, i), c.volume_mounts, &pod_volumes, &mut problem);
            let env_from_files = volumes::env_from_files(
                (list, i),
                c.env_from_files,
                &volume_mounts,
                &c.env,
                &mut problem,
            );
            let mut probes = Probes::default();
            for (field, raw, slot) in [
                ("liveness_probe", c.liveness_probe, &mut probes.liveness),
                ("readiness_probe", c.readiness_probe, &mut probes.readiness),
                ("startup_probe", c.startup_probe, &mut probes.startup),
            ] {
                if let Some(raw) = raw {
                    if kind == Kind::Init {
                        problem(
                            &at(field),
                            "an init container runs to completion and has no probes; \
                             one with restart_policy = \"Always\" (a sidecar) may"
                                .into(),
                        );
                    }
                    *slot = Some(supervision::probe(raw, field, &at(field), &mut problem));
                }
            }
            let cpu_limit =
                supervision::cpu_limit(c.cpu_limit.as_deref(), &at("cpu_limit"), &mut problem);
            let pre_stop =
                supervision::pre_stop(c.lifecycle, &[Key::F(list), Key::I(i)], &mut problem);
            let ports = ports::ports((list, i), c.ports, &mut published, &line_of, &mut problem);
            containers.push(ContainerSpec {
                module: if image.is_some() {
                    c.module.clone()
                } else {
                    dir.join(&c.module)
                },
                module_line: line_of(&at("module")),
                image,
                name: c.name,
                kind,
                args: c.args,
                env: c.env.into_iter().collect(),
                // A plain init container is retried only after a failure, as in Kubernetes
                // (its job is to complete); a pod policy of Never leaves a failure as it is.
                restart_policy: match (kind, c.restart_policy.unwrap_or(raw.pod.restart_policy)) {
                    (Kind::Init, RestartPolicy::Never) => RestartPolicy::Never,
                    (Kind::Init, _) => RestartPolicy::OnFailure,
                    (_, p) => p,
                },
                memory_limit: c
                    .memory_limit_mib
                    .unwrap_or(DEFAULT_MEMORY_LIMIT_MIB)
                    .min(MAX_MEMORY_LIMIT_MIB)
                    << 20,
                open_files: c.open_files_limit,
                volume_mounts,
                env_from_files,
                probes,
                cpu_limit,
                pre_stop,
                ports,
                index: i,
            });
        }
        ports::one_owner_each(&containers, &mut problem);

        if !problems.is_empty() {
            for p in &mut problems {
                name_container(text, p);
            }
            // In the file's order (those without a line last).
            problems.sort_by_key(|p| p.line.unwrap_or(usize::MAX));
            return Err(SpecError::invalid(path, problems));
        }
        Ok(PodSpec {
            source: path.to_path_buf(),
            name: raw.pod.name,
            labels: raw.pod.labels,
            restart_policy: raw.pod.restart_policy,
            backoff,
            termination_grace_period,
            containers,
            volumes: pod_volumes,
            update,
            warnings,
        })
    }

    /// The ports the pod publishes on the host, with the container and port entry of each.
    pub fn published(&self) -> Vec<(&ContainerSpec, &PortSpec, Published)> {
        let mut out = Vec::new();
        for c in &self.containers {
            for p in &c.ports {
                if let Some(host_port) = p.host_port {
                    let published = Published {
                        protocol: p.protocol,
                        host_ip: p.host_ip,
                        host_port,
                        container_port: p.container_port,
                    };
                    out.push((c, p, published));
                }
            }
        }
        out
    }

    /// The ports the pod publishes on the host.
    pub fn published_ports(&self) -> Vec<Published> {
        self.published().into_iter().map(|(_, _, p)| p).collect()
    }

    /// A problem with published port `p` of `c` found on the host, at its `host_port`.
    pub fn port_problem(&self, c: &ContainerSpec, p: &PortSpec, message: String) -> Problem {
        Problem {
            line: p.line,
            field: format!("{}[{}].ports[{}].host_port", c.list(), c.index, p.index),
            message,
        }
    }

    /// The warnings, one line each, as `file:line: field: message`.
    pub fn warning_lines(&self) -> Vec<String> {
        self.warnings
            .iter()
            .map(|w| format!("{}:{w}", self.source.display()))
            .collect()
    }

    /// A problem with one field of a container, found after parsing (e.g. its module does not
    /// compile), in the same form as parse problems.
    pub fn problem(&self, container: &ContainerSpec, field: &str, message: String) -> Problem {
        Problem {
            line: if field == "module" {
                container.module_line
            } else {
                None
            },
            field: format!("{}[{}].{field}", container.list(), container.index),
            message,
        }
    }
}

impl PodSpec {
    /// A problem with volume `v` found on the host (e.g. its `host_path` does not exist), in
    /// the same form as parse problems; `field` is below the volume, e.g. `host_path.path`.
    pub fn volume_problem(&self, v: &VolumeSpec, field: &str, message: String) -> Problem {
        Problem {
            line: v.line,
            field: format!("volumes[{}].{field}", v.index),
            message,
        }
    }
}

/// Where the checks of a spec's parts report a problem: the field's keys and what is wrong.
type Report<'a> = dyn FnMut(&[Key], String) + 'a;

#[derive(Clone, Copy)]
enum Key {
    F(&'static str),
    I(usize),
}

fn render_keys(keys: &[Key]) -> String {
    let mut s = String::new();
    for k in keys {
        match k {
            Key::F(f) if s.is_empty() => s.push_str(f),
            Key::F(f) => {
                s.push('.');
                s.push_str(f)
            }
            Key::I(i) => s.push_str(&format!("[{i}]")),
        }
    }
    s
}

/// Says which container a problem of `containers[N]...` (or `init_containers[N]...`) is about,
/// by its name, when the file gives it one: `... (container "app")`.
fn name_container(text: &str, p: &mut Problem) {
    let Some((list, rest)) = p.field.split_once('[') else {
        return;
    };
    let Some((index, after)) = rest.split_once(']') else {
        return;
    };
    if !["containers", "init_containers"].contains(&list) || after == ".name" {
        return;
    }
    let Ok(index) = index.parse::<usize>() else {
        return;
    };
    let Ok(table) = text.parse::<toml::Table>() else {
        return;
    };
    if let Some(name) = table
        .get(list)
        .and_then(|l| l.get(index))
        .and_then(|c| c.get("name"))
        .and_then(|n| n.as_str())
    {
        p.message = format!("{} (container {name:?})", p.message);
    }
}

/// Maps byte offsets of the spec text to 1-based line numbers.
struct Lines {
    starts: Vec<usize>,
}

impl Lines {
    fn new(text: &str) -> Self {
        let mut starts = vec![0];
        starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        Lines { starts }
    }

    fn line(&self, offset: usize) -> usize {
        self.starts.partition_point(|&s| s <= offset)
    }

    fn toml_problem(&self, e: &toml::de::Error, field: &str) -> Problem {
        Problem {
            line: e.span().map(|s| self.line(s.start)),
            field: if field.is_empty() || field == "." {
                "(file)".into()
            } else {
                field.into()
            },
            message: e.message().trim().to_string(),
        }
    }

    /// Line of the value at `keys`, or of the nearest enclosing value that exists.
    fn line_of(&self, doc: &toml::Spanned<toml::de::DeValue<'_>>, keys: &[Key]) -> Option<usize> {
        let mut cur = doc;
        let mut found = false;
        for k in keys {
            let next = match (k, cur.get_ref()) {
                (Key::F(f), v) => v.get(*f),
                (Key::I(i), v) => v.get(*i),
            };
            match next {
                Some(n) => {
                    cur = n;
                    found = true;
                }
                None => break,
            }
        }
        found.then(|| self.line(cur.span().start))
    }
}

/// The `*.toml` files under `dir` and its subdirectories (hidden ones left out), sorted by path:
/// what `apply -f DIR` applies.
pub fn spec_files_recursive(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut paths = spec_files(dir)?;
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(dir)?
        .flatten()
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
        .collect();
    dirs.sort();
    for d in dirs {
        paths.extend(spec_files_recursive(&d)?);
    }
    Ok(paths)
}

/// The pod specs of directory `dir`, sorted by name: `*.toml`, and Kubernetes Pod manifests
/// (`*.yaml`, `*.yml`; static pods, as the kubelet's `staticPodPath`): the pods directory the
/// daemon keeps, and `peapod apply -f DIR`.
pub fn spec_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.extension()
                .is_some_and(|e| e == "toml" || e == "yaml" || e == "yml")
        })
        .collect();
    paths.sort();
    Ok(paths)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<PodSpec, Vec<Problem>> {
        PodSpec::parse(Path::new("/specs/pod.toml"), text).map_err(|e| match e {
            SpecError::Invalid { problems, .. } => problems,
            other => panic!("unexpected {other}"),
        })
    }

    const GOOD: &str = r#"
[pod]
name = "demo"
restart_policy = "OnFailure"

[pod.restart_backoff]
initial = "10ms"
max = "2s"

[[containers]]
name = "app"
module = "app.wasm"
args = ["--port", "8080"]
env = { PORT = "8080" }

[[containers]]
name = "sidecar"
module = "/abs/side.wasm"
restart_policy = "Never"
memory_limit_mib = 16
"#;

    #[test]
    fn good_spec_resolves_paths_and_defaults() {
        let s = parse(GOOD).unwrap();
        assert_eq!(s.name, "demo");
        assert_eq!(s.backoff.initial, Duration::from_millis(10));
        assert_eq!(s.backoff.max, Duration::from_secs(2));
        assert_eq!(s.backoff.reset_after, Backoff::default().reset_after);
        let [app, side] = &s.containers[..] else {
            panic!("two containers")
        };
        assert_eq!(app.module, Path::new("/specs/app.wasm"));
        assert_eq!(app.module_line, Some(12));
        assert_eq!(app.args, ["--port", "8080"]);
        assert_eq!(app.env, [("PORT".to_string(), "8080".to_string())]);
        assert_eq!(app.restart_policy, RestartPolicy::OnFailure);
        assert_eq!(app.memory_limit, DEFAULT_MEMORY_LIMIT_MIB << 20);
        assert_eq!(side.module, Path::new("/abs/side.wasm"));
        assert_eq!(side.restart_policy, RestartPolicy::Never);
        assert_eq!(side.memory_limit, 16 << 20);
    }

    #[test]
    fn unknown_field_names_line_and_field() {
        let p = parse(
            "[pod]\nname = \"a\"\n[[containers]]\nname = \"x\"\nmodule = \"m.wasm\"\nmodul = 1\n",
        )
        .unwrap_err();
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].line, Some(6), "{p:?}");
        assert!(p[0].message.contains("unknown field `modul`"), "{p:?}");
        assert_eq!(p[0].field, "containers[0].modul");
    }

    #[test]
    fn wrong_type_names_field() {
        let p = parse("[pod]\nname = \"a\"\n[[containers]]\nname = \"x\"\nmodule = \"m.wasm\"\nargs = \"--x\"\n")
            .unwrap_err();
        assert_eq!(p[0].field, "containers[0].args");
        assert_eq!(p[0].line, Some(6));
    }

    #[test]
    fn bad_policy_is_named() {
        let p = parse("[pod]\nname = \"a\"\nrestart_policy = \"Sometimes\"\n[[containers]]\nname = \"x\"\nmodule = \"m.wasm\"\n")
            .unwrap_err();
        assert_eq!(p[0].field, "pod.restart_policy");
        assert_eq!(p[0].line, Some(3));
        assert!(p[0].message.contains("Sometimes"), "{p:?}");
    }

    #[test]
    fn all_semantic_problems_at_once() {
        let p = parse(
            "[pod]\nname = \"Bad_Name\"\n\
             [[containers]]\nname = \"app\"\nmodule = \"a.wasm\"\n\
             [[containers]]\nname = \"app\"\nmodule = \"b.wasm\"\n\
             [[containers]]\nname = \"-x\"\nmodule = \"c.wasm\"\nenv = { \"A=B\" = \"1\" }\n",
        )
        .unwrap_err();
        let got: Vec<(Option<usize>, &str)> =
            p.iter().map(|p| (p.line, p.field.as_str())).collect();
        assert_eq!(
            got,
            [
                (Some(2), "pod.name"),
                (Some(7), "containers[1].name"),
                (Some(10), "containers[2].name"),
                (Some(12), "containers[2].env"),
            ]
        );
        assert!(p[1].message.contains("used by another container"));
    }

    #[test]
    fn missing_pieces() {
        let p = parse("[pod]\nname = \"a\"\n").unwrap_err();
        assert_eq!(p[0].field, "containers");
        let p = parse("[[containers]]\nname = \"x\"\nmodule = \"m\"\n").unwrap_err();
        assert!(p[0].message.contains("missing field `pod`"), "{p:?}");
        let p = parse("[pod]\nname = \"a\"\n[[containers]]\nname = \"x\"\n").unwrap_err();
        assert!(p[0].message.contains("missing field `module`"), "{p:?}");
    }

    #[test]
    fn bad_backoff() {
        let p = parse("[pod]\nname = \"a\"\n[pod.restart_backoff]\ninitial = \"soon\"\n[[containers]]\nname = \"x\"\nmodule = \"m\"\n")
            .unwrap_err();
        assert_eq!(p[0].field, "pod.restart_backoff.initial");
        assert_eq!(p[0].line, Some(4));
    }

    #[test]
    fn update_policies_and_registry_references() {
        const C: &str = "[[containers]]\nname = \"x\"\nmodule = \"m\"\n";
        let s = parse(&format!("[pod]\nname = \"a\"\n{C}")).unwrap();
        assert_eq!(s.update, UpdatePolicy::default());
        let s = parse(&format!(
            "[pod]\nname = \"a\"\n[update]\ndeadline = \"20s\"\nmin_ready = \"1s\"\n{C}"
        ))
        .unwrap();
        assert_eq!(
            (s.update.deadline, s.update.min_ready),
            (Duration::from_secs(20), Duration::from_secs(1))
        );
        let s = parse(&format!(
            "[pod]\nname = \"a\"\n[pod.update]\ndeadline = \"9s\"\n{C}"
        ))
        .unwrap();
        assert_eq!(s.update.deadline, Duration::from_secs(9));
        let p = parse(&format!(
            "[pod]\nname = \"a\"\n[pod.update]\ndeadline = \"9s\"\n[update]\ndeadline = \"9s\"\n{C}"
        ))
        .unwrap_err();
        assert_eq!(p[0].field, "pod.update");
        let p = parse(&format!(
            "[pod]\nname = \"a\"\n[update]\ndeadline = \"2s\"\nmin_ready = \"5s\"\n{C}"
        ))
        .unwrap_err();
        assert!(
            p[0].field == "update.deadline"
                && p[0].message.contains("longer than update.min_ready"),
            "{p:?}"
        );
        let image = |m: &str| {
            parse(&format!(
                "[pod]\nname = \"a\"\n[[containers]]\nname = \"x\"\nmodule = \"{m}\"\n"
            ))
            .map(|s| s.containers[0].image.clone())
        };
        let i = image("oci://r.example:5000/a/b:1").unwrap().unwrap();
        assert_eq!(i.reference, "r.example:5000/a/b:1");
        assert_eq!(i.pinned(), "r.example:5000/a/b:1", "not resolved yet");
        let d = format!("sha256:{}", "a".repeat(64));
        assert!(image(&format!("oci://localhost/a@{d}")).unwrap().is_some());
        assert!(image("app.wasm").unwrap().is_none());
        for (bad, says) in [
            ("oci://a/b:1", "names no registry"),
            ("oci://r.example/a/b", "no tag or digest"),
            ("oci://r.example/A:1", "not an OCI reference"),
        ] {
            let p = image(bad).unwrap_err();
            assert!(
                p[0].field == "containers[0].module" && p[0].message.contains(says),
                "{bad}: {p:?}"
            );
        }
    }

    #[test]
    fn backoff_below_the_floor_is_raised_with_a_warning() {
        let s = parse("[pod]\nname = \"a\"\n[pod.restart_backoff]\ninitial = \"0s\"\nmax = \"0s\"\n[[containers]]\nname = \"x\"\nmodule = \"m\"\n")
            .unwrap();
        assert_eq!(
            (s.backoff.initial, s.backoff.max),
            (MIN_BACKOFF, MIN_BACKOFF)
        );
        let w = s.warning_lines();
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(
            w[0].starts_with(
                "/specs/pod.toml:4: pod.restart_backoff.initial: 0s is below the floor of 10ms"
            ),
            "{w:?}"
        );
        assert!(w[1].contains(":5: pod.restart_backoff.max"), "{w:?}");
        assert!(parse(GOOD).unwrap().warnings.is_empty());
    }

    #[test]
    fn limits_are_bounded() {
        let c = |extra: &str| {
            parse(&format!(
                "[pod]\nname = \"a\"\n[[containers]]\nname = \"x\"\nmodule = \"m\"\n{extra}\n"
            ))
        };
        let p = c("memory_limit_mib = 17592186044416").unwrap_err();
        assert_eq!(p[0].field, "containers[0].memory_limit_mib");
        assert!(p[0].message.contains("over the largest limit"), "{p:?}");
        let p = c("open_files_limit = 0").unwrap_err();
        assert_eq!(p[0].field, "containers[0].open_files_limit");
        assert_eq!(
            c("open_files_limit = 64").unwrap().containers[0].open_files,
            Some(64)
        );
    }

    #[test]
    fn init_containers_probes_and_limits() {
        let s = parse(
            "[pod]\nname = \"a\"\ntermination_grace_period = 5\n\
             [[init_containers]]\nname = \"migrate\"\nmodule = \"m.wasm\"\n\
             [[init_containers]]\nname = \"proxy\"\nmodule = \"p.wasm\"\nrestart_policy = \"Always\"\n\
             startup_probe = { tcp_socket = { port = 9000 }, period = \"1s\" }\n\
             [[containers]]\nname = \"app\"\nmodule = \"a.wasm\"\ncpu_limit = \"250m\"\n\
             lifecycle = { pre_stop = { http_get = { path = \"/shutdown\", port = 8080 } } }\n\
             [containers.liveness_probe]\nhttp_get = { path = \"/healthz\", port = 8080 }\n\
             [containers.readiness_probe]\ntcp_socket = { port = 8080 }\nsuccess_threshold = 2\n\
             period = 2\ntimeout = \"250ms\"\n",
        )
        .unwrap();
        assert_eq!(s.termination_grace_period, Duration::from_secs(5));
        let kinds: Vec<(&str, Kind)> = s
            .containers
            .iter()
            .map(|c| (c.name.as_str(), c.kind))
            .collect();
        assert_eq!(
            kinds,
            [
                ("migrate", Kind::Init),
                ("proxy", Kind::Sidecar),
                ("app", Kind::App)
            ]
        );
        let [migrate, proxy, app] = &s.containers[..] else {
            panic!()
        };
        // A plain init container is retried after a failure only.
        assert_eq!(migrate.restart_policy, RestartPolicy::OnFailure);
        assert_eq!(
            proxy.probes.startup.as_ref().unwrap().action,
            ProbeAction::Tcp { port: 9000 }
        );
        assert_eq!(app.cpu_limit, Some(250));
        let live = app.probes.liveness.as_ref().unwrap();
        assert_eq!(
            (
                live.period,
                live.timeout,
                live.failure_threshold,
                live.success_threshold
            ),
            (Duration::from_secs(10), Duration::from_secs(1), 3, 1),
            "Kubernetes' defaults"
        );
        let ready = app.probes.readiness.as_ref().unwrap();
        assert_eq!(
            (ready.success_threshold, ready.period, ready.timeout),
            (2, Duration::from_secs(2), Duration::from_millis(250))
        );
        assert_eq!(
            app.pre_stop,
            Some(ProbeAction::Http {
                path: "/shutdown".into(),
                port: 8080
            })
        );
        assert_eq!(
            s.problem(migrate, "module", "x".into()).field,
            "init_containers[0].module"
        );
    }

    #[test]
    fn bad_supervision_fields_are_named() {
        let c = |extra: &str| {
            parse(&format!(
                "[pod]\nname = \"a\"\n[[containers]]\nname = \"x\"\nmodule = \"m\"\n{extra}\n"
            ))
            .unwrap_err()
        };
        let cases: &[(&str, &str, &str)] = &[
            (
                "liveness_probe = { period = \"1s\" }",
                "containers[0].liveness_probe",
                "neither given",
            ),
            (
                "readiness_probe = { tcp_socket = { port = 1 }, http_get = { port = 1 } }",
                "containers[0].readiness_probe",
                "both given",
            ),
            (
                "liveness_probe = { tcp_socket = { port = 8080 }, period = \"0s\" }",
                "containers[0].liveness_probe.period",
                "longer than 0",
            ),
            (
                "startup_probe = { tcp_socket = { port = 8080 }, failure_threshold = 0 }",
                "containers[0].startup_probe.failure_threshold",
                "at least 1",
            ),
            (
                "liveness_probe = { tcp_socket = { port = 8080 }, success_threshold = 2 }",
                "containers[0].liveness_probe.success_threshold",
                "must be 1",
            ),
            (
                "liveness_probe = { tcp_socket = { port = 0 } }",
                "containers[0].liveness_probe.tcp_socket.port",
                "1-65535",
            ),
            (
                "liveness_probe = { http_get = { port = 80, path = \"health\" } }",
                "containers[0].liveness_probe.http_get.path",
                "starts with '/'",
            ),
            (
                "liveness_probe = { tcp_socket = { port = 80 }, period = \"often\" }",
                "containers[0].liveness_probe.period",
                "not a duration",
            ),
            (
                "cpu_limit = \"250\"",
                "containers[0].cpu_limit",
                "more than this host's",
            ),
            (
                "liveness_probe = { tcp_socket = { port = 80 }, period = \"100000000h\" }",
                "containers[0].liveness_probe.period",
                "longer than the most allowed, 1day",
            ),
            (
                "liveness_probe = { tcp_socket = { port = 80 }, timeout = 86401 }",
                "containers[0].liveness_probe.timeout",
                "longer than the most allowed",
            ),
            (
                "liveness_probe = { tcp_socket = { port = 80 }, period = -1 }",
                "containers[0].liveness_probe.period",
                "not negative",
            ),
            (
                "liveness_probe = { tcp_socket = { port = 80 }, timeout = true }",
                "containers[0].liveness_probe.timeout",
                "a duration such as",
            ),
            (
                "cpu_limit = \"a lot\"",
                "containers[0].cpu_limit",
                "millicores",
            ),
            (
                "cpu_limit = \"0m\"",
                "containers[0].cpu_limit",
                "no CPU at all",
            ),
        ];
        for (extra, field, message) in cases {
            let p = c(extra);
            assert_eq!(p.len(), 1, "{extra}: {p:?}");
            assert_eq!(p[0].field, *field, "{extra}: {p:?}");
            assert_eq!(p[0].line, Some(6), "{extra}: {p:?}");
            assert!(p[0].message.contains(message), "{extra}: {p:?}");
        }
        let p = parse(
            "[pod]\nname = \"a\"\ntermination_grace_period = \"soon\"\n\
             [[init_containers]]\nname = \"x\"\nmodule = \"m\"\n\
             liveness_probe = { tcp_socket = { port = 1 } }\n\
             [[containers]]\nname = \"x\"\nmodule = \"m\"\n",
        )
        .unwrap_err();
        let got: Vec<(&str, Option<usize>)> =
            p.iter().map(|p| (p.field.as_str(), p.line)).collect();
        assert_eq!(
            got,
            [
                ("pod.termination_grace_period", Some(3)),
                ("init_containers[0].liveness_probe", Some(7)),
                ("containers[0].name", Some(9)),
            ],
            "{p:?}"
        );
        assert!(p[1].message.contains("runs to completion"), "{p:?}");
        assert!(p[2].message.contains("init containers included"), "{p:?}");
    }

    /// A spec with every kind of field, for the property tests to cut and change.
    const FULL: &str = r#"[pod]
name = "full"
restart_policy = "OnFailure"
termination_grace_period = "5s"
[pod.restart_backoff]
initial = "10ms"
[[volumes]]
name = "data"
empty_dir = { size_limit = "8Mi" }
[[volumes]]
name = "cfg"
files = { "a.conf" = "x" }
[[init_containers]]
name = "migrate"
module = "m.wasm"
[[init_containers]]
name = "proxy"
module = "p.wasm"
restart_policy = "Always"
startup_probe = { tcp_socket = { port = 9000 }, period = "1s" }
[[containers]]
name = "app"
module = "a.wasm"
args = ["--port", "8080"]
env = { PORT = "8080" }
memory_limit_mib = 64
cpu_limit = "500m"
volume_mounts = [{ name = "data", mount_path = "/data" }, { name = "cfg", mount_path = "/etc/app" }]
env_from_files = { CONF = "/etc/app/a.conf" }
lifecycle = { pre_stop = { http_get = { path = "/stop", port = 8080 } } }
[containers.liveness_probe]
http_get = { path = "/healthz", port = 8080 }
failure_threshold = 2
"#;

    /// Whatever the text, parsing returns (never panics), and every problem names a field and
    /// a line that exists.
    fn well_formed(text: &str) -> Result<(), proptest::test_runner::TestCaseError> {
        let lines = text.lines().count().max(1);
        if let Err(problems) = parse(text) {
            proptest::prop_assert!(!problems.is_empty());
            for p in &problems {
                proptest::prop_assert!(!p.field.is_empty(), "{p:?}");
                proptest::prop_assert!(!p.message.is_empty(), "{p:?}");
                if let Some(l) = p.line {
                    proptest::prop_assert!(l >= 1 && l <= lines + 1, "{p:?} of {lines} lines");
                }
            }
        }
        Ok(())
    }

    #[test]
    fn the_full_spec_parses() {
        let s = parse(FULL).unwrap();
        assert_eq!(s.containers.len(), 3);
        assert_eq!(s.volumes.len(), 2);
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config { cases: 512, ..Default::default() })]

        #[test]
        fn any_text_is_answered(text in "\\PC{0,400}") {
            well_formed(&text)?;
        }

        /// The full spec with one line dropped, one value replaced by another of any type, or
        /// cut short anywhere: the edits a user (or a broken editor) makes.
        #[test]
        fn edited_specs_are_answered(
            line in 0usize..40,
            value in proptest::prop_oneof![
                proptest::strategy::Just("0".to_string()),
                proptest::strategy::Just("-1".to_string()),
                proptest::strategy::Just("18446744073709551616".to_string()),
                proptest::strategy::Just("\"\"".to_string()),
                proptest::strategy::Just("[]".to_string()),
                proptest::strategy::Just("{}".to_string()),
                proptest::strategy::Just("true".to_string()),
                proptest::strategy::Just("1e400".to_string()),
                "\"[ -~]{0,20}\"",
                "-?[0-9]{1,25}",
            ],
            cut in 0usize..1400,
        ) {
            let lines: Vec<&str> = FULL.lines().collect();
            let dropped: Vec<&str> = lines.iter().enumerate()
                .filter(|(i, _)| *i != line % lines.len()).map(|(_, l)| *l).collect();
            well_formed(&dropped.join("\n"))?;
            let replaced: Vec<String> = lines.iter().enumerate().map(|(i, l)| {
                match l.split_once(" = ") {
                    Some((k, _)) if i == line % lines.len() => format!("{k} = {value}"),
                    _ => l.to_string(),
                }
            }).collect();
            well_formed(&replaced.join("\n"))?;
            let at = FULL.char_indices().map(|(i, _)| i).nth(cut).unwrap_or(FULL.len());
            well_formed(&FULL[..at])?;
        }
    }

    #[test]
    fn syntax_error_has_line() {
        let p = parse("[pod]\nname = \"a\n").unwrap_err();
        assert_eq!(p[0].line, Some(2));
    }

    #[test]
    fn rendering() {
        let e = SpecError::invalid(
            Path::new("x/pod.toml"),
            vec![Problem {
                line: Some(3),
                field: "pod.name".into(),
                message: "bad".into(),
            }],
        );
        assert_eq!(e.to_string(), "x/pod.toml:3: pod.name: bad");
    }

    #[test]
    fn dns_labels() {
        for ok in ["a", "demo", "a-1", "0", &"x".repeat(63)] {
            assert!(is_dns1123_label(ok), "{ok}");
        }
        for bad in ["", "A", "a_b", "-a", "a-", "a.b", &"x".repeat(64)] {
            assert!(!is_dns1123_label(bad), "{bad}");
        }
    }
}
