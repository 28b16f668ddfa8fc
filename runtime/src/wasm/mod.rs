//! The engine side of a pod: wasmtime and WASI.
//!
//! - [`executor`]: the engine, compiled and linked modules shared by every pod that uses the same
//!   bytes, one store per run; [`artifact`]: precompiled `.cwasm` files and the compile cache.
//! - [`memory`]: linear memories guarded (no bounds checks) or bounded (a board's address space);
//!   [`limits`]: what one run may grow; [`cpu`]: its CPU metered and capped; [`ticker`]: the
//!   epoch that preempts a module that spins.
//! - [`binds`]: which container of a pod bound which port ("address in use" told);
//!   [`handoff`]: a container's listeners kept across its restart in place, so no connection is
//!   refused meanwhile.
//! - [`names`] and [`name_lookup`]: what a name means to a guest, answered without a DNS server.

pub(crate) mod artifact;
pub mod binds;
pub(crate) mod cpu;
pub mod executor;
pub mod handoff;
pub(crate) mod limits;
pub mod memory;
pub(crate) mod name_lookup;
pub mod names;
pub mod ticker;
