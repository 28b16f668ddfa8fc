//! Many modules in one daemon, in a Raspberry Pi's address space: Raspberry Pi OS kernels give a
//! process 39 bits of virtual address space (512 GiB), simulated here with `RLIMIT_AS`. With
//! wasmtime's 64-bit defaults (4 GiB reserved per linear memory) about 125 modules fit; peapod
//! sees the smaller address space and reserves memories for a board (see `wasm::memory`).

mod common;

use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::time::Duration;

use common::*;

/// 512 GiB: the address space of a process on a Raspberry Pi OS kernel.
const PI_ADDRESS_SPACE: u64 = 512 << 30;

/// 64-bit hosts only: a 32-bit process (armv7) has 4 GiB in all, and wasmtime's 32-bit defaults.
#[cfg(target_pointer_width = "64")]
#[test]
#[ignore = "needs root: scripts/test runs it"]
fn three_hundred_modules_serve_in_a_pi_address_space() {
    let env = Env::new();
    let pods = 150; // two modules each
    for i in 0..pods {
        env.pod_file(
            &format!("p{i}.toml"),
            &format!(
                "[pod]\nname = \"p{i}\"\n\n\
                 [[containers]]\nname = \"app\"\nmodule = {KV_SERVER:?}\n\
                 args = [\"--listen\", \"0.0.0.0:8080\"]\nmemory_limit_mib = 32\n\n\
                 [[containers]]\nname = \"side\"\nmodule = {TOOLBOX:?}\n\
                 args = [\"listen\", \"0.0.0.0:9000\", \"side {i}\"]\nmemory_limit_mib = 32\n"
            ),
        );
    }
    let mut d = env.spawn_daemon(|c| {
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            c.pre_exec(|| {
                nix::sys::resource::setrlimit(
                    nix::sys::resource::Resource::RLIMIT_AS,
                    PI_ADDRESS_SPACE,
                    PI_ADDRESS_SPACE,
                )
                .map_err(std::io::Error::from)
            });
        }
    });
    d.wait_for("ready in", Duration::from_secs(600));
    // The daemon saw the board's address space and chose bounded memories itself (unless an
    // emulator kept the limit from it: QEMU's user mode does not apply RLIMIT_AS).
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", d.pid())).unwrap();
    if limits
        .lines()
        .any(|l| l.starts_with("Max address space") && l.contains(&PI_ADDRESS_SPACE.to_string()))
    {
        assert!(
            d.output()
                .contains("linear memories: bounded (the address space (512 GiB)"),
            "{}",
            d.output()
        );
    }
    let ps = env.ps();
    assert_eq!(ps.len(), pods);
    for i in 0..pods {
        let p = &ps[&format!("p{i}")];
        assert_eq!(p["status"], "running", "{p}");
        let ip: std::net::Ipv4Addr = p["ip"].as_str().unwrap().parse().unwrap();
        wait_healthy(SocketAddr::from((ip, 8080)));
        let side = eventually(Duration::from_secs(30), &format!("p{i}/side"), || {
            let mut c = std::net::TcpStream::connect((ip, 9000)).ok()?;
            let mut s = String::new();
            std::io::Read::read_to_string(&mut c, &mut s).ok()?;
            Some(s)
        });
        assert_eq!(side, format!("side {i}"));
    }
    let (rss, _) = rss_kib(d.pid());
    eprintln!(
        "figure: daemon RSS with {pods} pods of 2 modules: {rss} KiB ({} KiB a pod), {} fds",
        rss / pods as u64,
        fd_count(d.pid())
    );
    // None of them hit the address-space wall and restarted.
    let restarts: u64 = env
        .ps()
        .values()
        .map(|p| p["restarts"].as_u64().unwrap())
        .sum();
    assert_eq!(restarts, 0, "{}", d.output());
    assert!(!d.output().contains("mmap failed"), "{}", d.output());
    assert!(d.terminate().success());
}

/// A Linux bridge takes at most 1023 ports: past that, a pod fails with an error that says so
/// (not the kernel's "Exchange full"), and nothing of it is left. The bridge and its ports live
/// in a network namespace of the test's own, which `peapod run` uses as its host.
#[test]
#[ignore = "needs root: scripts/test runs it"]
fn a_full_bridge_is_a_clear_error() {
    let env = Env::new();
    let host = TestNetns::new();
    let mut batch = format!("link add {} type bridge\n", env.bridge);
    for i in 0..peapod::host::net::BRIDGE_MAX_PORTS {
        // (veths: the dummy driver is not in every kernel or container)
        batch += &format!(
            "link add v{i} type veth peer name w{i}\nlink set v{i} master {}\n",
            env.bridge
        );
    }
    host.ip_batch(&batch);
    let spec = env.spec("full.toml", &env.kv_spec("full", ""));
    let mut run = env.peapod(&["run", spec.to_str().unwrap()]);
    host.enter_on_exec(&mut run);
    let out = run.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("the bridge has 1023 ports already, the most a Linux bridge takes"),
        "{stderr}"
    );
    assert!(env.leases().is_empty(), "{:?}", env.leases());
    assert!(!env.pin("full").exists());
    let ports = cmd(
        "ip",
        &[
            "-n",
            &host.name,
            "-o",
            "link",
            "show",
            "master",
            &env.bridge,
        ],
    );
    assert_eq!(
        ports.lines().count(),
        peapod::host::net::BRIDGE_MAX_PORTS,
        "a veth was left"
    );
}

/// A full subnet: the pod that gets no address fails with an error naming the subnet (in `ps`,
/// `inspect` and the log), is not retried in a loop, and the others keep serving.
#[test]
#[ignore = "needs root: scripts/test runs it"]
fn a_full_subnet_fails_one_pod_clearly_and_the_others_serve() {
    let mut env = Env::new();
    // A /29: the bridge takes .1, five pods .2 to .6.
    env.subnet = format!("{}.{}.{}.0/29", env.net[0], env.net[1], env.net[2]);
    for i in 0..6 {
        env.pod_file(&format!("f{i}.toml"), &env.kv_spec(&format!("f{i}"), ""));
    }
    let mut d = env.daemon();
    let ps = env.ps();
    let failed: Vec<_> = ps.values().filter(|p| p["status"] == "failed").collect();
    assert_eq!(failed.len(), 1, "{ps:?}");
    let error = failed[0]["error"].as_str().unwrap();
    assert!(
        error.contains(&format!(
            "no free address left in {} (5 leased)",
            env.subnet
        )),
        "{error}"
    );
    for p in ps.values().filter(|p| p["status"] != "failed") {
        let ip: std::net::Ipv4Addr = p["ip"].as_str().unwrap().parse().unwrap();
        wait_healthy(SocketAddr::from((ip, 8080)));
    }
    assert_eq!(env.leases().len(), 5);
    assert!(
        d.output().contains("no free address left in"),
        "{}",
        d.output()
    );
    // Not retried in a loop: one error line for it, however long the daemon runs.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        d.output().matches("no free address left in").count(),
        1,
        "{}",
        d.output()
    );
    assert!(d.terminate().success());
}
