//! Which container of a pod bound which port: a pod's containers share one network namespace
//! (one `localhost`), so a port is one container's. When a second one binds it, the guest gets
//! the kernel's bare "address in use"; peapod says which container holds it, in its log and as
//! a `PortInUse` event.
//!
//! Each bind a guest asks for (wasmtime-wasi's address check, on the pod's thread, inside its
//! namespace) is tried first on a probe socket that is bound and closed, never listened on, so
//! no connection can land on it: a probe that fails with `EADDRINUSE` is the tell. The guest's
//! own bind then goes on and fails as it would have.
//!
//! In a pod (not in the test harness), a container's TCP listeners also outlive its run until
//! its next instance binds them again ([`crate::wasm::handoff`]): [`Binds::bind`] hands a kept
//! listener over, [`Binds::keep_on_drop`] keeps them when a run ends, and the supervisor says
//! whether a restart is coming soon ([`Binds::restarting`]), else they are closed.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use socket2::{Domain, Socket, Type};

use crate::event::Events;

/// TCP or UDP, as a bind asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    Tcp,
    Udp,
}

impl Transport {
    fn name(self) -> &'static str {
        match self {
            Transport::Tcp => "TCP",
            Transport::Udp => "UDP",
        }
    }
}

/// A taken port is said at most this often per container and port: a guest that retries its
/// bind in a loop cannot flood the daemon's log or the events.
const SAY_EVERY: Duration = Duration::from_secs(60);

/// (container, transport, port) of a taken port that was said.
type Said = (String, Transport, u16);

/// The binds of one pod's containers: who bound each port last, and when a taken one was said.
#[derive(Debug, Clone, Default)]
pub struct Binds {
    owners: Arc<Mutex<HashMap<(Transport, u16), String>>>,
    said: Arc<Mutex<HashMap<Said, Instant>>>,
    events: Events,
    /// `pod/NAME`
    pod: String,
    /// Listeners kept across restarts in place; `None` outside a pod's namespace.
    handoff: Option<Arc<Mutex<Handoff>>>,
}

/// A restart further off than this closes the container's listeners at once: a client is
/// refused rather than left waiting through a long back-off.
pub const HOLD_FOR_RESTART_WITHIN: Duration = Duration::from_secs(1);

/// How long after its restart a container has to bind a kept listener again before it is closed.
pub const BIND_AGAIN_WITHIN: Duration = Duration::from_secs(2);

/// The most addresses remembered per container for keeping its listeners: a guest that binds
/// address after address (any of 2^128 IPv6 ones) cannot grow the daemon's memory; listeners on
/// addresses past these are not kept.
pub const KEEP_AT_MOST: usize = 64;

/// The listeners of a pod's containers, kept between runs.
#[derive(Debug, Default)]
struct Handoff {
    /// The TCP addresses (port given) each container's guests asked to bind.
    bound: HashMap<String, BTreeSet<SocketAddr>>,
    /// Kept listeners by container and address, and until when each container's are kept.
    held: HashMap<(String, SocketAddr), Vec<OwnedFd>>,
    until: HashMap<String, Instant>,
    /// `tcp_migrate_req` is on in the namespace.
    migration: bool,
}

impl Handoff {
    fn release(&mut self, container: &str) {
        self.held.retain(|(c, _), _| c != container);
        self.until.remove(container);
    }

    /// Closes what was kept past its time.
    fn expire(&mut self, now: Instant) {
        let over: Vec<String> = (self.until.iter())
            .filter(|(_, t)| **t <= now)
            .map(|(c, _)| c.clone())
            .collect();
        for c in over {
            tracing::debug!("{c}: kept listeners not bound again in time: closed");
            self.release(&c);
        }
    }
}

impl Binds {
    pub fn new(pod: &str, events: Events) -> Self {
        Binds {
            owners: Arc::default(),
            said: Arc::default(),
            events,
            pod: format!("pod/{pod}"),
            handoff: None,
        }
    }

    /// Keeps the containers' TCP listeners across restarts in place. Only for binds made inside
    /// a pod's own namespace (it turns `tcp_migrate_req` on in the namespace it runs in).
    pub fn with_handoff(mut self) -> Self {
        self.handoff = Some(Arc::default());
        self
    }

    /// Container `container` is about to bind `addr` (the guest stopped in its bind, on the
    /// pod's thread): hands over the listener kept from its previous run on that address, if
    /// any, else checks the port ([`Binds::check`]).
    pub fn bind(&self, container: &str, addr: SocketAddr, transport: Transport) {
        if let (Some(h), Transport::Tcp, false) = (&self.handoff, transport, addr.port() == 0) {
            let mut h = h.lock().unwrap_or_else(|p| p.into_inner());
            let bound = h.bound.entry(container.to_string()).or_default();
            if bound.len() < KEEP_AT_MOST {
                bound.insert(addr);
            }
            if let Some(held) = h.held.remove(&(container.to_string(), addr)) {
                drop(h);
                if self.hand_over(container, addr, held) {
                    return;
                }
            }
        }
        self.check(container, addr, transport);
    }

    /// Lets the guest's fresh socket share `addr` with the kept listeners, and closes them once
    /// it listens (their queued connections move to it). False when that could not be set up:
    /// the kept ones are closed and the bind goes on as before.
    fn hand_over(&self, container: &str, addr: SocketAddr, held: Vec<OwnedFd>) -> bool {
        let guest = match crate::wasm::handoff::unbound_socket(addr) {
            Ok(Some(g)) => g,
            Ok(None) => {
                tracing::debug!("{container}: bind {addr}: the guest's socket is not clear");
                return false;
            }
            Err(e) => {
                tracing::debug!("{container}: bind {addr}: {e}");
                return false;
            }
        };
        if let Err(e) = guest.share_with(&held) {
            tracing::debug!("{container}: bind {addr}: SO_REUSEPORT: {e}");
            return false;
        }
        let owner = container.to_string();
        let mut owners = self.owners.lock().unwrap_or_else(|p| p.into_inner());
        owners.insert((Transport::Tcp, addr.port()), owner.clone());
        drop(owners);
        tracing::debug!("{owner}: listener {addr} handed over to the new run");
        // Runs once the guest's run yields, by when it listens (bind and listen come together).
        tokio::spawn(async move {
            let start = Instant::now();
            while guest.listening() == Some(false) && start.elapsed() < BIND_AGAIN_WITHIN {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            drop(held);
        });
        true
    }

    /// A guard that keeps `container`'s listeners when dropped: made after the run's store, so
    /// dropped before it, when the run ends in any way (an exit, a trap, a probe's kill).
    pub fn keep_on_drop<'a>(&'a self, container: &'a str) -> KeepOnDrop<'a> {
        KeepOnDrop {
            binds: self,
            container,
        }
    }

    /// Keeps the TCP listeners `container` bound (duplicates them) for [`BIND_AGAIN_WITHIN`],
    /// unless the supervisor says otherwise.
    fn keep(&self, container: &str) {
        let Some(handoff) = &self.handoff else {
            return;
        };
        let mut h = handoff.lock().unwrap_or_else(|p| p.into_inner());
        let addrs: Vec<SocketAddr> = match h.bound.get(container) {
            Some(a) => a.iter().copied().collect(),
            None => return,
        };
        if let Err(e) = crate::wasm::handoff::supported() {
            static SAID: std::sync::Once = std::sync::Once::new();
            SAID.call_once(|| {
                tracing::warn!(
                    "listeners cannot be kept across a restart in place here: the kernel (before \
                     5.14) or an emulator does not tell a socket's namespace (SO_NETNS_COOKIE: \
                     {e}); connections are refused while a container restarts"
                )
            });
            return;
        }
        if !h.migration {
            match crate::wasm::handoff::allow_migration() {
                Ok(()) => h.migration = true,
                Err(e) => tracing::debug!("{}: tcp_migrate_req: {e}", self.pod),
            }
        }
        match crate::wasm::handoff::listeners_on(&addrs) {
            Ok(kept) => {
                for (addr, fd) in kept {
                    let key = (container.to_string(), addr);
                    h.held.entry(key).or_default().push(fd);
                }
            }
            Err(e) => tracing::debug!("{container}: keep its listeners: {e}"),
        }
        if h.held.keys().any(|(c, _)| c == container) {
            let until = Instant::now() + BIND_AGAIN_WITHIN;
            h.until.insert(container.to_string(), until);
            drop(h);
            self.expire_at(handoff, until);
        }
    }

    /// The supervisor's word after a run ended: a restart after `delay`, or none. Kept
    /// listeners stay only for a restart within [`HOLD_FOR_RESTART_WITHIN`].
    pub fn restarting(&self, container: &str, delay: Option<Duration>) {
        let Some(handoff) = &self.handoff else {
            return;
        };
        let mut h = handoff.lock().unwrap_or_else(|p| p.into_inner());
        if !h.held.keys().any(|(c, _)| c == container) {
            return;
        }
        match delay {
            Some(d) if d <= HOLD_FOR_RESTART_WITHIN => {
                let until = Instant::now() + d + BIND_AGAIN_WITHIN;
                h.until.insert(container.to_string(), until);
                drop(h);
                self.expire_at(handoff, until);
            }
            _ => h.release(container),
        }
    }

    /// Closes what is kept past its time at `when` (a task of the pod's runtime, holding no
    /// reference: kept listeners close with the pod too).
    fn expire_at(&self, handoff: &Arc<Mutex<Handoff>>, when: Instant) {
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let weak: Weak<Mutex<Handoff>> = Arc::downgrade(handoff);
        rt.spawn(async move {
            tokio::time::sleep_until(when.into()).await;
            if let Some(h) = weak.upgrade() {
                h.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .expire(Instant::now());
            }
        });
    }

    /// Container `container` is about to bind `addr`: when the port is taken in the pod, says
    /// so (and by which container, when one of the pod's bound it), at most once per
    /// [`SAY_EVERY`] for the same container and port. Returns what was said.
    pub fn check(&self, container: &str, addr: SocketAddr, transport: Transport) -> Option<String> {
        if addr.port() == 0 {
            return None;
        }
        let key = (transport, addr.port());
        let mut owners = self.owners.lock().unwrap_or_else(|p| p.into_inner());
        if probe(addr, transport).is_ok() {
            owners.insert(key, container.to_string());
            return None;
        }
        let said_key = (container.to_string(), transport, addr.port());
        let mut said = self.said.lock().unwrap_or_else(|p| p.into_inner());
        if said.get(&said_key).is_some_and(|t| t.elapsed() < SAY_EVERY) {
            return None;
        }
        said.insert(said_key, Instant::now());
        let by = match owners.get(&key) {
            Some(o) if o != container => format!("container {o:?} of the pod holds it"),
            Some(_) => "this container's previous run holds it still".to_string(),
            None => "a socket of the pod holds it".to_string(),
        };
        let message = format!(
            "container {container:?}: bind {addr}/{}: the port is in use in the pod ({by}): a \
             pod's containers share one network namespace (one localhost), so a port is one \
             container's; give this one another port",
            transport.name()
        );
        tracing::warn!("{}: {message}", self.pod);
        self.events
            .warning(&format!("{}/{container}", self.pod), "PortInUse", &message);
        Some(message)
    }
}

/// Keeps a container's listeners when dropped ([`Binds::keep_on_drop`]).
pub struct KeepOnDrop<'a> {
    binds: &'a Binds,
    container: &'a str,
}

impl Drop for KeepOnDrop<'_> {
    fn drop(&mut self) {
        self.binds.keep(self.container);
    }
}

/// Binds a socket to `addr` as wasmtime-wasi's bind does (`SO_REUSEADDR` for TCP), then closes
/// it.
fn probe(addr: SocketAddr, transport: Transport) -> std::io::Result<()> {
    let ty = match transport {
        Transport::Tcp => Type::STREAM,
        Transport::Udp => Type::DGRAM,
    };
    let socket = Socket::new(Domain::for_address(addr), ty, None)?;
    if transport == Transport::Tcp {
        socket.set_reuse_address(true)?;
    }
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    match socket.bind(&addr.into()) {
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => Err(e),
        // Anything else (an address the pod does not have) is the guest's own bind's to say.
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_bind_names_the_container_that_holds_the_port() {
        let notes = Arc::new(Mutex::new(Vec::new()));
        let seen = notes.clone();
        let binds = Binds::new("web", Events::new(move |n| seen.lock().unwrap().push(n)));
        let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
        assert_eq!(binds.check("a", addr, Transport::Tcp), None, "port 0: any");
        // Container a binds a port (as the guest's bind would after the check).
        let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = held.local_addr().unwrap();
        drop(held);
        assert_eq!(binds.check("a", addr, Transport::Tcp), None);
        let held = std::net::TcpListener::bind(addr).unwrap();
        let said = binds.check("b", addr, Transport::Tcp).expect("b is told");
        assert!(
            said.contains("container \"a\" of the pod holds it"),
            "{said}"
        );
        {
            let notes = notes.lock().unwrap();
            assert_eq!(notes.len(), 1);
            assert_eq!(notes[0].reason, "PortInUse");
            assert_eq!(notes[0].object, "pod/web/b");
        }
        // A guest retrying in a loop is told once a minute, not once a try.
        for _ in 0..100 {
            assert_eq!(binds.check("b", addr, Transport::Tcp), None);
        }
        assert_eq!(notes.lock().unwrap().len(), 1);
        drop(held);
        // Free again: no word.
        assert_eq!(binds.check("b", addr, Transport::Tcp), None);
    }

    #[test]
    fn a_guest_binding_without_end_is_remembered_within_a_bound() {
        let binds = Binds::default().with_handoff();
        for i in 0..1000u16 {
            let addr = SocketAddr::from(([127, 0, 0, 1], 20000 + i));
            binds.bind("a", addr, Transport::Tcp);
        }
        let h = binds.handoff.as_ref().unwrap().lock().unwrap();
        assert_eq!(h.bound["a"].len(), KEEP_AT_MOST);
    }

    #[test]
    fn a_probe_never_listens() {
        let binds = Binds::default();
        let held = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = held.local_addr().unwrap();
        assert!(binds.check("a", addr, Transport::Udp).is_some());
        drop(held);
        // TCP on a free port: the probe binds and closes; a connection finds nobody.
        let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = free.local_addr().unwrap();
        drop(free);
        assert_eq!(binds.check("a", addr, Transport::Tcp), None);
        assert!(std::net::TcpStream::connect(addr).is_err());
    }
}
