//! What a name means to a guest (the WASI `ip-name-lookup` interface, wired in
//! [`crate::wasm::name_lookup`]): no DNS server, no file in the pod.
//!
//! 1. An address literal is that address; `localhost` is the pod's own loopback.
//! 2. `NAME.pod` is pod `NAME` of the guest's bridge, always (pods have a domain of their own,
//!    as a cluster's services do: it never hides a host, and no host hides it).
//! 3. A bare name the host's `/etc/hosts` lists is the host's: a pod cannot hide the board's
//!    own names from the other pods by taking one as its name.
//! 4. Any other bare name of a pod on the guest's bridge is that pod's current address, read
//!    from the bridge's lease file at every lookup, so a re-created pod is found at its new IP
//!    and pods of `peapod run` and of the daemon find each other.
//! 5. Anything else is asked of the host's resolver (its `/etc/hosts`, `/etc/resolv.conf`, nss)
//!    **from the host's network namespace**: a loopback stub resolver such as systemd-resolved's
//!    127.0.0.53 answers there, and it would not from inside a pod.
//!
//! A name that none of them knows fails as an unknown host does (`name-unresolvable`).
//!
//! The host's resolver is shared fairly: each pod has its own share of lookups at once
//! ([`POD_HOST_LOOKUPS`], all its containers together) within the process's
//! [`MAX_HOST_LOOKUPS`], and its own cache of answers and failures ([`Lookups`]), so a pod that
//! looks up unknown names in a loop holds its own share only, and mostly its own cache.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

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
    requests: mpsc::Sender<Request>,
    in_flight: Arc<AtomicUsize>,
}

/// One lookup for the resolver thread: the name, the pod's share, where to answer.
type Request = (String, Lookups, oneshot::Sender<Answer>);

/// Host lookups at once, for the whole process: more fail as temporary (a guest looping over
/// lookups of names that time out must not pile up threads).
pub(crate) const MAX_HOST_LOOKUPS: usize = 64;
/// Host lookups at once for one pod's containers together.
pub(crate) const POD_HOST_LOOKUPS: usize = 4;
/// Answers a pod's cache keeps (the oldest goes first).
const CACHE_ENTRIES: usize = 64;
/// How long an answer is kept...
const FOUND_TTL: Duration = Duration::from_secs(30);
/// ...and a failure (`name-unresolvable`): a guest asking for an unknown name in a loop asks
/// the host once per this.
const FAILED_TTL: Duration = Duration::from_secs(5);

/// One pod's share of the host's resolver: its lookups in flight and its cache. Cheap to clone;
/// every container of the pod holds the same one.
#[derive(Clone, Default)]
pub struct Lookups(Arc<Share>);

impl std::fmt::Debug for Lookups {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.0.in_flight.load(Ordering::Relaxed);
        f.debug_struct("Lookups").field("in_flight", &n).finish()
    }
}

#[derive(Default)]
struct Share {
    in_flight: AtomicUsize,
    cache: Mutex<HashMap<String, (Instant, Answer)>>,
}

impl Lookups {
    fn cached(&self, name: &str) -> Option<Answer> {
        let cache = self.0.cache.lock().unwrap_or_else(|e| e.into_inner());
        let (at, answer) = cache.get(name)?;
        let ttl = if answer.is_ok() {
            FOUND_TTL
        } else {
            FAILED_TTL
        };
        (at.elapsed() < ttl).then(|| answer.clone())
    }

    fn keep(&self, name: &str, answer: &Answer) {
        if matches!(answer, Err(Failure::Temporary)) {
            return;
        }
        let mut cache = self.0.cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= CACHE_ENTRIES && !cache.contains_key(name) {
            cache.retain(|_, (at, _)| at.elapsed() < FOUND_TTL);
            if cache.len() >= CACHE_ENTRIES {
                let oldest = cache
                    .iter()
                    .min_by_key(|(_, (at, _))| *at)
                    .map(|(n, _)| n.clone());
                if let Some(n) = oldest {
                    cache.remove(&n);
                }
            }
        }
        cache.insert(name.to_string(), (Instant::now(), answer.clone()));
    }
}

/// Takes one of `max` slots of `count`; whether there was one.
fn take(count: &AtomicUsize, max: usize) -> bool {
    count
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < max).then_some(n + 1)
        })
        .is_ok()
}

impl HostResolver {
    /// Starts the resolver thread. Call it on a thread in the host's network namespace.
    pub(crate) fn new() -> std::io::Result<HostResolver> {
        Self::with(host_lookup)
    }

    /// [`HostResolver::new`] answering with `lookup` (tests answer without the host's resolver).
    fn with(lookup: fn(&str) -> Answer) -> std::io::Result<HostResolver> {
        let (requests, rx) = mpsc::channel::<Request>();
        let in_flight = Arc::new(AtomicUsize::new(0));
        let counter = in_flight.clone();
        std::thread::Builder::new()
            .name("peapod-resolver".into())
            .spawn(move || {
                // Ends when the last HostResolver is dropped.
                for (name, share, reply) in rx {
                    let done = counter.clone();
                    let pod = share.clone();
                    let worker = std::thread::Builder::new()
                        .name("peapod-lookup".into())
                        .spawn(move || {
                            let answer = lookup(&name);
                            share.keep(&name, &answer);
                            share.0.in_flight.fetch_sub(1, Ordering::AcqRel);
                            done.fetch_sub(1, Ordering::AcqRel);
                            let _ = reply.send(answer);
                        });
                    if worker.is_err() {
                        // The reply is dropped with the closure: the guest sees `Temporary`.
                        pod.0.in_flight.fetch_sub(1, Ordering::AcqRel);
                        counter.fetch_sub(1, Ordering::AcqRel);
                    }
                }
            })?;
        Ok(HostResolver {
            requests,
            in_flight,
        })
    }

    /// Asks the host for `name` on behalf of the pod of `share`: from its cache, else with one
    /// of its slots and one of the process's.
    fn lookup(&self, name: String, share: &Lookups) -> Lookup {
        if let Some(answer) = share.cached(&name) {
            return Lookup::Ready(answer);
        }
        if !take(&share.0.in_flight, POD_HOST_LOOKUPS) {
            return Lookup::Ready(Err(Failure::Temporary));
        }
        if !take(&self.in_flight, MAX_HOST_LOOKUPS) {
            share.0.in_flight.fetch_sub(1, Ordering::AcqRel);
            return Lookup::Ready(Err(Failure::Temporary));
        }
        let (tx, rx) = oneshot::channel();
        if self.requests.send((name, share.clone(), tx)).is_err() {
            share.0.in_flight.fetch_sub(1, Ordering::AcqRel);
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

/// Where the pods of a guest's bridge are: the bridge's leases, read at each lookup (the
/// runtime gives its lease file; tests a map).
pub trait PodAddresses: Send + Sync + std::fmt::Debug {
    /// Pod `name`'s current address, if there is such a pod.
    fn address(&self, name: &str) -> Option<Ipv4Addr>;
}

/// The names a guest of one pod can look up.
#[derive(Clone)]
pub(crate) struct Names {
    /// The pods of the pod's bridge.
    pub pods: Option<Arc<dyn PodAddresses>>,
    pub host: HostResolver,
    /// The pod's share of the host's resolver.
    pub share: Lookups,
    /// The host's hosts file (`/etc/hosts`): the names a pod's name does not hide.
    pub hosts_file: PathBuf,
}

/// The host's hosts file.
pub(crate) const HOSTS_FILE: &str = "/etc/hosts";

/// The domain of the pods: `NAME.pod` is always pod `NAME`.
const POD_DOMAIN: &str = ".pod";

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
        if let Some(pod) = bare.strip_suffix(POD_DOMAIN) {
            return Lookup::Ready(match self.pod(pod) {
                Some(ip) => Ok(vec![ip.into()]),
                None => Err(Failure::Unresolvable),
            });
        }
        if !self.host_lists(bare)
            && let Some(ip) = self.pod(bare)
        {
            return Lookup::Ready(Ok(vec![ip.into()]));
        }
        self.host.lookup(domain, &self.share)
    }

    /// Whether the host's hosts file names `name` (a bare name; case does not matter).
    fn host_lists(&self, name: &str) -> bool {
        let Ok(text) = std::fs::read_to_string(&self.hosts_file) else {
            return false;
        };
        text.lines()
            .map(|l| l.split('#').next().unwrap_or(""))
            .flat_map(|l| l.split_whitespace().skip(1))
            .any(|n| n.eq_ignore_ascii_case(name))
    }

    fn pod(&self, name: &str) -> Option<Ipv4Addr> {
        // Pod names are DNS labels: a dotted name is never one.
        if name.contains('.') {
            return None;
        }
        self.pods.as_ref()?.address(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bridge's pods: a map the test fills, handing out addresses as IPAM would (never the
    /// one just released).
    #[derive(Default, Debug)]
    struct Pods(Mutex<(std::collections::BTreeMap<String, Ipv4Addr>, u8)>);

    impl Pods {
        fn allocate(&self, name: &str) -> Ipv4Addr {
            let mut m = self.0.lock().unwrap();
            m.1 += 1;
            let ip = Ipv4Addr::new(10, 66, 0, m.1 + 1);
            m.0.insert(name.into(), ip);
            ip
        }

        fn release(&self, name: &str) {
            self.0.lock().unwrap().0.remove(name);
        }
    }

    impl PodAddresses for Pods {
        fn address(&self, name: &str) -> Option<Ipv4Addr> {
            self.0.lock().unwrap().0.get(name).copied()
        }
    }

    fn names(dir: &std::path::Path) -> (Names, Arc<Pods>) {
        let hosts_file = dir.join("hosts");
        std::fs::write(
            &hosts_file,
            "127.0.0.1 localhost\n192.0.2.9 vm vm.lan # the board's\n",
        )
        .unwrap();
        let pods = Arc::new(Pods::default());
        let n = Names {
            pods: Some(pods.clone()),
            // No traffic to the host's resolver from a test: it knows one name.
            host: HostResolver::with(|name| match name {
                "host.example" => Ok(vec!["192.0.2.1".parse().unwrap()]),
                "vm" => Ok(vec!["192.0.2.9".parse().unwrap()]),
                n if n.ends_with("slow.example") => {
                    std::thread::sleep(Duration::from_millis(300));
                    Err(Failure::Unresolvable)
                }
                _ => Err(Failure::Unresolvable),
            })
            .unwrap(),
            share: Lookups::default(),
            hosts_file,
        };
        (n, pods)
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
        let (n, ipam) = names(dir.path());
        let ip = ipam.allocate("web");

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
        ipam.release("web");
        assert_eq!(answer(n.lookup("web")), Err(Failure::Unresolvable));
        // A re-created pod is found at its new address.
        let ip2 = ipam.allocate("web");
        assert_ne!(ip, ip2);
        assert_eq!(answer(n.lookup("web")), Ok(vec![ip2.into()]));
    }

    #[test]
    fn host_lookups_at_once_are_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let (n, _) = names(dir.path());
        // Hold every slot: lookups that wait on nothing finish at once, so count by hand.
        n.host.in_flight.store(MAX_HOST_LOOKUPS, Ordering::Release);
        assert_eq!(answer(n.lookup("host.example")), Err(Failure::Temporary));
        n.host.in_flight.store(0, Ordering::Release);
        assert_eq!(answer(n.lookup("host.example")).map(|a| a.len()), Ok(1));
        assert_eq!(n.host.in_flight.load(Ordering::Acquire), 0);
    }

    /// Round 2, finding 4: one pod of 24 containers looking up unknown names held all 16 of the
    /// process's slots, and every other pod's lookups failed "try again". A pod holds its own
    /// share only; the next pod is answered.
    #[test]
    fn a_pod_looking_up_slow_names_holds_only_its_share() {
        let dir = tempfile::tempdir().unwrap();
        let (greedy, _) = names(dir.path());
        let pending: Vec<Lookup> = (0..24)
            .map(|i| greedy.lookup(&format!("slow{i}.slow.example")))
            .collect();
        let waiting = pending
            .iter()
            .filter(|l| matches!(l, Lookup::Pending(_)))
            .count();
        assert_eq!(
            waiting, POD_HOST_LOOKUPS,
            "the rest fail at once, as temporary"
        );
        let other = Names {
            share: Lookups::default(),
            ..greedy.clone()
        };
        assert_eq!(answer(other.lookup("host.example")).map(|a| a.len()), Ok(1));
        for l in pending {
            let _ = answer(l);
        }
    }

    #[test]
    fn failures_and_answers_are_cached_per_pod() {
        let dir = tempfile::tempdir().unwrap();
        let (n, _) = names(dir.path());
        let t0 = Instant::now();
        assert_eq!(answer(n.lookup("slow.example")), Err(Failure::Unresolvable));
        assert!(t0.elapsed() >= Duration::from_millis(300));
        // Asked again: from the cache, at once, and without a slot.
        n.host.in_flight.store(MAX_HOST_LOOKUPS, Ordering::Release);
        assert!(matches!(
            n.lookup("slow.example"),
            Lookup::Ready(Err(Failure::Unresolvable))
        ));
        n.host.in_flight.store(0, Ordering::Release);
        // Another pod has a cache of its own.
        let other = Names {
            share: Lookups::default(),
            ..n.clone()
        };
        assert!(matches!(other.lookup("slow.example"), Lookup::Pending(_)));
    }

    /// Round 2, finding 4: a pod named like a name of the host's /etc/hosts (`vm`) hid it from
    /// every other pod. The host's names win for bare names; `NAME.pod` is always the pod.
    #[test]
    fn the_hosts_names_win_and_pods_have_a_domain() {
        let dir = tempfile::tempdir().unwrap();
        let (n, ipam) = names(dir.path());
        let vm = ipam.allocate("vm");
        let web = ipam.allocate("web");
        assert_eq!(
            answer(n.lookup("vm")),
            Ok(vec!["192.0.2.9".parse().unwrap()])
        );
        assert_eq!(
            answer(n.lookup("VM")),
            Ok(vec!["192.0.2.9".parse().unwrap()])
        );
        assert_eq!(answer(n.lookup("vm.pod")), Ok(vec![vm.into()]));
        assert_eq!(answer(n.lookup("web.pod")), Ok(vec![web.into()]));
        assert_eq!(answer(n.lookup("web")), Ok(vec![web.into()]));
        assert_eq!(answer(n.lookup("nope.pod")), Err(Failure::Unresolvable));
    }
}
