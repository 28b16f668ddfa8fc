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

pub use peapod_guests::{BACKUP, HELLO_P1, KV_SERVER, TOOLBOX};

pub const PEAPOD: &str = env!("CARGO_BIN_EXE_peapod");

/// Are the tests running under an emulator (the board suites: `PEAPOD_TEST_RUNNER` is set)?
/// Tests that repeat a cycle many times repeat it fewer times there.
pub fn emulated() -> bool {
    std::env::var_os("PEAPOD_TEST_RUNNER").is_some_and(|r| !r.is_empty())
}

/// The `peapod` binary as a command. `PEAPOD_TEST_RUNNER` (e.g. `qemu-aarch64 -L
/// /usr/aarch64-linux-gnu`) runs it through an emulator: a test binary running under qemu-user
/// cannot exec a foreign binary itself without binfmt_misc.
pub fn peapod_command() -> Command {
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
pub fn unique(prefix: &str) -> String {
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

/// One isolated peapod installation.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub bridge: String,
    pub subnet: String,
    /// First three octets of the /24.
    pub net: [u8; 3],
}

impl Env {
    pub fn new() -> Env {
        let bridge = unique("ppt");
        let routes = cmd("ip", &["-4", "route", "show"]);
        // A /24 in 10.200.0.0/13 that no route on this host uses yet.
        let net = loop {
            let tag = unique("");
            let v = u32::from_str_radix(&tag, 16).unwrap();
            let net = [10, 200 + (v % 8) as u8, (v >> 8) as u8];
            if !routes.contains(&format!("{}.{}.{}.", net[0], net[1], net[2])) {
                break net;
            }
        };
        Env {
            dir: tempfile::Builder::new()
                .prefix("peapod-test")
                .tempdir()
                .unwrap(),
            bridge,
            subnet: format!("{}.{}.{}.0/24", net[0], net[1], net[2]),
            net,
        }
    }

    pub fn run_dir(&self) -> PathBuf {
        self.dir.path().join("run")
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// The daemon's pods directory.
    pub fn pods_dir(&self) -> PathBuf {
        self.dir.path().join("pods")
    }

    pub fn socket(&self) -> PathBuf {
        self.run_dir().join("peapod.sock")
    }

    pub fn pin(&self, pod: &str) -> PathBuf {
        self.run_dir().join("netns").join(pod)
    }

    /// The library config matching this environment.
    pub fn config(&self) -> peapod::config::Config {
        let mut c = peapod::config::Config {
            run_dir: self.run_dir(),
            state_dir: self.state_dir(),
            bridge: self.bridge.clone(),
            subnet: self.subnet.parse().unwrap(),
            socket: self.socket(),
            pods_dir: self.pods_dir(),
            ..Default::default()
        };
        c.logs.dir = self.state_dir().join("logs");
        c
    }

    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::new(self.net[0], self.net[1], self.net[2], 1)
    }

    /// Writes a spec file into the env's directory.
    pub fn spec(&self, file: &str, toml: &str) -> PathBuf {
        let p = self.dir.path().join(file);
        std::fs::write(&p, toml).unwrap();
        p
    }

    /// `peapod <global flags> ARGS`, as a command (not started).
    pub fn peapod(&self, args: &[&str]) -> Command {
        let mut c = peapod_command();
        c.arg("--pods-dir")
            .arg(self.pods_dir())
            .arg("--run-dir")
            .arg(self.run_dir())
            .arg("--state-dir")
            .arg(self.state_dir())
            .arg("--bridge")
            .arg(&self.bridge)
            .arg("--subnet")
            .arg(&self.subnet)
            .args(args)
            .env("PEAPOD_CONFIG", "/dev/null")
            .env_remove("PEAPOD_LOG")
            .env_remove("PEAPOD_SOCKET")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .env_remove("JOURNAL_STREAM")
            .stdin(Stdio::null());
        c
    }

    /// Runs `peapod run SPEC`, which must refuse it as invalid input (exit 2) having created
    /// nothing; returns its stderr.
    pub fn refused(&self, spec: &Path) -> String {
        // Bounded: a spec that is wrongly accepted would run its pod forever.
        let mut p = self.start(spec);
        let status = p.wait_exit(Duration::from_secs(120));
        let stderr = p.output();
        assert_eq!(status.code(), Some(2), "{}: {stderr}", spec.display());
        assert!(!stderr.contains(" started:"), "{stderr}");
        assert!(
            !self.link_exists(&self.bridge),
            "{}: bridge created",
            spec.display()
        );
        assert!(
            !self.run_dir().join("netns").exists(),
            "{}: pin dir created",
            spec.display()
        );
        assert!(self.leases().is_empty(), "{}: lease taken", spec.display());
        stderr
    }

    /// Starts `peapod run --prefix SPEC` in the background, its output (the guests' lines as
    /// `pod/container: line`, on stdout and stderr) going to one log file.
    pub fn start(&self, spec: &Path) -> Peapod {
        let log = self.dir.path().join(format!("{}.log", unique("run")));
        let out = std::fs::File::create(&log).unwrap();
        let child = self
            .peapod(&["run", "--prefix", spec.to_str().unwrap()])
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        Peapod {
            child: Some(child),
            log,
        }
    }

    /// Starts `peapod daemon` and waits until it is ready.
    pub fn daemon(&self) -> Peapod {
        self.daemon_with(|_| {})
    }

    /// [`Env::daemon`], with changes to the command (environment) before it starts.
    pub fn daemon_with(&self, f: impl FnOnce(&mut Command)) -> Peapod {
        let mut d = self.spawn_daemon(f);
        d.wait_for("ready in", Duration::from_secs(120));
        d
    }

    /// Starts `peapod daemon` without waiting.
    pub fn spawn_daemon(&self, f: impl FnOnce(&mut Command)) -> Peapod {
        std::fs::create_dir_all(self.pods_dir()).unwrap();
        let log = self.dir.path().join(format!("{}.log", unique("daemon")));
        let out = std::fs::File::create(&log).unwrap();
        let mut c = self.peapod(&["daemon"]);
        c.stdout(out.try_clone().unwrap()).stderr(out);
        f(&mut c);
        Peapod {
            child: Some(c.spawn().unwrap()),
            log,
        }
    }

    /// Runs a CLI command against this env's daemon: (exit code, stdout, stderr).
    pub fn ctl(&self, args: &[&str]) -> (i32, String, String) {
        let out = self.peapod(args).output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// A CLI command that must succeed; returns its stdout.
    pub fn ctl_ok(&self, args: &[&str]) -> String {
        let (code, out, err) = self.ctl(args);
        assert_eq!(code, 0, "peapod {args:?}: {out}{err}");
        out
    }

    /// `peapod ps -o json`, as pod name -> pod.
    pub fn ps(&self) -> std::collections::BTreeMap<String, serde_json::Value> {
        let out = self.ctl_ok(&["ps", "-o", "json"]);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .map(|p| (p["name"].as_str().unwrap().to_string(), p.clone()))
            .collect()
    }

    /// Waits until `ps` shows pod `name` with every container running; returns its IP.
    pub fn wait_running(&self, name: &str) -> Ipv4Addr {
        eventually(Duration::from_secs(60), &format!("{name} running"), || {
            let p = self.ps().remove(name)?;
            (p["status"] == "running").then(|| p["ip"].as_str().unwrap().parse().unwrap())
        })
    }

    /// A kv-server pod spec (app on :8080), `extra` appended to its container.
    pub fn kv_spec(&self, name: &str, extra: &str) -> String {
        format!(
            "[pod]\nname = \"{name}\"\nrestart_backoff = {{ initial = \"10ms\", max = \"10ms\" }}\n\n\
             [[containers]]\nname = \"app\"\nmodule = {KV_SERVER:?}\n\
             args = [\"--listen\", \"0.0.0.0:8080\"]\n{extra}\n"
        )
    }

    /// Writes a file into the daemon's pods directory (atomically, as an editor's save would).
    pub fn pod_file(&self, file: &str, toml: &str) -> PathBuf {
        std::fs::create_dir_all(self.pods_dir()).unwrap();
        let p = self.pods_dir().join(file);
        let tmp = self.dir.path().join(format!("{file}.tmp"));
        std::fs::write(&tmp, toml).unwrap();
        std::fs::rename(&tmp, &p).unwrap();
        p
    }

    /// Runs `peapod run SPEC` to its end (at most `limit`); returns the status and the output.
    pub fn run_to_end(&self, spec: &Path, limit: Duration) -> (ExitStatus, String) {
        let mut p = self.start(spec);
        let status = p.wait_exit(limit);
        (status, p.output())
    }

    /// The leases of this env's bridge, pod -> address.
    pub fn leases(&self) -> Vec<(String, Ipv4Addr)> {
        let f = self
            .state_dir()
            .join("ipam")
            .join(format!("{}.json", self.bridge));
        let Ok(text) = std::fs::read_to_string(f) else {
            return vec![];
        };
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        v["leases"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, ip)| (k.clone(), ip.as_str().unwrap().parse().unwrap()))
            .collect()
    }

    pub fn link_exists(&self, name: &str) -> bool {
        Command::new("ip")
            .args(["link", "show", "dev", name])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap()
            .success()
    }

    /// Host veths attached to this env's bridge.
    pub fn bridge_ports(&self) -> Vec<String> {
        if !self.link_exists(&self.bridge) {
            return vec![];
        }
        cmd("ip", &["-o", "link", "show", "master", &self.bridge])
            .lines()
            .filter_map(|l| l.split(": ").nth(1))
            .map(|n| n.split('@').next().unwrap().to_string())
            .collect()
    }

    /// Mount points anywhere under this env's directory (pins, volumes, secrets).
    pub fn all_mounts(&self) -> Vec<String> {
        let root = self.dir.path().display().to_string();
        let mut mounts: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
            .filter(|m| m.starts_with(&root))
            .collect();
        mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
        mounts
    }

    /// Mount points under this env's run dir, from /proc/self/mountinfo.
    pub fn mounts(&self) -> Vec<String> {
        let root = self.run_dir().display().to_string();
        std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
            .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
            .filter(|m| m.starts_with(&root))
            .collect()
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        // Our `peapod` children were stopped by their own guards (dropped before the Env).
        // Every mount under our directory (pins, volumes), deepest first.
        for m in self.all_mounts() {
            let _ = nix::mount::umount2(m.as_str(), nix::mount::MntFlags::MNT_DETACH);
        }
        for port in self.bridge_ports() {
            let _ = Command::new("ip").args(["link", "del", &port]).status();
        }
        if self.link_exists(&self.bridge) {
            let _ = Command::new("ip")
                .args(["link", "del", &self.bridge])
                .status();
        }
    }
}

/// A `peapod run` process this test started.
pub struct Peapod {
    child: Option<Child>,
    pub log: PathBuf,
}

/// What `peapod run` logged when the pod started.
#[derive(Debug, Clone)]
pub struct Started {
    pub ip: Ipv4Addr,
    pub netns: PathBuf,
}

impl Peapod {
    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the log has a line containing `needle`; returns that line.
    pub fn wait_for(&mut self, needle: &str, limit: Duration) -> String {
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
    pub fn count(&self, needle: &str) -> usize {
        self.output().lines().filter(|l| l.contains(needle)).count()
    }

    /// Waits for the "pod NAME started" line and parses it.
    pub fn started(&mut self, pod: &str) -> Started {
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

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        let pid = nix::unistd::Pid::from_raw(self.pid() as i32);
        nix::sys::signal::kill(pid, sig).unwrap();
    }

    /// Waits for the process to exit; kills it and fails after `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
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
    pub fn terminate(&mut self) -> ExitStatus {
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

/// Runs a command that must succeed; returns its stdout.
pub fn cmd(prog: &str, args: &[&str]) -> String {
    let out = Command::new(prog).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{prog} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Polls `f` until it returns `Some`, for at most `limit`.
pub fn eventually<T>(limit: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let t0 = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(t0.elapsed() < limit, "timed out after {limit:?}: {what}");
        std::thread::sleep(Duration::from_millis(25));
    }
}

#[derive(Debug)]
pub struct Http {
    pub status: u16,
    pub instance: String,
    pub body: String,
}

/// A one-shot HTTP/1.1 request.
pub fn http(addr: SocketAddr, method: &str, path: &str, body: &str) -> std::io::Result<Http> {
    let mut c = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    c.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        c,
        "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut raw = String::new();
    c.read_to_string(&mut raw)?;
    let (head, body) = raw
        .split_once("\r\n\r\n")
        .ok_or_else(|| std::io::Error::other(format!("bad response {raw:?}")))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status in {head:?}")))?;
    let instance = head
        .lines()
        .find_map(|l| l.strip_prefix("X-Instance: "))
        .unwrap_or("")
        .to_string();
    Ok(Http {
        status,
        instance,
        body: body.to_string(),
    })
}

/// Waits until the kv-server at `addr` answers /healthz; returns its instance id.
pub fn wait_healthy(addr: SocketAddr) -> String {
    eventually(Duration::from_secs(30), &format!("{addr} healthy"), || {
        http(addr, "GET", "/healthz", "")
            .ok()
            .filter(|r| r.status == 200)
            .map(|r| r.instance)
    })
}

/// Connects to `addr` from a thread inside the namespace pinned at `pin`, sends `request`, and
/// returns what the server sent until it closed.
pub fn connect_in_netns(pin: &Path, addr: SocketAddr, request: &str) -> std::io::Result<String> {
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
pub fn listeners(pin: Option<&Path>) -> String {
    match pin {
        Some(p) => cmd(
            "nsenter",
            &[&format!("--net={}", p.display()), "ss", "-Htln"],
        ),
        None => cmd("ss", &["-Htln"]),
    }
}

/// A free TCP port on the host's loopback (nothing listens there now).
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// One raw HTTP/1.1 request on the API socket, as curl --unix-socket sends it: (status, body).
pub fn raw_api(env: &Env, method: &str, path: &str, body: &str) -> (u16, serde_json::Value) {
    use std::io::{Read, Write};
    let mut c = std::os::unix::net::UnixStream::connect(env.socket()).unwrap();
    write!(
        c,
        "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut raw = String::new();
    c.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (
        status,
        serde_json::from_str(body).unwrap_or(serde_json::Value::Null),
    )
}

/// A process's resident memory and its peak (VmRSS, VmHWM), in KiB.
pub fn rss_kib(pid: u32) -> (u64, u64) {
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
pub fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

/// A network namespace of the test's own (`ip netns add`), deleted with everything in it when
/// dropped, also when the test fails.
pub struct TestNetns {
    pub name: String,
    file: std::fs::File,
}

impl TestNetns {
    pub fn new() -> TestNetns {
        let name = unique("pptns");
        cmd("ip", &["netns", "add", &name]);
        let file = std::fs::File::open(format!("/run/netns/{name}")).unwrap();
        TestNetns { name, file }
    }

    /// Runs `ip -batch` inside the namespace.
    pub fn ip_batch(&self, batch: &str) {
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
    pub fn enter_on_exec(&self, c: &mut Command) {
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
