//! A clock and timers for schedules: the wall clock (what a cron schedule means) and sleeps on
//! WASI's monotonic clock.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Now, on the wall clock.
pub fn now() -> SystemTime {
    SystemTime::now()
}

/// Now as whole seconds since 1970 (UTC).
pub fn unix_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `t` as RFC 3339 in UTC, to the second (`2026-12-03T10:00:00Z`).
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// Sleeps `d` (other tasks of the guest run meanwhile).
pub async fn sleep(d: Duration) {
    wstd::task::sleep(d.into()).await;
}

/// Sleeps until wall-clock time `t` (at once when it is past).
pub async fn sleep_until(t: SystemTime) {
    if let Ok(d) = t.duration_since(SystemTime::now()) {
        sleep(d).await
    }
}
