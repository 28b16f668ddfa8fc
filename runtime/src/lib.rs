//! peapod: Kubernetes-style pods of WebAssembly containers for small ARM boards.
//!
//! # Layout
//! - [`spec`]: the pod TOML, parsed and validated before anything touches the kernel.
//! - [`config`]: where pins and leases live, which bridge and subnet pods use.
//! - [`sandbox`] (the pause role): pinned namespace ([`netns`]), veth, lease ([`ipam`]),
//!   routes, all through [`net`] (rtnetlink).
//! - [`executor`]: the wasmtime engine, compiled modules, one store per run; [`artifact`]:
//!   precompiled `.cwasm` files and the compile cache; [`limits`]: what a run may grow;
//!   [`module_file`]: reading untrusted files (regular, capped, with the caller's rights);
//!   [`loader`]: a pod's modules read and compiled.
//! - [`supervisor`]: restart policy and backoff of one container, with its probes ([`probe`])
//!   and its CPU metered and capped ([`cpu`]).
//! - [`volumes`]: a pod's volumes on the host ([`host_files`]: host paths opened without
//!   following a symlink, held for the sandbox's life); [`tree`]: removing what a guest wrote, safely.
//! - [`pod`]: a sandbox plus the pod thread that runs every container inside its namespace.
//! - [`logs`]: container output into the log, and [`logs::cri`]: CRI-format log files with rotation.
//! - `admission`: what a pod may ask of the board (allocatable memory, per-user quotas).
//! - [`daemon`]: `peapod daemon`, its pods, its API; [`client`]: the API's client (the CLI).
//!
//! Public are the modules the `peapod` binary, the integration tests and the bench use; the rest
//! (and every item not used outside its module's crate) is `pub(crate)`, which the workspace's
//! `unreachable_pub` lint keeps true. The documentation is for the people who change peapod:
//! `cargo doc --document-private-items` (CI denies its warnings), so the public modules' docs
//! link to private ones.
#![allow(rustdoc::private_intra_doc_links)]

mod admission;
mod artifact;
pub mod client;
pub mod config;
mod cpu;
pub mod daemon;
#[cfg(test)]
mod docs_examples;
mod durable;
pub mod executor;
mod firewall;
pub mod host_files;
mod ipam;
mod limits;
pub mod loader;
pub mod logs;
pub mod module_file;
mod name_lookup;
pub mod names;
pub mod net;
pub mod netns;
pub mod pod;
mod ports;
mod probe;
pub mod sandbox;
pub mod spec;
pub mod supervisor;
pub mod table;
pub mod tree;
pub mod volumes;
