//! The `peapod run` and `peapod daemon` processes a test started: their output, signals, exit.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::*;

/// A `peapod run` process this test started.
pub(crate) struct Peapod {
    pub(super) child: Option<Child>,
    pub log: PathBuf,
}

/// What `peapod run` logged when the pod started.
#[derive(Debug, Clone)]
pub(crate) struct Started {
    pub ip: Ipv4Addr,
    pub netns: PathBuf,
}

impl Peapod {
    pub(crate) fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    pub(crate) fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the log has a line containing `needle`; returns that line.
    pub(crate) fn wait_for(&mut self, needle: &str, limit: Duration) -> String {
        let t0 = Instant::now();
        loop {
            let out = self.output();
            if let Some(l) = out.lines().find(|l| l.contains(needle)) {
                return l.to_string();
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("peapod exited ({status}) before logging {needle:?}:\n{out}");
            }
            assert!(
                t0.elapsed() < limit,
                "no {needle:?} in the log after {limit:?}:\n{out}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Number of log lines containing `needle`.
    pub(crate) fn count(&self, needle: &str) -> usize {
        self.output().lines().filter(|l| l.contains(needle)).count()
    }

    /// Waits for the "pod NAME started" line and parses it.
    pub(crate) fn started(&mut self, pod: &str) -> Started {
        let line = self.wait_for(&format!("pod {pod} started:"), Duration::from_secs(60));
        let field = |k: &str| {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(k))
                .unwrap_or_else(|| panic!("no {k} in {line:?}"))
                .to_string()
        };
        Started {
            ip: field("ip=").parse().unwrap(),
            netns: field("netns=").into(),
        }
    }

    pub(crate) fn signal(&self, sig: nix::sys::signal::Signal) {
        let pid = nix::unistd::Pid::from_raw(self.pid() as i32);
        nix::sys::signal::kill(pid, sig).unwrap();
    }

    /// Waits for the process to exit; kills it and fails after `limit`.
    pub(crate) fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let t0 = Instant::now();
        let child = self.child.as_mut().unwrap();
        loop {
            if let Some(s) = child.try_wait().unwrap() {
                return s;
            }
            if t0.elapsed() > limit {
                let _ = child.kill();
                let _ = child.wait();
                panic!("peapod still running after {limit:?}:\n{}", self.output());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, then wait for the exit.
    pub(crate) fn terminate(&mut self) -> ExitStatus {
        self.signal(nix::sys::signal::Signal::SIGTERM);
        self.wait_exit(Duration::from_secs(30))
    }
}

impl Drop for Peapod {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take()
            && c.try_wait().ok().flatten().is_none()
        {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
