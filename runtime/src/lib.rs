//! peapod: Kubernetes-style pods of WebAssembly containers for small ARM boards.
//!
//! # Layers
//! Each folder is a layer; a module uses its own layer and those below it, never one above
//! (`layers` checks it, with the whole module graph acyclic):
//!
//! 1. The ground, used by all: [`spec`] (the pod TOML, parsed and validated before anything
//!    touches the kernel), [`config`] (where pins and leases live, the bridge, the limits),
//!    [`logs`] (container output and CRI log files), [`caller`] (who asks) and [`module_file`] (reading its untrusted files), `durable` (atomic
//!    file writes), `hash`, `once` (what is said once), [`event`] (where what happens is told), [`table`], [`wire`] (the API's types, both ways).
//! 2. [`host`], the kernel: the sandbox (the pause role: pinned namespace, veth, lease, routes,
//!    all through rtnetlink), IPAM, the firewall, published ports, volumes on the host.
//!    [`wasm`], the engine: wasmtime, compiled modules and the compile cache, what a run may
//!    grow, its CPU meter, name lookups, reading untrusted module files. Neither uses the other.
//!    [`images`]: modules from OCI registries, kept by digest.
//! 3. [`run`]: a pod's containers supervised (restart policy, backoff, probes) on the pod thread
//!    inside its sandbox: where `host` and `wasm` meet.
//! 4. `admission` (what a pod may ask of the board), [`loader`] (a pod's modules checked
//!    against the board, read and compiled: the one loader of `peapod run` and the daemon) and
//!    [`daemon`] (`peapod daemon`: its pods,
//!    its API, its seam in front of `host` and `run`); [`client`], the API's client; [`node`],
//!    the board as a Kubernetes node (a client of the daemon's API).
//!
//! Public are the modules the `peapod` binary, the integration tests and the bench use; the rest
//! (and every item not used outside its module's crate) is `pub(crate)`, which the workspace's
//! `unreachable_pub` lint keeps true. The documentation is for the people who change peapod:
//! `cargo doc --document-private-items` (CI denies its warnings), so the public modules' docs
//! link to private ones.
#![allow(rustdoc::private_intra_doc_links)]

mod admission;
pub mod caller;
pub mod client;
pub mod config;
pub mod daemon;
#[cfg(test)]
mod docs_examples;
mod durable;
pub mod event;
mod hash;
pub mod host;
pub mod images;
pub mod labels;
#[cfg(test)]
mod layers;
pub mod loader;
pub mod logs;
pub mod module_file;
#[cfg(feature = "kubernetes")]
pub mod node;
mod once;
pub mod run;
pub mod spec;
pub mod table;
pub mod wasm;
pub mod wire;
