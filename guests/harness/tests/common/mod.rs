//! What the harness tests of the sidecars that work on the demo app (kv-server) share.

use std::time::Duration;

use peapod_guests::KV_SERVER;
use peapod_harness::{Running, Sidecar, http};

/// The demo app, listening on `addr`.
pub(crate) fn kv_app(addr: &str) -> Running {
    let a = Sidecar::new(KV_SERVER).arg("--listen").arg(addr).start();
    a.wait_for_log("kv-server listening", Duration::from_secs(30));
    a
}

/// Stores `key` = `value` in the app at `app`.
pub(crate) fn put(app: &str, key: &str, value: &str) {
    let a = http(
        app,
        &format!(
            "PUT /kv/{key} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{value}",
            value.len()
        ),
    );
    assert!(a.starts_with("HTTP/1.1 201"), "{a}");
}

/// The body of a whole answer.
pub(crate) fn body(answer: &str) -> &str {
    answer.split_once("\r\n\r\n").map_or("", |(_, b)| b)
}
