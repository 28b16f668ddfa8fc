//! IP address management: one IPv4 lease per pod, from the bridge's subnet.
//!
//! Like CNI's host-local plugin, addresses are handed out round-robin starting after the last one
//! handed out, so a pod re-created right away gets a *different* address (nothing that cached the
//! old one reaches the new pod by mistake). Leases live in `<state_dir>/ipam/<bridge>.json`,
//! replaced whole (temp file, rename) under an exclusive `flock`, so several `peapod` processes
//! can share one bridge. A lease is written before its address is configured on any interface.
//!
//! The file survives a crash of the process that writes it, not a power loss
//! ([`crate::durable::replace`], no flush): a lease is an address held by a pinned namespace, and
//! a power loss takes every namespace and pin with it, so after a reboot every lease is stale
//! anyway (dropped at the daemon's start, or when one stands in the way). Flushing cost 1-5 ms
//! a pod start. A file written before this boot that does not parse (torn by the power loss) is
//! therefore read as empty, with a warning; one written since is an error, as it may describe
//! living pods.
//!
//! The file also keeps each pod's published host ports and what the bridge's firewall chains were
//! made to hold: the chains ([`crate::host::firewall`]) are made from this file, under its lock, when
//! what they should hold changes.

use std::collections::BTreeMap;
use std::fs::File;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use ipnet::Ipv4Net;
use nix::fcntl::Flock;
use serde::{Deserialize, Serialize};

use crate::host::firewall::Applied;
use crate::spec::Published;

use crate::config::Config;

#[derive(Debug, thiserror::Error)]
pub enum IpamError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: corrupt lease file: {message}", path.display())]
    Corrupt { path: PathBuf, message: String },
    #[error(
        "{}: leases were made for subnet {found}, but the config says {wanted}; delete the pods on bridge {bridge} first",
        path.display()
    )]
    SubnetChanged {
        path: PathBuf,
        bridge: String,
        found: Ipv4Net,
        wanted: Ipv4Net,
    },
    #[error(
        "no free address left in {subnet} ({leased} leased): delete a pod or use a larger subnet"
    )]
    Exhausted { subnet: Ipv4Net, leased: usize },
    #[error("pod {pod} already holds lease {ip}")]
    AlreadyLeased { pod: String, ip: Ipv4Addr },
    #[error("host port {port} is published by pod {holder} already")]
    PortTaken { port: Published, holder: String },
}

#[derive(Debug, Serialize, Deserialize, Default, Clone, PartialEq)]
struct LeaseFile {
    subnet: Option<Ipv4Net>,
    /// The address handed out last; the next search starts after it.
    last: Option<Ipv4Addr>,
    /// pod name -> address
    leases: BTreeMap<String, Ipv4Addr>,
    /// pod name -> the host ports it publishes (kept beside its lease, so that every process on
    /// the bridge can make the bridge's firewall chains from this file alone).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    ports: BTreeMap<String, Vec<Published>>,
    /// What the bridge's firewall chains were last made to hold.
    #[serde(default, skip_serializing_if = "Applied::is_empty")]
    firewall: Applied,
}

/// The lease store of one bridge.
#[derive(Debug, Clone)]
pub struct Ipam {
    dir: PathBuf,
    bridge: String,
    subnet: Ipv4Net,
    gateway: Ipv4Addr,
    egress: bool,
    /// Programs the bridge's firewall chains on changes (off in unit tests: the host's
    /// firewall is not theirs).
    firewall: bool,
}

impl Ipam {
    pub fn new(cfg: &Config) -> Self {
        Ipam {
            dir: cfg.state_dir.join("ipam"),
            bridge: cfg.bridge.clone(),
            subnet: cfg.subnet,
            gateway: cfg.gateway(),
            egress: cfg.egress,
            firewall: true,
        }
    }

    fn file(&self) -> PathBuf {
        self.dir.join(format!("{}.json", self.bridge))
    }

    /// Leases a new address for `pod` and persists it before returning.
    pub fn allocate(&self, pod: &str) -> Result<Ipv4Addr, IpamError> {
        self.allocate_publishing(pod, &[])
    }

    /// [`Ipam::allocate`], for a pod that publishes `ports` on the host (refused if another
    /// pod publishes one of them already).
    pub fn allocate_publishing(
        &self,
        pod: &str,
        ports: &[Published],
    ) -> Result<Ipv4Addr, IpamError> {
        self.update(|f| {
            if let Some(ip) = f.leases.get(pod) {
                return Err(IpamError::AlreadyLeased {
                    pod: pod.into(),
                    ip: *ip,
                });
            }
            self.publish(f, pod, ports)?;
            let hosts: Vec<Ipv4Addr> = self.subnet.hosts().collect();
            let start = f
                .last
                .and_then(|last| hosts.iter().position(|h| *h == last))
                .map_or(0, |i| i + 1);
            let taken: std::collections::HashSet<_> = f.leases.values().copied().collect();
            let ip = (0..hosts.len())
                .map(|k| hosts[(start + k) % hosts.len()])
                .find(|ip| *ip != self.gateway && !taken.contains(ip))
                .ok_or(IpamError::Exhausted {
                    subnet: self.subnet,
                    leased: taken.len(),
                })?;
            f.last = Some(ip);
            f.leases.insert(pod.into(), ip);
            Ok(ip)
        })
    }

    /// Drops `pod`'s lease (and its published ports), returning the address it held.
    pub fn release(&self, pod: &str) -> Result<Option<Ipv4Addr>, IpamError> {
        self.update(|f| {
            f.ports.remove(pod);
            Ok(f.leases.remove(pod))
        })
    }

    /// Sets the ports `pod` (which holds a lease) publishes: a recovered pod's, whose spec may
    /// have been written before the ports were kept here.
    pub fn set_ports(&self, pod: &str, ports: &[Published]) -> Result<(), IpamError> {
        self.update(|f| self.publish(f, pod, ports))
    }

    /// Refuses `ports` if another pod publishes one of them ([`Ipam::publishers`]; `f` is this
    /// bridge's file as it is under the lock), else records them as `pod`'s.
    fn publish(&self, f: &mut LeaseFile, pod: &str, ports: &[Published]) -> Result<(), IpamError> {
        if ports.is_empty() {
            f.ports.remove(pod);
            return Ok(());
        }
        let publishers = self.publishers(f);
        for port in ports {
            if let Some((holder, _)) = clash(&publishers, pod, port) {
                return Err(IpamError::PortTaken {
                    port: *port,
                    holder: holder.clone(),
                });
            }
        }
        f.ports.insert(pod.into(), ports.to_vec());
        Ok(())
    }

    /// Every published port of every bridge of this state dir, with the pod that publishes it
    /// (`pod (bridge B)` for another bridge's); `f` is this bridge's file.
    fn publishers(&self, f: &LeaseFile) -> Vec<(String, Published)> {
        let mut out: Vec<(String, Published)> = f
            .ports
            .iter()
            .flat_map(|(pod, list)| list.iter().map(move |p| (pod.clone(), *p)))
            .collect();
        let Ok(dir) = std::fs::read_dir(&self.dir) else {
            return out;
        };
        for e in dir.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(bridge) = name.strip_suffix(".json") else {
                continue;
            };
            if bridge == self.bridge || name.starts_with('.') {
                continue;
            }
            let Ok(other) = std::fs::read(e.path())
                .map_err(|_| ())
                .and_then(|b| serde_json::from_slice::<LeaseFile>(&b).map_err(|_| ()))
            else {
                continue;
            };
            for (pod, list) in other.ports {
                out.extend(
                    list.into_iter()
                        .map(|p| (format!("{pod} (bridge {bridge})"), p)),
                );
            }
        }
        out
    }

    /// Pods that publish a clash with `ports`, other than `pod`, on every bridge of this state
    /// dir: (holder, the port it publishes). No lock: a check before anything is made.
    pub fn port_holders(&self, pod: &str, ports: &[Published]) -> Vec<(String, Published)> {
        let publishers = self.publishers(&self.read().unwrap_or_default());
        ports
            .iter()
            .filter_map(|port| clash(&publishers, pod, port).cloned())
            .collect()
    }

    /// The ports pod `pod` publishes on this bridge (its sandbox holds them).
    pub(crate) fn published_by(&self, pod: &str) -> Vec<Published> {
        self.read()
            .ok()
            .and_then(|mut f| f.ports.remove(pod))
            .unwrap_or_default()
    }

    /// Removes the temp files of writers killed half-way through a write.
    pub(crate) fn sweep(&self) {
        crate::durable::sweep(&self.dir);
    }

    /// The current leases, pod name -> address.
    pub fn leases(&self) -> Result<BTreeMap<String, Ipv4Addr>, IpamError> {
        // No lock: the file is only ever replaced whole (durable::replace renames a complete
        // file over it), so a reader sees one version or the next; and reading works where the
        // state dir cannot be written.
        Ok(self.read()?.leases)
    }

    /// Drops every lease for which `keep` is false; returns what was dropped.
    pub fn retain(
        &self,
        mut keep: impl FnMut(&str, Ipv4Addr) -> bool,
    ) -> Result<Vec<(String, Ipv4Addr)>, IpamError> {
        self.update(|f| {
            let mut dropped = Vec::new();
            f.leases.retain(|pod, ip| {
                let k = keep(pod, *ip);
                if !k {
                    dropped.push((pod.clone(), *ip));
                }
                k
            });
            let leases = &f.leases;
            f.ports.retain(|pod, _| leases.contains_key(pod));
            Ok(dropped)
        })
    }

    fn update<R>(
        &self,
        change: impl FnOnce(&mut LeaseFile) -> Result<R, IpamError>,
    ) -> Result<R, IpamError> {
        let _lock = self.lock()?;
        let mut f = self.read()?;
        let before = f.clone();
        let r = change(&mut f)?;
        if f != before {
            f.subnet = Some(self.subnet);
            self.firewall(&mut f, false);
            self.write(&f)?;
        }
        Ok(r)
    }

    /// Makes the bridge's firewall chains what its leases say (after a daemon start: the
    /// firewall is derived state, and a reboot or a `nft flush ruleset` loses it).
    pub fn sync_firewall(&self) -> Result<(), IpamError> {
        let _lock = self.lock()?;
        let mut f = self.read()?;
        let before = f.clone();
        self.firewall(&mut f, true);
        if f != before {
            f.subnet = Some(self.subnet);
            self.write(&f)?;
        }
        Ok(())
    }

    /// The bridge's firewall chains, from the leases (held under the lease lock, so every
    /// process on the bridge agrees), made when they would change (or always, `force`); what
    /// was made is kept in `f`. A failure is said, once as a warning, and changes nothing else:
    /// the pods run, reaching the host only.
    fn firewall(&self, f: &mut LeaseFile, force: bool) {
        if !self.firewall {
            return;
        }
        let rules = crate::host::firewall::Rules {
            bridge: &self.bridge,
            subnet: self.subnet,
            egress: self.egress && !f.leases.is_empty(),
            published: f
                .ports
                .iter()
                .filter_map(|(pod, ports)| Some((*f.leases.get(pod)?, ports.as_slice())))
                .collect(),
        };
        let applied = rules.applied();
        if !force && applied == f.firewall {
            return;
        }
        let r = crate::host::firewall::sync(&rules);
        match r {
            Ok(()) => f.firewall = applied,
            // Nothing asked of the firewall: chains of an earlier setting are removed if the
            // firewall is there at all; where it is not (no nf_tables, qemu-user), no news.
            Err(e) if !rules.needed() => {
                tracing::debug!(bridge = self.bridge, "firewall: {e}")
            }
            Err(e) => {
                let said = crate::once::once! {
                    tracing::warn!(
                        bridge = self.bridge,
                        "firewall: cannot set peapod's nf_tables rules ({e}): pods reach the host and each other only, and publish no ports"
                    );
                };
                if !said {
                    tracing::debug!(bridge = self.bridge, "firewall: {e}");
                }
            }
        }
    }

    fn io(&self, path: &Path) -> impl FnOnce(std::io::Error) -> IpamError {
        let path = path.to_path_buf();
        move |source| IpamError::Io { path, source }
    }

    fn lock(&self) -> Result<Flock<File>, IpamError> {
        if !self.dir.is_dir() {
            // With its parents (the state dir of a first `peapod run`): root's alone.
            crate::durable::private_dir(&self.dir).map_err(self.io(&self.dir))?;
        }
        let path = self.dir.join(format!("{}.lock", self.bridge));
        // A read-only state dir: an update that changes nothing needs no write; one that does
        // fails at its write, saying so.
        let lock = crate::durable::lock(&path, true).map_err(self.io(&path))?;
        Ok(lock.expect("a waiting lock is taken"))
    }

    fn read(&self) -> Result<LeaseFile, IpamError> {
        let path = self.file();
        let f: LeaseFile = match std::fs::read(&path) {
            Ok(bytes) => match serde_json::from_slice(&bytes) {
                Ok(f) => f,
                Err(e) if crate::durable::written_before_boot(&path) => {
                    tracing::warn!(
                        "{}: corrupt lease file ({e}) from before this boot, when no pod of it \
                         can still live: starting from no leases",
                        path.display()
                    );
                    LeaseFile::default()
                }
                Err(e) => {
                    return Err(IpamError::Corrupt {
                        path,
                        message: e.to_string(),
                    });
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => LeaseFile::default(),
            Err(e) => return Err(self.io(&path)(e)),
        };
        match f.subnet {
            // A wider subnet with the same gateway (an upgrade from the old /24 default to the
            // /22): every lease stays valid, and is kept.
            Some(found)
                if found != self.subnet
                    && self.subnet.contains(&found)
                    && found.hosts().next() == Some(self.gateway) =>
            {
                Ok(f)
            }
            Some(found) if found != self.subnet && !f.leases.is_empty() => {
                Err(IpamError::SubnetChanged {
                    path,
                    bridge: self.bridge.clone(),
                    found,
                    wanted: self.subnet,
                })
            }
            Some(found) if found != self.subnet => Ok(LeaseFile::default()),
            _ => Ok(f),
        }
    }

    fn write(&self, f: &LeaseFile) -> Result<(), IpamError> {
        let path = self.file();
        let mut bytes = serde_json::to_vec_pretty(f).expect("lease file serializes");
        bytes.push(b'\n');
        crate::durable::replace(&path, &bytes).map_err(self.io(&path))
    }
}

/// The first of `publishers` other than `pod` whose port clashes with `port`.
fn clash<'a>(
    publishers: &'a [(String, Published)],
    pod: &str,
    port: &Published,
) -> Option<&'a (String, Published)> {
    publishers
        .iter()
        .find(|(holder, p)| holder != pod && p.clashes(port))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn ipam(dir: &Path, subnet: &str) -> Ipam {
        no_firewall(Ipam::new(&Config {
            state_dir: dir.into(),
            subnet: subnet.parse().unwrap(),
            bridge: "brt".into(),
            egress: false,
            ..Config::default()
        }))
    }

    /// The host's firewall is not the unit tests'.
    pub(crate) fn no_firewall(i: Ipam) -> Ipam {
        Ipam {
            firewall: false,
            ..i
        }
    }

    #[test]
    fn round_robin_never_reuses_the_address_just_released() {
        let d = tempfile::tempdir().unwrap();
        let i = ipam(d.path(), "10.1.0.0/29"); // hosts .1-.6, gateway .1
        let a = i.allocate("a").unwrap();
        assert_eq!(a, Ipv4Addr::new(10, 1, 0, 2));
        i.release("a").unwrap();
        let a2 = i.allocate("a").unwrap();
        assert_eq!(
            a2,
            Ipv4Addr::new(10, 1, 0, 3),
            "re-created pod gets a new address"
        );
        let b = i.allocate("b").unwrap();
        assert_eq!(b, Ipv4Addr::new(10, 1, 0, 4));
        // A fresh handle reads the persisted state.
        let again = ipam(d.path(), "10.1.0.0/29");
        assert_eq!(again.leases().unwrap().len(), 2);
        assert!(matches!(
            again.allocate("b"),
            Err(IpamError::AlreadyLeased { .. })
        ));
        for p in ["c", "d", "e"] {
            again.allocate(p).unwrap();
        }
        // .5 .6, then wraps to .2 (free since "a" moved to .3), skipping the gateway .1
        assert_eq!(again.leases().unwrap()["e"], Ipv4Addr::new(10, 1, 0, 2));
        let err = again.allocate("f").unwrap_err();
        assert!(
            matches!(err, IpamError::Exhausted { leased: 5, .. }),
            "{err}"
        );
    }

    #[test]
    fn retain_and_subnet_change() {
        let d = tempfile::tempdir().unwrap();
        let i = ipam(d.path(), "10.1.0.0/24");
        i.allocate("keep").unwrap();
        i.allocate("drop").unwrap();
        let dropped = i.retain(|pod, _| pod == "keep").unwrap();
        assert_eq!(dropped, [("drop".to_string(), Ipv4Addr::new(10, 1, 0, 3))]);
        let other = ipam(d.path(), "10.2.0.0/24");
        assert!(matches!(
            other.allocate("x"),
            Err(IpamError::SubnetChanged { .. })
        ));
        i.release("keep").unwrap();
        assert_eq!(other.allocate("x").unwrap(), Ipv4Addr::new(10, 2, 0, 2));
    }

    #[test]
    fn a_wider_subnet_with_the_same_gateway_keeps_the_leases() {
        let d = tempfile::tempdir().unwrap();
        let narrow = ipam(d.path(), "10.1.0.0/24");
        let a = narrow.allocate("a").unwrap();
        let wide = ipam(d.path(), "10.1.0.0/22");
        assert_eq!(wide.leases().unwrap()["a"], a);
        let b = wide.allocate("b").unwrap();
        assert_ne!(a, b);
        // The other way (and a wider subnet with another gateway) would strand leases.
        assert!(matches!(
            narrow.allocate("c"),
            Err(IpamError::SubnetChanged { .. })
        ));
        let shifted = ipam(d.path(), "10.0.0.0/14");
        assert!(matches!(
            shifted.allocate("c"),
            Err(IpamError::SubnetChanged { .. })
        ));
    }

    #[test]
    fn a_host_port_is_one_pods_on_every_bridge_until_it_goes() {
        use crate::spec::Protocol;
        let d = tempfile::tempdir().unwrap();
        let i = ipam(d.path(), "10.1.0.0/29");
        let port = |host_ip: &str, host_port| Published {
            protocol: Protocol::Tcp,
            host_ip: host_ip.parse().unwrap(),
            host_port,
            container_port: 80,
        };
        i.allocate_publishing("web", &[port("0.0.0.0", 8080)])
            .unwrap();
        // Any address clashes with all of them; UDP is another port.
        let err = i
            .allocate_publishing("api", &[port("192.0.2.1", 8080)])
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("host port 8080/TCP on 192.0.2.1 is published by pod web already"),
            "{err}"
        );
        assert!(!i.leases().unwrap().contains_key("api"), "nothing taken");
        let udp = Published {
            protocol: Protocol::Udp,
            ..port("0.0.0.0", 8080)
        };
        i.allocate_publishing("dns", &[udp]).unwrap();
        // Another bridge of the same state dir sees it too, and names the bridge.
        let other = no_firewall(Ipam::new(&Config {
            state_dir: d.path().into(),
            subnet: "10.2.0.0/29".parse().unwrap(),
            bridge: "brother".into(),
            egress: false,
            ..Config::default()
        }));
        let holders = other.port_holders("x", &[port("0.0.0.0", 8080)]);
        assert_eq!(
            holders,
            vec![("web (bridge brt)".to_string(), port("0.0.0.0", 8080))]
        );
        // A pod's own ports are no clash (a re-create); a stale lease's ports go with it.
        assert!(i.port_holders("web", &[port("0.0.0.0", 8080)]).is_empty());
        i.retain(|p, _| p != "web").unwrap();
        assert!(other.port_holders("x", &[port("0.0.0.0", 8080)]).is_empty());
        i.allocate_publishing("api", &[port("192.0.2.1", 8080)])
            .unwrap();
        i.release("api").unwrap();
        assert!(i.port_holders("x", &[port("0.0.0.0", 8080)]).is_empty());
    }

    #[test]
    fn corrupt_file_is_an_error_not_a_reset() {
        let d = tempfile::tempdir().unwrap();
        let i = ipam(d.path(), "10.1.0.0/24");
        std::fs::create_dir_all(d.path().join("ipam")).unwrap();
        std::fs::write(d.path().join("ipam/brt.json"), "{not json").unwrap();
        assert!(matches!(i.allocate("a"), Err(IpamError::Corrupt { .. })));
        assert!(matches!(i.leases(), Err(IpamError::Corrupt { .. })));
    }

    #[test]
    fn a_corrupt_file_from_before_this_boot_is_read_as_no_leases() {
        // A power loss can tear the file (it is not flushed), and takes every pod's namespace
        // with it: nothing the file said can still hold an address.
        let d = tempfile::tempdir().unwrap();
        let i = ipam(d.path(), "10.1.0.0/24");
        let file = d.path().join("ipam/brt.json");
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(&file, "{\"subnet\": \"10.1.0.0/24\", \"lea").unwrap();
        File::options()
            .write(true)
            .open(&file)
            .unwrap()
            .set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(86_400))
            .unwrap();
        assert!(i.leases().unwrap().is_empty());
        let ip = i.allocate("a").unwrap();
        assert_eq!(i.leases().unwrap().get("a"), Some(&ip));
        assert!(std::fs::read_to_string(&file).unwrap().contains("\"a\""));
    }
}
