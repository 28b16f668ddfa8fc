//! A pod's containers at work: where the sandbox ([`crate::host`]) and the engine
//! ([`crate::wasm`]) meet.
//!
//! - [`pod`]: a sandbox plus the pod thread that runs every container inside its namespace;
//!   [`lanes`]: more threads for a pod whose containers' limits add up to more than a core.
//! - [`supervisor`]: the restart policy and backoff of one container, with its probes
//!   ([`probe`]) and its CPU limit.

pub mod lanes;
pub mod pod;
pub(crate) mod probe;
pub mod supervisor;
