//! The sandbox (the pause role): a pod's pinned network namespace, its veth onto the bridge, its
//! leased address, `lo` up and a default route.
//!
//! Creation order is chosen so that a crash at any point leaves only things [`Sandbox::remove`]
//! (or the next create of the same pod) cleans up: pin first, then the lease (so a lease without a
//! pin is always stale), then the veth and the addresses. A sandbox holds an exclusive lock on
//! `<run_dir>/pods/<pod>.lock` for its whole life, so one pod name runs once per host and leftovers
//! of a dead process are recognized as such.

use std::fs::File;
use std::net::Ipv4Addr;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::Arc;

use nix::fcntl::{Flock, FlockArg};

use crate::config::Config;
use crate::host::ipam::{Ipam, IpamError};
use crate::host::net::{self, Links, NetError, Netlink};
use crate::host::netns::{self, NetnsError};
use crate::host::volumes;
use crate::spec::Published;

/// Name of the pod's end of its veth, inside the namespace.
pub const POD_IFACE: &str = "eth0";

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("pod {pod} is already running (its lock {} is held)", lock.display())]
    Running { pod: String, lock: PathBuf },
    #[error(transparent)]
    Netns(#[from] NetnsError),
    #[error(transparent)]
    Ipam(#[from] IpamError),
    #[error(transparent)]
    Net(#[from] NetError),
    /// A file or directory of the sandbox (its lock, the namespace pins' directory).
    #[error("{}: {source}", path.display())]
    File {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A published port cannot be held on the host (taken, or no socket for it).
    #[error("{0}")]
    Port(String),
    /// A link the kernel should have made is not in the pod's namespace.
    #[error("no {0} in the pod's namespace")]
    Missing(&'static str),
    /// A thread of the sandbox's work could not run (the namespace thread, a blocking task).
    #[error("{what}: {source}")]
    Thread {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// The pod's volumes (their removal).
    #[error("volumes of pod {pod}: {source}")]
    Volumes {
        pod: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{}", .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; "))]
    Many(Vec<SandboxError>),
    /// A create failed (`cause`), and so did removing what it had made (`undo`).
    #[error("{cause}; and cleaning up after it: {undo}")]
    Undone {
        cause: Box<SandboxError>,
        undo: Box<SandboxError>,
    },
}

/// A live pod sandbox. Dropping it releases the pod lock but leaves the kernel objects in place
/// (they outlive the process by design); [`Sandbox::destroy`] removes them.
#[derive(Debug)]
pub struct Sandbox {
    pub pod: String,
    pub ip: Ipv4Addr,
    pub netns_path: PathBuf,
    /// An fd to the namespace, for threads that enter it.
    pub netns: Arc<OwnedFd>,
    pub host_veth: String,
    cfg: Config,
    lock: PodLock,
    /// The published host ports, held ([`crate::host::ports::hold`]).
    _ports: Vec<socket2::Socket>,
}

/// What every host veth's name starts with.
const VETH_PREFIX: &str = "pp";

/// The host end of a pod's veth: derived from bridge and pod name so it can be found after a crash,
/// and short enough for IFNAMSIZ.
pub fn host_veth_name(bridge: &str, pod: &str) -> String {
    let hex = crate::hash::sha256_hex(format!("{bridge}/{pod}").as_bytes());
    format!("{VETH_PREFIX}{}", &hex[..VETH_HEX])
}

/// Hex digits of a host veth's name after [`VETH_PREFIX`].
const VETH_HEX: usize = 11;

/// Whether link `name` has the form of a pod's host veth (`pp` and 11 lowercase hex digits):
/// another link on the bridge (`pppoe0`, an administrator's own) is never taken for one.
fn is_host_veth(name: &str) -> bool {
    name.strip_prefix(VETH_PREFIX).is_some_and(|h| {
        h.len() == VETH_HEX
            && h.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// The exclusive lock on `<run_dir>/pods/<pod>.lock`: whoever holds it owns the pod's sandbox.
#[derive(Debug)]
struct PodLock {
    flock: Flock<File>,
    path: PathBuf,
}

impl PodLock {
    /// Marks now as the sandbox's creation time (the lock file's mtime; flock never changes it).
    fn mark_created(&self) {
        let _ = self.flock.set_modified(std::time::SystemTime::now());
    }

    /// When the sandbox was created, as [`PodLock::mark_created`] recorded it.
    fn created(&self) -> std::time::SystemTime {
        self.flock
            .metadata()
            .and_then(|m| m.modified())
            .unwrap_or_else(|_| std::time::SystemTime::now())
    }

    /// Gives the lock up and removes its file: the pod is gone. Unlinked while still held, so a
    /// process that opened the old file and locks it after us sees that it is no longer the
    /// path's file and tries again (see [`lock_pod`]).
    fn release_removing(self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn lock_pod(cfg: &Config, pod: &str) -> Result<PodLock, SandboxError> {
    use std::os::unix::fs::MetadataExt;
    let dir = cfg.run_dir.join("pods");
    let path = dir.join(format!("{pod}.lock"));
    let io = |source| SandboxError::File {
        path: path.clone(),
        source,
    };
    std::fs::create_dir_all(&dir).map_err(io)?;
    loop {
        let flock = crate::durable::lock(&path, false)
            .map_err(io)?
            .ok_or_else(|| SandboxError::Running {
                pod: pod.into(),
                lock: path.clone(),
            })?;
        // Still the file at `path`? (Its owner may have removed it between our open and lock.)
        let held = flock.metadata().map_err(io)?;
        if std::fs::metadata(&path).is_ok_and(|m| m.ino() == held.ino() && m.dev() == held.dev()) {
            return Ok(PodLock { flock, path });
        }
    }
}

/// Runs `work` (file locks another process may hold, the lease file, the firewall's netlink)
/// on a blocking thread of the runtime, not on an async worker.
async fn blocking<R: Send + 'static>(
    work: impl FnOnce() -> Result<R, SandboxError> + Send + 'static,
) -> Result<R, SandboxError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| SandboxError::Thread {
            what: "a blocking task",
            source: std::io::Error::other(e),
        })?
}

impl Sandbox {
    /// Creates the pod's sandbox, publishing `ports` on the host. On failure nothing of it is
    /// left behind.
    pub async fn create(
        cfg: &Config,
        pod: &str,
        ports: &[Published],
    ) -> Result<Sandbox, SandboxError> {
        let t0 = std::time::Instant::now();
        let lock = lock_pod(cfg, pod)?;
        lock.mark_created();
        let netns_path = cfg.netns_path(pod);
        let ipam = Ipam::new(cfg);
        let held = crate::host::ports::hold(ports).map_err(SandboxError::Port)?;
        // We hold the lock, so any pin, lease or volume of this pod is a dead process' leftover.
        let leased = {
            let (ipam, pod) = (ipam.clone(), pod.to_string());
            blocking(move || Ok(ipam.leases()?.contains_key(&pod))).await?
        };
        if netns_path.exists() || leased || volumes::exist(cfg, pod) {
            tracing::warn!(pod, "removing leftovers of an earlier run of this pod");
            remove_parts(cfg, pod).await?;
        }

        let host = Netlink::HOST;
        let bridge = host
            .ensure_bridge(&cfg.bridge, cfg.gateway(), cfg.subnet.prefix_len())
            .await?;
        let t_bridge = t0.elapsed();
        // Made by a short-lived thread of its own, waited for on a blocking one.
        let pin = netns_path.clone();
        let fd = Arc::new(blocking(move || Ok(netns::create_pinned(&pin)?)).await?);
        let t_pin = t0.elapsed();
        let sandbox = Sandbox {
            pod: pod.into(),
            ip: Ipv4Addr::UNSPECIFIED,
            netns_path,
            netns: fd.clone(),
            host_veth: host_veth_name(&cfg.bridge, pod),
            cfg: cfg.clone(),
            lock,
            _ports: held,
        };
        match sandbox.configure(&host, bridge, &ipam, ports).await {
            Ok(ip) => {
                tracing::debug!(
                    pod,
                    "sandbox: checks+bridge {t_bridge:.1?}, pin {:.1?}, lease+plumb {:.1?}",
                    t_pin - t_bridge,
                    t0.elapsed() - t_pin
                );
                Ok(Sandbox { ip, ..sandbox })
            }
            Err(e) => match remove_parts(cfg, pod).await {
                Ok(()) => {
                    sandbox.lock.release_removing();
                    Err(e)
                }
                Err(undo) => Err(SandboxError::Undone {
                    cause: Box::new(e),
                    undo: Box::new(undo),
                }),
            },
        }
    }

    /// Takes over the sandbox an earlier process left for pod `pod` (after a crash or a clean stop
    /// of the daemon): when its pinned namespace and its lease both survived, the pod keeps that
    /// namespace and that IP; its veth is made anew (whatever state it was left in) and the inside
    /// configured again. Anything less (a process killed half-way through creating the pod) is
    /// removed and the sandbox created afresh. Returns the sandbox and whether it was recovered.
    pub async fn recover(
        cfg: &Config,
        pod: &str,
        ports: &[Published],
    ) -> Result<(Sandbox, bool), SandboxError> {
        let lock = lock_pod(cfg, pod)?;
        let netns_path = cfg.netns_path(pod);
        let ipam = Ipam::new(cfg);
        let lease = {
            let (ipam, pod) = (ipam.clone(), pod.to_string());
            blocking(move || Ok(ipam.leases()?.get(&pod).copied())).await?
        };
        let (Some(ip), true) = (lease, netns::is_pinned(&netns_path)) else {
            drop(lock);
            return Ok((Sandbox::create(cfg, pod, ports).await?, false));
        };
        let held = crate::host::ports::hold(ports).map_err(SandboxError::Port)?;
        {
            let (ipam, pod, ports) = (ipam.clone(), pod.to_string(), ports.to_vec());
            blocking(move || Ok(ipam.set_ports(&pod, &ports)?)).await?;
        }
        let host = Netlink::HOST;
        let bridge = host
            .ensure_bridge(&cfg.bridge, cfg.gateway(), cfg.subnet.prefix_len())
            .await?;
        let fd = Arc::new(netns::open(&netns_path)?);
        let sandbox = Sandbox {
            pod: pod.into(),
            ip,
            netns_path,
            netns: fd,
            host_veth: host_veth_name(&cfg.bridge, pod),
            cfg: cfg.clone(),
            lock,
            _ports: held,
        };
        // Deleting the host end takes the peer (and its address and route) with it.
        host.delete_link(&sandbox.host_veth).await?;
        plumb(&host, bridge, cfg, &sandbox.netns, &sandbox.host_veth, ip).await?;
        Ok((sandbox, true))
    }

    /// Removes whatever is left of pod `pod`'s sandbox (a pod that is not running here).
    pub async fn remove(cfg: &Config, pod: &str) -> Result<(), SandboxError> {
        let lock = lock_pod(cfg, pod)?;
        remove_parts(cfg, pod).await?;
        lock.release_removing();
        Ok(())
    }

    async fn configure(
        &self,
        host: &impl Links,
        bridge: u32,
        ipam: &Ipam,
        ports: &[Published],
    ) -> Result<Ipv4Addr, SandboxError> {
        let t0 = std::time::Instant::now();
        let (cfg, ipam, pod, ports_) = (
            self.cfg.clone(),
            ipam.clone(),
            self.pod.clone(),
            ports.to_vec(),
        );
        let ip = blocking(move || {
            Ok(match ipam.allocate_publishing(&pod, &ports_) {
                // Leases whose pin is gone belong to no pod (a process killed before it cleaned
                // up): dropped when they stand in the way, not looked for at every start (that
                // is a lookup per pod on the bridge; a daemon start drops them all).
                Err(IpamError::Exhausted { .. } | IpamError::PortTaken { .. })
                    if drop_stale_leases(&cfg, &ipam)? > 0 =>
                {
                    ipam.allocate_publishing(&pod, &ports_)?
                }
                r => r?,
            })
        })
        .await?;
        crate::durable::crash_point("sandbox-after-lease");
        tracing::debug!(
            pod = self.pod,
            "sandbox: lease persisted in {:.1?}",
            t0.elapsed()
        );
        plumb(host, bridge, &self.cfg, &self.netns, &self.host_veth, ip).await?;
        Ok(ip)
    }

    /// The configuration it was made with.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// When this sandbox was created: kept across daemon restarts (a recovered sandbox is the
    /// same one), new with each re-create.
    pub fn created(&self) -> std::time::SystemTime {
        self.lock.created()
    }

    /// Removes the namespace, the veth, the lease and the volumes.
    pub async fn destroy(self) -> Result<(), SandboxError> {
        let Sandbox {
            cfg,
            pod,
            netns,
            lock,
            ..
        } = self;
        // Our fd would keep the namespace alive after the pin is gone.
        drop(netns);
        remove_parts(&cfg, &pod).await?;
        lock.release_removing();
        Ok(())
    }
}

/// The kernel work of a sandbox, nothing else: a veth from `cfg`'s bridge (index `bridge`) into
/// the namespace `netns` (peer created there as `eth0`), then, from inside, `lo` up, `ip` on
/// `eth0`, `eth0` up and a default route via the gateway; returns once both ends and the bridge
/// pass traffic. Benchmarks call it alone as the netlink floor.
pub async fn plumb(
    host: &impl Links,
    bridge: u32,
    cfg: &Config,
    netns: &Arc<OwnedFd>,
    host_veth: &str,
    ip: Ipv4Addr,
) -> Result<(), SandboxError> {
    use std::os::fd::AsFd;
    let (prefix, gateway) = (cfg.subnet.prefix_len(), cfg.gateway());
    let t0 = std::time::Instant::now();
    host.create_veth_into(
        host_veth,
        bridge,
        POD_IFACE,
        net::mac_for(ip),
        netns.as_fd(),
    )
    .await?;
    let t_veth = t0.elapsed();
    // The host reaches the pod without asking (ARP): see `configure_inside`.
    unless_unsupported(
        host.set_neighbour(bridge, ip, net::mac_for(ip), "the bridge")
            .await,
    )?;
    configure_inside(&Netlink::inside(netns.clone()), ip, prefix, gateway).await?;
    let t_inside = t0.elapsed();
    host.wait_passes_traffic(host_veth, LINK_UP_LIMIT).await?;
    let t_host = t0.elapsed();
    // The port forwarding turns the bridge's carrier on; a bridge whose last port had gone (the
    // pod re-created when it was the only one) has its queueing off until linkwatch brings it
    // back, and drops what the host sends through it until then.
    host.wait_passes_traffic(&cfg.bridge, LINK_UP_LIMIT).await?;
    tracing::debug!(
        "plumb: veth {t_veth:.1?}, neighbour and inside {:.1?}, host end up {:.1?}, bridge up {:.1?}",
        t_inside - t_veth,
        t_host - t_inside,
        t0.elapsed() - t_host
    );
    Ok(())
}

/// The inside of a pod's namespace, through `nl` opened there: `lo` up, `ip/prefix` on the
/// veth's peer, the peer up, a permanent neighbour entry for `gateway`, the default route via
/// it; returns once the peer is up.
///
/// Both ends' hardware addresses follow from their IPs ([`net::mac_for`]; the bridge is given
/// the gateway's), so the host and the pod hold permanent neighbour entries for each other
/// instead of learning them by ARP: no first packet waits for (or loses to) an ARP exchange,
/// and permanent entries are exempt from the kernel's neighbour-table limits
/// (`net.ipv4.neigh.default.gc_thresh1/2/3`, 128/512/1024 by default, which count the entries
/// of every namespace together): a thousand pods need no change to the host's sysctls.
async fn configure_inside(
    nl: &impl Links,
    ip: Ipv4Addr,
    prefix: u8,
    gateway: Ipv4Addr,
) -> Result<(), SandboxError> {
    let lo = nl
        .link_index("lo")
        .await?
        .ok_or(SandboxError::Missing("lo"))?;
    nl.set_up(lo, "lo").await?;
    let eth = nl
        .link_index(POD_IFACE)
        .await?
        .ok_or(SandboxError::Missing("veth peer (eth0)"))?;
    nl.add_addr(eth, ip, prefix, POD_IFACE).await?;
    nl.set_up(eth, POD_IFACE).await?;
    unless_unsupported(
        nl.set_neighbour(eth, gateway, net::mac_for(gateway), POD_IFACE)
            .await,
    )?;
    nl.add_default_route(gateway).await?;
    nl.wait_passes_traffic(POD_IFACE, LINK_UP_LIMIT).await?;
    Ok(())
}

/// How long a fresh veth may take to become operationally up (linkwatch runs at least once a
/// second).
const LINK_UP_LIMIT: std::time::Duration = std::time::Duration::from_secs(3);

/// Removes the sandbox parts of every pod not in `keep` and not running in another process (its
/// lock is free): pins, leases and volumes without a pod, then host veths on the bridge that are
/// no pod's. Returns the pods whose parts were removed (and the names of the veths).
pub async fn collect_orphans(
    cfg: &Config,
    keep: &std::collections::BTreeSet<String>,
) -> Result<Vec<String>, SandboxError> {
    let mut names = std::collections::BTreeSet::new();
    match std::fs::read_dir(cfg.netns_dir()) {
        Ok(dir) => {
            for e in dir.flatten() {
                names.insert(e.file_name().to_string_lossy().into_owned());
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(SandboxError::File {
                path: cfg.netns_dir(),
                source,
            });
        }
    }
    let ipam = Ipam::new(cfg);
    let leases = {
        let ipam = ipam.clone();
        move || -> Result<_, SandboxError> { Ok(ipam.leases()?) }
    };
    names.extend(blocking(leases.clone()).await?.into_keys());
    names.extend(volumes::pods(cfg));
    let mut removed = Vec::new();
    for pod in names.into_iter().filter(|p| !keep.contains(p)) {
        // A pod run by another process (`peapod run`) holds its lock: not an orphan.
        let Ok(lock) = lock_pod(cfg, &pod) else {
            continue;
        };
        remove_parts(cfg, &pod).await?;
        lock.release_removing();
        removed.push(pod);
    }
    // Host veths on the bridge that belong to no pod (a pod removed half-way, whose pin and
    // lease were gone): a veth's name is derived from its pod's, so every `pp*` port that is
    // not the veth of a kept pod, or of a pod another process runs, is a leftover.
    let host = Netlink::HOST;
    let mut in_use: std::collections::BTreeSet<String> = keep.clone();
    // Pods whose lock another process holds (`peapod run`): their sandboxes are not ours.
    in_use.extend(held_pods(cfg).into_iter().map(|(pod, _)| pod));
    removed.extend(remove_leftover_veths(&host, &cfg.bridge, &in_use).await?);
    let leased = blocking(leases).await?.into_values().collect();
    for ip in remove_stale_neighbours(&host, &cfg.bridge, &leased).await? {
        removed.push(format!("neighbour {ip}"));
    }
    Ok(removed)
}

/// Drops the leases of the bridge whose pod has no pinned namespace; returns how many.
fn drop_stale_leases(cfg: &Config, ipam: &Ipam) -> Result<usize, SandboxError> {
    let dropped = ipam.retain(|p, _| netns::is_pinned(&cfg.netns_path(p)))?;
    for (stale, ip) in &dropped {
        tracing::info!(pod = stale, %ip, "dropped stale lease");
    }
    Ok(dropped.len())
}

/// Deletes the host's permanent neighbour entry of pod address `ip` on bridge `bridge`.
async fn forget_neighbour(
    host: &impl Links,
    bridge: &str,
    ip: Ipv4Addr,
) -> Result<(), SandboxError> {
    if let Some(index) = host.link_index(bridge).await? {
        unless_unsupported(host.delete_neighbour(index, ip).await)?;
    }
    Ok(())
}

/// A neighbour verb's outcome, except that neighbour messages refused as unsupported (QEMU's
/// user-mode emulator before 10.0 translates none) are no failure: host and pods then find each
/// other by ARP, as before these entries, which is said once.
fn unless_unsupported(r: Result<(), NetError>) -> Result<(), SandboxError> {
    match r {
        Err(e) if e.is_unsupported() => {
            crate::once::once! {
                tracing::warn!("{e}: no permanent neighbour entries here; host and pods use ARP");
            };
            Ok(())
        }
        r => Ok(r?),
    }
}

/// Deletes the host's neighbour entries for pod addresses on bridge `bridge` (permanent, with
/// the hardware address [`net::mac_for`] gives the address) that no pod in `leased` holds;
/// returns their addresses. Entries of another form (an administrator's own) stay.
async fn remove_stale_neighbours(
    host: &impl Links,
    bridge: &str,
    leased: &std::collections::BTreeSet<Ipv4Addr>,
) -> Result<Vec<Ipv4Addr>, SandboxError> {
    let Some(index) = host.link_index(bridge).await? else {
        return Ok(Vec::new());
    };
    let entries = match host.permanent_neighbours(index).await {
        Err(e) if e.is_unsupported() => Vec::new(),
        r => r?,
    };
    let mut removed = Vec::new();
    for (ip, mac) in entries {
        if mac[..] == net::mac_for(ip)[..] && !leased.contains(&ip) {
            host.delete_neighbour(index, ip).await?;
            removed.push(ip);
        }
    }
    Ok(removed)
}

/// Deletes the pods' host veths on bridge `bridge` that are not the veth of a pod in `pods`;
/// returns their names. The bridge's other ports (an administrator's own) stay.
async fn remove_leftover_veths(
    host: &impl Links,
    bridge: &str,
    pods: &std::collections::BTreeSet<String>,
) -> Result<Vec<String>, SandboxError> {
    let Some(index) = host.link_index(bridge).await? else {
        return Ok(Vec::new());
    };
    let in_use: std::collections::BTreeSet<String> =
        pods.iter().map(|p| host_veth_name(bridge, p)).collect();
    let mut removed = Vec::new();
    for port in host.ports_of(index).await? {
        if is_host_veth(&port.name) && !in_use.contains(&port.name) {
            host.delete_link(&port.name).await?;
            removed.push(port.name);
        }
    }
    Ok(removed)
}

/// Whether some process holds pod `pod`'s lock, read without creating or taking anything: a
/// pod the daemon does not know that is held is one of `peapod run`'s.
pub fn held(cfg: &Config, pod: &str) -> bool {
    let path = cfg.run_dir.join("pods").join(format!("{pod}.lock"));
    let Ok(f) = File::open(&path) else {
        return false;
    };
    matches!(
        Flock::lock(f, FlockArg::LockSharedNonblock),
        Err((_, nix::Error::EWOULDBLOCK))
    )
}

/// The pods whose lock some process holds, by name, and when their sandbox was made (the lock
/// file's mtime): read without taking anything. Less the daemon's, they are `peapod run`'s.
pub fn held_pods(cfg: &Config) -> Vec<(String, std::time::SystemTime)> {
    let Ok(dir) = std::fs::read_dir(cfg.run_dir.join("pods")) else {
        return Vec::new();
    };
    let mut pods: Vec<(String, std::time::SystemTime)> = dir
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let pod = name.strip_suffix(".lock")?.to_string();
            let made = e.metadata().and_then(|m| m.modified()).ok()?;
            held(cfg, &pod).then_some((pod, made))
        })
        .collect();
    pods.sort();
    pods
}

/// Removes every part of pod `pod`'s sandbox that exists, collecting all errors.
async fn remove_parts(cfg: &Config, pod: &str) -> Result<(), SandboxError> {
    let mut errors = Vec::new();
    let ipam = Ipam::new(cfg);
    // The host's neighbour entry goes before the lease: once the IP is free, the entry is the
    // next pod's to set.
    let ip = {
        let (ipam, pod) = (ipam.clone(), pod.to_string());
        match blocking(move || Ok(ipam.leases()?.get(&pod).copied())).await {
            Ok(ip) => ip,
            Err(e) => {
                errors.push(e);
                None
            }
        }
    };
    if let Err(e) = Netlink::HOST
        .delete_link(&host_veth_name(&cfg.bridge, pod))
        .await
    {
        errors.push(e.into());
    }
    if let Some(ip) = ip
        && let Err(e) = forget_neighbour(&Netlink::HOST, &cfg.bridge, ip).await
    {
        errors.push(e);
    }
    if let Err(e) = netns::remove_pinned(&cfg.netns_path(pod)) {
        errors.push(e.into());
    }
    // The lease (and the firewall's rules for it), then the guest's tree, which may be large:
    // both on a blocking thread.
    let (c, p) = (cfg.clone(), pod.to_string());
    if let Err(e) = blocking(move || Ok(ipam.release(&p).map(drop)?)).await {
        errors.push(e);
    }
    let p = pod.to_string();
    match blocking(move || {
        volumes::remove(&c, &p).map_err(|source| SandboxError::Volumes { pod: p, source })
    })
    .await
    {
        Ok(()) => {}
        Err(e) => errors.push(e),
    }
    match errors.len() {
        0 => Ok(()),
        1 => Err(errors.pop().expect("one")),
        _ => Err(SandboxError::Many(errors)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn veth_names_fit_ifnamsiz_and_differ() {
        let a = host_veth_name("peapod0", &"x".repeat(63));
        assert!(a.len() <= 15, "{a}");
        assert_ne!(a, host_veth_name("peapod1", &"x".repeat(63)));
        assert_ne!(host_veth_name("b", "p1"), host_veth_name("b", "p2"));
        assert_eq!(host_veth_name("b", "p1"), host_veth_name("b", "p1"));
        assert!(is_host_veth(&a));
        for other in [
            "pppoe0",
            "pp",
            "ppABCDEF01234",
            "pp0123456789ab",
            "eth0",
            "xp0123456789a",
        ] {
            assert!(!is_host_veth(other), "{other}");
        }
    }

    /// The netlink verbs in memory: links by name with an index and a bridge; every call
    /// written down; one verb can be made to fail.
    #[derive(Default)]
    struct FakeLinks {
        links: std::sync::Mutex<Vec<(String, u32, Option<u32>)>>,
        /// Permanent neighbour entries: link index, address, hardware address.
        neighbours: std::sync::Mutex<Vec<(u32, Ipv4Addr, Vec<u8>)>>,
        calls: std::sync::Mutex<Vec<String>>,
        /// The verb that fails, and its errno.
        fail: Option<(&'static str, i32)>,
    }

    impl FakeLinks {
        /// Links named `links` (index 1, 2, ...), each on the bridge of that index, if any.
        fn with(links: &[(&str, Option<u32>)]) -> Self {
            let links = links
                .iter()
                .zip(1..)
                .map(|((n, c), i)| (n.to_string(), i, *c))
                .collect();
            FakeLinks {
                links: std::sync::Mutex::new(links),
                ..FakeLinks::default()
            }
        }

        fn call(&self, verb: &'static str, args: String) -> Result<(), NetError> {
            self.calls.lock().unwrap().push(format!("{verb} {args}"));
            match self.fail {
                Some((f, errno)) if f == verb => Err(NetError::other(
                    verb,
                    std::io::Error::from_raw_os_error(errno),
                )),
                _ => Ok(()),
            }
        }

        fn calls(&self) -> Vec<String> {
            self.calls.lock().unwrap().clone()
        }
    }

    impl Links for FakeLinks {
        async fn link_index(&self, name: &str) -> Result<Option<u32>, NetError> {
            self.call("link_index", name.into())?;
            let links = self.links.lock().unwrap();
            Ok(links.iter().find(|l| l.0 == name).map(|l| l.1))
        }
        async fn ensure_bridge(&self, name: &str, a: Ipv4Addr, p: u8) -> Result<u32, NetError> {
            self.call("ensure_bridge", format!("{name} {a}/{p}"))?;
            Ok(1)
        }
        async fn create_veth_into(
            &self,
            host: &str,
            controller: u32,
            peer: &str,
            _mac: [u8; 6],
            _netns: std::os::fd::BorrowedFd<'_>,
        ) -> Result<(), NetError> {
            self.call("create_veth_into", format!("{host} {controller} {peer}"))
        }
        async fn delete_link(&self, name: &str) -> Result<bool, NetError> {
            self.call("delete_link", name.into())?;
            let mut links = self.links.lock().unwrap();
            let before = links.len();
            links.retain(|l| l.0 != name);
            Ok(links.len() < before)
        }
        async fn ports_of(&self, controller: u32) -> Result<Vec<net::Port>, NetError> {
            self.call("ports_of", controller.to_string())?;
            let links = self.links.lock().unwrap();
            Ok(links
                .iter()
                .filter(|l| l.2 == Some(controller))
                .map(|l| net::Port { name: l.0.clone() })
                .collect())
        }
        async fn wait_passes_traffic(
            &self,
            name: &str,
            _: std::time::Duration,
        ) -> Result<(), NetError> {
            self.call("wait_passes_traffic", name.into())
        }
        async fn set_up(&self, index: u32, name: &str) -> Result<(), NetError> {
            self.call("set_up", format!("{index} {name}"))
        }
        async fn add_addr(&self, i: u32, a: Ipv4Addr, p: u8, name: &str) -> Result<(), NetError> {
            self.call("add_addr", format!("{i} {a}/{p} {name}"))
        }
        async fn add_default_route(&self, gateway: Ipv4Addr) -> Result<(), NetError> {
            self.call("add_default_route", gateway.to_string())
        }
        async fn set_neighbour(
            &self,
            index: u32,
            ip: Ipv4Addr,
            mac: [u8; 6],
            name: &str,
        ) -> Result<(), NetError> {
            let hex: Vec<String> = mac.iter().map(|b| format!("{b:02x}")).collect();
            self.call(
                "set_neighbour",
                format!("{index} {ip} {} {name}", hex.join(":")),
            )
        }
        async fn delete_neighbour(&self, index: u32, ip: Ipv4Addr) -> Result<(), NetError> {
            self.call("delete_neighbour", format!("{index} {ip}"))?;
            let mut n = self.neighbours.lock().unwrap();
            n.retain(|e| (e.0, e.1) != (index, ip));
            Ok(())
        }
        async fn permanent_neighbours(
            &self,
            index: u32,
        ) -> Result<Vec<(Ipv4Addr, Vec<u8>)>, NetError> {
            self.call("permanent_neighbours", index.to_string())?;
            let n = self.neighbours.lock().unwrap();
            Ok(n.iter()
                .filter(|e| e.0 == index)
                .map(|e| (e.1, e.2.clone()))
                .collect())
        }
    }

    const IP: Ipv4Addr = Ipv4Addr::new(10, 66, 0, 7);
    const GW: Ipv4Addr = Ipv4Addr::new(10, 66, 0, 1);

    #[tokio::test]
    async fn the_inside_of_a_pod_is_configured_in_order() {
        let nl = FakeLinks::with(&[("lo", None), (POD_IFACE, None)]);
        configure_inside(&nl, IP, 22, GW).await.unwrap();
        assert_eq!(
            nl.calls(),
            [
                "link_index lo",
                "set_up 1 lo",
                "link_index eth0",
                "add_addr 2 10.66.0.7/22 eth0",
                "set_up 2 eth0",
                "set_neighbour 2 10.66.0.1 02:50:0a:42:00:01 eth0",
                "add_default_route 10.66.0.1",
                "wait_passes_traffic eth0",
            ]
        );
    }

    #[tokio::test]
    async fn a_missing_peer_or_a_refused_verb_stops_the_inside_and_is_named() {
        let nl = FakeLinks::with(&[("lo", None)]);
        let e = configure_inside(&nl, IP, 22, GW).await.unwrap_err();
        assert_eq!(e.to_string(), "no veth peer (eth0) in the pod's namespace");
        assert!(!nl.calls().iter().any(|c| c.starts_with("add_addr")));

        let nl = FakeLinks {
            fail: Some(("add_default_route", libc::EPERM)),
            ..FakeLinks::with(&[("lo", None), (POD_IFACE, None)])
        };
        let e = configure_inside(&nl, IP, 22, GW).await.unwrap_err();
        assert!(e.to_string().starts_with("add_default_route: "), "{e}");
        assert!(
            !nl.calls()
                .iter()
                .any(|c| c.starts_with("wait_passes_traffic"))
        );

        // Neighbour entries refused as unsupported (an emulator): ARP instead, the rest goes on.
        let nl = FakeLinks {
            fail: Some(("set_neighbour", libc::EOPNOTSUPP)),
            ..FakeLinks::with(&[("lo", None), (POD_IFACE, None)])
        };
        configure_inside(&nl, IP, 22, GW).await.unwrap();
        assert_eq!(nl.calls().last().unwrap(), "wait_passes_traffic eth0");
        // Refused for another reason: a failure.
        let nl = FakeLinks {
            fail: Some(("set_neighbour", libc::EINVAL)),
            ..FakeLinks::with(&[("lo", None), (POD_IFACE, None)])
        };
        assert!(configure_inside(&nl, IP, 22, GW).await.is_err());
    }

    /// Only the pods' own veths on this bridge that no kept pod owns go: not a kept pod's, not
    /// an administrator's port on the bridge, not a veth on another bridge.
    #[tokio::test]
    async fn leftover_veths_are_the_pods_own_only() {
        let kept = host_veth_name("pb0", "kept");
        let leftover = host_veth_name("pb0", "gone");
        let elsewhere = host_veth_name("pb1", "other");
        let host = FakeLinks::with(&[
            ("pb0", None),
            (&kept, Some(1)),
            (&leftover, Some(1)),
            ("pppoe0", Some(1)),
            ("eth1", Some(1)),
            ("pb1", None),
            (&elsewhere, Some(6)),
        ]);
        let pods = std::collections::BTreeSet::from(["kept".to_string()]);
        let removed = remove_leftover_veths(&host, "pb0", &pods).await.unwrap();
        assert_eq!(removed, std::slice::from_ref(&leftover));
        let deleted: Vec<String> = host
            .calls()
            .into_iter()
            .filter(|c| c.starts_with("delete_link"))
            .collect();
        assert_eq!(deleted, [format!("delete_link {leftover}")]);

        // No bridge: nothing is listed or deleted.
        let host = FakeLinks::with(&[(&leftover, None)]);
        assert!(
            remove_leftover_veths(&host, "pb0", &pods)
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(host.calls(), ["link_index pb0"]);
    }

    /// The orphan scan drops the host's entries for pod addresses no lease holds, and only
    /// those of the pods' form: a leased pod's stays, as does an administrator's static entry.
    #[tokio::test]
    async fn stale_neighbours_are_the_pods_own_only() {
        let host = FakeLinks::with(&[("pb0", None), ("eth1", None)]);
        let (leased, stale, admin) = (
            Ipv4Addr::new(10, 66, 0, 2),
            Ipv4Addr::new(10, 66, 0, 3),
            Ipv4Addr::new(10, 66, 0, 9),
        );
        *host.neighbours.lock().unwrap() = vec![
            (1, leased, net::mac_for(leased).to_vec()),
            (1, stale, net::mac_for(stale).to_vec()),
            (1, admin, vec![0x52, 0x54, 0, 0x12, 0x34, 0x56]),
            (
                2,
                Ipv4Addr::new(10, 66, 0, 4),
                net::mac_for(Ipv4Addr::new(10, 66, 0, 4)).to_vec(),
            ),
        ];
        let removed = remove_stale_neighbours(&host, "pb0", &[leased].into())
            .await
            .unwrap();
        assert_eq!(removed, [stale]);
        let left: Vec<Ipv4Addr> = host
            .neighbours
            .lock()
            .unwrap()
            .iter()
            .map(|e| e.1)
            .collect();
        assert_eq!(left, [leased, admin, Ipv4Addr::new(10, 66, 0, 4)]);
    }
}
