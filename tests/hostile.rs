//! Attacks on the daemon by a guest or an API client (issue: "No guest and no API client can
//! take the daemon down"). Each test runs a daemon of its own with a healthy pod next to the
//! attacker, and checks that the attack ends where its bound says, that the healthy pod keeps
//! serving and that the daemon's memory and fds stay bounded. The hostile guests are tiny `.wat`
//! modules written here, or `toolbox` commands.

mod common;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

/// A pod of one container running `module`, with `extra` lines in its container.
fn one(name: &str, module: &Path, extra: &str) -> String {
    format!(
        "[pod]\nname = \"{name}\"\n[pod.restart_backoff]\ninitial = \"100ms\"\nmax = \"1s\"\n\n\
         [[containers]]\nname = \"c\"\nmodule = {module:?}\n{extra}\n"
    )
}

/// A daemon with a healthy kv-server pod `good`; returns it and the pod's address.
fn daemon_with_good_pod(env: &Env) -> (Peapod, SocketAddr) {
    env.pod_file("good.toml", &env.kv_spec("good", ""));
    let d = env.daemon();
    let ip = env.wait_running("good");
    let addr = SocketAddr::from((ip, 8080));
    wait_healthy(addr);
    (d, addr)
}

/// `peapod inspect POD` as JSON.
fn inspect(env: &Env, pod: &str) -> serde_json::Value {
    serde_json::from_str(&env.ctl_ok(&["inspect", pod])).unwrap()
}

/// Waits until the first container of `pod` has ended a run with `reason`; returns its status.
fn wait_reason(env: &Env, pod: &str, reasons: &[&str]) -> serde_json::Value {
    let t0 = Instant::now();
    loop {
        let c = inspect(env, pod)["containers"][0].clone();
        if reasons.iter().any(|r| c["reason"] == *r) {
            return c;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "{pod}: no run ending with {reasons:?} in 60 s; last: {c}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The healthy pod answers, several times.
fn still_serving(addr: SocketAddr) {
    for _ in 0..3 {
        let r = http(addr, "GET", "/healthz", "").expect("the healthy pod answers");
        assert_eq!(r.status, 200);
    }
}

#[test]
#[ignore = "needs root: scripts/test runs it"]
fn table_growth_is_bounded_by_the_memory_limit() {
    let env = Env::new();
    let (mut d, good) = daemon_with_good_pod(&env);
    let (rss0, _) = rss_kib(d.pid());
    // 80 bytes: grow a table by 16M entries and fill it, forever.
    let m = env.wat("tables.wasm", TABLE_HOG);
    let spec = env.spec("tables.toml", &one("tables", &m, "memory_limit_mib = 16"));
    env.ctl_ok(&["apply", "-f", spec.to_str().unwrap()]);
    let c = wait_reason(&env, "tables", &["OOMKilled"]);
    assert_eq!(c["last"], "memory limit 16 MiB reached", "{c}");
    // Tables count against the memory limit too: 64Ki entries (1 MiB) at a time hit 16 MiB.
    let m = env.wat(
        "tables2.wasm",
        r#"(module
             (table $t 0 funcref)
             (func (export "_start")
               (loop $l
                 (drop (table.grow $t (ref.null func) (i32.const 65536)))
                 (br $l))))"#,
    );
    let spec = env.spec("tables2.toml", &one("tables2", &m, "memory_limit_mib = 16"));
    env.ctl_ok(&["apply", "-f", spec.to_str().unwrap()]);
    let c = wait_reason(&env, "tables2", &["OOMKilled"]);
    assert_eq!(c["last"], "memory limit 16 MiB reached", "{c}");
    // It keeps hitting its bound and being restarted, and nothing else notices.
    eventually(Duration::from_secs(30), "three restarts", || {
        (inspect(&env, "tables")["restarts"].as_u64() >= Some(3)).then_some(())
    });
    still_serving(good);
    let (rss, _) = rss_kib(d.pid());
    eprintln!("figure: table attacks: daemon RSS {rss0} -> {rss} KiB");
    assert!(
        rss < rss0 + 256 * 1024,
        "daemon RSS grew from {rss0} to {rss} KiB"
    );
    // `ps` shows why it stopped.
    let ps = env.ps();
    assert_eq!(ps["tables"]["containers"][0]["reason"], "OOMKilled");
    assert_eq!(ps["tables2"]["containers"][0]["reason"], "OOMKilled");
    assert!(d.terminate().success());
}

#[test]
#[ignore = "needs root: scripts/test runs it"]
fn all_memories_of_a_container_share_its_limit() {
    let env = Env::new();
    let (mut d, good) = daemon_with_good_pod(&env);
    let (rss0, _) = rss_kib(d.pid());
    // Eight memories, each grown to 64 MiB and filled: 512 MiB under a 128 MiB limit.
    let mems: String = (0..8).map(|i| format!("(memory $m{i} 0)\n")).collect();
    let grows: String = (0..8)
        .map(|i| {
            format!(
                "(drop (memory.grow $m{i} (i32.const 1024)))\n\
                 (memory.fill $m{i} (i32.const 0) (i32.const 7) (i32.const 67108864))\n"
            )
        })
        .collect();
    let m = env.wat(
        "mems.wasm",
        &format!("(module {mems} (func (export \"_start\") {grows}))"),
    );
    let spec = env.spec("mems.toml", &one("mems", &m, ""));
    env.ctl_ok(&["apply", "-f", spec.to_str().unwrap()]);
    let c = wait_reason(&env, "mems", &["OOMKilled"]);
    assert_eq!(c["last"], "memory limit 128 MiB reached", "{c}");
    still_serving(good);
    let samples: Vec<u64> = (0..40)
        .map(|_| {
            std::thread::sleep(Duration::from_millis(50));
            rss_kib(d.pid()).0
        })
        .collect();
    eprintln!("figure: 8 memories: daemon RSS {rss0} -> {samples:?} KiB");
    // Between runs the daemon is back where it was (nothing of the attack is kept); during a
    // run it holds at most the container's 128 MiB and what the allocator has not returned yet,
    // far from the 1 GiB (8 x 128 MiB) the attack took before memories were counted together.
    let (low, high) = (
        *samples.iter().min().unwrap(),
        *samples.iter().max().unwrap(),
    );
    assert!(
        low < rss0 + 64 * 1024,
        "daemon RSS stays at {low} KiB between runs (was {rss0}): {samples:?}"
    );
    assert!(
        high < rss0 + 512 * 1024,
        "daemon RSS peaked at {high} KiB (was {rss0}): {samples:?}"
    );
    assert!(d.terminate().success());
}

#[test]
#[ignore = "needs root: scripts/test runs it"]
fn module_paths_must_be_regular_files() {
    let env = Env::new();
    let (mut d, good) = daemon_with_good_pod(&env);
    let fifo = env.dir.path().join("fifo.wasm");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    for (module, what) in [
        (
            Path::new("/dev/zero"),
            "is a character device, not a regular file",
        ),
        (fifo.as_path(), "is a FIFO, not a regular file"),
        (env.dir.path(), "is a directory, not a regular file"),
    ] {
        let spec = env.spec("bad.toml", &one("bad", module, ""));
        let t0 = Instant::now();
        let (code, _, err) = env.ctl(&["apply", "-f", spec.to_str().unwrap()]);
        assert_eq!(code, 2, "{module:?}: {err}");
        assert!(
            err.contains("bad.toml:") && err.contains("containers[0].module") && err.contains(what),
            "{err}"
        );
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "{module:?} blocked the apply"
        );
    }
    // Too large: over limits.max_module_size (a sparse file, no disk used).
    let big = env.dir.path().join("big.wasm");
    std::fs::File::create(&big)
        .unwrap()
        .set_len(65 << 20)
        .unwrap();
    let spec = env.spec("big.toml", &one("big", &big, ""));
    let (code, _, err) = env.ctl(&["apply", "-f", spec.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("over the limit of 67108864"), "{err}");
    // A FIFO in the pods directory does not block the main loop, the reload or the API.
    let pods_fifo = env.pods_dir().join("trap.toml");
    nix::unistd::mkfifo(&pods_fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let t0 = Instant::now();
    let (status, v) = raw_api(&env, "POST", "/v1/reload", "");
    assert_eq!(status, 200);
    assert!(t0.elapsed() < Duration::from_secs(10));
    let problems = v["problems"].to_string();
    assert!(problems.contains("trap.toml is a FIFO"), "{problems}");
    let (status, _) = raw_api(&env, "GET", "/v1/healthz", "");
    assert_eq!(status, 200);
    still_serving(good);
    assert!(env.ps().contains_key("good") && !env.ps().contains_key("bad"));
    assert!(d.terminate().success());
}

/// Lets every user reach this env's API socket (the test's own; on a board, the `peapod`
/// group reaches it).
fn open_socket_to_everyone(env: &Env) {
    for dir in [env.dir.path().to_path_buf(), env.run_dir()] {
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o711)).unwrap();
    }
    std::fs::set_permissions(env.socket(), std::fs::Permissions::from_mode(0o666)).unwrap();
}

/// `cmd` run as user and group 65534 (nobody), without supplementary groups.
fn as_nobody(mut cmd: Command) -> (i32, String) {
    let out = cmd.uid(65534).gid(65534).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
#[ignore = "needs root: scripts/test runs it"]
fn precompiled_code_and_files_need_the_callers_rights() {
    let env = Env::new();
    let (mut d, good) = daemon_with_good_pod(&env);
    // Let nobody reach the socket (the test's own) and a directory of files.
    open_socket_to_everyone(&env);
    let open = env.dir.path().join("open");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
    let spec = |name: &str, module: &Path| {
        let p = open.join(format!("{name}.toml"));
        std::fs::write(&p, one(name, module, "")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        p
    };
    let apply_as_nobody = |p: &Path| as_nobody(env.peapod(&["apply", "-f", p.to_str().unwrap()]));

    // A .cwasm in a directory others may write: refused for a non-root client.
    let forged = open.join("forged.cwasm");
    env.ctl_ok(&["compile", TOOLBOX, "-o", forged.to_str().unwrap()]);
    std::fs::set_permissions(&forged, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (code, err) = apply_as_nobody(&spec("forged", &forged));
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("refused: precompiled code runs as native code"),
        "{err}"
    );
    // The same file in root's own directory (0755, root-owned) is root's word: accepted.
    let safe = tempfile::Builder::new()
        .prefix("peapod-safe")
        .tempdir()
        .unwrap();
    std::fs::set_permissions(safe.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let trusted = safe.path().join("tool.cwasm");
    std::fs::copy(&forged, &trusted).unwrap();
    let (code, err) = apply_as_nobody(&spec("trusted", &trusted));
    assert_eq!(code, 0, "{err}");
    // A host port below 1024 is root's to publish, as it is root's to bind.
    let low = open.join("low.toml");
    let module = safe.path().join("tool.cwasm");
    std::fs::write(
        &low,
        one(
            "low",
            &module,
            "ports = [{ container_port = 8080, host_port = 80 }]",
        ),
    )
    .unwrap();
    std::fs::set_permissions(&low, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (code, err) = apply_as_nobody(&low);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("containers[0].ports[0].host_port: only root may publish a host port below"),
        "{err}"
    );
    assert!(!env.ps().contains_key("low"));
    // Root may apply a .cwasm of any owner.
    let (code, _, err) = env.ctl(&["apply", "-f", spec("byroot", &forged).to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");

    // Files are read with the client's rights: a root-only module is "permission denied",
    // exactly as for a file that does not exist in that directory.
    let secret = env.dir.path().join("secret");
    std::fs::create_dir(&secret).unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o700)).unwrap();
    let hidden = secret.join("app.wasm");
    std::fs::copy(TOOLBOX, &hidden).unwrap();
    let (code, err_real) = apply_as_nobody(&spec("hidden", &hidden));
    assert_eq!(code, 2, "{err_real}");
    assert!(err_real.contains("Permission denied"), "{err_real}");
    let (code, err_none) = apply_as_nobody(&spec("hidden", &secret.join("nothing.wasm")));
    assert_eq!(code, 2);
    let strip = |e: &str, f: &str| e.replace(f, "FILE");
    assert_eq!(
        strip(&err_real, "app.wasm"),
        strip(&err_none, "nothing.wasm"),
        "the error tells whether a root-only file exists"
    );
    // Root reads it.
    let (code, _, err) = env.ctl(&["apply", "-f", spec("hidden", &hidden).to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");

    // A pods-directory file naming a .cwasm that others may write is refused too.
    env.pod_file("dirpod.toml", &one("dirpod", &forged, ""));
    let (_, v) = raw_api(&env, "POST", "/v1/reload", "");
    assert!(
        v["problems"]
            .to_string()
            .contains("refused: precompiled code"),
        "{v}"
    );
    still_serving(good);
    assert!(d.terminate().success());
}

#[test]
#[ignore = "needs root: scripts/test runs it"]
fn guest_open_files_are_capped() {
    let env = Env::new();
    let (mut d, good) = daemon_with_good_pod(&env);
    let fds0 = fd_count(d.pid());
    let hog = |name: &str, extra: &str| {
        format!(
            "{}args = [\"hog\", \"20000\"]\n{extra}\n",
            one(name, Path::new(TOOLBOX), "")
        )
    };
    let spec = env.spec("hog.toml", &hog("hog", "open_files_limit = 100"));
    env.ctl_ok(&["apply", "-f", spec.to_str().unwrap()]);
    let c = wait_reason(&env, "hog", &["LimitReached"]);
    assert!(
        c["last"]
            .as_str()
            .unwrap()
            .starts_with("open files limit 100 reached"),
        "{c}"
    );
    // The default (limits.open_files = 1024) holds too.
    let spec = env.spec("hog2.toml", &hog("hog2", ""));
    env.ctl_ok(&["apply", "-f", spec.to_str().unwrap()]);
    let c = wait_reason(&env, "hog2", &["LimitReached"]);
    assert!(c["last"].as_str().unwrap().contains("limit 1024"), "{c}");
    let fds = fd_count(d.pid());
    eprintln!("figure: socket hogs (limits 100 and 1024): daemon fds {fds0} -> {fds}");
    assert!(fds < fds0 + 1300, "daemon fds: {fds0} -> {fds}");
    still_serving(good);
    let (status, _) = raw_api(&env, "GET", "/v1/healthz", "");
    assert_eq!(status, 200);
    assert!(d.terminate().success());
}

#[test]
#[ignore = "needs root: scripts/test runs it"]
fn api_survives_idle_and_slow_clients() {
    let env = Env::new();
    let (mut d, good) = daemon_with_good_pod(&env);
    // As many idle connections as this process may open (20,000 on these machines).
    let (_, hard) =
        nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).unwrap();
    let _ = nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, hard, hard);
    let n = (hard.min(20_000) as usize).saturating_sub(500);
    let mut idle = Vec::new();
    for _ in 0..n {
        match std::os::unix::net::UnixStream::connect(env.socket()) {
            Ok(c) => idle.push(c),
            Err(_) => std::thread::sleep(Duration::from_millis(1)),
        }
    }
    assert!(idle.len() > n / 2, "only {} connections", idle.len());
    // A half-sent request header.
    let mut slow = std::os::unix::net::UnixStream::connect(env.socket()).unwrap();
    slow.write_all(b"GET /v1/healthz HTTP/1.1\r\nHost:")
        .unwrap();
    // healthz and ps answer while they are all open.
    let t0 = Instant::now();
    let (status, v) = raw_api(&env, "GET", "/v1/healthz", "");
    assert_eq!((status, v["status"].as_str()), (200, Some("ok")));
    // A bound on "answers at all" (a starved accept loop never does), not a speed goal; an
    // emulated daemon on a loaded machine is many times slower.
    let bound = Duration::from_secs(if emulated() { 60 } else { 10 });
    assert!(t0.elapsed() < bound, "{:?}", t0.elapsed());
    eprintln!(
        "figure: healthz answered in {:?} with {} idle clients",
        t0.elapsed(),
        idle.len()
    );
    env.ctl_ok(&["ps"]);
    let fds = fd_count(d.pid());
    eprintln!("figure: daemon fds with the idle clients: {fds}");
    assert!(
        fds < 600,
        "daemon holds {fds} fds with {} idle clients",
        idle.len()
    );
    still_serving(good);
    // The half-sent header is dropped after the header timeout.
    slow.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut buf = [0u8; 64];
    let t0 = Instant::now();
    let r = slow.read(&mut buf);
    assert!(
        matches!(r, Ok(0)) || r.is_err(),
        "the slow client got an answer: {r:?}"
    );
    assert!(t0.elapsed() < Duration::from_secs(25), "{:?}", t0.elapsed());
    eprintln!("figure: half-sent header closed after {:?}", t0.elapsed());
    drop(idle);
    assert!(d.terminate().success());
}

#[test]
#[ignore = "needs root: scripts/test runs it"]
fn a_spinning_sibling_adds_at_most_a_tick_of_latency() {
    let env = Env::new();
    let name = unique("spin");
    let spin = env.wat(
        "spin.wasm",
        r#"(module (func (export "_start") (loop $l (br $l))))"#,
    );
    let spec = env.spec(
        "spin.toml",
        &format!(
            "[pod]\nname = \"{name}\"\n\n[[containers]]\nname = \"app\"\nmodule = {KV_SERVER:?}\n\
             args = [\"--listen\", \"0.0.0.0:8080\"]\n\n\
             [[containers]]\nname = \"spin\"\nmodule = {spin:?}\n"
        ),
    );
    let mut p = env.start(&spec);
    let started = p.started(&name);
    let addr = SocketAddr::from((started.ip, 8080));
    wait_healthy(addr);
    let mut times: Vec<Duration> = (0..30)
        .map(|_| {
            let t0 = Instant::now();
            let r = http(addr, "GET", "/healthz", "").unwrap();
            assert_eq!(r.status, 200);
            t0.elapsed()
        })
        .collect();
    times.sort();
    // Without the fix each request waited ~60 epoch ticks (~500 ms); one tick is 10 ms. The
    // bound leaves room for slow (emulated) machines.
    let median = times[times.len() / 2];
    eprintln!(
        "figure: next to a spinner: median {median:?}, max {:?}",
        times.last().unwrap()
    );
    assert!(
        median < Duration::from_millis(300),
        "median {median:?}: {times:?}"
    );
    p.terminate();
}

#[test]
#[ignore = "needs root: scripts/test runs it"]
fn logs_stream_with_bounded_memory() {
    let env = Env::new();
    let (mut d, _good) = daemon_with_good_pod(&env);
    // 40 MiB of records in the live log file.
    let log = env.state_dir().join("logs/good/app.log");
    let line = format!(
        "2026-11-25T10:00:00.000000000Z stdout F {}\n",
        "x".repeat(200)
    );
    let chunk = line.repeat(4096);
    {
        let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
        while f.metadata().unwrap().len() < 40 << 20 {
            f.write_all(chunk.as_bytes()).unwrap();
        }
    }
    let size = std::fs::metadata(&log).unwrap().len();
    let (_, hwm0) = rss_kib(d.pid());
    let readers: Vec<_> = (0..20)
        .map(|_| {
            let socket = env.socket();
            std::thread::spawn(move || {
                let mut c = std::os::unix::net::UnixStream::connect(socket).unwrap();
                write!(
                    c,
                    "GET /v1/pods/good/logs?container=app HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                )
                .unwrap();
                let mut n = 0u64;
                let mut buf = vec![0u8; 1 << 16];
                loop {
                    match c.read(&mut buf) {
                        Ok(0) | Err(_) => break n,
                        Ok(k) => n += k as u64,
                    }
                }
            })
        })
        .collect();
    for r in readers {
        let got = r.join().unwrap();
        assert!(got >= size, "a reader got {got} of {size} bytes");
    }
    let (_, hwm) = rss_kib(d.pid());
    eprintln!("figure: 20 readers of a {size}-byte log: daemon peak RSS {hwm0} -> {hwm} KiB");
    assert!(
        hwm < hwm0 + 100 * 1024,
        "peak RSS {hwm0} -> {hwm} KiB for 20 readers of {size} bytes"
    );
    // `--tail` reads from the end, whatever the size.
    let out = env.ctl_ok(&["logs", "good/app", "--tail", "3"]);
    assert_eq!(out.lines().count(), 3, "{out}");
    assert!(d.terminate().success());
}

#[test]
#[ignore = "needs root: scripts/test runs it"]
fn backoff_below_the_floor_is_raised() {
    let env = Env::new();
    let name = unique("zero");
    let spec = env.spec(
        "zero.toml",
        &format!(
            "[pod]\nname = \"{name}\"\nrestart_policy = \"Always\"\n\
             restart_backoff = {{ initial = \"0s\", max = \"0s\" }}\n\n\
             [[containers]]\nname = \"c\"\nmodule = {TOOLBOX:?}\nargs = [\"exit\", \"0\"]\n"
        ),
    );
    let mut p = env.start(&spec);
    p.started(&name);
    std::thread::sleep(Duration::from_secs(2));
    p.terminate();
    let out = p.output();
    assert!(
        out.contains(
            "zero.toml:4: pod.restart_backoff.initial: 0s is below the floor of 10ms; using 10ms"
        ),
        "{out}"
    );
    assert!(
        out.contains("pod.restart_backoff.max: 0s is below the floor"),
        "{out}"
    );
    let restarts: u32 = out
        .lines()
        .find_map(|l| l.split("(restarts: ").nth(1))
        .and_then(|r| r.trim_end_matches(')').parse().ok())
        .expect("summary line");
    eprintln!("figure: zero backoff: {restarts} restarts in ~2 s");
    // At most one restart per 10 ms (at 0 s it was ~430 a second).
    assert!((1..=250).contains(&restarts), "{restarts} restarts in ~2 s");
}

#[test]
#[ignore = "needs root: scripts/test runs it"]
fn a_pod_the_daemon_keeps_dying_for_waits_and_can_be_deleted() {
    let env = Env::new();
    let mut d = env.daemon();
    let spec = env.spec("p.toml", &env.kv_spec("suspect", ""));
    env.ctl_ok(&["apply", "-f", spec.to_str().unwrap()]);
    let ip: Ipv4Addr = env.wait_running("suspect");
    // The daemon dies right after starting the pod, twice in a row (as an OOM kill would).
    for _ in 0..2 {
        d.signal(nix::sys::signal::Signal::SIGKILL);
        d.wait_exit(Duration::from_secs(10));
        d = env.daemon();
    }
    // The third start holds it back, and says why; the API works meanwhile.
    let p = env.ps().remove("suspect").unwrap();
    assert_eq!(p["status"], "waiting", "{p}");
    assert!(
        p["error"].as_str().unwrap().contains("crash-loop backoff"),
        "{p}"
    );
    assert!(http(SocketAddr::from((ip, 8080)), "GET", "/healthz", "").is_err());
    env.ctl_ok(&["delete", "suspect"]);
    assert!(!env.ps().contains_key("suspect"));
    assert!(d.terminate().success());
}

#[test]
#[ignore = "needs root: scripts/test runs it"]
fn a_full_log_disk_is_one_warning_not_one_per_line() {
    let env = Env::new();
    let (mut d, good) = daemon_with_good_pod(&env);
    // The container's log file is /dev/full: every write fails with ENOSPC.
    let dir = env.state_dir().join("logs/flood");
    std::fs::create_dir_all(&dir).unwrap();
    std::os::unix::fs::symlink("/dev/full", dir.join("c.log")).unwrap();
    // A guest that prints a line per 100 sockets and is restarted at its open-files limit:
    // hundreds of lines in a few seconds.
    let spec = env.spec(
        "flood.toml",
        &one(
            "flood",
            Path::new(TOOLBOX),
            "args = [\"hog\", \"5000\"]\nopen_files_limit = 300",
        ),
    );
    env.ctl_ok(&["apply", "-f", spec.to_str().unwrap()]);
    let restarts = |env: &Env| inspect(env, "flood")["restarts"].as_u64().unwrap_or(0);
    let t0 = Instant::now();
    while restarts(&env) < 5 {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "flood never restarted 5 times"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let warnings = d.output().matches("flood/c: log file:").count();
    assert_eq!(warnings, 1, "{}", d.output());
    assert!(d.output().contains("lines lost since the last warning"));
    assert_eq!(http(good, "GET", "/healthz", "").unwrap().status, 200);
    assert!(d.terminate().success());
}

/// Round 2, finding 1: a guest nests 20,000 directories in its `empty_dir` in seconds; deleting
/// the pod removed the tree recursively on a daemon thread and overflowed its stack (every pod
/// went down with the daemon). The removal is iterative now: the pod goes, its tree with it, and
/// the daemon and its other pod stay.
#[test]
#[ignore = "needs root: scripts/test runs it"]
fn a_deep_directory_chain_does_not_take_the_daemon_down() {
    let env = Env::new();
    let (mut d, good) = daemon_with_good_pod(&env);
    let levels = if emulated() { 5_000 } else { 20_000 };
    let spec = env.spec(
        "deep.toml",
        &format!(
            "[pod]\nname = \"deep\"\n[[volumes]]\nname = \"scratch\"\nempty_dir = {{}}\n\
             [[containers]]\nname = \"c\"\nmodule = {TOOLBOX:?}\nargs = [\"chain\", \"/scratch\", \"{levels}\"]\n\
             volume_mounts = [{{ name = \"scratch\", mount_path = \"/scratch\" }}]\n"
        ),
    );
    env.ctl_ok(&["apply", "-f", spec.to_str().unwrap()]);
    let done = format!("chain of {levels} levels");
    eventually(Duration::from_secs(120), "the chain is built", || {
        env.ctl(&["logs", "deep"]).1.contains(&done).then_some(())
    });
    let tree = env.state_dir().join("volumes").join("deep");
    assert!(
        tree.join("scratch/c/c/c").is_dir(),
        "the chain is on the host"
    );
    env.ctl_ok(&["delete", "deep"]);
    assert!(!tree.exists(), "the pod's tree went with it");
    assert!(
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(d.pid() as i32), None).is_ok(),
        "the daemon lives"
    );
    still_serving(good);
    assert!(!env.ps().contains_key("deep"));
    d.terminate();
}

/// Round 2, findings 3 and 7: a pod may not ask more of the board than it has, whoever asks
/// (a 100 GiB tmpfs, a day of grace), and a daemon stop never waits on a pod's grace period
/// longer than `limits.stop_timeout`.
#[test]
#[ignore = "needs root: scripts/test runs it"]
fn asks_beyond_the_board_are_refused_and_a_stop_is_bounded() {
    let env = Env::new();
    let config = env.spec(
        "peapod.toml",
        "[limits]\nallocatable_memory = \"1GiB\"\nmax_grace_period = \"1m\"\nstop_timeout = \"2s\"\n",
    );
    let mut d = env.daemon_with(|c| {
        c.env("PEAPOD_CONFIG", &config);
    });
    let pod = |name: &str, extra: &str, volumes: &str, mib: u64| {
        env.spec(
            &format!("{name}.toml"),
            &format!(
                "[pod]\nname = \"{name}\"\n{extra}\n{volumes}\n\
                 [[containers]]\nname = \"app\"\nmodule = {TOOLBOX:?}\n\
                 args = [\"http\", \"127.0.0.1:8080\", \"--ignore-shutdown\"]\n\
                 memory_limit_mib = {mib}\n\
                 lifecycle = {{ pre_stop = {{ http_get = {{ path = \"/shutdown\", port = 8080 }} }} }}\n"
            ),
        )
    };
    let apply = |spec: &Path| env.ctl(&["apply", "-f", spec.to_str().unwrap()]);

    let tmpfs = pod(
        "big",
        "",
        "[[volumes]]\nname = \"t\"\nempty_dir = { size_limit = \"100GiB\" }\n",
        16,
    );
    let (code, _, err) = apply(&tmpfs);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("pod big needs 100 GiB of memory, 1 GiB of 1 GiB allocatable is free"),
        "{err}"
    );
    let grace = pod("slow", "termination_grace_period = \"23h59m\"", "", 16);
    let (code, _, err) = apply(&grace);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("pod.termination_grace_period: 23h 59m is longer than this board allows, 1m"),
        "{err}"
    );
    // What is admitted counts against the next pod: 512 MiB leave 512.
    let (code, _, err) = apply(&pod("first", "termination_grace_period = \"1m\"", "", 512));
    assert_eq!(code, 0, "{err}");
    let body = serde_json::json!({
        "source": env.dir.path().join("second.toml"),
        "spec": std::fs::read_to_string(pod("second", "", "", 600)).unwrap(),
    });
    let (status, v) = raw_api(&env, "POST", "/v1/pods", &body.to_string());
    assert_eq!(status, 422, "{v}");
    assert!(
        v["error"]
            .as_str()
            .is_some_and(|e| e.contains("needs 600 MiB of memory, 512 MiB of 1 GiB")),
        "{v}"
    );
    let ps = env.ps();
    assert_eq!(
        ps.keys().collect::<Vec<_>>(),
        ["first"],
        "nothing of a refused pod"
    );
    assert!(!env.state_dir().join("volumes/big").exists());
    env.wait_running("first");

    // `first` ignores its pre_stop hook for its minute of grace; the daemon stops in 2 s.
    let t0 = Instant::now();
    d.signal(nix::sys::signal::Signal::SIGTERM);
    let status = d.wait_exit(Duration::from_secs(30));
    assert!(status.success(), "{status:?}");
    assert!(
        t0.elapsed() < Duration::from_secs(20),
        "the stop waited {:?}, past limits.stop_timeout (2s)",
        t0.elapsed()
    );
    assert!(
        env.pin("first").exists(),
        "its sandbox stays for the next start"
    );
}

/// Round 2, finding 5: a user (not root) holding the API's connections locked root out: 2000
/// connections that each sent half a header, or 130 held `logs -f` streams, left `healthz` and
/// root's `peapod ps` unanswered. A user's connections now make way for each other, a quarter
/// of the slots is root's alone, and a user's follow streams are bounded.
#[test]
#[ignore = "needs root: scripts/test runs it"]
fn a_user_flooding_the_api_does_not_lock_root_out() {
    let env = Env::new();
    let (mut d, good) = daemon_with_good_pod(&env);
    // Let the attacker reach the socket (as the `peapod` group would).
    open_socket_to_everyone(&env);
    let socket = env.socket();
    let (stalled, follows) = std::thread::spawn(move || {
        // This thread alone becomes user 4242 (the raw system call: glibc's would change every
        // thread of the test), and its connections carry that uid (SO_PEERCRED).
        let keep: libc::c_long = -1;
        // SAFETY: setresuid changes only this thread's credentials; no memory is involved.
        let r = unsafe { libc::syscall(libc::SYS_setresuid, keep, 4242 as libc::c_long, keep) };
        assert_eq!(r, 0, "setresuid: {}", std::io::Error::last_os_error());
        let mut stalled = Vec::new();
        for i in 0..2000 {
            let Ok(mut c) = std::os::unix::net::UnixStream::connect(&socket) else {
                continue;
            };
            let half: &[u8] = if i % 2 == 0 {
                b"GET /v1/healthz HTTP/1.1\r\nHost:"
            } else {
                b"G"
            };
            let _ = c.write_all(half);
            stalled.push(c);
        }
        let mut follows = Vec::new();
        for _ in 0..10 {
            let mut c = std::os::unix::net::UnixStream::connect(&socket).unwrap();
            c.write_all(
                b"GET /v1/pods/good/logs?container=app&follow=true HTTP/1.1\r\nHost: x\r\n\r\n",
            )
            .unwrap();
            c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let mut head = [0u8; 12];
            c.read_exact(&mut head).unwrap();
            follows.push((String::from_utf8_lossy(&head).into_owned(), c));
        }
        // Root's pod is not theirs to delete.
        let mut c = std::os::unix::net::UnixStream::connect(&socket).unwrap();
        c.write_all(b"DELETE /v1/pods/good HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut answer = String::new();
        c.read_to_string(&mut answer).unwrap();
        assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
        assert!(answer.contains("belongs to root"), "{answer}");
        (stalled, follows)
    })
    .join()
    .unwrap();
    // Root is answered: a refused connection would fail these.
    for _ in 0..5 {
        let (status, v) = raw_api(&env, "GET", "/v1/healthz", "");
        assert_eq!((status, v["status"].as_str()), (200, Some("ok")));
    }
    env.ctl_ok(&["ps"]);
    still_serving(good);
    let statuses: Vec<&str> = follows.iter().map(|(h, _)| &h[9..12]).collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == "200").count(),
        4,
        "quotas.follow_streams: {statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == "429").count(),
        6,
        "{statuses:?}"
    );
    // Of the 2000 stalled connections the user keeps at most their share, less the followers.
    let open = eventually(
        Duration::from_secs(10),
        "the user's extra connections close",
        || {
            let open = stalled
            .iter()
            .filter(|c| {
                c.set_nonblocking(true).unwrap();
                let mut b = [0u8; 1];
                matches!((&**c).read(&mut b), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
            })
            .count();
            (open + 4 <= 16).then_some(open)
        },
    );
    eprintln!("figure: the user holds {open} stalled connections of 2000 opened");
    drop(follows);
    assert!(d.terminate().success());
}
