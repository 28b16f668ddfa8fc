//! Typed verbs over rtnetlink: links, addresses, routes. The only place that speaks netlink.
//!
//! A netlink socket acts in the network namespace of the thread that opened it, so a [`Netlink`]
//! opened on a host thread changes the host, and one opened on a pod thread changes the pod.

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, BorrowedFd};

use futures::TryStreamExt;
use netlink_packet_core::{
    NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_REPLACE, NLM_F_REQUEST, NetlinkDeserializable,
    NetlinkMessage, NetlinkPayload,
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
    Handle, LinkBridge, LinkMessageBuilder, LinkUnspec, LinkVeth, RouteMessageBuilder,
};

#[derive(Debug, thiserror::Error)]
#[error("{op}: {source}")]
pub struct NetError {
    op: String,
    #[source]
    source: io::Error,
}

impl NetError {
    fn new(op: impl Into<String>, e: rtnetlink::Error) -> Self {
        let source = match e {
            rtnetlink::Error::NetlinkError(m) => m.to_io(),
            other => io::Error::other(other.to_string()),
        };
        NetError::other(op, source)
    }

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

fn is_errno(e: &rtnetlink::Error, errno: i32) -> bool {
    matches!(e, rtnetlink::Error::NetlinkError(m) if m.raw_code() == -errno)
}

/// The most ports a Linux bridge takes (`BR_MAX_PORTS` is 1024, and port 0 is never used).
pub const BRIDGE_MAX_PORTS: usize = 1023;

/// A link attached to a bridge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Port {
    pub name: String,
}

/// A netlink connection in the namespace of the thread that opened it.
pub struct Netlink {
    handle: Handle,
}

impl Netlink {
    /// Opens a connection; must be called inside a tokio runtime, which drives it.
    pub fn connect() -> io::Result<Self> {
        let (conn, handle, _) = rtnetlink::new_connection()?;
        tokio::spawn(conn);
        Ok(Netlink { handle })
    }

    /// Link `name`, if it exists.
    async fn link(&self, name: &str) -> Result<Option<LinkMessage>, NetError> {
        let mut links = self
            .handle
            .link()
            .get()
            .match_name(name.to_string())
            .execute();
        match links.try_next().await {
            Ok(m) => Ok(m),
            Err(e) if is_errno(&e, libc::ENODEV) => Ok(None),
            Err(e) => Err(NetError::new(format!("look up link {name}"), e)),
        }
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
    /// The index of link `name`, if it exists.
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
                match self.handle.link().add(bridge).execute().await {
                    Ok(()) => {}
                    // Another peapod made it meanwhile.
                    Err(e) if is_errno(&e, libc::EEXIST) => {}
                    Err(e) => return Err(NetError::new(format!("create bridge {name}"), e)),
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
            self.handle
                .link()
                .set(
                    LinkUnspec::new_with_index(index)
                        .address(mac.to_vec())
                        .build(),
                )
                .execute()
                .await
                .map_err(|e| NetError::new(format!("set the hardware address of {name}"), e))?;
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
        match self.handle.link().add(msg).execute().await {
            Ok(()) => Ok(()),
            // The kernel's bridge numbers its ports in 10 bits, port 0 unused.
            Err(e) if is_errno(&e, libc::EXFULL) => Err(NetError::other(
                format!("create veth {host}"),
                io::Error::other(format!(
                    "the bridge has {BRIDGE_MAX_PORTS} ports already, the most a Linux bridge \
                     takes: give further pods another bridge (--bridge / network.bridge) and subnet"
                )),
            )),
            Err(e) => Err(NetError::new(format!("create veth {host}"), e)),
        }
    }

    /// Deletes link `name`; `false` if there was none.
    async fn delete_link(&self, name: &str) -> Result<bool, NetError> {
        let Some(index) = self.link_index(name).await? else {
            return Ok(false);
        };
        match self.handle.link().del(index).execute().await {
            Ok(()) => Ok(true),
            Err(e) if is_errno(&e, libc::ENODEV) => Ok(false),
            Err(e) => Err(NetError::new(format!("delete link {name}"), e)),
        }
    }

    /// Names of the links attached to bridge `controller`.
    async fn ports_of(&self, controller: u32) -> Result<Vec<Port>, NetError> {
        let links: Vec<_> = self
            .handle
            .link()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(|e| NetError::new("list links", e))?;
        Ok(links
            .into_iter()
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
        self.handle
            .link()
            .set(LinkUnspec::new_with_index(index).up().build())
            .execute()
            .await
            .map_err(|e| NetError::new(format!("set {name} up"), e))
    }

    /// Adds `addr/prefix` to a link; an address already there is fine.
    async fn add_addr(
        &self,
        index: u32,
        addr: Ipv4Addr,
        prefix: u8,
        name: &str,
    ) -> Result<(), NetError> {
        match self
            .handle
            .address()
            .add(index, addr.into(), prefix)
            .execute()
            .await
        {
            Err(e) if !is_errno(&e, libc::EEXIST) => Err(NetError::new(
                format!("add address {addr}/{prefix} to {name}"),
                e,
            )),
            _ => Ok(()),
        }
    }

    async fn add_default_route(&self, gateway: Ipv4Addr) -> Result<(), NetError> {
        self.handle
            .route()
            .add(
                RouteMessageBuilder::<Ipv4Addr>::new()
                    .gateway(gateway)
                    .build(),
            )
            .execute()
            .await
            .map_err(|e| NetError::new(format!("add default route via {gateway}"), e))
    }

    // The neighbour verbs go over a socket of their own per request (`route_request`), not the
    // connection: QEMU's user-mode emulator (before 10.0) translates no neighbour message and
    // fails the send with EOPNOTSUPP, which on the connection would close it for every later
    // request instead of failing this one.
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
        route_request(
            RouteNetlinkMessage::NewNeighbour(msg),
            NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE,
        )
        .map(drop)
        .map_err(|e| NetError::other(format!("add neighbour {ip} on {name}"), e))
    }

    async fn delete_neighbour(&self, index: u32, ip: Ipv4Addr) -> Result<(), NetError> {
        match route_request(
            RouteNetlinkMessage::DelNeighbour(neighbour(index, ip)),
            NLM_F_ACK,
        ) {
            Err(e) if e.raw_os_error() != Some(libc::ENOENT) => {
                Err(NetError::other(format!("delete neighbour {ip}"), e))
            }
            _ => Ok(()),
        }
    }

    async fn permanent_neighbours(&self, index: u32) -> Result<Vec<(Ipv4Addr, Vec<u8>)>, NetError> {
        let mut query = NeighbourMessage::default();
        query.header.family = AddressFamily::Inet;
        let all = route_request(RouteNetlinkMessage::GetNeighbour(query), NLM_F_DUMP)
            .map_err(|e| NetError::other("list neighbours", e))?;
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
fn route_request(msg: RouteNetlinkMessage, flags: u16) -> io::Result<Vec<RouteNetlinkMessage>> {
    let mut m = NetlinkMessage::from(msg);
    m.header.flags = NLM_F_REQUEST | flags;
    m.header.sequence_number = 1;
    m.finalize();
    let mut bytes = vec![0; m.buffer_len()];
    m.serialize(&mut bytes);
    let acks = usize::from(flags & NLM_F_ACK != 0);
    exchange(NETLINK_ROUTE, &bytes, acks)
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
    let mut sock = Socket::new(protocol)?;
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
