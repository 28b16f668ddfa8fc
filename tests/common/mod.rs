//! Test harness: a throwaway peapod "installation" per test (own bridge, subnet, run and state
//! dirs), `peapod run` processes it started, and observers that look from outside (host sockets,
//! `ip`, `ss`, a thread that enters a pod's namespace).
//!
//! Everything is removed in `Drop`, also when a test fails: our processes (by PID), then pins under
//! our run dir, veths on our bridge, the bridge, the temp dir.

#![allow(dead_code, unused_imports)]

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub(crate) use peapod_guests::{AUTH_PROXY, BACKUP, HELLO_P1, KV_SERVER, SCHEDULER, SYNC, TOOLBOX};

/// A module (80 bytes) that grows a table by 16M entries and fills it, forever: past any memory
/// limit, at once (OOMKilled).
#[allow(dead_code)] // not every test file uses it
pub(crate) const TABLE_HOG: &str = r#"(module
     (table $t 0 funcref)
     (func (export "_start")
       (loop $l
         (drop (table.grow $t (ref.null func) (i32.const 16777216)))
         (table.fill $t (i32.const 0) (ref.null func) (table.size $t))
         (br $l))))"#;

mod cluster;
mod dns;
mod env;
mod http;
mod observe;
mod process;
mod registry;

pub(crate) use cluster::*;
pub(crate) use dns::*;
pub(crate) use env::*;
pub(crate) use http::*;
pub(crate) use observe::*;
pub(crate) use process::*;
pub(crate) use registry::*;

pub(crate) const PEAPOD: &str = env!("CARGO_BIN_EXE_peapod");

/// Are the tests running under an emulator (the board suites: `PEAPOD_TEST_RUNNER` is set)?
/// Tests that repeat a cycle many times repeat it fewer times there.
pub(crate) fn emulated() -> bool {
    std::env::var_os("PEAPOD_TEST_RUNNER").is_some_and(|r| !r.is_empty())
}

/// The `peapod` binary as a command. `PEAPOD_TEST_RUNNER` (e.g. `qemu-aarch64 -L
/// /usr/aarch64-linux-gnu`) runs it through an emulator: a test binary running under qemu-user
/// cannot exec a foreign binary itself without binfmt_misc.
pub(crate) fn peapod_command() -> Command {
    let runner = std::env::var("PEAPOD_TEST_RUNNER").unwrap_or_default();
    let mut parts = runner.split_whitespace();
    match parts.next() {
        Some(prog) => {
            let mut c = Command::new(prog);
            c.args(parts).arg(PEAPOD);
            c
        }
        None => Command::new(PEAPOD),
    }
}

/// A short random-ish tag: pid, a counter and the clock, hashed.
pub(crate) fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::SeqCst);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let h = (std::process::id() as u64) << 32 ^ (n as u64) << 24 ^ t as u64;
    let h = h.wrapping_mul(0x9E3779B97F4A7C15);
    format!("{prefix}{:06x}", (h >> 40) as u32 & 0xff_ffff)
}

/// Runs a command that must succeed; returns its stdout.
pub(crate) fn cmd(prog: &str, args: &[&str]) -> String {
    let out = Command::new(prog).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{prog} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Polls `f` until it returns `Some`, for at most `limit`.
pub(crate) fn eventually<T>(limit: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let t0 = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(t0.elapsed() < limit, "timed out after {limit:?}: {what}");
        std::thread::sleep(Duration::from_millis(25));
    }
}
