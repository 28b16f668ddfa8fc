//! A container's `ports`, Kubernetes-shaped. A port with a `host_port` is *published*: it
//! answers on the host's addresses (see [`crate::host::firewall`]); one without is documentation.
//!
//! ```toml
//! [[containers]]
//! ports = [{ container_port = 8080, host_port = 18080 }]   # protocol = "TCP" | "UDP" (TCP)
//!                                                          # host_ip = "0.0.0.0" (all)
//! ```
//!
//! Checked here: ranges, the protocol, the address, and a host port published twice in the pod.
//! A host port that another pod publishes or a host process holds is checked against the host
//! ([`crate::host::ports`]).

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use super::Key;

/// `TCP` or `UDP`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    /// The IP protocol number.
    pub fn number(self) -> u8 {
        match self {
            Protocol::Tcp => 6,
            Protocol::Udp => 17,
        }
    }
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
        })
    }
}

/// One entry of a container's `ports`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortSpec {
    pub container_port: u16,
    pub host_port: Option<u16>,
    pub protocol: Protocol,
    /// `0.0.0.0`: every address of the host.
    pub host_ip: Ipv4Addr,
    /// Index in the container's `ports`.
    pub index: usize,
    /// Line of its `host_port` (else of its `container_port`), for problems found on the host.
    pub line: Option<usize>,
}

/// A published port of a pod: what the host forwards to the pod (kept beside its lease).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Published {
    pub protocol: Protocol,
    pub host_ip: Ipv4Addr,
    pub host_port: u16,
    pub container_port: u16,
}

impl Published {
    /// Do `self` and `other` claim a common host address and port?
    pub fn clashes(&self, other: &Published) -> bool {
        self.protocol == other.protocol
            && self.host_port == other.host_port
            && (self.host_ip == other.host_ip
                || self.host_ip.is_unspecified()
                || other.host_ip.is_unspecified())
    }
}

impl std::fmt::Display for Published {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.host_port, self.protocol)?;
        if !self.host_ip.is_unspecified() {
            write!(f, " on {}", self.host_ip)?;
        }
        Ok(())
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPort {
    container_port: i64,
    host_port: Option<i64>,
    protocol: Option<String>,
    host_ip: Option<String>,
}

use super::Report;

fn port(n: i64) -> Result<u16, String> {
    match u16::try_from(n) {
        Ok(0) => Err("0 is not a port: use 1-65535".into()),
        Ok(p) => Ok(p),
        Err(_) => Err(format!("{n} is not a port: use 1-65535")),
    }
}

/// Validates container `c`'s `ports`; `taken` holds the pod's published ports so far (with
/// where they are), for duplicates across its containers.
/// A container port declared by two containers that run side by side (apps and sidecars; a
/// plain init container has ended before they start): the pod's containers share one network
/// namespace, so the second one's bind would fail with "address in use".
pub(super) fn one_owner_each(containers: &[super::ContainerSpec], problem: &mut Report<'_>) {
    let mut seen: Vec<(u16, Protocol, &str)> = Vec::new();
    for c in containers.iter().filter(|c| c.kind != super::Kind::Init) {
        for p in &c.ports {
            let other = seen
                .iter()
                .find(|(port, proto, owner)| {
                    *port == p.container_port && *proto == p.protocol && *owner != c.name
                })
                .map(|(_, _, owner)| *owner);
            match other {
                Some(owner) => problem(
                    &[
                        Key::F(c.list()),
                        Key::I(c.index),
                        Key::F("ports"),
                        Key::I(p.index),
                        Key::F("container_port"),
                    ],
                    format!(
                        "{}/{} is container {owner:?}'s too: a pod's containers share one \
                         network namespace (one localhost), so a port is one container's",
                        p.container_port, p.protocol
                    ),
                ),
                None => seen.push((p.container_port, p.protocol, &c.name)),
            }
        }
    }
}

pub(super) fn ports(
    (list, c): (&'static str, usize),
    raw: Vec<RawPort>,
    taken: &mut Vec<(Published, String)>,
    line_of: &dyn Fn(&[Key]) -> Option<usize>,
    problem: &mut Report<'_>,
) -> Vec<PortSpec> {
    let mut out = Vec::new();
    for (j, p) in raw.into_iter().enumerate() {
        let at = |field: &'static str| {
            [
                Key::F(list),
                Key::I(c),
                Key::F("ports"),
                Key::I(j),
                Key::F(field),
            ]
        };
        let container_port = port(p.container_port)
            .map_err(|m| problem(&at("container_port"), m))
            .unwrap_or(0);
        let host_port = p
            .host_port
            .and_then(|n| port(n).map_err(|m| problem(&at("host_port"), m)).ok());
        let protocol = match p
            .protocol
            .as_deref()
            .map(str::to_ascii_uppercase)
            .as_deref()
        {
            None | Some("TCP") => Protocol::Tcp,
            Some("UDP") => Protocol::Udp,
            Some(_) => {
                problem(
                    &at("protocol"),
                    format!(
                        "{:?}: use \"TCP\" or \"UDP\"",
                        p.protocol.as_deref().unwrap_or_default()
                    ),
                );
                Protocol::Tcp
            }
        };
        let host_ip = match p.host_ip.as_deref().map(str::parse::<Ipv4Addr>) {
            None => Ipv4Addr::UNSPECIFIED,
            Some(Ok(ip)) => ip,
            Some(Err(_)) => {
                problem(
                    &at("host_ip"),
                    format!(
                        "{:?} is not an IPv4 address (\"0.0.0.0\": all of the host's)",
                        p.host_ip.as_deref().unwrap_or_default()
                    ),
                );
                Ipv4Addr::UNSPECIFIED
            }
        };
        if p.host_ip.is_some() && p.host_port.is_none() {
            problem(
                &at("host_ip"),
                "has no effect without a host_port: set the host_port to publish".into(),
            );
        }
        if let (Some(host_port), true) = (host_port, container_port != 0) {
            let published = Published {
                protocol,
                host_ip,
                host_port,
                container_port,
            };
            let here = format!("{list}[{c}].ports[{j}]");
            if let Some((_, first)) = taken.iter().find(|(t, _)| t.clashes(&published)) {
                problem(
                    &at("host_port"),
                    format!("{published} is published twice in this pod (also {first})"),
                );
            } else {
                taken.push((published, here));
            }
        }
        out.push(PortSpec {
            container_port,
            host_port,
            protocol,
            host_ip,
            index: j,
            line: line_of(&at("host_port")).or_else(|| line_of(&at("container_port"))),
        });
    }
    out
}
