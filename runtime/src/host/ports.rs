//! A pod's published ports against the host, before anything is made: a host port that another
//! pod publishes (on any bridge of this state dir) or that a host process holds is a problem of
//! the spec's `host_port` field, naming the holder where it is known. Publishing itself is
//! [`crate::host::firewall`]'s.
//!
//! A published port is the pod's for the sandbox's life: the daemon holds it on the host
//! ([`hold`]: a socket bound to the host address and port, never listening), so a host service
//! started later fails to bind it with `EADDRINUSE` instead of silently losing its traffic, local
//! clients included, to the pod's DNAT rules.

use std::net::{SocketAddr, TcpListener, UdpSocket};

use crate::caller::Caller;
use crate::config::Config;
use crate::host::ipam::Ipam;
use crate::spec::{PodSpec, Problem, Protocol, Published};

/// Every published port of `spec` that cannot be had, as a problem. A host port below the
/// host's `ip_unprivileged_port_start` (1024) is root's to publish, as it is root's to bind.
pub(crate) fn check(spec: &PodSpec, cfg: &Config, caller: Caller) -> Vec<Problem> {
    let ipam = Ipam::new(cfg);
    let unprivileged = std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start")
        .ok()
        .and_then(|s| s.trim().parse::<u16>().ok())
        .unwrap_or(1024);
    let own = ipam.published_by(&spec.name);
    let mut problems = Vec::new();
    for (c, p, published) in spec.published() {
        let message = if !caller.is_root() && published.host_port < unprivileged {
            Some(format!(
                "only root may publish a host port below {unprivileged} \
                 (net.ipv4.ip_unprivileged_port_start), as only root may bind one"
            ))
        } else if own.iter().any(|o| o.clashes(&published)) {
            // Held by this pod's own sandbox (a re-create): its to hand on.
            None
        } else if let Some((holder, _)) = ipam
            .port_holders(&spec.name, &[published])
            .into_iter()
            .next()
        {
            Some(format!("{published} is published by pod {holder} already"))
        } else {
            host_holds(&published, caller)
        };
        if let Some(m) = message {
            problems.push(spec.port_problem(c, p, m));
        }
    }
    problems
}

/// Holds each of `ports` on the host: a socket bound to its host address and port, not
/// listening (connections to it are refused; the DNAT rules take the port's traffic before it
/// gets there) and without `SO_REUSEADDR`, so no other bind of the port succeeds while it is
/// held. Dropped with the sandbox.
pub(crate) fn hold(ports: &[Published]) -> Result<Vec<socket2::Socket>, String> {
    use socket2::{Domain, Protocol as P, SockAddr, Socket, Type};
    ports
        .iter()
        .map(|p| {
            let (ty, proto) = match p.protocol {
                Protocol::Tcp => (Type::STREAM, P::TCP),
                Protocol::Udp => (Type::DGRAM, P::UDP),
            };
            let s = Socket::new(Domain::IPV4, ty, Some(proto))
                .map_err(|e| format!("{p}: cannot make a socket to hold it: {e}"))?;
            s.bind(&SockAddr::from(SocketAddr::from((p.host_ip, p.host_port))))
                .map_err(|e| match e.kind() {
                    std::io::ErrorKind::AddrInUse => {
                        format!("{p} is in use on the host (bound since the pod was checked)")
                    }
                    _ => format!("{p}: cannot hold it on the host: {e}"),
                })?;
            Ok(s)
        })
        .collect()
}

/// Why the host cannot give `p` (a process holds it, or `host_ip` is not the host's), if so.
/// The holder's PID and command are named to root only: another user learns only that the port
/// is in use (what a `bind` of theirs would tell them).
fn host_holds(p: &Published, caller: Caller) -> Option<String> {
    let at = SocketAddr::from((p.host_ip, p.host_port));
    let bound = match p.protocol {
        Protocol::Tcp => TcpListener::bind(at).map(drop),
        Protocol::Udp => UdpSocket::bind(at).map(drop),
    };
    match bound {
        Ok(()) => None,
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            Some(match caller.is_root().then(|| holder(p)).flatten() {
                Some((pid, name)) => format!("{p} is in use on the host by process {pid} ({name})"),
                None => format!("{p} is in use on the host"),
            })
        }
        Err(e) if e.kind() == std::io::ErrorKind::AddrNotAvailable => Some(format!(
            "{} is not an address of this host (host_ip: one of the host's, or 0.0.0.0 for all)",
            p.host_ip
        )),
        // Anything else (permissions) is for the firewall to meet, not a spec problem.
        Err(_) => None,
    }
}

/// The process holding `p` on the host: the socket bound to its port in `/proc/net/*`, then
/// the process with that socket open.
fn holder(p: &Published) -> Option<(u32, String)> {
    let (tables, state) = match p.protocol {
        Protocol::Tcp => (["/proc/net/tcp", "/proc/net/tcp6"], "0A"), // LISTEN
        Protocol::Udp => (["/proc/net/udp", "/proc/net/udp6"], "07"), // UNCONN (bound)
    };
    let inode = tables.iter().find_map(|t| {
        let text = std::fs::read_to_string(t).ok()?;
        text.lines().skip(1).find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let port = u16::from_str_radix(f.get(1)?.rsplit(':').next()?, 16).ok()?;
            (port == p.host_port && *f.get(3)? == state)
                .then(|| f.get(9).map(|s| s.to_string()))
                .flatten()
        })
    })?;
    let link = format!("socket:[{inode}]");
    for proc in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = proc.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(proc.path().join("fd")) else {
            continue;
        };
        if fds
            .flatten()
            .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|l| l.as_os_str() == link.as_str()))
        {
            let comm = std::fs::read_to_string(proc.path().join("comm")).unwrap_or_default();
            return Some((pid, comm.trim().to_string()));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn a_port_held_by_this_process_names_it() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let p = Published {
            protocol: Protocol::Tcp,
            host_ip: Ipv4Addr::LOCALHOST,
            host_port: port,
            container_port: 80,
        };
        let root = Caller {
            uid: 0,
            gid: 0,
            pid: 0,
        };
        let m = host_holds(&p, root).expect("held");
        assert!(
            m.contains(&format!("by process {}", std::process::id())),
            "{m}"
        );
        // Another user learns that it is in use, not by what (round 2, finding 8).
        let user = Caller { uid: 1000, ..root };
        let m = host_holds(&p, user).expect("held");
        assert_eq!(m, format!("{p} is in use on the host"));
        drop(l);
        assert_eq!(host_holds(&p, root), None);
        let elsewhere = Published {
            host_ip: "192.0.2.77".parse().unwrap(),
            ..p
        };
        assert!(
            host_holds(&elsewhere, root).is_some_and(|m| m.contains("not an address of this host")),
            "{:?}",
            host_holds(&elsewhere, root)
        );
    }
}
