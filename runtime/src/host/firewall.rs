//! The host's firewall, as far as peapod touches it: one nf_tables table of its own,
//! `inet peapod`, and in it three nat chains per bridge. Nothing else is ever read or changed.
//!
//! - `<bridge>-postrouting` (priority srcnat): egress, `ip saddr SUBNET ip daddr != SUBNET
//!   masquerade` (what a pod sends outside the host leaves with the address of the interface it
//!   goes out of; conntrack brings the replies back); and for published ports, masquerade of
//!   `127.0.0.0/8` sources towards the bridge and of traffic routed from the bridge back into it.
//! - `<bridge>-prerouting` and `<bridge>-output` (priority dstnat): one DNAT rule per published
//!   port, for packets from outside and from the host itself, to a host address (`fib daddr
//!   type local`, or the port's `host_ip`).
//!
//! The chains are derived state: [`crate::host::ipam::Ipam`] replaces them whole (flush + add, in one
//! atomic batch) when the bridge's leases change, under the lease file's lock, from the lease
//! file (which keeps each pod's published ports beside its address), so `peapod run`s and the
//! daemon on one bridge agree; a chain with no rule is deleted.
//!
//! Spoken over netlink (`NETLINK_NETFILTER`) with `netlink-packet-netfilter` (MIT, the rtnetlink
//! family): no `nft` process (design invariant 8). Not `rustables` (GPL-3.0) or `nftnl` (binds
//! libnftnl, GPL-2.0, which the cross builds would need too): peapod is Apache-2.0.

use std::io;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use netlink_packet_core::{
    DefaultNla, NLM_F_ACK, NLM_F_APPEND, NLM_F_CREATE, NLM_F_REQUEST, NetlinkMessage,
};
use netlink_packet_netfilter::nftables::{
    Bitwise, ChainAttribute, ChainMessage, Cmp, DataAttribute, Expressions, Hook, HookNumber,
    Immediate, InetHookNumber, Meta, MetaKey, NfTablesMessage, Operator, Payload, Register,
    RuleAttribute, RuleMessage, TableAttribute, TableMessage,
};
use netlink_packet_netfilter::none::ControlMessage;
use netlink_packet_netfilter::{
    NetfilterHeader, NetfilterMessage, NetfilterMessageInner, NetfilterProtoFamily,
};
use netlink_sys::protocols::NETLINK_NETFILTER;

use crate::spec::Published;

/// peapod's table (family `inet`).
pub(crate) const TABLE: &str = "peapod";

/// NFNL_SUBSYS_NFTABLES: the batch messages name the subsystem they carry.
const SUBSYS_NFTABLES: u16 = 10;
/// NF_IP_PRI_NAT_SRC and NF_IP_PRI_NAT_DST: `nft`'s `priority srcnat` and `dstnat`.
const PRIORITY_SRCNAT: i32 = 100;
const PRIORITY_DSTNAT: i32 = -100;
/// NFT_PAYLOAD_NETWORK_HEADER, NFT_PAYLOAD_TRANSPORT_HEADER
const NETWORK_HEADER: u32 = 1;
const TRANSPORT_HEADER: u32 = 2;
/// NFPROTO_IPV4
const NFPROTO_IPV4: u8 = 2;
/// NFT_META_L4PROTO
const META_L4PROTO: u32 = 16;
/// RTN_LOCAL: what `fib daddr type` says of the host's own addresses.
const RTN_LOCAL: u32 = 2;

/// What the firewall should hold for one bridge.
pub(crate) struct Rules<'a> {
    pub bridge: &'a str,
    pub subnet: Ipv4Net,
    /// Masquerade what the pods send outside the host.
    pub egress: bool,
    /// The pods' published ports: (pod address, its ports).
    pub published: Vec<(Ipv4Addr, &'a [Published])>,
}

/// What [`sync`] made for a bridge, as the lease file records it: a change of the leases that
/// changes none of this (a pod that publishes nothing, with egress on or off) costs no
/// nf_tables transaction (each takes the kernel ~10 ms).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Applied {
    /// The subnet masqueraded, when egress is on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress: Option<Ipv4Net>,
    /// Published ports, with the address each leads to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub published: Vec<(Ipv4Addr, Published)>,
}

impl Applied {
    pub(crate) fn is_empty(&self) -> bool {
        *self == Applied::default()
    }
}

impl Rules<'_> {
    /// What these rules make, to compare with what was made.
    pub(crate) fn applied(&self) -> Applied {
        let mut published: Vec<(Ipv4Addr, Published)> = self
            .published
            .iter()
            .flat_map(|(ip, ports)| ports.iter().map(move |p| (*ip, *p)))
            .collect();
        published.sort();
        Applied {
            egress: self.egress.then_some(self.subnet),
            published,
        }
    }

    /// Is anything asked of the firewall at all?
    pub(crate) fn needed(&self) -> bool {
        self.egress || self.publishes()
    }

    fn publishes(&self) -> bool {
        self.published.iter().any(|(_, p)| !p.is_empty())
    }
}

/// A base chain of peapod's table (all of type nat).
pub(crate) struct Chain {
    pub name: String,
    hook: InetHookNumber,
    priority: i32,
}

/// One rule: its expressions, in order.
type Rule = Vec<Expressions>;

/// The chains of `bridge` in peapod's table: postrouting, prerouting, output.
pub(crate) fn chains(bridge: &str) -> [Chain; 3] {
    let chain = |hook_name: &str, hook, priority| Chain {
        name: format!("{bridge}-{hook_name}"),
        hook,
        priority,
    };
    [
        chain("postrouting", InetHookNumber::PostRouting, PRIORITY_SRCNAT),
        chain("prerouting", InetHookNumber::PreRouting, PRIORITY_DSTNAT),
        chain("output", InetHookNumber::LocalOut, PRIORITY_DSTNAT),
    ]
}

/// Makes the bridge's chains what `rules` says, in one atomic batch: every chain made (if
/// missing) and flushed, then filled, or deleted when it has no rule. With nothing asked at
/// all, only deletes what exists ([`remove`]). Both need `ip_forward`;
/// published ports also `route_localnet` on the bridge (for `127.0.0.1:PORT`).
pub(crate) fn sync(rules: &Rules) -> io::Result<()> {
    if !rules.needed() {
        return remove(rules.bridge);
    }
    let mut content: [(Chain, Vec<Rule>); 3] =
        chains(rules.bridge).map(|chain| (chain, Vec::new()));
    if rules.egress {
        content[0].1.push(masquerade(rules.subnet));
    }
    if rules.publishes() {
        // From the host itself to 127.0.0.1:PORT: the source must not stay a loopback one
        // towards the pod (whose own loopback it would be).
        let mut local = ipv4();
        local.extend(address(12, "127.0.0.0/8".parse().unwrap(), Operator::Equal));
        local.extend(ifname(MetaKey::Oifname, rules.bridge));
        local.push(masq());
        content[0].1.push(local);
        // From a pod to a published port that leads to a pod of the bridge (a hairpin):
        // routed in and out of the bridge; answered as the host, or the answer would go
        // straight back over the bridge, around the NAT.
        let mut hairpin = ifname(MetaKey::Iifname, rules.bridge);
        hairpin.extend(ifname(MetaKey::Oifname, rules.bridge));
        hairpin.push(masq());
        content[0].1.push(hairpin);
        for (ip, ports) in &rules.published {
            for p in ports.iter() {
                content[1].1.push(dnat(*ip, p));
                content[2].1.push(dnat(*ip, p));
            }
        }
    }

    let mut batch = Batch::default();
    batch.push(NfTablesMessage::NewTable(TableMessage {
        attributes: vec![TableAttribute::Name(TABLE.into())],
    }));
    for (chain, rules) in &content {
        replace(&mut batch, chain, rules);
    }
    batch.send()?;
    enable_forwarding()?;
    if rules.publishes() {
        set_sysctl(
            &format!("/proc/sys/net/ipv4/conf/{}/route_localnet", rules.bridge),
            "1",
        )?;
    }
    Ok(())
}

/// Adds to `batch` what makes `chain` hold exactly `rules`: the chain made if missing (so that
/// no message fails), flushed, then filled, or deleted when there is no rule.
fn replace(batch: &mut Batch, chain: &Chain, rules: &[Rule]) {
    batch.push(new_chain(chain));
    batch.push(flush(&chain.name));
    if rules.is_empty() {
        batch.push(NfTablesMessage::DeleteChain(ChainMessage {
            attributes: vec![
                ChainAttribute::Table(TABLE.into()),
                ChainAttribute::Name(chain.name.clone()),
            ],
        }));
    }
    for r in rules {
        batch.push(NfTablesMessage::NewRule(RuleMessage {
            attributes: vec![
                RuleAttribute::Table(TABLE.into()),
                RuleAttribute::Chain(chain.name.clone()),
                RuleAttribute::Expressions(r.iter().cloned().map(Into::into).collect()),
            ],
        }));
    }
}

/// Deletes the chains of `bridge`, and makes nothing: where peapod's table does not exist (a
/// lookup, no transaction) nothing is sent; else one batch [`replace`]s each with no rule.
fn remove(bridge: &str) -> io::Result<()> {
    if !table_exists()? {
        return Ok(());
    }
    let mut batch = Batch::default();
    for chain in chains(bridge) {
        replace(&mut batch, &chain, &[]);
    }
    batch.send()
}

/// NEWCHAIN of a base chain (made if missing, as it is if it exists).
fn new_chain(chain: &Chain) -> NfTablesMessage {
    NfTablesMessage::NewChain(ChainMessage {
        attributes: vec![
            ChainAttribute::Table(TABLE.into()),
            ChainAttribute::Name(chain.name.clone()),
            ChainAttribute::Hook(vec![
                Hook::Number(HookNumber::Inet(chain.hook)),
                Hook::Priority(chain.priority as u32),
            ]),
            ChainAttribute::Type("nat".into()),
        ],
    })
}

/// DELRULE naming no rule: every rule of `chain`.
fn flush(chain: &str) -> NfTablesMessage {
    NfTablesMessage::DeleteRule(RuleMessage {
        attributes: vec![
            RuleAttribute::Table(TABLE.into()),
            RuleAttribute::Chain(chain.into()),
        ],
    })
}

fn u32_be(v: u32) -> Vec<u8> {
    v.to_be_bytes().to_vec()
}

fn cmp(op: Operator, data: Vec<u8>) -> Expressions {
    Expressions::Cmp(vec![
        Cmp::SourceRegister(Register::Reg1),
        Cmp::Op(op),
        Cmp::Data(DataAttribute::Value(data)),
    ])
}

/// `meta nfproto ipv4` (what `nft` puts before a match on the IPv4 header in an inet table).
fn ipv4() -> Vec<Expressions> {
    vec![
        Expressions::Meta(vec![
            Meta::DestinationRegister(Register::Reg1),
            Meta::Key(MetaKey::Nfproto),
        ]),
        cmp(Operator::Equal, vec![NFPROTO_IPV4]),
    ]
}

/// `ip saddr NET` (offset 12) or `ip daddr NET` (offset 16), `op` `==` or `!=`.
fn address(offset: u32, net: Ipv4Net, op: Operator) -> Vec<Expressions> {
    vec![
        Expressions::Payload(vec![
            Payload::DestinationRegister(Register::Reg1),
            Payload::Base(NETWORK_HEADER),
            Payload::Offset(offset),
            Payload::Len(4),
        ]),
        Expressions::Bitwise(vec![
            Bitwise::SourceRegister(Register::Reg1),
            Bitwise::DestinationRegister(Register::Reg1),
            Bitwise::Length(4),
            Bitwise::Mask(DataAttribute::Value(net.netmask().octets().to_vec())),
            Bitwise::Xor(DataAttribute::Value(vec![0; 4])),
        ]),
        cmp(op, net.network().octets().to_vec()),
    ]
}

/// `iifname NAME` / `oifname NAME`.
fn ifname(key: MetaKey, name: &str) -> Vec<Expressions> {
    let mut padded = name.as_bytes().to_vec();
    padded.resize(16, 0);
    vec![
        Expressions::Meta(vec![
            Meta::DestinationRegister(Register::Reg1),
            Meta::Key(key),
        ]),
        cmp(Operator::Equal, padded),
    ]
}

fn masq() -> Expressions {
    Expressions::Other {
        expression_type: "masq".into(),
        attributes: Vec::new(),
    }
}

/// `meta nfproto ipv4 ip saddr SUBNET ip daddr != SUBNET masquerade`.
fn masquerade(subnet: Ipv4Net) -> Vec<Expressions> {
    let mut e = ipv4();
    e.extend(address(12, subnet, Operator::Equal));
    e.extend(address(16, subnet, Operator::NotEqual));
    e.push(masq());
    e
}

/// `[fib daddr type local | ip daddr HOST_IP] meta l4proto P th dport HOST_PORT
/// dnat ip to POD_IP:CONTAINER_PORT`.
fn dnat(pod: Ipv4Addr, p: &Published) -> Vec<Expressions> {
    let mut e = ipv4();
    if p.host_ip.is_unspecified() {
        e.push(Expressions::Other {
            expression_type: "fib".into(),
            attributes: vec![
                DefaultNla::new(1, u32_be(1)), // NFTA_FIB_DREG: reg 1
                DefaultNla::new(2, u32_be(3)), // NFTA_FIB_RESULT: NFT_FIB_RESULT_ADDRTYPE
                DefaultNla::new(3, u32_be(2)), // NFTA_FIB_FLAGS: NFTA_FIB_F_DADDR
            ],
        });
        e.push(cmp(Operator::Equal, RTN_LOCAL.to_ne_bytes().to_vec()));
    } else {
        e.extend(address(16, Ipv4Net::from(p.host_ip), Operator::Equal));
    }
    e.push(Expressions::Meta(vec![
        Meta::DestinationRegister(Register::Reg1),
        Meta::Key(MetaKey::Other(META_L4PROTO)),
    ]));
    e.push(cmp(Operator::Equal, vec![p.protocol.number()]));
    e.push(Expressions::Payload(vec![
        Payload::DestinationRegister(Register::Reg1),
        Payload::Base(TRANSPORT_HEADER),
        Payload::Offset(2),
        Payload::Len(2),
    ]));
    e.push(cmp(Operator::Equal, p.host_port.to_be_bytes().to_vec()));
    e.push(Expressions::Immediate(vec![
        Immediate::DestinationRegister(Register::Reg1),
        Immediate::Data(DataAttribute::Value(pod.octets().to_vec())),
    ]));
    e.push(Expressions::Immediate(vec![
        Immediate::DestinationRegister(Register::Reg2),
        Immediate::Data(DataAttribute::Value(
            p.container_port.to_be_bytes().to_vec(),
        )),
    ]));
    e.push(Expressions::Other {
        expression_type: "nat".into(),
        attributes: vec![
            DefaultNla::new(1, u32_be(1)), // NFTA_NAT_TYPE: NFT_NAT_DNAT
            DefaultNla::new(2, u32_be(u32::from(NFPROTO_IPV4))), // NFTA_NAT_FAMILY
            DefaultNla::new(3, u32_be(1)), // NFTA_NAT_REG_ADDR_MIN: reg 1
            DefaultNla::new(5, u32_be(2)), // NFTA_NAT_REG_PROTO_MIN: reg 2
        ],
    });
    e
}

/// Does peapod's table exist (a GETTABLE, answered by the table or ENOENT)?
fn table_exists() -> io::Result<bool> {
    let mut m = NetlinkMessage::from(NetfilterMessage::new(
        NetfilterHeader::new(NetfilterProtoFamily::Inet, 0, 0),
        NetfilterMessageInner::NfTables(NfTablesMessage::GetTable(TableMessage {
            attributes: vec![TableAttribute::Name(TABLE.into())],
        })),
    ));
    m.header.flags = NLM_F_REQUEST | NLM_F_ACK;
    m.finalize();
    let mut bytes = vec![0; m.buffer_len()];
    m.serialize(&mut bytes);
    match exchange(&bytes, 1) {
        Ok(()) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Sends `bytes` and waits for `acks` acknowledgements (or the first error).
fn exchange(bytes: &[u8], acks: usize) -> io::Result<()> {
    crate::host::net::exchange::<NetfilterMessage>(NETLINK_NETFILTER, bytes, acks).map(drop)
}

/// Messages sent as one nf_tables transaction: all of them take effect, or none.
#[derive(Default)]
struct Batch {
    messages: Vec<NfTablesMessage>,
}

impl Batch {
    fn push(&mut self, m: NfTablesMessage) {
        self.messages.push(m);
    }

    fn encode(&self) -> Vec<u8> {
        let control = |c: ControlMessage| {
            NetfilterMessage::new(
                NetfilterHeader::new(NetfilterProtoFamily::Unspec, 0, SUBSYS_NFTABLES),
                c,
            )
        };
        let mut all = vec![(control(ControlMessage::BatchBegin), NLM_F_REQUEST)];
        for m in &self.messages {
            let flags = match m {
                NfTablesMessage::NewTable(_) | NfTablesMessage::NewChain(_) => NLM_F_CREATE,
                NfTablesMessage::NewRule(_) => NLM_F_CREATE | NLM_F_APPEND,
                _ => 0,
            };
            let msg = NetfilterMessage::new(
                NetfilterHeader::new(NetfilterProtoFamily::Inet, 0, 0),
                NetfilterMessageInner::NfTables(m.clone()),
            );
            all.push((msg, NLM_F_REQUEST | NLM_F_ACK | flags));
        }
        all.push((control(ControlMessage::BatchEnd), NLM_F_REQUEST));
        let mut bytes = Vec::new();
        for (seq, (m, flags)) in all.into_iter().enumerate() {
            let mut m = NetlinkMessage::from(m);
            m.header.flags = flags;
            m.header.sequence_number = seq as u32;
            m.finalize();
            let start = bytes.len();
            bytes.resize(start + m.buffer_len(), 0);
            m.serialize(&mut bytes[start..]);
        }
        bytes
    }

    /// Sends the batch and waits for the kernel's answer to each message.
    fn send(&self) -> io::Result<()> {
        exchange(&self.encode(), self.messages.len())
    }
}

/// Turns on `net.ipv4.ip_forward` of the current network namespace if it is off (egress and
/// published ports need the host to forward the pods' packets), saying so once.
fn enable_forwarding() -> io::Result<()> {
    if set_sysctl("/proc/sys/net/ipv4/ip_forward", "1")? {
        crate::once::once! {
            tracing::info!("firewall: turned on net.ipv4.ip_forward (the host forwards pods' packets)");
        };
    }
    Ok(())
}

/// Writes `value` to the sysctl file at `path` unless it holds it already; true if it wrote.
fn set_sysctl(path: &str, value: &str) -> io::Result<bool> {
    if std::fs::read_to_string(path)?.trim() == value {
        return Ok(false);
    }
    std::fs::write(path, value)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::Protocol;

    #[test]
    fn a_batch_is_begin_messages_end() {
        let mut b = Batch::default();
        b.push(NfTablesMessage::NewTable(TableMessage {
            attributes: vec![TableAttribute::Name(TABLE.into())],
        }));
        let bytes = b.encode();
        // Three netlink messages: batch begin (0x10), NEWTABLE (0x0a00), batch end (0x11).
        let mut types = Vec::new();
        let mut off = 0;
        while off < bytes.len() {
            let len = u32::from_ne_bytes(bytes[off..off + 4].try_into().unwrap()) as usize;
            types.push(u16::from_ne_bytes(
                bytes[off + 4..off + 6].try_into().unwrap(),
            ));
            off += (len + 3) & !3;
        }
        assert_eq!(types, vec![0x10, 0x0a00, 0x11]);
    }

    #[test]
    fn the_masquerade_rule_matches_the_subnet_both_ways() {
        let e = format!("{:?}", masquerade("10.66.0.0/22".parse().unwrap()));
        assert!(e.contains("Offset(12)") && e.contains("Offset(16)"), "{e}");
        assert!(
            e.contains("[255, 255, 252, 0]") && e.contains("[10, 66, 0, 0]"),
            "{e}"
        );
        assert!(e.contains("NotEqual") && e.contains("\"masq\""), "{e}");
    }

    #[test]
    fn a_dnat_rule_carries_the_ports_in_network_order() {
        let p = Published {
            protocol: Protocol::Udp,
            host_ip: "192.0.2.5".parse().unwrap(),
            host_port: 0x1234,
            container_port: 0x5678,
        };
        let e = format!("{:?}", dnat("10.66.0.9".parse().unwrap(), &p));
        assert!(e.contains("[18, 52]") && e.contains("[86, 120]"), "{e}");
        assert!(e.contains("[17]") && e.contains("[192, 0, 2, 5]"), "{e}");
        assert!(e.contains("[10, 66, 0, 9]") && !e.contains("fib"), "{e}");
    }
}
