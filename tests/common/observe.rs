//! Observers that look from outside: a thread inside a pod's namespace, `ss`, /proc, and a
//! network namespace of the test's own.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::*;

/// Connects to `addr` from a thread inside the namespace pinned at `pin`, sends `request`, and
/// returns what the server sent until it closed.
pub(crate) fn connect_in_netns(
    pin: &Path,
    addr: SocketAddr,
    request: &str,
) -> std::io::Result<String> {
    let request = request.to_string();
    let pin = pin.to_path_buf();
    std::thread::spawn(move || {
        let ns = std::fs::File::open(&pin)?;
        nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)?;
        let mut c = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
        c.set_read_timeout(Some(Duration::from_secs(5)))?;
        c.write_all(request.as_bytes())?;
        let mut s = String::new();
        c.read_to_string(&mut s)?;
        Ok(s)
    })
    .join()
    .unwrap()
}

/// TCP listeners (`ss -Htln`) of the namespace at `pin`, or of the host when `None`.
pub(crate) fn listeners(pin: Option<&Path>) -> String {
    match pin {
        Some(p) => cmd(
            "nsenter",
            &[&format!("--net={}", p.display()), "ss", "-Htln"],
        ),
        None => cmd("ss", &["-Htln"]),
    }
}

/// A process's resident memory and its peak (VmRSS, VmHWM), in KiB.
pub(crate) fn rss_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Open fds of a process.
pub(crate) fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

/// A network namespace of the test's own (`ip netns add`), deleted with everything in it when
/// dropped, also when the test fails.
pub(crate) struct TestNetns {
    pub name: String,
    file: std::fs::File,
}

impl TestNetns {
    pub(crate) fn new() -> TestNetns {
        let name = unique("pptns");
        cmd("ip", &["netns", "add", &name]);
        let file = std::fs::File::open(format!("/run/netns/{name}")).unwrap();
        TestNetns { name, file }
    }

    /// Runs `ip -batch` inside the namespace.
    pub(crate) fn ip_batch(&self, batch: &str) {
        use std::io::Write;
        let mut ip = Command::new("ip")
            .args(["-n", &self.name, "-batch", "-"])
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        ip.stdin
            .take()
            .unwrap()
            .write_all(batch.as_bytes())
            .unwrap();
        assert!(ip.wait().unwrap().success(), "ip -batch in {}", self.name);
    }

    /// Makes `c` run in this namespace (its "host" network namespace).
    pub(crate) fn enter_on_exec(&self, c: &mut Command) {
        use std::os::fd::{AsRawFd, BorrowedFd};
        use std::os::unix::process::CommandExt;
        let fd = self.file.as_raw_fd();
        // SAFETY: only a setns(2) call between fork and exec; `fd` stays open in the child
        // (the namespace file is owned by `self`, which outlives the spawn).
        unsafe {
            c.pre_exec(move || {
                let ns = BorrowedFd::borrow_raw(fd);
                nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET)
                    .map_err(std::io::Error::from)
            });
        }
    }
}

impl Drop for TestNetns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// A sysctl of the machine that a test may change (the node test's daemon runs in the host's
/// namespace, and its hostPort turns on `net.ipv4.ip_forward`): put back as it was when the
/// guard is dropped, the test failing or not.
pub(crate) struct SysctlRestored {
    path: PathBuf,
    value: String,
}

impl SysctlRestored {
    /// `name` as under /proc/sys, e.g. `net/ipv4/ip_forward`.
    pub(crate) fn new(name: &str) -> SysctlRestored {
        let path = Path::new("/proc/sys").join(name);
        let value = std::fs::read_to_string(&path).unwrap();
        SysctlRestored { path, value }
    }
}

impl Drop for SysctlRestored {
    fn drop(&mut self) {
        if std::fs::read_to_string(&self.path).ok().as_ref() != Some(&self.value) {
            let _ = std::fs::write(&self.path, &self.value);
        }
    }
}
