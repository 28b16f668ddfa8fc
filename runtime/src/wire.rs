//! The API's wire model: what the daemon sends and the CLI (or any client) reads, one set of
//! types serialized by the server and deserialized by [`crate::client::Client`]. Field names
//! are the JSON's; a field added here shows up in `inspect` and `ps -o json` at once.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

pub use crate::spec::Kind;

/// Where a container is in its life, as `ps` and `inspect` show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Not started yet, or waiting out its backoff before a restart.
    Waiting,
    Running,
    /// Ended for good by its restart policy (a restart request starts it again).
    Exited,
}

impl State {
    /// `waiting`, `running`, `exited`.
    pub fn word(self) -> &'static str {
        match self {
            State::Waiting => "waiting",
            State::Running => "running",
            State::Exited => "exited",
        }
    }
}

/// How a run ended, with when (Kubernetes' `lastState.terminated`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Terminated {
    pub exit_code: Option<i32>,
    pub reason: String,
    pub message: String,
    #[serde(with = "rfc3339_opt")]
    pub started_at: Option<SystemTime>,
    #[serde(with = "rfc3339_opt")]
    pub finished_at: Option<SystemTime>,
}

/// A container's live status.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContainerStatus {
    pub name: String,
    /// init, sidecar or app.
    pub kind: Kind,
    pub state: State,
    /// Running, past its startup probe, and passing its readiness probe (if it has one).
    pub ready: bool,
    /// Running and past its startup probe (if it has one).
    pub started: bool,
    pub restarts: u32,
    /// When the current (or last) run started.
    #[serde(with = "rfc3339_opt")]
    pub started_at: Option<SystemTime>,
    /// How the last run ended, e.g. "exited with code 0", "trapped: ..." or "memory limit
    /// 16 MiB reached".
    pub last: Option<String>,
    /// The last run's exit code (absent for a trap or a limit).
    pub exit_code: Option<i32>,
    /// Why the last run ended, in Kubernetes' words: Completed, Error, Trapped, OOMKilled,
    /// LimitReached, Unhealthy (or Restarted, on request).
    pub reason: Option<String>,
    /// How the previous run ended, apart from the state of the current one.
    pub last_state: Option<Terminated>,
    /// While a probe fails: the last failure (`readiness probe failed: ...`), cleared when it
    /// passes again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe_failure: Option<String>,
    /// CPU time of all its runs so far.
    pub cpu_seconds: f64,
    /// Linear memory and tables of the current run.
    pub memory_bytes: u64,
}

impl ContainerStatus {
    /// Container `name` before its first run.
    pub fn new(name: &str, kind: Kind) -> Self {
        ContainerStatus {
            name: name.into(),
            kind,
            state: State::Waiting,
            ready: false,
            started: false,
            restarts: 0,
            started_at: None,
            last: None,
            exit_code: None,
            reason: None,
            last_state: None,
            probe_failure: None,
            cpu_seconds: 0.0,
            memory_bytes: 0,
        }
    }
}

/// A volume: where it is on the host (for a secret, the path it was given; never its content).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VolumeView {
    pub name: String,
    /// `empty_dir`, `host_path`, `secret`, ...
    pub kind: String,
    pub host_path: PathBuf,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_limit: Option<u64>,
}

/// What a container's spec asks for, as `describe` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContainerSpecView {
    pub name: String,
    pub kind: Kind,
    pub module: PathBuf,
    /// `oci://REGISTRY/REPO:TAG@sha256:...`: the registry's module it runs, pinned to the
    /// manifest its tag resolved to when the pod was applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    pub restart_policy: String,
    /// Bytes.
    pub memory_limit: u64,
    /// Millicores.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_limit: Option<u32>,
    /// `liveness: GET http://127.0.0.1:8080/health every 10s (timeout 1s, 3 failures)`, ...
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub probes: Vec<String>,
    /// `NAME -> PATH [ro]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mounts: Vec<String>,
    /// `PORT/PROTOCOL`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<String>,
}

/// A pod as `ps` and `inspect` show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PodView {
    pub name: String,
    /// `[pod] labels`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// starting (before its containers' first run; a re-created pod also while its old sandbox
    /// stops), running, restarting (a container waits out its backoff), succeeded, failed,
    /// waiting (held back by the crash guard), terminating (being stopped: its pre_stop hooks
    /// and grace period)
    pub status: String,
    pub ip: Option<Ipv4Addr>,
    pub netns: Option<PathBuf>,
    /// `file:<path>` or `api`
    pub source: String,
    pub created: String,
    pub age_seconds: u64,
    /// Every container (plain init containers aside) is ready.
    pub ready: bool,
    pub restarts: u32,
    pub containers: Vec<ContainerStatus>,
    /// Its volumes and where they are on the host.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<VolumeView>,
    /// Its published ports, `[HOST_IP:]HOST_PORT->CONTAINER_PORT/PROTOCOL`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<String>,
    pub error: Option<String>,
    /// What each container's spec asks for.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub spec: Vec<ContainerSpecView>,
}

impl PodView {
    /// Pod `name` as far as its name, status, source and the making of its sandbox (`created`)
    /// say: no address, container, volume or port yet (the callers add what they know).
    pub fn bare(name: &str, status: &str, source: String, created: SystemTime) -> Self {
        let age = SystemTime::now()
            .duration_since(created)
            .unwrap_or_default();
        PodView {
            name: name.into(),
            labels: BTreeMap::new(),
            status: status.into(),
            ip: None,
            netns: None,
            source,
            created: humantime::format_rfc3339_seconds(created).to_string(),
            age_seconds: age.as_secs(),
            ready: false,
            restarts: 0,
            containers: Vec::new(),
            volumes: Vec::new(),
            ports: Vec::new(),
            error: None,
            spec: Vec::new(),
        }
    }

    /// Kubernetes' READY column: ready containers of those that stay (apps and sidecars; plain
    /// init containers end by design), and how many stay.
    pub fn ready_count(&self) -> (usize, usize) {
        let live = self.containers.iter().filter(|c| c.kind != Kind::Init);
        let (ready, all) = live.fold((0, 0), |(r, a), c| (r + usize::from(c.ready), a + 1));
        (ready, all)
    }
}

/// Whether an event is news or trouble (Kubernetes' `Normal` and `Warning`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventType {
    Normal,
    Warning,
}

/// Something that happened to a pod or a container, in Kubernetes' shape: repeats of the same
/// (object, reason, message) are one event with a count and the times of the first and last.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    #[serde(rename = "type")]
    pub kind: EventType,
    /// `Started`, `BackOff`, `OOMKilled`, `Unhealthy`, ...
    pub reason: String,
    /// `pod/NAME`, `pod/NAME/CONTAINER`, or `daemon`.
    pub object: String,
    pub message: String,
    pub count: u32,
    #[serde(with = "rfc3339")]
    pub first_time: SystemTime,
    #[serde(with = "rfc3339")]
    pub last_time: SystemTime,
}

impl Event {
    /// The pod the event is about, if any.
    pub fn pod(&self) -> Option<&str> {
        let rest = self.object.strip_prefix("pod/")?;
        Some(rest.split('/').next().unwrap_or(rest))
    }
}

/// `GET /v1/events`: oldest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventList {
    pub events: Vec<Event>,
}

/// `GET /v1/pods`: every pod, and the problems of the pods directory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PodList {
    pub pods: Vec<PodView>,
    pub problems: Vec<String>,
}

/// `POST /v1/pods`: a spec, and where it came from (its module paths are relative to it).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApplyRequest {
    pub source: PathBuf,
    pub spec: String,
}

/// What an apply did to a pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Created,
    /// Re-created: its spec or a module changed (a new namespace and IP).
    Recreated,
    Unchanged,
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Action::Created => "created",
            Action::Recreated => "recreated",
            Action::Unchanged => "unchanged",
        })
    }
}

/// `POST /v1/pods`: what the apply did, and the pod.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Applied {
    pub action: Action,
    pub pod: PodView,
}

/// Where a revision of a pod stands in its rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RevisionState {
    /// Applied; not proven ready yet (the daemon watches it until `update.deadline`).
    Progressing,
    /// Was ready for `update.min_ready`: a version to roll back to.
    Ready,
    /// Replaced by a later apply.
    Superseded,
    /// Failed its rollout; the daemon went back to the revision before.
    RolledBack,
}

impl std::fmt::Display for RevisionState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RevisionState::Progressing => "progressing",
            RevisionState::Ready => "ready",
            RevisionState::Superseded => "superseded",
            RevisionState::RolledBack => "rolled-back",
        })
    }
}

/// One revision of a pod (`GET /v1/pods/NAME/rollout`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RevisionView {
    pub revision: u64,
    pub state: RevisionState,
    /// Seconds since the epoch.
    pub applied_at: u64,
    /// What it runs, a line a container.
    pub change: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The revision the pod runs now.
    pub current: bool,
}

/// `GET /v1/pods/NAME/rollout`: its revisions, oldest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RolloutHistory {
    pub pod: String,
    pub revisions: Vec<RevisionView>,
}

/// `POST /v1/pods/NAME/rollout/undo`: the revision to go back to (default: the last ready one
/// before the current).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct UndoRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_revision: Option<u64>,
}

/// `POST /v1/images/pull`: a reference (`oci://` or not).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PullRequest {
    pub reference: String,
}

/// `t` in seconds since the epoch, as `pulled_at` and `applied_at` say times (0 before it).
pub fn epoch_secs(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// What a reference resolved to when it was pulled: kept in the image store
/// (`<state_dir>/images/refs/`) and shown by `pull` and `images`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pulled {
    /// As written, without `oci://`.
    pub reference: String,
    /// The manifest's digest (`sha256:...`).
    pub manifest: String,
    /// The module layer's digest (what the board stores and runs).
    pub module: String,
    /// The module layer's media type.
    pub media_type: String,
    /// Bytes.
    pub size: u64,
    /// When (seconds since the epoch).
    pub pulled_at: u64,
}

/// One stored module from a registry (`GET /v1/images`, and `pull`'s answer).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageView {
    #[serde(flatten)]
    pub pulled: Pulled,
    /// The pods whose containers run it.
    #[serde(default)]
    pub pods: Vec<String>,
    /// The pods whose history keeps it, for a rollback or `rollout undo`.
    #[serde(default)]
    pub kept_by: Vec<String>,
}

/// `GET /v1/images`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageList {
    pub images: Vec<ImageView>,
}

/// `POST /v1/images/prune`: what went.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pruned {
    pub removed: Vec<ImageView>,
    /// Bytes of blobs removed.
    pub freed: u64,
}

/// `DELETE /v1/pods/NAME`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Deleted {
    pub deleted: String,
}

/// `POST /v1/pods/NAME/containers/C/restart`: `POD/CONTAINER`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Restarted {
    pub restarted: String,
}

/// `POST /v1/reload`: the pods directory's problems after it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reloaded {
    pub problems: Vec<String>,
}

/// `GET /v1/daemon`: the daemon process itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DaemonStatus {
    pub version: String,
    pub pid: u32,
    /// Resident memory.
    pub rss_bytes: u64,
    /// User and system CPU time since it started.
    pub cpu_seconds: f64,
    pub threads: u64,
    pub open_fds: u64,
    pub uptime_seconds: u64,
}

/// `GET /v1/healthz`: `ok`, or `starting` (with 503) while the pods start.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Health {
    pub status: String,
}

/// `GET /v1/version`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Version {
    pub version: String,
}

/// Every refusal: what is wrong, and for an invalid spec its `file:line: field: ...` lines.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiError {
    pub error: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
}

/// A time as RFC 3339 with milliseconds.
mod rfc3339 {
    use std::time::SystemTime;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_rfc3339_millis(*t).to_string())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_rfc3339(&s).map_err(serde::de::Error::custom)
    }
}

/// An optional time as RFC 3339 with milliseconds (`2026-12-03T06:20:40.123Z`).
mod rfc3339_opt {
    use std::time::SystemTime;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(
        t: &Option<SystemTime>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => s.serialize_str(&humantime::format_rfc3339_millis(*t).to_string()),
            None => s.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<SystemTime>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|s| humantime::parse_rfc3339(&s).map_err(serde::de::Error::custom))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the server writes, the client reads back the same (times to the millisecond).
    #[test]
    fn a_pod_view_survives_the_wire() {
        let at = humantime::parse_rfc3339("2026-12-03T06:20:40.123Z").unwrap();
        let c = ContainerStatus {
            name: "app".into(),
            kind: Kind::Sidecar,
            state: State::Running,
            ready: true,
            started: true,
            restarts: 2,
            started_at: Some(at),
            last: Some("exited with code 3".into()),
            exit_code: Some(3),
            reason: Some("Error".into()),
            last_state: Some(Terminated {
                exit_code: Some(3),
                reason: "Error".into(),
                message: "exited with code 3".into(),
                started_at: None,
                finished_at: Some(at),
            }),
            probe_failure: None,
            cpu_seconds: 0.25,
            memory_bytes: 65536,
        };
        let v = PodView {
            name: "web".into(),
            labels: [("app".to_string(), "web".to_string())].into(),
            status: "running".into(),
            ip: Some(Ipv4Addr::new(10, 66, 0, 2)),
            netns: Some("/run/peapod/netns/web".into()),
            source: "api".into(),
            created: "2026-12-03T06:20:40Z".into(),
            age_seconds: 5,
            ready: true,
            restarts: 2,
            containers: vec![c],
            volumes: vec![],
            ports: vec!["8080->80/tcp".into()],
            error: None,
            spec: vec![],
        };
        let text = serde_json::to_string(&v).unwrap();
        assert!(
            text.contains(r#""started_at":"2026-12-03T06:20:40.123Z""#),
            "{text}"
        );
        assert!(text.contains(r#""kind":"sidecar""#), "{text}");
        assert!(
            !text.contains("volumes"),
            "empty lists are left out: {text}"
        );
        assert_eq!(serde_json::from_str::<PodView>(&text).unwrap(), v);
        assert_eq!(v.ready_count(), (1, 1));
    }
}
