//! Which container of a pod bound which port: a pod's containers share one network namespace
//! (one `localhost`), so a port is one container's. When a second one binds it, the guest gets
//! the kernel's bare "address in use"; peapod says which container holds it, in its log and as
//! a `PortInUse` event.
//!
//! Each bind a guest asks for (wasmtime-wasi's address check, on the pod's thread, inside its
//! namespace) is tried first on a probe socket that is bound and closed, never listened on, so
//! no connection can land on it: a probe that fails with `EADDRINUSE` is the tell. The guest's
//! own bind then goes on and fails as it would have.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

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
const SAY_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

/// (container, transport, port) of a taken port that was said.
type Said = (String, Transport, u16);

/// The binds of one pod's containers: who bound each port last, and when a taken one was said.
#[derive(Debug, Clone, Default)]
pub struct Binds {
    owners: Arc<Mutex<HashMap<(Transport, u16), String>>>,
    said: Arc<Mutex<HashMap<Said, std::time::Instant>>>,
    events: Events,
    /// `pod/NAME`
    pod: String,
}

impl Binds {
    pub fn new(pod: &str, events: Events) -> Self {
        Binds {
            owners: Arc::default(),
            said: Arc::default(),
            events,
            pod: format!("pod/{pod}"),
        }
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
        said.insert(said_key, std::time::Instant::now());
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
