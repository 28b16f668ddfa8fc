//! One isolated peapod installation per test: its own bridge, subnet, run, state and pods dirs.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::*;

/// One isolated peapod installation.
pub(crate) struct Env {
    pub dir: tempfile::TempDir,
    pub bridge: String,
    pub subnet: String,
    /// First three octets of the /24.
    pub net: [u8; 3],
}

impl Env {
    pub(crate) fn new() -> Env {
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

    pub(crate) fn run_dir(&self) -> PathBuf {
        self.dir.path().join("run")
    }

    pub(crate) fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// The daemon's pods directory.
    pub(crate) fn pods_dir(&self) -> PathBuf {
        self.dir.path().join("pods")
    }

    pub(crate) fn socket(&self) -> PathBuf {
        self.run_dir().join("peapod.sock")
    }

    pub(crate) fn pin(&self, pod: &str) -> PathBuf {
        self.run_dir().join("netns").join(pod)
    }

    /// The library config matching this environment.
    pub(crate) fn config(&self) -> peapod::config::Config {
        let mut c = peapod::config::Config {
            run_dir: self.run_dir(),
            state_dir: self.state_dir(),
            bridge: self.bridge.clone(),
            subnet: self.subnet.parse().unwrap(),
            socket: self.socket(),
            pods_dir: self.pods_dir(),
            egress: false,
            ..Default::default()
        };
        c.logs.dir = self.state_dir().join("logs");
        c
    }

    pub(crate) fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::new(self.net[0], self.net[1], self.net[2], 1)
    }

    /// Writes a `.wat` module, compiled to wasm, into the env's directory.
    pub(crate) fn wat(&self, name: &str, text: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, wat::parse_str(text).unwrap()).unwrap();
        p
    }

    /// Writes a spec file into the env's directory.
    pub(crate) fn spec(&self, file: &str, toml: &str) -> PathBuf {
        let p = self.dir.path().join(file);
        std::fs::write(&p, toml).unwrap();
        p
    }

    /// `peapod <global flags> ARGS`, as a command (not started).
    pub(crate) fn peapod(&self, args: &[&str]) -> Command {
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
            // Egress changes the firewall and ip_forward of the namespace peapod runs in: the
            // tests that turn it on run peapod in a network namespace of their own.
            .env("PEAPOD_EGRESS", "false")
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
    pub(crate) fn refused(&self, spec: &Path) -> String {
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
    pub(crate) fn start(&self, spec: &Path) -> Peapod {
        self.start_with(spec, |_| {})
    }

    /// [`Env::start`], with changes to the command before it starts.
    pub(crate) fn start_with(&self, spec: &Path, f: impl FnOnce(&mut Command)) -> Peapod {
        let log = self.dir.path().join(format!("{}.log", unique("run")));
        let out = std::fs::File::create(&log).unwrap();
        let mut c = self.peapod(&["run", "--prefix", spec.to_str().unwrap()]);
        c.stdout(out.try_clone().unwrap()).stderr(out);
        f(&mut c);
        let child = c.spawn().unwrap();
        Peapod {
            child: Some(child),
            log,
        }
    }

    /// Starts `peapod daemon` and waits until it is ready.
    pub(crate) fn daemon(&self) -> Peapod {
        self.daemon_with(|_| {})
    }

    /// [`Env::daemon`], with changes to the command (environment) before it starts.
    pub(crate) fn daemon_with(&self, f: impl FnOnce(&mut Command)) -> Peapod {
        let mut d = self.spawn_daemon(f);
        d.wait_for("ready in", Duration::from_secs(120));
        d
    }

    /// Starts `peapod daemon` without waiting.
    pub(crate) fn spawn_daemon(&self, f: impl FnOnce(&mut Command)) -> Peapod {
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
    pub(crate) fn ctl(&self, args: &[&str]) -> (i32, String, String) {
        let out = self.peapod(args).output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// A CLI command that must succeed; returns its stdout.
    pub(crate) fn ctl_ok(&self, args: &[&str]) -> String {
        let (code, out, err) = self.ctl(args);
        assert_eq!(code, 0, "peapod {args:?}: {out}{err}");
        out
    }

    /// `peapod ps -o json`, as pod name -> pod.
    pub(crate) fn ps(&self) -> std::collections::BTreeMap<String, serde_json::Value> {
        let out = self.ctl_ok(&["ps", "-o", "json"]);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .map(|p| (p["name"].as_str().unwrap().to_string(), p.clone()))
            .collect()
    }

    /// Waits until `ps` shows pod `name` with every container running; returns its IP.
    pub(crate) fn wait_running(&self, name: &str) -> Ipv4Addr {
        eventually(Duration::from_secs(60), &format!("{name} running"), || {
            let p = self.ps().remove(name)?;
            (p["status"] == "running").then(|| p["ip"].as_str().unwrap().parse().unwrap())
        })
    }

    /// A kv-server pod spec (app on :8080), `extra` appended to its container.
    pub(crate) fn kv_spec(&self, name: &str, extra: &str) -> String {
        format!(
            "[pod]\nname = \"{name}\"\nrestart_backoff = {{ initial = \"10ms\", max = \"10ms\" }}\n\n\
             [[containers]]\nname = \"app\"\nmodule = {KV_SERVER:?}\n\
             args = [\"--listen\", \"0.0.0.0:8080\"]\n{extra}\n"
        )
    }

    /// Writes a file into the daemon's pods directory (atomically, as an editor's save would).
    pub(crate) fn pod_file(&self, file: &str, toml: &str) -> PathBuf {
        std::fs::create_dir_all(self.pods_dir()).unwrap();
        let p = self.pods_dir().join(file);
        let tmp = self.dir.path().join(format!("{file}.tmp"));
        std::fs::write(&tmp, toml).unwrap();
        std::fs::rename(&tmp, &p).unwrap();
        p
    }

    /// Runs `peapod run SPEC` to its end (at most `limit`); returns the status and the output.
    pub(crate) fn run_to_end(&self, spec: &Path, limit: Duration) -> (ExitStatus, String) {
        let mut p = self.start(spec);
        let status = p.wait_exit(limit);
        (status, p.output())
    }

    /// The leases of this env's bridge, pod -> address.
    pub(crate) fn leases(&self) -> Vec<(String, Ipv4Addr)> {
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

    pub(crate) fn link_exists(&self, name: &str) -> bool {
        Command::new("ip")
            .args(["link", "show", "dev", name])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap()
            .success()
    }

    /// Host veths attached to this env's bridge.
    pub(crate) fn bridge_ports(&self) -> Vec<String> {
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
    pub(crate) fn all_mounts(&self) -> Vec<String> {
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
    pub(crate) fn mounts(&self) -> Vec<String> {
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
        // The firewall chains of our bridge (published ports, egress) that pods outliving a
        // stopped daemon kept: ours only (peapod's table is shared with other tests' bridges).
        if let Ok(out) = Command::new("nft")
            .args(["list", "table", "inet", "peapod"])
            .output()
        {
            let text = String::from_utf8_lossy(&out.stdout);
            let prefix = format!("{}-", self.bridge);
            for chain in text
                .lines()
                .filter_map(|l| l.trim().strip_prefix("chain "))
                .filter_map(|l| l.split_whitespace().next())
                .filter(|c| c.starts_with(&prefix))
            {
                let _ = Command::new("nft")
                    .args(["delete", "chain", "inet", "peapod", chain])
                    .status();
            }
        }
        // A guest's tree left behind may be deeper than the recursive removal of the temp dir
        // can go (tests/hostile.rs builds one).
        let _ = peapod::host::tree::remove(self.dir.path(), Default::default());
    }
}
