//! A pod's containers at work: where the sandbox ([`crate::host`]) and the engine
//! ([`crate::wasm`]) meet.
//!
//! - [`pod`]: a sandbox plus the pod thread that runs every container inside its namespace.
//! - [`supervisor`]: the restart policy and backoff of one container, with its probes
//!   ([`probe`]) and its CPU limit.

pub mod pod;
pub(crate) mod probe;
pub mod supervisor;
