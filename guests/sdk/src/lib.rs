//! peapod's sidecar SDK: what a WASI guest that sits next to an app in a pod needs, thin over
//! std, WASI 0.2 and [`wstd`] (the async runtime for WASI components).
//!
//! - [`config`]: settings from the environment and secrets from files, with errors that name
//!   the variable or file.
//! - [`net`]: TCP on the pod's addresses: a listener that knows its peers, and connections.
//! - [`http`]: HTTP/1.1 server and client for the pod's loopback and the network, with the
//!   health, readiness and pre-stop endpoints peapod's probes and hooks call ([`http::Health`]).
//! - [`log`]: one-line structured logs (`level=info msg="..." key=value`) that `peapod logs`
//!   shows as they are.
//! - [`stop`]: the graceful stop: set by the pre-stop hook, awaited by the sidecar's loops.
//! - [`retry`]: capped exponential backoff with jitter.
//! - [`fs`]: atomic file writes on a volume (write, fsync, rename) for state that must survive
//!   a power cut.
//! - [`time`]: a clock and timers for schedules.
//!
//! A sidecar's `main` is `peapod_sdk::run(async { ... })`:
//!
//! ```no_run
//! peapod_sdk::run(async {
//!     let listen = peapod_sdk::config::env_or("LISTEN", "0.0.0.0:9000");
//!     peapod_sdk::info!("starting"; listen = listen);
//!     Ok(())
//! })
//! ```

use std::future::Future;

pub mod config;
pub mod fs;
pub mod http;
pub mod log;
pub mod net;
pub mod retry;
pub mod stop;
pub mod time;

mod error;
pub use error::{Error, Result};

/// The SDK's version (`CARGO_PKG_VERSION`).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Runs a sidecar's async `main` on WASI's event loop, and ends the guest when it returns, even
/// with tasks still running (an admin endpoint, a server): with status 0, or after logging its
/// error (`level=error`) with status 1, which peapod's restart policy sees.
pub fn run<F>(main: F) -> !
where
    F: Future<Output = Result<()>>,
{
    // wstd's loop returns only when no task is left: the process ends from inside it instead.
    wstd::runtime::block_on(async {
        match main.await {
            Ok(()) => std::process::exit(0),
            Err(e) => {
                crate::error!("{e}");
                std::process::exit(1)
            }
        }
    })
}

/// Fills `buf` with random bytes (WASI's insecure random: for jitter, not for secrets).
pub fn rand(buf: &mut [u8]) {
    wstd::rand::get_insecure_random_bytes(buf);
}

/// Starts `task` beside the current one (on the same event loop; a guest has one thread).
pub fn spawn<F>(task: F)
where
    F: Future<Output = ()> + 'static,
{
    wstd::runtime::spawn(task).detach();
}
