//! Supervision as Kubernetes does it: init containers and native sidecars in order, probes run
//! from inside the pod, `cpu_limit`, `pre_stop` with the grace period. Each test waits for what
//! it can observe (a status, a log line), never for a fixed time.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// The container `name` of pod `pod` as `ps -o json` shows it.
fn container(env: &Env, pod: &str, name: &str) -> Option<Value> {
    let p = env.ps().remove(pod)?;
    p["containers"]
        .as_array()?
        .iter()
        .find(|c| c["name"] == name)
        .cloned()
}

fn ps_table_row(env: &Env, pod: &str) -> String {
    env.ctl_ok(&["ps"])
        .lines()
        .find(|l| l.starts_with(&format!("{pod} ")))
        .unwrap_or_default()
        .to_string()
}

#[test]
#[ignore = "needs root: scripts/test runs it"]
fn init_containers_and_a_sidecar_start_in_order_before_the_app() {
    let env = Env::new();
    let _d = env.daemon();
    let pod = unique("order");
    // The sidecar listens only 300 ms after it starts; the app connects once, at once, and
    // exits: it can only succeed if it started after the sidecar's startup probe passed.
    env.pod_file(
        &format!("{pod}.toml"),
        &format!(
            "[pod]\nname = \"{pod}\"\n\n\
             [[init_containers]]\nname = \"migrate\"\nmodule = {TOOLBOX:?}\nargs = [\"sleep\", \"300\"]\n\n\
             [[init_containers]]\nname = \"proxy\"\nmodule = {TOOLBOX:?}\nrestart_policy = \"Always\"\n\
             args = [\"listen\", \"127.0.0.1:9000\", \"proxy-up\", \"300\"]\n\
             [init_containers.startup_probe]\ntcp_socket = {{ port = 9000 }}\nperiod = \"50ms\"\nfailure_threshold = 100\n\n\
             [[containers]]\nname = \"app\"\nmodule = {TOOLBOX:?}\nrestart_policy = \"Never\"\n\
             args = [\"connect\", \"127.0.0.1:9000\"]\n"
        ),
    );
    let app = eventually(Duration::from_secs(60), "the app ended", || {
        container(&env, &pod, "app").filter(|c| c["state"] == "exited")
    });
    assert_eq!(app["exit_code"], 0, "{app}");
    let logs = env.ctl_ok(&["logs", &pod, "-c", "app"]);
    assert!(
        logs.contains("connected to 127.0.0.1:9000: proxy-up"),
        "{logs}"
    );

    let migrate = container(&env, &pod, "migrate").unwrap();
    let proxy = container(&env, &pod, "proxy").unwrap();
    assert_eq!(migrate["kind"], "init");
    assert_eq!(proxy["kind"], "sidecar");
    assert_eq!(app["kind"], "app");
    assert_eq!(migrate["reason"], "Completed", "{migrate}");
    let finished = migrate["last_state"]["finished_at"].as_str().unwrap();
    let proxy_started = proxy["started_at"].as_str().unwrap();
    let app_started = app["started_at"].as_str().unwrap();
    // RFC 3339 in UTC, to the millisecond: the strings sort as the times do.
    assert!(finished <= proxy_started, "{migrate} {proxy}");
    assert!(proxy_started < app_started, "{proxy} {app}");
    assert_eq!(proxy["state"], "running");
    assert_eq!(proxy["started"], true);
    assert_eq!(
        proxy["ready"], true,
        "no readiness probe: ready once started"
    );
}

#[test]
#[ignore = "needs root: scripts/test runs it"]
fn a_failing_init_container_keeps_the_app_from_starting() {
    let env = Env::new();
    let spec = env.spec(
        "pod.toml",
        &format!(
            "[pod]\nname = \"{}\"\nrestart_policy = \"Never\"\n\n\
             [[init_containers]]\nname = \"migrate\"\nmodule = {TOOLBOX:?}\nargs = [\"exit\", \"1\"]\n\n\
             [[containers]]\nname = \"app\"\nmodule = {TOOLBOX:?}\nargs = [\"listen\", \"127.0.0.1:8080\"]\n",
            unique("initfail")
        ),
    );
    let (status, out) = env.run_to_end(&spec, Duration::from_secs(60));
    assert_eq!(status.code(), Some(1), "{out}");
    assert!(
        out.contains("/migrate: exited with code 1 (restarts: 0)"),
        "{out}"
    );
    assert!(out.contains("/app: never ran"), "{out}");
    assert!(!out.contains("listening on 127.0.0.1:8080"), "{out}");
    assert!(env.leases().is_empty(), "the pod is removed: {out}");

    // Under the daemon with the default policy it is retried with backoff, the app still held.
    let _d = env.daemon();
    let pod = unique("initretry");
    env.pod_file(
        &format!("{pod}.toml"),
        &format!(
            "[pod]\nname = \"{pod}\"\nrestart_backoff = {{ initial = \"10ms\", max = \"20ms\" }}\n\n\
             [[init_containers]]\nname = \"migrate\"\nmodule = {TOOLBOX:?}\nargs = [\"exit\", \"1\"]\n\n\
             [[containers]]\nname = \"app\"\nmodule = {TOOLBOX:?}\nargs = [\"listen\", \"127.0.0.1:8080\"]\n"
        ),
    );
    let p = eventually(Duration::from_secs(60), "init retried", || {
        env.ps()
            .remove(&pod)
            .filter(|p| p["containers"][0]["restarts"].as_u64() >= Some(3))
    });
    assert_eq!(p["containers"][0]["reason"], "Error", "{p}");
    assert_eq!(p["containers"][1]["started_at"], Value::Null, "{p}");
    assert_ne!(p["status"], "running", "{p}");
    assert_eq!(p["ready"], false, "{p}");
}

#[test]
#[ignore = "needs root: scripts/test runs it"]
fn a_hung_module_is_restarted_in_place_by_its_liveness_probe() {
    let env = Env::new();
    let _d = env.daemon();
    let pod = unique("hung");
    // Serves for 300 ms, then holds its listener and answers nothing: connects still succeed
    // (the kernel's backlog), so only an HTTP probe sees it is stuck.
    env.pod_file(
        &format!("{pod}.toml"),
        &format!(
            "[pod]\nname = \"{pod}\"\nrestart_backoff = {{ initial = \"10ms\", max = \"10ms\" }}\n\n\
             [[containers]]\nname = \"app\"\nmodule = {TOOLBOX:?}\n\
             args = [\"http\", \"0.0.0.0:8080\", \"--hang-after\", \"300\"]\n\
             [containers.liveness_probe]\nhttp_get = {{ path = \"/healthz\", port = 8080 }}\n\
             period = \"100ms\"\ntimeout = \"200ms\"\nfailure_threshold = 2\n"
        ),
    );
    let ip = env.wait_running(&pod);
    let inode = std::fs::metadata(env.pin(&pod)).map(|m| {
        use std::os::unix::fs::MetadataExt;
        m.ino()
    });
    let app = eventually(Duration::from_secs(60), "a liveness restart", || {
        container(&env, &pod, "app").filter(|c| c["restarts"].as_u64() >= Some(1))
    });
    assert_eq!(app["last_state"]["reason"], "Unhealthy", "{app}");
    let message = app["last_state"]["message"].as_str().unwrap();
    assert!(
        message.contains("liveness probe failed 2 times")
            && message.contains("GET http://127.0.0.1:8080/healthz"),
        "{app}"
    );
    let p = env.ps().remove(&pod).unwrap();
    assert_eq!(p["ip"], ip.to_string(), "restarted in place: same IP");
    let inode_after = std::fs::metadata(env.pin(&pod)).map(|m| {
        use std::os::unix::fs::MetadataExt;
        m.ino()
    });
    assert_eq!(inode.unwrap(), inode_after.unwrap(), "same namespace");
    assert!(p["restarts"].as_u64() >= Some(1));
    // ... and it serves again on the same address after the restart.
    let pin = env.pin(&pod);
    let got = eventually(Duration::from_secs(30), "serving again", || {
        connect_in_netns(
            &pin,
            std::net::SocketAddr::new(ip.into(), 8080),
            "GET / HTTP/1.1\r\n\r\n",
        )
        .ok()
        .filter(|r| r.contains("200"))
    });
    assert!(got.ends_with("ok"), "{got}");
}

#[test]
#[ignore = "needs root: scripts/test runs it"]
fn readiness_decides_ready_and_the_ready_column() {
    let env = Env::new();
    let _d = env.daemon();
    let pod = unique("ready");
    env.pod_file(
        &format!("{pod}.toml"),
        &format!(
            "[pod]\nname = \"{pod}\"\n\n\
             [[containers]]\nname = \"web\"\nmodule = {TOOLBOX:?}\nargs = [\"http\", \"127.0.0.1:9001\"]\n\
             [containers.readiness_probe]\nhttp_get = {{ path = \"/status/204\", port = 9001 }}\nperiod = \"100ms\"\n\n\
             [[containers]]\nname = \"never\"\nmodule = {TOOLBOX:?}\nargs = [\"listen\", \"127.0.0.1:8080\"]\n\
             [containers.readiness_probe]\nhttp_get = {{ path = \"/status/503\", port = 9001 }}\nperiod = \"100ms\"\n"
        ),
    );
    eventually(Duration::from_secs(60), "web ready", || {
        container(&env, &pod, "web").filter(|c| c["ready"] == true)
    });
    // Both probes run every 100 ms: over a second "never" gets ten chances to pass.
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(1) {
        let never = container(&env, &pod, "never").unwrap();
        assert_eq!(never["state"], "running", "{never}");
        assert_eq!(never["ready"], false, "{never}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let p = env.ps().remove(&pod).unwrap();
    assert_eq!(p["status"], "running");
    assert_eq!(
        p["ready"], false,
        "a pod is ready when all its containers are"
    );
    let row = ps_table_row(&env, &pod);
    assert!(
        row.contains(" 1/2 "),
        "READY counts ready containers: {row}"
    );
}

#[test]
#[ignore = "needs root: scripts/test runs it"]
fn a_startup_probe_holds_liveness_back_until_the_app_is_up() {
    let env = Env::new();
    let _d = env.daemon();
    let pod = unique("slow");
    // Listens after 1 s; a liveness probe alone would fail at once and restart it.
    env.pod_file(
        &format!("{pod}.toml"),
        &format!(
            "[pod]\nname = \"{pod}\"\n\n\
             [[containers]]\nname = \"app\"\nmodule = {TOOLBOX:?}\n\
             args = [\"http\", \"127.0.0.1:8080\", \"--delay\", \"1000\"]\n\
             [containers.startup_probe]\ntcp_socket = {{ port = 8080 }}\nperiod = \"100ms\"\nfailure_threshold = 600\n\
             [containers.liveness_probe]\ntcp_socket = {{ port = 8080 }}\nperiod = \"100ms\"\nfailure_threshold = 1\n"
        ),
    );
    let app = eventually(Duration::from_secs(60), "started and ready", || {
        container(&env, &pod, "app").filter(|c| c["ready"] == true)
    });
    assert_eq!(app["started"], true);
    assert_eq!(
        app["restarts"], 0,
        "liveness waited for the startup probe: {app}"
    );
    let row = ps_table_row(&env, &pod);
    assert!(row.contains(" 1/1 "), "{row}");
}

#[test]
#[ignore = "needs root: scripts/test runs it"]
fn cpu_limit_caps_a_busy_loop() {
    let env = Env::new();
    let _d = env.daemon();
    let pod = unique("cpu");
    env.pod_file(
        &format!("{pod}.toml"),
        &format!(
            "[pod]\nname = \"{pod}\"\n\n\
             [[containers]]\nname = \"spin\"\nmodule = {TOOLBOX:?}\nargs = [\"spin\"]\ncpu_limit = \"250m\"\n"
        ),
    );
    env.wait_running(&pod);
    let cpu = || {
        container(&env, &pod, "spin").unwrap()["cpu_seconds"]
            .as_f64()
            .unwrap()
    };
    eventually(Duration::from_secs(30), "some CPU used", || {
        (cpu() > 0.0).then_some(())
    });
    let (c0, t0) = (cpu(), Instant::now());
    while t0.elapsed() < Duration::from_secs(2) {
        std::thread::sleep(Duration::from_millis(100));
    }
    let share = (cpu() - c0) / t0.elapsed().as_secs_f64();
    // 25 % of a core, plus at most one 20 ms burst and one 10 ms tick over the window.
    assert!(share <= 0.30, "a 250m spinner used {share:.3} of a core");
    assert!(share >= 0.02, "the spinner ran at all: {share:.3}");
    // `peapod top` measures the same over its interval, in cores as cpu_limit counts them.
    let top = env.ctl_ok(&["top", &pod, "--interval", "500ms"]);
    let row: Vec<&str> = top
        .lines()
        .find(|l| l.starts_with(&format!("{pod} ")))
        .unwrap_or_else(|| panic!("{top}"))
        .split_whitespace()
        .collect();
    assert_eq!(row[1..3], ["spin", "running"], "{top}");
    let millicores: u64 = row[3].strip_suffix('m').unwrap().parse().unwrap();
    // A short window between two API answers: looser than the 2 s figure above, far from the
    // ~1000m of a spinner without a limit.
    assert!(millicores <= 500, "{top}");
    let inspect: Value = serde_json::from_str(&env.ctl_ok(&["inspect", &pod])).unwrap();
    let c = &inspect["containers"][0];
    assert!(c["memory_bytes"].as_u64() > Some(0), "{c}");
}

#[test]
#[ignore = "needs root: scripts/test runs it"]
fn pre_stop_is_called_before_the_module_is_ended() {
    let env = Env::new();
    let spec = |name: &str, flags: &str, grace: &str| {
        env.spec(
            &format!("{name}.toml"),
            &format!(
                "[pod]\nname = \"{}\"\ntermination_grace_period = \"{grace}\"\n\n\
                 [[containers]]\nname = \"app\"\nmodule = {TOOLBOX:?}\n\
                 args = [\"http\", \"127.0.0.1:8080\"{flags}]\n\
                 lifecycle = {{ pre_stop = {{ http_get = {{ path = \"/shutdown\", port = 8080 }} }} }}\n",
                unique(name)
            ),
        )
    };
    // A module that exits when asked: the stop ends with its own exit 0.
    let mut p = env.start(&spec("polite", "", "30s"));
    p.wait_for("http listening on", Duration::from_secs(60));
    p.signal(nix::sys::signal::Signal::SIGTERM);
    let status = p.wait_exit(Duration::from_secs(60));
    let out = p.output();
    assert!(status.success(), "{out}");
    let asked = out.find("shutdown requested").expect(&out);
    let summary = out
        .find("/app: stopped: exited with code 0 after its pre_stop hook")
        .expect(&out);
    assert!(asked < summary, "{out}");

    // One that ignores it is ended when the grace period is over (long enough for the hook's
    // request to be answered first: an emulated guest is many times slower).
    let grace = if emulated() { "3s" } else { "300ms" };
    let mut p = env.start(&spec("stubborn", ", \"--ignore-shutdown\"", grace));
    p.wait_for("http listening on", Duration::from_secs(60));
    p.signal(nix::sys::signal::Signal::SIGTERM);
    let status = p.wait_exit(Duration::from_secs(60));
    let out = p.output();
    assert!(status.success(), "{out}");
    assert!(out.contains("shutdown requested"), "{out}");
    assert!(
        out.contains(&format!("still running after the grace period ({grace})")),
        "{out}"
    );
    assert!(out.contains("/app: stopped (restarts: 0)"), "{out}");
    assert!(env.leases().is_empty(), "{out}");
}

#[test]
#[ignore = "needs root: scripts/test runs it"]
fn app_containers_stop_before_their_sidecars() {
    let env = Env::new();
    let pod = unique("stoporder");
    let hook = |port: u16| {
        format!(
            "args = [\"http\", \"127.0.0.1:{port}\"]\n\
             lifecycle = {{ pre_stop = {{ http_get = {{ path = \"/shutdown\", port = {port} }} }} }}\n"
        )
    };
    let spec = env.spec(
        "pod.toml",
        &format!(
            "[pod]\nname = \"{pod}\"\n\n\
             [[init_containers]]\nname = \"proxy\"\nmodule = {TOOLBOX:?}\nrestart_policy = \"Always\"\n{}\
             startup_probe = {{ tcp_socket = {{ port = 9000 }}, period = \"50ms\", failure_threshold = 100 }}\n\n\
             [[containers]]\nname = \"app\"\nmodule = {TOOLBOX:?}\n{}",
            hook(9000),
            hook(8080)
        ),
    );
    let mut p = env.start(&spec);
    p.wait_for(
        &format!("{pod}/app: http listening on"),
        Duration::from_secs(60),
    );
    p.signal(nix::sys::signal::Signal::SIGTERM);
    let status = p.wait_exit(Duration::from_secs(60));
    let out = p.output();
    assert!(status.success(), "{out}");
    let at = |needle: &str| {
        out.find(needle)
            .unwrap_or_else(|| panic!("{needle}: {out}"))
    };
    // "... during its pre_stop hook" or "... after ...": the module exits as it answers.
    let app_ended = at(&format!("{pod}/app: exited with code 0 "));
    let proxy_asked = at(&format!("{pod}/proxy: stopping: pre_stop"));
    assert!(
        at(&format!("{pod}/app: stopping: pre_stop")) < app_ended,
        "{out}"
    );
    assert!(
        app_ended < proxy_asked,
        "the sidecar stops after the app: {out}"
    );
    assert!(
        out.contains(&format!(
            "{pod}/proxy: stopped: exited with code 0 after its pre_stop hook"
        )),
        "{out}"
    );
}

/// The daemon's CPU time (user + system), from /proc.
fn process_cpu(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // After the command's closing parenthesis: utime and stime are the 12th and 13th fields.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<u64> = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .map(|v| v.parse().unwrap())
        .collect();
    let tick = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .unwrap()
        .unwrap() as u64;
    Duration::from_millis((f[0] + f[1]) * 1000 / tick)
}

/// Round 2, finding 8: a container writing a file in small pieces used ~1.8x its `cpu_limit`
/// (0.37 of a core at `200m`): wasmtime-wasi ran the writes on the pod's blocking threads,
/// outside the metered polls. Those threads' CPU is charged to the container now: the whole
/// daemon stays near the limit.
#[test]
#[ignore = "needs root: scripts/test runs it"]
fn cpu_limit_counts_file_writes() {
    let env = Env::new();
    let d = env.daemon();
    let pod = unique("writer");
    env.pod_file(
        &format!("{pod}.toml"),
        &format!(
            "[pod]\nname = \"{pod}\"\n[[volumes]]\nname = \"data\"\nempty_dir = {{ size_limit = \"8MiB\" }}\n\n\
             [[containers]]\nname = \"w\"\nmodule = {TOOLBOX:?}\nargs = [\"small-writes\", \"/data/f\"]\n\
             cpu_limit = \"200m\"\nvolume_mounts = [{{ name = \"data\", mount_path = \"/data\" }}]\n"
        ),
    );
    env.wait_running(&pod);
    std::thread::sleep(Duration::from_millis(500));
    let (c0, t0) = (process_cpu(d.pid()), Instant::now());
    std::thread::sleep(Duration::from_secs(3));
    let share = (process_cpu(d.pid()) - c0).as_secs_f64() / t0.elapsed().as_secs_f64();
    eprintln!("figure: a 200m small-piece file writer took {share:.3} of a core of the daemon");
    // 20 % of a core, a burst and a tick, and the daemon's own work beside it.
    assert!(share <= 0.30, "a 200m writer took {share:.3} of a core");
    let c = container(&env, &pod, "w").unwrap();
    assert!(c["cpu_seconds"].as_f64() > Some(0.0), "{c}");
}
