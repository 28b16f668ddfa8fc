//! Typed verbs over netlink: links, addresses, routes, neighbours. The only place that speaks
//! rtnetlink; [`exchange`] is the one socket routine, which the firewall's nf_tables batches use
//! too.
//!
//! One stack, in netavark's style: each request is a typed message (built with rtnetlink's
//! builders, `netlink-packet-route`'s types) sent on a netlink socket of its own and answered
//! before the socket closes, on a blocking thread (`spawn_blocking`), never on an async worker.
//! Why not rtnetlink's async connection throughout: nf_tables is not in it, and QEMU's user-mode
//! emulator (before 10.0) fails the send of a neighbour message with EOPNOTSUPP, which on a
//! shared connection closes it for every later request instead of failing that one.
//!
//! A netlink socket acts in the network namespace of the thread that opens it: the blocking
//! threads of the daemon's runtime are the host's, and those of a runtime made by
//! [`crate::host::netns::spawn`] enter the pod's namespace before they run anything. A pod's
//! inside is configured from the daemon's own blocking threads ([`Netlink::inside`]): each
//! steps into the pod's namespace just to open its request's socket, and back — no thread is
//! made per pod start for it.

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, BorrowedFd};

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REPLACE, NLM_F_REQUEST,
    NetlinkDeserializable, NetlinkMessage, NetlinkPayload,
};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};
use rtnetlink::packet_route::link::{
    BridgePortState, InfoBridgePort, InfoData, InfoKind, InfoPortData, InfoVeth, LinkAttribute,
    LinkInfo, LinkMessage, State,
};
use rtnetlink::packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourMessage, NeighbourState,
};
use rtnetlink::packet_route::{AddressFamily, RouteNetlinkMessage};
use rtnetlink::{
    AddressMessageBuilder, LinkBridge, LinkMessageBuilder, LinkUnspec, LinkVeth,
    RouteMessageBuilder,
};

#[derive(Debug, thiserror::Error)]
#[error("{op}: {source}")]
pub struct NetError {
    op: String,
    #[source]
    source: io::Error,
}

impl NetError {
    /// An error of `op`, caused by `source`.
    pub(crate) fn other(op: impl Into<String>, source: io::Error) -> Self {
        NetError {
            op: op.into(),
            source,
        }
    }

    /// Refused as not supported (`EOPNOTSUPP`): by the kernel, or by an emulator that does not
    /// translate the request (QEMU's user mode, before 10.0, for neighbour messages).
    pub(crate) fn is_unsupported(&self) -> bool {
        self.errno() == Some(libc::EOPNOTSUPP)
    }

    /// The errno the kernel answered with, if any.
    pub fn errno(&self) -> Option<i32> {
        self.source.raw_os_error()
    }
}

/// The most ports a Linux bridge takes (`BR_MAX_PORTS` is 1024, and port 0 is never used).
pub const BRIDGE_MAX_PORTS: usize = 1023;

/// A link attached to a bridge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Port {
    pub name: String,
}

/// The kernel's netlink: in the namespace of the blocking threads of the runtime it is used on
/// ([`Netlink::HOST`]), or in a given one ([`Netlink::inside`]).
#[derive(Debug, Default, Clone)]
pub struct Netlink {
    netns: Option<std::sync::Arc<std::os::fd::OwnedFd>>,
}

impl Netlink {
    /// Netlink of the namespace the runtime's blocking threads are in (the host's, for the
    /// daemon's runtime).
    pub const HOST: Netlink = Netlink { netns: None };

    /// Netlink of the namespace `netns`, used from any thread: each request's socket is opened
    /// there by the blocking thread that sends it, which steps in for that moment
    /// ([`crate::host::netns::within`]) instead of a thread being made to live there.
    pub fn inside(netns: std::sync::Arc<std::os::fd::OwnedFd>) -> Netlink {
        Netlink { netns: Some(netns) }
    }

    /// Sends `msg` with `flags` (besides `NLM_F_REQUEST`) and waits for its answer on a blocking
    /// thread; `op` names it in an error.
    async fn request(
        &self,
        op: impl FnOnce() -> String,
        msg: RouteNetlinkMessage,
        flags: u16,
    ) -> Result<Vec<RouteNetlinkMessage>, NetError> {
        let netns = self.netns.clone();
        let answer =
            tokio::task::spawn_blocking(move || route_request(netns.as_deref(), msg, flags))
                .await
                .unwrap_or_else(|e| Err(io::Error::other(format!("netlink thread: {e}"))));
        answer.map_err(|e| NetError::other(op(), e))
    }

    /// Link `name`, if it exists.
    async fn link(&self, name: &str) -> Result<Option<LinkMessage>, NetError> {
        let mut query = LinkMessage::default();
        query.attributes.push(LinkAttribute::IfName(name.into()));
        let answer = self
            .request(
                || format!("look up link {name}"),
                RouteNetlinkMessage::GetLink(query),
                NLM_F_ACK,
            )
            .await;
        match answer {
            Ok(msgs) => Ok(msgs.into_iter().find_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => Some(l),
                _ => None,
            })),
            Err(e) if e.errno() == Some(libc::ENODEV) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Creates link `msg` (`NLM_F_CREATE | NLM_F_EXCL`).
    async fn add_link(
        &self,
        op: impl FnOnce() -> String,
        msg: LinkMessage,
    ) -> Result<(), NetError> {
        self.request(
            op,
            RouteNetlinkMessage::NewLink(msg),
            NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
        )
        .await
        .map(drop)
    }

    /// Changes link `msg.header.index` as `msg` says.
    async fn set_link(
        &self,
        op: impl FnOnce() -> String,
        msg: LinkMessage,
    ) -> Result<(), NetError> {
        self.request(op, RouteNetlinkMessage::SetLink(msg), NLM_F_ACK)
            .await
            .map(drop)
    }
}

/// Whether a link passes traffic: operationally up and, when it is a bridge port, forwarding.
///
/// A new veth's bridge port comes up in two steps of one kernel pass (linkwatch): its operstate
/// is set, then the bridge is told and moves the port from `disabled` to `forwarding`. In between
/// the host's first frame to the pod (flooded: the bridge has not learnt the pod's MAC yet) is
/// dropped at that port; for a TCP client that is a SYN lost and resent a second later, the one-
/// second outliers of pod start and re-create (issue 14) that waiting for the operstate alone
/// let through. A state the bridge does not report (an older kernel, an emulator) does not hold
/// the wait up.
fn passes_traffic(m: &LinkMessage) -> bool {
    let oper_up = m
        .attributes
        .iter()
        .any(|a| matches!(a, LinkAttribute::OperState(State::Up)));
    let port_state = m.attributes.iter().find_map(|a| match a {
        LinkAttribute::LinkInfo(infos) => infos.iter().find_map(|i| match i {
            LinkInfo::PortData(InfoPortData::BridgePort(p)) => p.iter().find_map(|x| match x {
                InfoBridgePort::State(s) => Some(*s),
                _ => None,
            }),
            _ => None,
        }),
        _ => None,
    });
    oper_up && port_state.is_none_or(|s| s == BridgePortState::Forwarding)
}

/// The netlink verbs a sandbox is made of, as a trait: [`Netlink`] speaks them to the kernel; the
/// sandbox's logic (what is configured in which order, which links are leftovers, what an error
/// says) is written against the trait, so its tests run without root against a fake (as youki's
/// network traits).
// Used with concrete types only, never as `dyn`: a caller's future is `Send` when the
// implementation's is, which the compiler sees at each use.
#[allow(async_fn_in_trait)]
pub trait Links {
    /// The index of link `name`, if it exists.
    async fn link_index(&self, name: &str) -> Result<Option<u32>, NetError>;
    /// Makes sure bridge `name` exists, is up, has `addr/prefix` and the hardware address
    /// [`mac_for`]`(addr)`; returns its index.
    async fn ensure_bridge(&self, name: &str, addr: Ipv4Addr, prefix: u8) -> Result<u32, NetError>;
    /// Creates a veth pair: `host` attached to the bridge `controller` and up; its peer made
    /// directly inside the namespace `netns` as `peer`, with hardware address `peer_mac`.
    async fn create_veth_into(
        &self,
        host: &str,
        controller: u32,
        peer: &str,
        peer_mac: [u8; 6],
        netns: BorrowedFd<'_>,
    ) -> Result<(), NetError>;
    /// Deletes link `name`; `false` if there was none.
    async fn delete_link(&self, name: &str) -> Result<bool, NetError>;
    /// The links attached to bridge `controller`.
    async fn ports_of(&self, controller: u32) -> Result<Vec<Port>, NetError>;
    /// Waits until link `name` passes traffic, at most `limit`: operationally up and, for a
    /// bridge port, forwarding.
    async fn wait_passes_traffic(
        &self,
        name: &str,
        limit: std::time::Duration,
    ) -> Result<(), NetError>;
    async fn set_up(&self, index: u32, name: &str) -> Result<(), NetError>;
    /// Adds `addr/prefix` to a link; an address already there is fine.
    async fn add_addr(
        &self,
        index: u32,
        addr: Ipv4Addr,
        prefix: u8,
        name: &str,
    ) -> Result<(), NetError>;
    async fn add_default_route(&self, gateway: Ipv4Addr) -> Result<(), NetError>;
    /// Sets a permanent neighbour entry on link `index` (`name`): `ip` is at `mac`.
    async fn set_neighbour(
        &self,
        index: u32,
        ip: Ipv4Addr,
        mac: [u8; 6],
        name: &str,
    ) -> Result<(), NetError>;
    /// Deletes the neighbour entry of `ip` on link `index`; none is fine.
    async fn delete_neighbour(&self, index: u32, ip: Ipv4Addr) -> Result<(), NetError>;
    /// The permanent IPv4 neighbour entries on link `index`: address and hardware address.
    async fn permanent_neighbours(&self, index: u32) -> Result<Vec<(Ipv4Addr, Vec<u8>)>, NetError>;
}

impl Links for Netlink {
    async fn link_index(&self, name: &str) -> Result<Option<u32>, NetError> {
        Ok(self.link(name).await?.map(|m| m.header.index))
    }

    async fn ensure_bridge(&self, name: &str, addr: Ipv4Addr, prefix: u8) -> Result<u32, NetError> {
        // A bridge's hardware address is by default the lowest of its ports', so it changes as
        // pods come and go; a fixed one lets each pod hold a permanent entry for its gateway.
        let mac = mac_for(addr);
        let link = match self.link(name).await? {
            Some(l) => l,
            None => {
                let bridge = LinkBridge::new(name).address(mac.to_vec()).up().build();
                match self
                    .add_link(|| format!("create bridge {name}"), bridge)
                    .await
                {
                    Ok(()) => {}
                    // Another peapod made it meanwhile.
                    Err(e) if e.errno() == Some(libc::EEXIST) => {}
                    Err(e) => return Err(e),
                }
                self.link(name).await?.ok_or_else(|| {
                    NetError::other(
                        format!("create bridge {name}"),
                        io::Error::other("bridge vanished after creation"),
                    )
                })?
            }
        };
        let index = link.header.index;
        let has_mac = link
            .attributes
            .iter()
            .any(|a| matches!(a, LinkAttribute::Address(m) if m[..] == mac[..]));
        if !has_mac {
            // A bridge made by an older peapod (or by hand): given the fixed address once.
            let msg = LinkUnspec::new_with_index(index)
                .address(mac.to_vec())
                .build();
            self.set_link(|| format!("set the hardware address of {name}"), msg)
                .await?;
        }
        self.set_up(index, name).await?;
        self.add_addr(index, addr, prefix, name).await?;
        Ok(index)
    }

    /// Creates a veth pair: `host` is attached to the bridge `controller` and set up; its peer is
    /// created directly inside the namespace `netns` as `peer` (cheaper than moving it there),
    /// with the hardware address `peer_mac`.
    async fn create_veth_into(
        &self,
        host: &str,
        controller: u32,
        peer: &str,
        peer_mac: [u8; 6],
        netns: BorrowedFd<'_>,
    ) -> Result<(), NetError> {
        let peer_msg = LinkMessageBuilder::<LinkUnspec>::new()
            .name(peer.to_string())
            .address(peer_mac.to_vec())
            .setns_by_fd(netns.as_raw_fd())
            .build();
        let msg = LinkMessageBuilder::<LinkVeth>::new_with_info_kind(InfoKind::Veth)
            .name(host.to_string())
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer_msg)))
            .controller(controller)
            .up()
            .build();
        // The namespace's fd is read by the kernel while the request is handled, on the
        // blocking thread: `netns` outlives this call, which waits for that thread.
        let op = || format!("create veth {host}");
        match self.add_link(op, msg).await {
            // The kernel's bridge numbers its ports in 10 bits, port 0 unused.
            Err(e) if e.errno() == Some(libc::EXFULL) => Err(NetError::other(
                op(),
                io::Error::other(format!(
                    "the bridge has {BRIDGE_MAX_PORTS} ports already, the most a Linux bridge \
                     takes: give further pods another bridge (--bridge / network.bridge) and subnet"
                )),
            )),
            r => r,
        }
    }

    /// Deletes link `name` (the kernel finds it by name); `false` if there was none.
    async fn delete_link(&self, name: &str) -> Result<bool, NetError> {
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.into()));
        let op = || format!("delete link {name}");
        match self
            .request(op, RouteNetlinkMessage::DelLink(msg), NLM_F_ACK)
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if e.errno() == Some(libc::ENODEV) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Names of the links attached to bridge `controller`.
    async fn ports_of(&self, controller: u32) -> Result<Vec<Port>, NetError> {
        let links = self
            .request(
                || "list links".into(),
                RouteNetlinkMessage::GetLink(LinkMessage::default()),
                NLM_F_DUMP,
            )
            .await?;
        Ok(links
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => Some(l),
                _ => None,
            })
            .filter(|l| {
                l.attributes
                    .iter()
                    .any(|a| matches!(a, LinkAttribute::Controller(c) if *c == controller))
            })
            .filter_map(|l| {
                l.attributes.into_iter().find_map(|a| match a {
                    LinkAttribute::IfName(name) => Some(Port { name }),
                    _ => None,
                })
            })
            .collect())
    }

    /// Waits until link `name` is operationally up: the kernel has activated its queueing (done by
    /// linkwatch, which may lag up to a second behind `set_up`; until then frames are dropped and
    /// a first TCP connection to the pod would stall for a SYN retransmit).
    async fn wait_passes_traffic(
        &self,
        name: &str,
        limit: std::time::Duration,
    ) -> Result<(), NetError> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if self.link(name).await?.is_some_and(|m| passes_traffic(&m)) {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(NetError::other(
                    format!("wait for {name} to come up"),
                    io::Error::from(io::ErrorKind::TimedOut),
                ));
            }
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
    }

    async fn set_up(&self, index: u32, name: &str) -> Result<(), NetError> {
        let msg = LinkUnspec::new_with_index(index).up().build();
        self.set_link(|| format!("set {name} up"), msg).await
    }

    /// Adds `addr/prefix` to a link; an address already there is fine.
    async fn add_addr(
        &self,
        index: u32,
        addr: Ipv4Addr,
        prefix: u8,
        name: &str,
    ) -> Result<(), NetError> {
        let msg = AddressMessageBuilder::<Ipv4Addr>::new()
            .index(index)
            .address(addr, prefix)
            .build();
        let op = || format!("add address {addr}/{prefix} to {name}");
        match self
            .request(
                op,
                RouteNetlinkMessage::NewAddress(msg),
                NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
            )
            .await
        {
            Err(e) if e.errno() != Some(libc::EEXIST) => Err(e),
            _ => Ok(()),
        }
    }

    async fn add_default_route(&self, gateway: Ipv4Addr) -> Result<(), NetError> {
        let msg = RouteMessageBuilder::<Ipv4Addr>::new()
            .gateway(gateway)
            .build();
        self.request(
            || format!("add default route via {gateway}"),
            RouteNetlinkMessage::NewRoute(msg),
            NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
        )
        .await
        .map(drop)
    }

    async fn set_neighbour(
        &self,
        index: u32,
        ip: Ipv4Addr,
        mac: [u8; 6],
        name: &str,
    ) -> Result<(), NetError> {
        let mut msg = neighbour(index, ip);
        msg.header.state = NeighbourState::Permanent;
        msg.attributes
            .push(NeighbourAttribute::LinkLayerAddress(mac.to_vec()));
        self.request(
            || format!("add neighbour {ip} on {name}"),
            RouteNetlinkMessage::NewNeighbour(msg),
            NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE,
        )
        .await
        .map(drop)
    }

    async fn delete_neighbour(&self, index: u32, ip: Ipv4Addr) -> Result<(), NetError> {
        match self
            .request(
                || format!("delete neighbour {ip}"),
                RouteNetlinkMessage::DelNeighbour(neighbour(index, ip)),
                NLM_F_ACK,
            )
            .await
        {
            Err(e) if e.errno() != Some(libc::ENOENT) => Err(e),
            _ => Ok(()),
        }
    }

    async fn permanent_neighbours(&self, index: u32) -> Result<Vec<(Ipv4Addr, Vec<u8>)>, NetError> {
        let mut query = NeighbourMessage::default();
        query.header.family = AddressFamily::Inet;
        let all = self
            .request(
                || "list neighbours".into(),
                RouteNetlinkMessage::GetNeighbour(query),
                NLM_F_DUMP,
            )
            .await?;
        Ok(all
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewNeighbour(n) => Some(n),
                _ => None,
            })
            .filter(|n| n.header.ifindex == index && n.header.state == NeighbourState::Permanent)
            .filter_map(|n| {
                let mut ip = None;
                let mut mac = None;
                for a in n.attributes {
                    match a {
                        NeighbourAttribute::Destination(NeighbourAddress::Inet(i)) => ip = Some(i),
                        NeighbourAttribute::LinkLayerAddress(m) => mac = Some(m),
                        _ => {}
                    }
                }
                Some((ip?, mac?))
            })
            .collect())
    }
}

/// A neighbour message for `ip` on link `index`.
fn neighbour(index: u32, ip: Ipv4Addr) -> NeighbourMessage {
    let mut msg = NeighbourMessage::default();
    msg.header.family = AddressFamily::Inet;
    msg.header.ifindex = index;
    msg.attributes
        .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)));
    msg
}

/// One rtnetlink request (with `flags` besides `NLM_F_REQUEST`) through [`exchange`]; returns
/// the messages a dump answered.
fn route_request(
    netns: Option<&std::os::fd::OwnedFd>,
    msg: RouteNetlinkMessage,
    flags: u16,
) -> io::Result<Vec<RouteNetlinkMessage>> {
    let mut m = NetlinkMessage::from(msg);
    m.header.flags = NLM_F_REQUEST | flags;
    m.header.sequence_number = 1;
    m.finalize();
    let mut bytes = vec![0; m.buffer_len()];
    m.serialize(&mut bytes);
    let acks = usize::from(flags & NLM_F_ACK != 0);
    let sock = match netns {
        None => Socket::new(NETLINK_ROUTE)?,
        Some(ns) => crate::host::netns::within(ns, || Socket::new(NETLINK_ROUTE))??,
    };
    exchange_on(sock, &bytes, acks)
}

/// Sends `bytes` (requests of netlink `protocol`) on a socket of its own, opened in the calling
/// thread's network namespace, and reads until `acks` acknowledgements or the end of a dump
/// have come (or the first error, as the errno the kernel answered). Returns the messages
/// answered. Blocking: a local request, answered at once.
pub(crate) fn exchange<M: NetlinkDeserializable>(
    protocol: isize,
    bytes: &[u8],
    acks: usize,
) -> io::Result<Vec<M>> {
    exchange_on(Socket::new(protocol)?, bytes, acks)
}

/// [`exchange`] on `sock`, a netlink socket opened for it.
fn exchange_on<M: NetlinkDeserializable>(
    mut sock: Socket,
    bytes: &[u8],
    acks: usize,
) -> io::Result<Vec<M>> {
    sock.bind_auto()?;
    sock.connect(&SocketAddr::new(0, 0))?;
    sock.send(bytes, 0)?;
    let (mut acked, mut answers) = (0, Vec::new());
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = sock.recv(&mut &mut buf[..], 0)?;
        let mut off = 0;
        while off < n {
            let m = NetlinkMessage::<M>::deserialize(&buf[off..n])
                .map_err(|e| io::Error::other(format!("netlink answer: {e}")))?;
            let len = m.header.length as usize;
            if len == 0 {
                break;
            }
            off += (len + 3) & !3;
            match m.payload {
                NetlinkPayload::Error(e) => match e.code {
                    None => acked += 1,
                    Some(code) => return Err(io::Error::from_raw_os_error(-code.get())),
                },
                NetlinkPayload::Done(_) => return Ok(answers),
                NetlinkPayload::InnerMessage(m) => answers.push(m),
                _ => {}
            }
        }
        if acks > 0 && acked >= acks {
            return Ok(answers);
        }
    }
}

/// The hardware address of the pod interface that has address `ip`: locally administered,
/// unicast, `02:50` then the four bytes of the IP. A pod whose veth is made anew around the same
/// namespace and IP (the daemon recovering its sandboxes after a restart) keeps its MAC, so the
/// host's neighbour entry for the IP stays right. With a random MAC each time, the host kept
/// sending to the old one until that entry went stale: 10-40 s in which the pod's IP did not
/// answer (seen under a real systemd restart, `tests/system`). An IP is on one pod of the host
/// at a time, so the MAC is too.
pub fn mac_for(ip: Ipv4Addr) -> [u8; 6] {
    let [a, b, c, d] = ip.octets();
    [0x02, 0x50, a, b, c, d]
}
