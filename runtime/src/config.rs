//! Runtime settings: where pins and state live, and the host network pods attach to.
//!
//! Read from a TOML file (`/etc/peapod/peapod.toml` when it exists) and overridden by flags, so
//! tests and a second installation can run beside a real one with their own bridge and dirs.
//!
//! ```toml
//! run_dir = "/run/peapod"        # namespace pins: <run_dir>/netns/<pod>
//! state_dir = "/var/lib/peapod"  # IP leases, compile cache, pods created through the API
//! socket = "/run/peapod/peapod.sock"  # the daemon's API [default: <run_dir>/peapod.sock]
//! pods_dir = "/etc/peapod/pods"  # pod specs the daemon keeps running
//! [network]
//! bridge = "peapod0"
//! subnet = "10.66.0.0/22"        # the bridge takes the first address, pods the rest (1021)
//! [logs]
//! dir = "/var/lib/peapod/logs"   # container logs (CRI format) [default: <state_dir>/logs]
//! max_size = "10MiB"             # rotate a container's log past this size
//! max_files = 5                  # files kept per container
//! level = "info"                 # the daemon's own log level (PEAPOD_LOG wins)
//! [limits]
//! max_module_size = "64MiB"      # a module file larger than this is refused
//! open_files = 1024              # open sockets/files/streams per container (spec:
//!                                # open_files_limit wins)
//! api_connections = 128          # concurrent API connections (the oldest idle one is
//!                                # closed for a new one)
//! max_grace_period = "5m"        # the longest termination_grace_period a pod may ask
//! stop_timeout = "25s"           # a daemon stop waits at most this for its pods (under the
//!                                # unit's TimeoutStopSec=30s); their sandboxes stay
//! allocatable_memory = "3GiB"    # what pods may be promised in all: container memory limits
//!                                # plus tmpfs sizes [default: 80% of MemTotal]
//! max_containers = 64            # containers (init included) in one pod
//! [quotas]                       # API callers other than root (the peapod group)
//! pods = 8                       # pods per user (each one address of the subnet)
//! containers = 8                 # containers in one of their pods
//! memory = "1GiB"                # promised to one user's pods in all
//! published_ports = 4            # host ports one user's pods publish in all
//! restart_floor = "100ms"        # the shortest time between two restarts in one of their pods
//! api_connections = 16           # API connections one user holds open (a quarter of
//!                                # limits.api_connections is root's alone)
//! follow_streams = 4             # `peapod logs -f` streams one user holds open
//! [images]                       # modules from OCI registries (`module = "oci://..."`)
//! registries = []                # when not empty: the only registries pulled from
//! insecure = []                  # registries spoken to in plain HTTP (e.g. "127.0.0.1:5000")
//! auth_file = "/etc/peapod/registry-auth.json"  # docker-style config.json (root's, 0600),
//!                                # used when it exists
//! [kubernetes]                   # the board as a node of a cluster (off unless kubeconfig is set)
//! kubeconfig = "/etc/peapod/kubeconfig"  # the node's credentials (system:node:<name>)
//! node_name = "pi-1"             # [default: the host name]
//! node_ip = "192.168.1.20"       # the address the API server reaches the kubelet port at
//!                                # [default: the host's first non-loopback IPv4 address]
//! kubelet_port = 10250           # `kubectl logs` arrives here, over TLS
//! labels = { "site" = "barn" }   # added to kubernetes.io/arch, peapod.dev/runtime=wasm, ...
//! taints = ["peapod.dev/wasm=true:NoSchedule"]  # the default: only pods that tolerate it
//! host_paths = []                # where a cluster's pods may mount hostPath volumes (none)
//! kubelet_cert = "/etc/peapod/kubelet.crt"  # the kubelet port's certificate and key (PEM),
//! kubelet_key = "/etc/peapod/kubelet.key"   # for an API server that checks it [default:
//!                                # self-signed at each start]
//! ```

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::Ipv4Net;
use serde::Deserialize;

use crate::logs::cri::LogSettings;

/// The largest module file read (`limits.max_module_size`).
pub const DEFAULT_MAX_MODULE_SIZE: u64 = 64 << 20;
/// Open WASI handles of a container whose spec sets none (`limits.open_files`).
pub const DEFAULT_OPEN_FILES: usize = 1024;

pub const DEFAULT_CONFIG: &str = "/etc/peapod/peapod.toml";
pub const DEFAULT_RUN_DIR: &str = "/run/peapod";
pub const DEFAULT_STATE_DIR: &str = "/var/lib/peapod";
pub const DEFAULT_BRIDGE: &str = "peapod0";
pub const DEFAULT_PODS_DIR: &str = "/etc/peapod/pods";
pub const DEFAULT_LOG_MAX_SIZE: u64 = 10 * 1024 * 1024;
pub const DEFAULT_LOG_MAX_FILES: u32 = 5;
/// Clear of podman (10.88.0.0/16, and 10.89.x.0/24 for its extra networks), docker
/// (172.17.0.0/16 and up), k3s (10.42.0.0/16, 10.43.0.0/16) and common home LANs.
pub const DEFAULT_SUBNET: &str = "10.66.0.0/22";

/// Settings every command shares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub run_dir: PathBuf,
    pub state_dir: PathBuf,
    pub bridge: String,
    pub subnet: Ipv4Net,
    /// Pods reach addresses outside the host, masqueraded (`network.egress`).
    pub egress: bool,
    /// The daemon's API socket.
    pub socket: PathBuf,
    /// Pod specs the daemon keeps running.
    pub pods_dir: PathBuf,
    pub logs: LogSettings,
    /// The daemon's log level (a tracing filter), unless PEAPOD_LOG is set.
    pub log_level: String,
    pub limits: Limits,
    /// What a caller other than root may ask of the board.
    pub quotas: Quotas,
    /// `[metrics] listen`: a TCP address the daemon also serves `/metrics` on (Prometheus'
    /// text format); `None` (the default): only on the API socket. Anyone who reaches the
    /// address reads the figures (pod names, addresses, use): bind it to 127.0.0.1 or a
    /// management network.
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// `[images]`: where modules may be pulled from, and how.
    pub images: ImageSettings,
    /// `[kubernetes]`: the board as a node of a cluster; `None`: off.
    pub kubernetes: Option<NodeSettings>,
}

/// `[kubernetes]`: how the board joins a cluster as a node (see `crate::node`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSettings {
    pub kubeconfig: PathBuf,
    pub node_name: String,
    /// The node's address (InternalIP); `None`: found at start.
    pub node_ip: Option<std::net::IpAddr>,
    pub kubelet_port: u16,
    pub labels: std::collections::BTreeMap<String, String>,
    /// `KEY[=VALUE]:EFFECT`.
    pub taints: Vec<String>,
    /// Prefixes under which a cluster's pods may mount `hostPath` volumes.
    pub host_paths: Vec<PathBuf>,
    /// The kubelet port's serving certificate and key (PEM files); `None`: self-signed at
    /// each start.
    pub kubelet_tls: Option<(PathBuf, PathBuf)>,
}

/// The taint a node has unless `[kubernetes] taints` says otherwise: only pods that tolerate
/// it (they name WASM modules as images) are placed on the board.
pub const DEFAULT_TAINT: &str = "peapod.dev/wasm=true:NoSchedule";

/// Where `oci://` modules may come from (`[images]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageSettings {
    /// When not empty, the only registries (`HOST` or `HOST:PORT`) pulled from; any other is
    /// an unknown registry.
    pub registries: Vec<String>,
    /// Registries spoken to in plain HTTP; every other one in HTTPS, checked against the
    /// system's CAs.
    pub insecure: Vec<String>,
    /// Registry credentials in docker's `config.json` form; used when the file exists, and
    /// only when it is root's and no one else may read it.
    pub auth_file: PathBuf,
}

/// The default of `images.auth_file`.
pub const DEFAULT_AUTH_FILE: &str = "/etc/peapod/registry-auth.json";

impl Default for ImageSettings {
    fn default() -> Self {
        ImageSettings {
            registries: Vec::new(),
            insecure: Vec::new(),
            auth_file: DEFAULT_AUTH_FILE.into(),
        }
    }
}

/// Bounds on what pods and API clients may take (see [`crate::wasm::limits`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest module file read.
    pub max_module_size: u64,
    /// Default cap on a container's open WASI handles.
    pub open_files: usize,
    /// Concurrent connections to the API.
    pub api_connections: usize,
    /// The longest `termination_grace_period` a pod may ask.
    pub max_grace_period: Duration,
    /// How long a daemon stop waits for its pods (their `pre_stop` hooks) at most.
    pub stop_timeout: Duration,
    /// Memory every admitted pod may be promised together (container memory limits plus tmpfs
    /// `size_limit`s): what the kubelet calls allocatable.
    pub allocatable_memory: u64,
    /// Containers (init containers included) in one pod, for everyone.
    pub max_containers: usize,
}

/// Per-user bounds for API callers other than root (members of the `peapod` group). Root's
/// pods, and the pods directory's (root's files), are bounded by [`Limits`] alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quotas {
    /// Pods one user may have (each takes an address of the subnet).
    pub pods: usize,
    /// Containers in one of their pods.
    pub containers: usize,
    /// Memory promised to one user's pods together.
    pub memory: u64,
    /// Host ports one user's pods publish together.
    pub published_ports: usize,
    /// The shortest time between two restarts of containers of one of their pods.
    pub restart_floor: Duration,
    /// API connections one user may hold open.
    pub api_connections: usize,
    /// `logs?follow=true` streams one user may hold open.
    pub follow_streams: usize,
}

impl Default for Quotas {
    fn default() -> Self {
        Quotas {
            pods: 8,
            containers: 8,
            memory: 1 << 30,
            published_ports: 4,
            restart_floor: Duration::from_millis(100),
            api_connections: 16,
            follow_streams: 4,
        }
    }
}

/// The default of `limits.max_grace_period`: 5 minutes (a delete or a re-create never waits
/// longer for a pod's `pre_stop` hooks).
pub const DEFAULT_MAX_GRACE: Duration = Duration::from_secs(300);
/// The default of `limits.stop_timeout`: under the systemd unit's `TimeoutStopSec=30s`.
pub const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(25);
/// The longest `limits.max_grace_period`: a day, the longest duration a spec may say.
pub const MAX_GRACE_PERIOD: Duration = Duration::from_secs(24 * 3600);
/// The default of `limits.max_containers`.
pub const DEFAULT_MAX_CONTAINERS: usize = 64;

/// The default of `limits.allocatable_memory`: 80% of the host's `MemTotal` (the rest is the
/// system's and the daemon's own), or 1 GiB where `/proc/meminfo` cannot be read.
pub fn default_allocatable() -> u64 {
    let total = std::fs::read_to_string("/proc/meminfo").ok().and_then(|t| {
        let line = t.lines().find(|l| l.starts_with("MemTotal:"))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib << 10)
    });
    total.map_or(1 << 30, |t| t / 5 * 4)
}

/// Default cap on concurrent API connections.
pub const DEFAULT_API_CONNECTIONS: usize = 128;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_module_size: DEFAULT_MAX_MODULE_SIZE,
            open_files: DEFAULT_OPEN_FILES,
            api_connections: DEFAULT_API_CONNECTIONS,
            max_grace_period: DEFAULT_MAX_GRACE,
            stop_timeout: DEFAULT_STOP_TIMEOUT,
            allocatable_memory: default_allocatable(),
            max_containers: DEFAULT_MAX_CONTAINERS,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            run_dir: DEFAULT_RUN_DIR.into(),
            state_dir: DEFAULT_STATE_DIR.into(),
            bridge: DEFAULT_BRIDGE.into(),
            subnet: DEFAULT_SUBNET.parse().expect("default subnet"),
            egress: true,
            socket: Path::new(DEFAULT_RUN_DIR).join("peapod.sock"),
            pods_dir: DEFAULT_PODS_DIR.into(),
            logs: LogSettings {
                dir: Path::new(DEFAULT_STATE_DIR).join("logs"),
                max_size: DEFAULT_LOG_MAX_SIZE,
                max_files: DEFAULT_LOG_MAX_FILES,
            },
            log_level: "info".into(),
            limits: Limits::default(),
            quotas: Quotas::default(),
            metrics_listen: None,
            images: ImageSettings::default(),
            kubernetes: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{}: cannot read config: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {message}", path.display())]
    Invalid { path: PathBuf, message: String },
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    run_dir: Option<PathBuf>,
    state_dir: Option<PathBuf>,
    socket: Option<PathBuf>,
    pods_dir: Option<PathBuf>,
    #[serde(default)]
    network: RawNetwork,
    #[serde(default)]
    logs: RawLogs,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    quotas: RawQuotas,
    #[serde(default)]
    metrics: RawMetrics,
    #[serde(default)]
    images: RawImages,
    kubernetes: Option<RawKubernetes>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKubernetes {
    kubeconfig: PathBuf,
    node_name: Option<String>,
    node_ip: Option<String>,
    kubelet_port: Option<u16>,
    #[serde(default)]
    labels: std::collections::BTreeMap<String, String>,
    taints: Option<Vec<String>>,
    #[serde(default)]
    host_paths: Vec<PathBuf>,
    kubelet_cert: Option<PathBuf>,
    kubelet_key: Option<PathBuf>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawImages {
    registries: Option<Vec<String>>,
    insecure: Option<Vec<String>>,
    auth_file: Option<PathBuf>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawMetrics {
    listen: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    max_module_size: Option<Size>,
    open_files: Option<usize>,
    api_connections: Option<usize>,
    max_grace_period: Option<String>,
    stop_timeout: Option<String>,
    allocatable_memory: Option<Size>,
    max_containers: Option<usize>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawQuotas {
    pods: Option<usize>,
    containers: Option<usize>,
    memory: Option<Size>,
    published_ports: Option<usize>,
    restart_floor: Option<String>,
    api_connections: Option<usize>,
    follow_streams: Option<usize>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLogs {
    dir: Option<PathBuf>,
    max_size: Option<Size>,
    max_files: Option<u32>,
    level: Option<String>,
}

/// A size: a number of bytes, or a string with a unit ("512KiB", "10MiB", "1G").
#[derive(Deserialize)]
#[serde(untagged)]
pub(crate) enum Size {
    Bytes(u64),
    Text(String),
}

/// A size: bytes, or a number with a binary unit (`KiB`/`Ki`/`K`/`KB`, `MiB`..., `GiB`...).
pub(crate) fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (n, unit) = t.split_at(split);
    let n: u64 = n
        .parse()
        .map_err(|_| format!("{s:?} is not a size like \"10MiB\""))?;
    let mult = match unit.trim() {
        "" | "B" => 1,
        "K" | "KB" | "KiB" | "Ki" => 1 << 10,
        "M" | "MB" | "MiB" | "Mi" => 1 << 20,
        "G" | "GB" | "GiB" | "Gi" => 1 << 30,
        u => {
            return Err(format!(
                "{s:?}: unknown unit {u:?} (use B, KiB, MiB or GiB)"
            ));
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("{s:?} is too large"))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawNetwork {
    bridge: Option<String>,
    subnet: Option<String>,
    egress: Option<bool>,
}

/// Values given on the command line; each wins over the file.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub run_dir: Option<PathBuf>,
    pub state_dir: Option<PathBuf>,
    pub bridge: Option<String>,
    pub subnet: Option<String>,
    pub egress: Option<bool>,
    pub socket: Option<PathBuf>,
    pub pods_dir: Option<PathBuf>,
}

impl Config {
    /// Loads `file` (or the default file if it exists; defaults otherwise) and applies `overrides`.
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> Result<Config, ConfigError> {
        let (path, raw) = match file {
            Some(p) => (p.to_path_buf(), Some(read(p)?)),
            None if Path::new(DEFAULT_CONFIG).exists() => {
                let p = Path::new(DEFAULT_CONFIG);
                (p.to_path_buf(), Some(read(p)?))
            }
            None => (PathBuf::from("(command line)"), None),
        };
        let raw = match raw {
            Some(text) => toml::from_str::<RawConfig>(&text).map_err(|e| ConfigError::Invalid {
                path: path.clone(),
                message: e.to_string().trim().to_string(),
            })?,
            None => RawConfig::default(),
        };
        let d = Config::default();
        let invalid = |message: String| ConfigError::Invalid {
            path: path.clone(),
            message,
        };
        let subnet = match overrides.subnet.clone().or(raw.network.subnet) {
            None => d.subnet,
            Some(s) => parse_subnet(&s).map_err(|m| invalid(format!("network.subnet: {m}")))?,
        };
        let bridge = overrides
            .bridge
            .clone()
            .or(raw.network.bridge)
            .unwrap_or(d.bridge);
        if bridge.is_empty() || bridge.len() > 15 || bridge.contains(['/', ' ', ':']) {
            return Err(invalid(format!(
                "network.bridge: {bridge:?} is not a valid interface name (1-15 characters, no '/', ':' or space)"
            )));
        }
        let run_dir = overrides
            .run_dir
            .clone()
            .or(raw.run_dir)
            .unwrap_or(d.run_dir);
        let state_dir = overrides
            .state_dir
            .clone()
            .or(raw.state_dir)
            .unwrap_or(d.state_dir);
        let size = |v: Option<Size>, default: u64, field: &str| match v {
            None => Ok(default),
            Some(Size::Bytes(n)) => Ok(n),
            Some(Size::Text(t)) => parse_size(&t).map_err(|m| invalid(format!("{field}: {m}"))),
        };
        let max_size = size(raw.logs.max_size, DEFAULT_LOG_MAX_SIZE, "logs.max_size")?;
        let duration = |v: Option<String>, default: Duration, field: &str| match v {
            None => Ok(default),
            Some(t) => humantime::parse_duration(&t).map_err(|e| {
                invalid(format!(
                    "{field}: {t:?} is not a duration like \"30s\": {e}"
                ))
            }),
        };
        let dl = Limits::default();
        let limits = Limits {
            max_module_size: size(
                raw.limits.max_module_size,
                dl.max_module_size,
                "limits.max_module_size",
            )?,
            open_files: raw.limits.open_files.unwrap_or(dl.open_files),
            api_connections: raw.limits.api_connections.unwrap_or(dl.api_connections),
            max_grace_period: duration(
                raw.limits.max_grace_period,
                dl.max_grace_period,
                "limits.max_grace_period",
            )?,
            stop_timeout: duration(
                raw.limits.stop_timeout,
                dl.stop_timeout,
                "limits.stop_timeout",
            )?,
            allocatable_memory: size(
                raw.limits.allocatable_memory,
                dl.allocatable_memory,
                "limits.allocatable_memory",
            )?,
            max_containers: raw.limits.max_containers.unwrap_or(dl.max_containers),
        };
        let dq = Quotas::default();
        let quotas = Quotas {
            pods: raw.quotas.pods.unwrap_or(dq.pods),
            containers: raw.quotas.containers.unwrap_or(dq.containers),
            memory: size(raw.quotas.memory, dq.memory, "quotas.memory")?,
            published_ports: raw.quotas.published_ports.unwrap_or(dq.published_ports),
            restart_floor: duration(
                raw.quotas.restart_floor,
                dq.restart_floor,
                "quotas.restart_floor",
            )?,
            api_connections: raw.quotas.api_connections.unwrap_or(dq.api_connections),
            follow_streams: raw.quotas.follow_streams.unwrap_or(dq.follow_streams),
        };
        if limits.max_grace_period > MAX_GRACE_PERIOD {
            return Err(invalid(format!(
                "limits.max_grace_period: at most {}",
                humantime::format_duration(MAX_GRACE_PERIOD)
            )));
        }
        for (field, v) in [
            ("limits.max_module_size", limits.max_module_size),
            ("limits.open_files", limits.open_files as u64),
            ("limits.api_connections", limits.api_connections as u64),
            ("limits.allocatable_memory", limits.allocatable_memory),
            ("limits.max_containers", limits.max_containers as u64),
            ("quotas.containers", quotas.containers as u64),
            ("quotas.api_connections", quotas.api_connections as u64),
        ] {
            if v == 0 {
                return Err(invalid(format!("{field}: must be at least 1")));
            }
        }
        let max_files = raw.logs.max_files.unwrap_or(DEFAULT_LOG_MAX_FILES);
        if max_files == 0 {
            return Err(invalid(
                "logs.max_files: must be at least 1 (the live file)".into(),
            ));
        }
        let metrics_listen = match &raw.metrics.listen {
            None => None,
            Some(a) => Some(a.parse().map_err(|_| {
                invalid(format!(
                    "metrics.listen: {a:?} is not an address and port (e.g. \"127.0.0.1:9464\")"
                ))
            })?),
        };
        let di = ImageSettings::default();
        let images = ImageSettings {
            registries: raw.images.registries.unwrap_or(di.registries),
            insecure: raw.images.insecure.unwrap_or(di.insecure),
            auth_file: raw.images.auth_file.unwrap_or(di.auth_file),
        };
        for (field, list) in [
            ("images.registries", &images.registries),
            ("images.insecure", &images.insecure),
        ] {
            if let Some(bad) = list
                .iter()
                .find(|r| r.is_empty() || r.contains(['/', ' ', '@']) || r.contains("://"))
            {
                return Err(invalid(format!(
                    "{field}: {bad:?} is not a registry (HOST or HOST:PORT, no scheme or path)"
                )));
            }
        }
        let kubernetes = match raw.kubernetes {
            None => None,
            Some(_) if !cfg!(feature = "kubernetes") => {
                return Err(invalid(
                    "kubernetes: this peapod is built without the Kubernetes node (the cargo \
                     feature `kubernetes`, on by default and in the .deb); remove [kubernetes] \
                     or use a peapod built with it"
                        .into(),
                ));
            }
            Some(k) => Some(node_settings(k).map_err(invalid)?),
        };
        let log_level = raw.logs.level.unwrap_or(d.log_level);
        if tracing_subscriber::EnvFilter::try_new(&log_level).is_err() {
            return Err(invalid(format!(
                "logs.level: {log_level:?} is not a level (error, warn, info, debug, trace)"
            )));
        }
        Ok(Config {
            socket: overrides
                .socket
                .clone()
                .or(raw.socket)
                .unwrap_or_else(|| run_dir.join("peapod.sock")),
            pods_dir: overrides
                .pods_dir
                .clone()
                .or(raw.pods_dir)
                .unwrap_or(d.pods_dir),
            logs: LogSettings {
                dir: raw.logs.dir.unwrap_or_else(|| state_dir.join("logs")),
                max_size,
                max_files,
            },
            log_level,
            limits,
            quotas,
            metrics_listen,
            images,
            kubernetes,
            egress: overrides.egress.or(raw.network.egress).unwrap_or(d.egress),
            run_dir,
            state_dir,
            bridge,
            subnet,
        })
    }

    /// Directory of namespace pins: `<run_dir>/netns`.
    pub fn netns_dir(&self) -> PathBuf {
        self.run_dir.join("netns")
    }

    /// The pin of one pod's namespace.
    pub fn netns_path(&self, pod: &str) -> PathBuf {
        self.netns_dir().join(pod)
    }

    /// The bridge's own address, the pods' default gateway: the subnet's first host.
    pub fn gateway(&self) -> Ipv4Addr {
        self.subnet
            .hosts()
            .next()
            .expect("subnet has hosts (checked)")
    }
}

fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn parse_subnet(s: &str) -> Result<Ipv4Net, String> {
    let net: Ipv4Net = s
        .parse()
        .map_err(|_| format!("{s:?} is not an IPv4 subnet like \"10.66.0.0/24\""))?;
    if net.prefix_len() > 29 {
        return Err(format!(
            "{s:?} is too small: a /29 or larger is needed (gateway + pods)"
        ));
    }
    if net.network() != net.addr() {
        return Err(format!(
            "{s:?} has host bits set; did you mean \"{}\"?",
            net.trunc()
        ));
    }
    Ok(net)
}

/// `[kubernetes]` checked: every problem names its field.
fn node_settings(k: RawKubernetes) -> Result<NodeSettings, String> {
    let node_name = match k.node_name {
        Some(n) => n,
        None => nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_default()
            .to_lowercase(),
    };
    let subdomain = !node_name.is_empty()
        && node_name.len() <= 253
        && node_name.split('.').all(crate::labels::is_dns1123_label);
    if !subdomain {
        return Err(format!(
            "kubernetes.node_name: {node_name:?} is not a node name (DNS names: a-z, 0-9, '-' and '.')"
        ));
    }
    let node_ip = match k.node_ip {
        None => None,
        Some(a) => Some(
            a.parse()
                .map_err(|_| format!("kubernetes.node_ip: {a:?} is not an IP address"))?,
        ),
    };
    let taints = k.taints.unwrap_or_else(|| vec![DEFAULT_TAINT.to_string()]);
    for t in &taints {
        let effect = t.rsplit_once(':').map(|(_, e)| e);
        if !matches!(
            effect,
            Some("NoSchedule" | "PreferNoSchedule" | "NoExecute")
        ) {
            return Err(format!(
                "kubernetes.taints: {t:?} is not KEY[=VALUE]:EFFECT (EFFECT NoSchedule, PreferNoSchedule or NoExecute)"
            ));
        }
    }
    for (key, value) in &k.labels {
        if let Some(p) =
            crate::labels::key_problem(key).or_else(|| crate::labels::value_problem(key, value))
        {
            return Err(format!("kubernetes.labels: {p}"));
        }
    }
    if let Some(p) = k.host_paths.iter().find(|p| !p.is_absolute()) {
        return Err(format!(
            "kubernetes.host_paths: {} is not an absolute path",
            p.display()
        ));
    }
    let kubelet_tls = match (k.kubelet_cert, k.kubelet_key) {
        (Some(c), Some(k)) => Some((c, k)),
        (None, None) => None,
        _ => {
            return Err(
                "kubernetes.kubelet_cert: give both kubelet_cert and kubelet_key, or neither"
                    .into(),
            );
        }
    };
    Ok(NodeSettings {
        kubelet_tls,
        kubeconfig: k.kubeconfig,
        node_name,
        node_ip,
        kubelet_port: k.kubelet_port.unwrap_or(10250),
        labels: k.labels,
        taints,
        host_paths: k.host_paths,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_then_flags() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("peapod.toml");
        std::fs::write(
            &f,
            "state_dir = \"/tmp/s\"\n[network]\nbridge = \"br9\"\nsubnet = \"10.9.0.0/24\"\n",
        )
        .unwrap();
        let c = Config::load(
            Some(&f),
            &Overrides {
                bridge: Some("br7".into()),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(c.bridge, "br7");
        assert_eq!(c.state_dir, Path::new("/tmp/s"));
        assert_eq!(c.run_dir, Path::new(DEFAULT_RUN_DIR));
        assert_eq!(c.gateway(), Ipv4Addr::new(10, 9, 0, 1));
        assert_eq!(c.netns_path("p"), Path::new("/run/peapod/netns/p"));
        assert_eq!(c.socket, Path::new("/run/peapod/peapod.sock"));
        assert_eq!(c.logs.dir, Path::new("/tmp/s/logs"));
        assert_eq!(c.logs.max_size, DEFAULT_LOG_MAX_SIZE);
        assert!(c.egress, "egress is on unless said otherwise");

        std::fs::write(&f, "[network]\negress = false\n").unwrap();
        let off = Config::load(Some(&f), &Overrides::default()).unwrap();
        assert!(!off.egress);
        let flag = Overrides {
            egress: Some(true),
            ..Default::default()
        };
        assert!(
            Config::load(Some(&f), &flag).unwrap().egress,
            "the flag wins"
        );
        std::fs::write(&f, "[network]\negress = \"no\"\n").unwrap();
        let e = Config::load(Some(&f), &Overrides::default()).unwrap_err();
        assert!(e.to_string().contains("egress"), "{e}");
    }

    #[test]
    fn log_settings() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("peapod.toml");
        let load = |text: &str| {
            std::fs::write(&f, text).unwrap();
            Config::load(Some(&f), &Overrides::default())
        };
        let c = load("[logs]\nmax_size = \"512KiB\"\nmax_files = 2\nlevel = \"debug\"\n").unwrap();
        assert_eq!((c.logs.max_size, c.logs.max_files), (512 * 1024, 2));
        assert_eq!(
            load("[logs]\nmax_size = 4096\n").unwrap().logs.max_size,
            4096
        );
        let l = load("[limits]\nmax_module_size = \"8MiB\"\nopen_files = 50\n")
            .unwrap()
            .limits;
        assert_eq!((l.max_module_size, l.open_files), (8 << 20, 50));
        assert_eq!(load("").unwrap().limits, Limits::default());
        assert_eq!(
            load("[metrics]\nlisten = \"127.0.0.1:9464\"\n")
                .unwrap()
                .metrics_listen,
            Some("127.0.0.1:9464".parse().unwrap())
        );
        for (bad, field) in [
            ("[logs]\nmax_size = \"10 parsecs\"\n", "logs.max_size"),
            ("[logs]\nmax_files = 0\n", "logs.max_files"),
            ("[logs]\nlevel = \"loud=[\"\n", "logs.level"),
            (
                "[limits]\nmax_module_size = \"big\"\n",
                "limits.max_module_size",
            ),
            ("[limits]\nopen_files = 0\n", "limits.open_files"),
            ("[metrics]\nlisten = \"localhost\"\n", "metrics.listen"),
        ] {
            let e = load(bad).unwrap_err().to_string();
            assert!(e.contains(field) && e.contains("peapod.toml"), "{e}");
        }
    }

    /// configs/peapod.toml says what the defaults are: it must agree with them.
    #[test]
    fn the_example_config_states_the_defaults() {
        let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/peapod.toml");
        let c = Config::load(Some(&example), &Overrides::default()).unwrap();
        assert_eq!(c, Config::default());
    }

    /// A peapod built without the node refuses its section, saying why, instead of ignoring it.
    #[cfg(not(feature = "kubernetes"))]
    #[test]
    fn the_node_section_without_the_node() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("peapod.toml");
        std::fs::write(
            &f,
            "[kubernetes]\nkubeconfig = \"/k\"\nnode_name = \"pi-1\"\n",
        )
        .unwrap();
        let e = Config::load(Some(&f), &Overrides::default())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("kubernetes: this peapod is built without the Kubernetes node"),
            "{e}"
        );
    }

    #[cfg(feature = "kubernetes")]
    #[test]
    fn the_node_section() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("peapod.toml");
        let load = |text: &str| {
            std::fs::write(&f, text).unwrap();
            Config::load(Some(&f), &Overrides::default())
        };
        let c =
            load("[kubernetes]\nkubeconfig = \"/etc/peapod/kubeconfig\"\nnode_name = \"pi-1\"\n")
                .unwrap();
        let k = c.kubernetes.unwrap();
        assert_eq!((k.node_name.as_str(), k.kubelet_port), ("pi-1", 10250));
        assert_eq!(k.taints, [DEFAULT_TAINT]);
        assert!(k.host_paths.is_empty(), "no hostPath unless said");
        for (bad, field) in [
            ("node_name = \"Pi_1\"", "kubernetes.node_name"),
            ("node_ip = \"pi\"", "kubernetes.node_ip"),
            ("taints = [\"a=b\"]", "kubernetes.taints"),
            ("labels = { \"bad key!\" = \"x\" }", "kubernetes.labels"),
            ("host_paths = [\"srv\"]", "kubernetes.host_paths"),
        ] {
            let text = format!("[kubernetes]\nkubeconfig = \"/k\"\n{bad}\n");
            let e = load(&text).unwrap_err().to_string();
            assert!(e.contains(field) && e.contains("peapod.toml"), "{bad}: {e}");
        }
        assert!(Config::default().kubernetes.is_none(), "off by default");
        let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/kubernetes.toml");
        let c = Config::load(Some(&example), &Overrides::default()).unwrap();
        assert_eq!(c.kubernetes.unwrap().node_name, "pi-1", "the example reads");
    }

    #[test]
    fn limits_and_quotas() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("peapod.toml");
        let load = |text: &str| {
            std::fs::write(&f, text).unwrap();
            Config::load(Some(&f), &Overrides::default())
        };
        let c = load(
            "[limits]\nmax_grace_period = \"1m\"\nstop_timeout = \"10s\"\n\
             allocatable_memory = \"3GiB\"\nmax_containers = 9\n\
             [quotas]\npods = 2\ncontainers = 3\nmemory = \"256MiB\"\npublished_ports = 0\n\
             restart_floor = \"1s\"\n",
        )
        .unwrap();
        assert_eq!(c.limits.max_grace_period, Duration::from_secs(60));
        assert_eq!(c.limits.stop_timeout, Duration::from_secs(10));
        assert_eq!(c.limits.allocatable_memory, 3 << 30);
        assert_eq!(c.limits.max_containers, 9);
        assert_eq!(
            c.quotas,
            Quotas {
                pods: 2,
                containers: 3,
                memory: 256 << 20,
                published_ports: 0,
                restart_floor: Duration::from_secs(1),
                ..Quotas::default()
            }
        );
        assert!(default_allocatable() > 0);
        for (bad, field) in [
            (
                "[limits]\nmax_grace_period = \"soon\"\n",
                "limits.max_grace_period",
            ),
            (
                "[limits]\nmax_grace_period = \"2d\"\n",
                "limits.max_grace_period",
            ),
            (
                "[limits]\nallocatable_memory = 0\n",
                "limits.allocatable_memory",
            ),
            ("[quotas]\nmemory = \"lots\"\n", "quotas.memory"),
            ("[quotas]\nrestart_floor = 5\n", "restart_floor"),
        ] {
            let e = load(bad).unwrap_err().to_string();
            assert!(e.contains(field) && e.contains("peapod.toml"), "{e}");
        }
    }

    #[test]
    fn bad_values_are_named() {
        let o = |s: &str| Overrides {
            subnet: Some(s.into()),
            ..Default::default()
        };
        let none = Some(Path::new("/nonexistent/peapod.toml"));
        assert!(matches!(
            Config::load(none, &Overrides::default()),
            Err(ConfigError::Read { .. })
        ));
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.toml");
        std::fs::write(&f, "").unwrap();
        for bad in ["10.0.0.0/30", "10.0.0.1/24", "nope"] {
            let e = Config::load(Some(&f), &o(bad)).unwrap_err().to_string();
            assert!(e.contains("network.subnet"), "{e}");
        }
        std::fs::write(&f, "[network]\nbrige = \"x\"\n").unwrap();
        let e = Config::load(Some(&f), &Overrides::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field `brige`"), "{e}");
    }
}
