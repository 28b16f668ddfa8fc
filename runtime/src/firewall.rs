//! The host's firewall, as far as peapod touches it: one nf_tables table of its own,
//! `inet peapod`, and in it one chain per bridge. Nothing else is ever read or changed.
//!
//! Egress: `<bridge>-postrouting` (type nat, hook postrouting, priority srcnat) holds one rule,
//! `ip saddr SUBNET ip daddr != SUBNET masquerade`: what a pod sends outside the host leaves with
//! the address of the interface it goes out of, and the replies find their way back through
//! conntrack. The chain is derived state: [`crate::ipam::Ipam`] replaces it whole (flush + add,
//! in one atomic batch) when the bridge's leases change, under the lease file's lock, and deletes
//! it with the bridge's last lease, so `peapod run`s and the daemon on one bridge agree.
//!
//! Spoken over netlink (`NETLINK_NETFILTER`) with `netlink-packet-netfilter` (MIT, the rtnetlink
//! family): no `nft` process (design invariant 8). Not `rustables` (GPL-3.0) or `nftnl` (binds
//! libnftnl, GPL-2.0, which the cross builds would need too): peapod is Apache-2.0.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};

use ipnet::Ipv4Net;
use netlink_packet_core::{
    NLM_F_ACK, NLM_F_APPEND, NLM_F_CREATE, NLM_F_REQUEST, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_netfilter::nftables::{
    Bitwise, ChainAttribute, ChainMessage, Cmp, DataAttribute, ExpressionAttribute, Expressions,
    Hook, HookNumber, InetHookNumber, ListAttribute, Meta, MetaKey, NfTablesMessage, Operator,
    Payload, Register, RuleAttribute, RuleMessage, TableAttribute, TableMessage,
};
use netlink_packet_netfilter::none::ControlMessage;
use netlink_packet_netfilter::{
    NetfilterHeader, NetfilterMessage, NetfilterMessageInner, NetfilterProtoFamily,
};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_NETFILTER};

/// peapod's table (family `inet`).
pub const TABLE: &str = "peapod";

/// The egress chain of `bridge`.
pub fn egress_chain(bridge: &str) -> String {
    format!("{bridge}-postrouting")
}

/// NFNL_SUBSYS_NFTABLES: the batch messages name the subsystem they carry.
const SUBSYS_NFTABLES: u16 = 10;
/// NF_IP_PRI_NAT_SRC: where `nft`'s `priority srcnat` puts a nat postrouting chain.
const PRIORITY_SRCNAT: u32 = 100;
/// NFT_PAYLOAD_NETWORK_HEADER
const NETWORK_HEADER: u32 = 1;
/// NFPROTO_IPV4
const NFPROTO_IPV4: u8 = 2;

/// Makes the egress of `bridge` what `active` says: the masquerade rule for `subnet` when
/// true, no chain when false.
pub fn sync_egress(bridge: &str, subnet: Ipv4Net, active: bool) -> io::Result<()> {
    let chain = egress_chain(bridge);
    let mut batch = Batch::default();
    if active {
        batch.push(NfTablesMessage::NewTable(TableMessage {
            attributes: vec![TableAttribute::Name(TABLE.into())],
        }));
        batch.push(NfTablesMessage::NewChain(ChainMessage {
            attributes: vec![
                ChainAttribute::Table(TABLE.into()),
                ChainAttribute::Name(chain.clone()),
                ChainAttribute::Hook(vec![
                    Hook::Number(HookNumber::Inet(InetHookNumber::PostRouting)),
                    Hook::Priority(PRIORITY_SRCNAT),
                ]),
                ChainAttribute::Type("nat".into()),
            ],
        }));
        batch.push(flush(&chain));
        batch.push(NfTablesMessage::NewRule(RuleMessage {
            attributes: vec![
                RuleAttribute::Table(TABLE.into()),
                RuleAttribute::Chain(chain),
                RuleAttribute::Expressions(masquerade(subnet)),
            ],
        }));
        batch.send()
    } else {
        batch.push(flush(&chain));
        batch.push(NfTablesMessage::DeleteChain(ChainMessage {
            attributes: vec![
                ChainAttribute::Table(TABLE.into()),
                ChainAttribute::Name(chain),
            ],
        }));
        match batch.send() {
            // No table or no chain: nothing to remove.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(()),
            r => r,
        }
    }
}

/// Removes every rule of `chain` (a DELRULE naming no rule).
fn flush(chain: &str) -> NfTablesMessage {
    NfTablesMessage::DeleteRule(RuleMessage {
        attributes: vec![
            RuleAttribute::Table(TABLE.into()),
            RuleAttribute::Chain(chain.into()),
        ],
    })
}

/// `meta nfproto ipv4 ip saddr SUBNET ip daddr != SUBNET masquerade`, as `nft` encodes it.
fn masquerade(subnet: Ipv4Net) -> Vec<ListAttribute<ExpressionAttribute>> {
    let net = subnet.network().octets().to_vec();
    let mask = subnet.netmask().octets().to_vec();
    let address = |offset: u32, op: Operator| {
        [
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
                Bitwise::Mask(DataAttribute::Value(mask.clone())),
                Bitwise::Xor(DataAttribute::Value(vec![0; 4])),
            ]),
            Expressions::Cmp(vec![
                Cmp::SourceRegister(Register::Reg1),
                Cmp::Op(op),
                Cmp::Data(DataAttribute::Value(net.clone())),
            ]),
        ]
    };
    let mut e = vec![
        Expressions::Meta(vec![
            Meta::DestinationRegister(Register::Reg1),
            Meta::Key(MetaKey::Nfproto),
        ]),
        Expressions::Cmp(vec![
            Cmp::SourceRegister(Register::Reg1),
            Cmp::Op(Operator::Equal),
            Cmp::Data(DataAttribute::Value(vec![NFPROTO_IPV4])),
        ]),
    ];
    e.extend(address(12, Operator::Equal)); // ip saddr
    e.extend(address(16, Operator::NotEqual)); // ip daddr
    e.push(Expressions::Other {
        expression_type: "masq".into(),
        attributes: Vec::new(),
    });
    e.into_iter().map(Into::into).collect()
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
        let mut sock = Socket::new(NETLINK_NETFILTER)?;
        sock.bind_auto()?;
        sock.connect(&SocketAddr::new(0, 0))?;
        let bytes = self.encode();
        sock.send(&bytes, 0)?;
        let mut acked = 0;
        let mut buf = vec![0u8; 64 * 1024];
        while acked < self.messages.len() {
            let n = sock.recv(&mut &mut buf[..], 0)?;
            let mut off = 0;
            while off < n {
                let m = NetlinkMessage::<NetfilterMessage>::deserialize(&buf[off..n])
                    .map_err(|e| io::Error::other(format!("nf_tables answer: {e}")))?;
                let len = m.header.length as usize;
                if len == 0 {
                    break;
                }
                off += (len + 3) & !3;
                if let NetlinkPayload::Error(e) = m.payload {
                    match e.code {
                        None => acked += 1,
                        Some(code) => return Err(io::Error::from_raw_os_error(-code.get())),
                    }
                }
            }
        }
        Ok(())
    }
}

/// Turns on `net.ipv4.ip_forward` of the current network namespace if it is off (egress needs
/// the host to forward the pods' packets), saying so once.
pub fn enable_forwarding() -> io::Result<()> {
    const PATH: &str = "/proc/sys/net/ipv4/ip_forward";
    static SAID: AtomicBool = AtomicBool::new(false);
    if std::fs::read_to_string(PATH)?.trim() == "1" {
        return Ok(());
    }
    std::fs::write(PATH, "1")?;
    if !SAID.swap(true, Ordering::Relaxed) {
        tracing::info!("egress: turned on net.ipv4.ip_forward (pods' packets are forwarded)");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_is_begin_messages_end_each_acked() {
        let mut b = Batch::default();
        b.push(flush("br-postrouting"));
        let bytes = b.encode();
        // Three netlink messages: types 0x10 (batch begin), 0x0a08 (DELRULE), 0x11 (batch end).
        let mut types = Vec::new();
        let mut off = 0;
        while off < bytes.len() {
            let len = u32::from_ne_bytes(bytes[off..off + 4].try_into().unwrap()) as usize;
            types.push(u16::from_ne_bytes(
                bytes[off + 4..off + 6].try_into().unwrap(),
            ));
            off += (len + 3) & !3;
        }
        assert_eq!(types, vec![0x10, 0x0a08, 0x11]);
    }

    #[test]
    fn the_masquerade_rule_matches_the_subnet_both_ways() {
        let e = masquerade("10.66.0.0/22".parse().unwrap());
        // meta, cmp, (payload, bitwise, cmp) x 2, masq
        assert_eq!(e.len(), 9);
        let dbg = format!("{e:?}");
        assert!(
            dbg.contains("Offset(12)") && dbg.contains("Offset(16)"),
            "{dbg}"
        );
        assert!(
            dbg.contains("[255, 255, 252, 0]") && dbg.contains("[10, 66, 0, 0]"),
            "{dbg}"
        );
        assert!(
            dbg.contains("NotEqual") && dbg.contains("\"masq\""),
            "{dbg}"
        );
    }
}
