//! The kernel side of a pod: everything peapod asks of Linux, over rtnetlink, nf_tables netlink
//! and nix, never a subprocess.
//!
//! - [`sandbox`] (the pause role): the pinned namespace ([`netns`]), the veth onto the bridge,
//!   the lease ([`ipam`]), addresses, routes and neighbours, all through [`net`].
//! - [`firewall`]: egress and published ports in peapod's own nf_tables table; [`ports`]: a
//!   pod's published ports checked against the host, and held.
//! - [`volumes`]: a pod's volumes on the host; [`host_files`]: host paths opened without
//!   following a symlink and held; [`tree`]: removing what a guest wrote, safely.

pub(crate) mod firewall;
pub mod host_files;
pub mod ipam;
pub mod net;
pub mod netns;
pub(crate) mod ports;
pub mod sandbox;
pub mod tree;
pub mod volumes;
