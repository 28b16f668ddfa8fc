//! The graceful stop. peapod calls a container's `lifecycle.pre_stop` hook before it stops the
//! pod, then waits up to `termination_grace_period` for the module to exit on its own. With
//! [`crate::http::Health`] serving the hook's path (`/prestop`), the hook calls [`request`];
//! the sidecar's loops check [`requested`] or await [`wait`], finish what they do (a backup
//! half written, a queue to flush) and return.
//!
//! ```toml
//! lifecycle = { pre_stop = { http_get = { path = "/prestop", port = 9000 } } }
//! ```

use std::cell::Cell;
use std::time::Duration;

thread_local! {
    // A guest has one thread.
    static STOP: Cell<bool> = const { Cell::new(false) };
}

/// Asks the sidecar to stop (the pre-stop hook, or the sidecar itself).
pub fn request() {
    STOP.with(|s| s.set(true));
}

/// Whether a stop was asked for.
pub fn requested() -> bool {
    STOP.with(Cell::get)
}

/// Waits until a stop is asked for (checked every 50 ms).
pub async fn wait() {
    while !requested() {
        wstd::task::sleep(Duration::from_millis(50).into()).await;
    }
}

/// Sleeps `d`, or less when a stop is asked for meanwhile; true when it slept the whole time.
pub async fn sleep(d: Duration) -> bool {
    let step = Duration::from_millis(50);
    let end = std::time::Instant::now() + d;
    loop {
        if requested() {
            return false;
        }
        let left = end.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return true;
        }
        wstd::task::sleep(left.min(step).into()).await;
    }
}
