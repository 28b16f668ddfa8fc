//! What a name means to a guest (the WASI `ip-name-lookup` interface, wired in
//! [`crate::name_lookup`]): no DNS server, no file in the pod.
//!
//! 1. An address literal is that address; `localhost` is the pod's own loopback.
//! 2. The name of a pod on the guest's bridge is that pod's current address, read from the
//!    bridge's lease file at every lookup, so a re-created pod is found at its new IP and pods of
//!    `peapod run` and of the daemon find each other. A pod's name hides a host of that name.
//! 3. Anything else is asked of the host's resolver (its `/etc/hosts`, `/etc/resolv.conf`, nss)
//!    **from the host's network namespace**: a loopback stub resolver such as systemd-resolved's
//!    127.0.0.53 answers there, and it would not from inside a pod.
//!
//! A name that none of them knows fails as an unknown host does (`name-unresolvable`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, ToSocketAddrs};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;

use tokio::sync::oneshot;

use crate::ipam::Ipam;

/// Why a lookup found nothing (the WIT `error-code`s a lookup may give).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Failure {
    /// Not a host name or an address.
    InvalidArgument,
    /// Nobody knows the name.
    Unresolvable,
    /// The resolver could not answer now (too many lookups at once, the host's resolver gone).
    Temporary,
}

pub(crate) type Answer = Result<Vec<IpAddr>, Failure>;

/// A lookup's answer, now or later.
pub(crate) enum Lookup {
    Ready(Answer),
    Pending(oneshot::Receiver<Answer>),
}

/// Lookups of one process's guests that go to the host's resolver, each answered by a thread
/// started from the thread that made the `HostResolver` (in the host's network namespace: a
/// new thread shares the namespaces of the thread that starts it, and a pod's threads are in
/// the pod's).
#[derive(Clone)]
pub(crate) struct HostResolver {
    requests: mpsc::Sender<(String, oneshot::Sender<Answer>)>,
    in_flight: Arc<AtomicUsize>,
}

/// Host lookups at once, for the whole process: more fail as temporary (a guest looping over
/// lookups of names that time out must not pile up threads).
pub(crate) const MAX_HOST_LOOKUPS: usize = 16;

impl HostResolver {
    /// Starts the resolver thread. Call it on a thread in the host's network namespace.
    pub(crate) fn new() -> std::io::Result<HostResolver> {
        Self::with(host_lookup)
    }

    /// [`HostResolver::new`] answering with `lookup` (tests answer without the host's resolver).
    fn with(lookup: fn(&str) -> Answer) -> std::io::Result<HostResolver> {
        let (requests, rx) = mpsc::channel::<(String, oneshot::Sender<Answer>)>();
        let in_flight = Arc::new(AtomicUsize::new(0));
        let counter = in_flight.clone();
        std::thread::Builder::new()
            .name("peapod-resolver".into())
            .spawn(move || {
                // Ends when the last HostResolver is dropped.
                for (name, reply) in rx {
                    let done = counter.clone();
                    let worker = std::thread::Builder::new()
                        .name("peapod-lookup".into())
                        .spawn(move || {
                            let answer = lookup(&name);
                            done.fetch_sub(1, Ordering::AcqRel);
                            let _ = reply.send(answer);
                        });
                    if worker.is_err() {
                        // The reply is dropped with the closure: the guest sees `Temporary`.
                        counter.fetch_sub(1, Ordering::AcqRel);
                    }
                }
            })?;
        Ok(HostResolver {
            requests,
            in_flight,
        })
    }

    fn lookup(&self, name: String) -> Lookup {
        let taken = self
            .in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < MAX_HOST_LOOKUPS).then_some(n + 1)
            });
        if taken.is_err() {
            return Lookup::Ready(Err(Failure::Temporary));
        }
        let (tx, rx) = oneshot::channel();
        if self.requests.send((name, tx)).is_err() {
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
            return Lookup::Ready(Err(Failure::Temporary));
        }
        Lookup::Pending(rx)
    }
}

fn host_lookup(name: &str) -> Answer {
    match (name, 0).to_socket_addrs() {
        Ok(addrs) => {
            let mut ips: Vec<IpAddr> = Vec::new();
            for a in addrs {
                let ip = a.ip().to_canonical();
                if !ips.contains(&ip) {
                    ips.push(ip);
                }
            }
            if ips.is_empty() {
                Err(Failure::Unresolvable)
            } else {
                Ok(ips)
            }
        }
        Err(_) => Err(Failure::Unresolvable),
    }
}

/// The names a guest of one pod can look up.
#[derive(Clone)]
pub(crate) struct Names {
    /// The leases of the pod's bridge.
    pub pods: Option<Ipam>,
    pub host: HostResolver,
}

impl Names {
    pub(crate) fn lookup(&self, name: &str) -> Lookup {
        // As wasmtime's own lookup: an address literal, or a domain (checked, IDNA to punycode,
        // lowercase).
        let domain = match url::Host::parse(name) {
            Ok(url::Host::Domain(d)) => d,
            Ok(url::Host::Ipv4(a)) => return Lookup::Ready(Ok(vec![a.into()])),
            Ok(url::Host::Ipv6(a)) => return Lookup::Ready(Ok(vec![a.into()])),
            Err(_) => {
                return Lookup::Ready(match name.parse::<Ipv6Addr>() {
                    Ok(a) => Ok(vec![a.into()]),
                    Err(_) => Err(Failure::InvalidArgument),
                });
            }
        };
        let bare = domain.strip_suffix('.').unwrap_or(&domain);
        if bare == "localhost" {
            return Lookup::Ready(Ok(vec![
                Ipv4Addr::LOCALHOST.into(),
                Ipv6Addr::LOCALHOST.into(),
            ]));
        }
        if let Some(ip) = self.pod(bare) {
            return Lookup::Ready(Ok(vec![ip.into()]));
        }
        self.host.lookup(domain)
    }

    fn pod(&self, name: &str) -> Option<Ipv4Addr> {
        // Pod names are DNS labels: a dotted name is never one.
        if name.contains('.') {
            return None;
        }
        // An unreadable lease file is no pod: the name goes to the host.
        self.pods.as_ref()?.leases().ok()?.get(name).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &std::path::Path) -> Names {
        let cfg = crate::config::Config {
            state_dir: dir.into(),
            egress: false,
            ..crate::config::Config::default()
        };
        Names {
            pods: Some(crate::ipam::tests::no_firewall(Ipam::new(&cfg))),
            // No traffic to the host's resolver from a test: it knows one name.
            host: HostResolver::with(|name| match name {
                "host.example" => Ok(vec!["192.0.2.1".parse().unwrap()]),
                _ => Err(Failure::Unresolvable),
            })
            .unwrap(),
        }
    }

    fn answer(l: Lookup) -> Answer {
        match l {
            Lookup::Ready(a) => a,
            Lookup::Pending(rx) => rx.blocking_recv().unwrap(),
        }
    }

    #[test]
    fn pods_then_literals_then_the_host() {
        let dir = tempfile::tempdir().unwrap();
        let n = names(dir.path());
        let ipam = n.pods.clone().unwrap();
        let ip = ipam.allocate("web").unwrap();

        assert_eq!(answer(n.lookup("web")), Ok(vec![ip.into()]));
        assert_eq!(answer(n.lookup("WEB.")), Ok(vec![ip.into()]));
        assert_eq!(
            answer(n.lookup("10.1.2.3")),
            Ok(vec!["10.1.2.3".parse().unwrap()])
        );
        assert_eq!(
            answer(n.lookup("::1")),
            Ok(vec![Ipv6Addr::LOCALHOST.into()])
        );
        assert_eq!(
            answer(n.lookup("[::1]")),
            Ok(vec![Ipv6Addr::LOCALHOST.into()])
        );
        assert_eq!(
            answer(n.lookup("localhost")),
            Ok(vec![Ipv4Addr::LOCALHOST.into(), Ipv6Addr::LOCALHOST.into()])
        );
        assert_eq!(answer(n.lookup("a b")), Err(Failure::InvalidArgument));
        assert_eq!(
            answer(n.lookup("host.example")),
            Ok(vec!["192.0.2.1".parse().unwrap()])
        );
        // A released pod is gone at once (asked of the host, which does not know it).
        ipam.release("web").unwrap();
        assert_eq!(answer(n.lookup("web")), Err(Failure::Unresolvable));
        // A re-created pod is found at its new address.
        let ip2 = ipam.allocate("web").unwrap();
        assert_ne!(ip, ip2);
        assert_eq!(answer(n.lookup("web")), Ok(vec![ip2.into()]));
    }

    #[test]
    fn host_lookups_at_once_are_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let n = names(dir.path());
        // Hold every slot: lookups that wait on nothing finish at once, so count by hand.
        n.host.in_flight.store(MAX_HOST_LOOKUPS, Ordering::Release);
        assert_eq!(answer(n.lookup("host.example")), Err(Failure::Temporary));
        n.host.in_flight.store(0, Ordering::Release);
        assert_eq!(answer(n.lookup("host.example")).map(|a| a.len()), Ok(1));
        assert_eq!(n.host.in_flight.load(Ordering::Acquire), 0);
    }
}
