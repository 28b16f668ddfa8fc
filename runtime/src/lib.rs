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
//! - [`pod`]: a sandbox plus the pod thread that runs every container inside its namespace.
//! - [`logs`]: container output into the log, and [`logs::cri`]: CRI-format log files with rotation.
//! - [`daemon`]: `peapod daemon`, its pods, its API; [`client`]: the API's client (the CLI).

pub mod artifact;
pub mod client;
pub mod config;
pub mod cpu;
pub mod daemon;
pub mod durable;
pub mod executor;
pub mod firewall;
pub mod ipam;
pub mod limits;
pub mod loader;
pub mod logs;
pub mod module_file;
mod name_lookup;
pub mod names;
pub mod net;
pub mod netns;
pub mod pod;
pub mod ports;
pub mod probe;
pub mod sandbox;
pub mod spec;
pub mod supervisor;
pub mod table;
pub mod volumes;
