//! Day two on a board (issue 27): `get`, `describe`, `events`, `top` and `/metrics`, driven
//! through the real binary against a real daemon, and the CLI behaving as a Unix tool.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;

/// A container that grows a table past its 16 MiB memory limit at every run: OOMKilled, then
/// restarted after a short back-off.
fn oom_spec(env: &Env) -> String {
    let m = env.wat("oom.wasm", TABLE_HOG);
    format!(
        "[pod]\nname = \"oom\"\nlabels = {{ app = \"oom\", tier = \"batch\" }}\n\
         [pod.restart_backoff]\ninitial = \"200ms\"\nmax = \"400ms\"\n\n\
         [[containers]]\nname = \"c\"\nmodule = {m:?}\nmemory_limit_mib = 16\n"
    )
}

/// GET `path` on the daemon's API socket (curl, as an operator would); the body.
fn api_get(env: &Env, path: &str) -> String {
    let out = std::process::Command::new("curl")
        .args(["-fsS", "--unix-socket"])
        .arg(env.socket())
        .arg(format!("http://peapod{path}"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{path}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The value of one series of a Prometheus exposition (name and labels as written).
fn series(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(name) && l.as_bytes().get(name.len()) == Some(&b' '))
        .and_then(|l| l[name.len() + 1..].trim().parse().ok())
}

/// The pod's first container as `get -o json` shows it, once `ok` holds for it.
fn wait_container(
    env: &Env,
    pod: &str,
    ok: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let t0 = Instant::now();
    loop {
        let out = env.ctl_ok(&["get", "pods", pod, "-o", "json"]);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        let c = v[0]["containers"][0].clone();
        if ok(&c) {
            return c;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "{pod}: waited 60 s; last: {c}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A container OOM-killed and restarted twice is told by every verb: `get` (READY, STATUS,
/// RESTARTS with the last reason), `describe` (last state, reason, limits, events), `events`
/// (counted), `/metrics` (terminations by reason, restarts) — and the events outlive the daemon.
#[test]
#[ignore = "needs root: scripts/test runs it"]
fn an_oom_killed_container_is_told_by_every_verb() {
    let env = Env::new();
    env.pod_file(
        "web.toml",
        &env.kv_spec("web", "").replace(
            "[pod]\nname = \"web\"\n",
            "[pod]\nname = \"web\"\nlabels = { app = \"web\" }\n",
        ),
    );
    let mut d = env.daemon();
    env.wait_running("web");
    let spec = env.spec("oom.toml", &oom_spec(&env));
    env.ctl_ok(&["apply", "-f", spec.to_str().unwrap()]);
    let c = wait_container(&env, "oom", |c| c["restarts"].as_u64() >= Some(2));
    assert_eq!(c["last_state"]["reason"], "OOMKilled", "{c}");

    // get: kubectl's columns; the restarts say why the last run ended.
    let table = env.ctl_ok(&["get", "pods"]);
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        ["NAME", "READY", "STATUS", "RESTARTS", "AGE"],
        "{table}"
    );
    let row = table
        .lines()
        .find(|l| l.starts_with("oom "))
        .expect("oom's row");
    assert!(row.contains("OOMKilled"), "{table}");
    let web = table
        .lines()
        .find(|l| l.starts_with("web "))
        .expect("web's row");
    assert!(web.contains(" 1/1 ") && web.contains("Running"), "{table}");
    // ps (peapod's columns, for scripts): its RESTARTS say the last reason too.
    let ps = env.ctl_ok(&["ps", "oom"]);
    assert!(ps.contains("(OOMKilled, "), "{ps}");
    // Selectors, names, wide and yaml.
    assert_eq!(
        env.ctl_ok(&["get", "pods", "-l", "app=oom", "-o", "name"])
            .trim(),
        "pod/oom"
    );
    assert_eq!(
        env.ctl_ok(&["get", "pods", "-l", "tier!=batch", "-o", "name"])
            .trim(),
        "pod/web"
    );
    assert_eq!(
        env.ctl_ok(&["ps", "-l", "app", "-o", "name"])
            .lines()
            .count(),
        2
    );
    let wide = env.ctl_ok(&["get", "pods", "-o", "wide", "-l", "app=oom"]);
    assert!(
        wide.contains("app=oom,tier=batch") && wide.contains("IP"),
        "{wide}"
    );
    let yaml: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&env.ctl_ok(&["get", "pod/oom", "-o", "yaml"])).unwrap();
    assert_eq!(yaml[0]["labels"]["tier"], "batch");
    let (code, _, err) = env.ctl(&["get", "pods", "-l", "app=a b"]);
    assert_eq!(code, 2, "{err}");

    // describe: state, last state with its reason and message, limits, probes, events.
    let text = env.ctl_ok(&["describe", "pod", "oom"]);
    for want in [
        "Name:         oom",
        "Labels:       app=oom, tier=batch",
        "Last State:",
        "OOMKilled",
        "memory limit 16 MiB reached",
        "Limits:",
        "memory 16Mi",
        "Events:",
        "BackOff",
        "Created",
    ] {
        assert!(text.contains(want), "{want:?} in:\n{text}");
    }
    assert!(
        env.ctl_ok(&["describe", "pod/oom"])
            .contains("Name:         oom")
    );
    let (code, _, err) = env.ctl(&["describe", "pod", "nope"]);
    assert_eq!(code, 1, "{err}");

    // events: the kills counted on one event, the pod's own events beside them.
    let v: Vec<serde_json::Value> =
        serde_json::from_str(&env.ctl_ok(&["events", "oom", "-o", "json"])).unwrap();
    let kills = v
        .iter()
        .find(|e| e["reason"] == "OOMKilled")
        .expect("an OOMKilled event");
    assert_eq!(kills["object"], "pod/oom/c");
    assert_eq!(kills["type"], "Warning");
    assert!(kills["count"].as_u64() >= Some(2), "{kills}");
    assert!(
        v.iter()
            .any(|e| e["reason"] == "Created" && e["object"] == "pod/oom")
    );
    assert!(
        v.iter()
            .all(|e| e["object"].as_str().unwrap().starts_with("pod/oom"))
    );
    let all = env.ctl_ok(&["events"]);
    assert!(
        all.starts_with("LAST SEEN") && all.contains("pod/web") && all.contains("(x"),
        "{all}"
    );

    // /metrics on the API socket.
    let m = api_get(&env, "/metrics");
    let kills = series(
        &m,
        r#"peapod_container_terminations_total{reason="OOMKilled"}"#,
    );
    assert!(kills >= Some(2.0), "{m}");
    let restarts = series(
        &m,
        r#"peapod_container_restarts_total{container="c",pod="oom"}"#,
    );
    assert!(restarts >= Some(2.0), "{m}");
    assert_eq!(
        series(&m, r#"peapod_container_ready{container="app",pod="web"}"#),
        Some(1.0)
    );
    assert_eq!(
        series(&m, r#"peapod_ipam_addresses{state="leased"}"#),
        Some(2.0)
    );
    assert!(
        series(&m, "process_resident_memory_bytes") > Some(0.0),
        "{m}"
    );
    assert!(
        series(&m, "peapod_pod_start_seconds_count") >= Some(2.0),
        "{m}"
    );

    // top: the daemon's own figures under the containers'.
    let top = env.ctl_ok(&["top", "--interval", "100ms"]);
    assert!(top.contains("daemon (pid ") && top.contains("RSS"), "{top}");

    // The events outlive the daemon.
    assert!(d.terminate().success());
    let _d = env.daemon();
    let again = env.ctl_ok(&["events", "oom"]);
    assert!(again.contains("OOMKilled"), "{again}");
}

/// `events -w` prints what is recorded, then what happens next.
#[test]
#[ignore = "needs root: scripts/test runs it"]
fn events_watch_shows_what_happens_next() {
    let env = Env::new();
    let _d = env.daemon();
    let mut watch = env
        .peapod(&["events", "-w", "-o", "json"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = watch.stdout.take().unwrap();
    let lines = std::thread::spawn(move || {
        use std::io::BufRead;
        let mut seen = Vec::new();
        for line in std::io::BufReader::new(stdout).lines() {
            let e: serde_json::Value = serde_json::from_str(&line.unwrap()).unwrap();
            let done = e["reason"] == "Killing";
            seen.push(e);
            if done {
                break;
            }
        }
        seen
    });
    // No wait for the watcher: what is recorded before it subscribes comes in its first list.
    let spec = env.spec("w.toml", &env.kv_spec("w", ""));
    env.ctl_ok(&["apply", "-f", spec.to_str().unwrap()]);
    env.wait_running("w");
    env.ctl_ok(&["delete", "w"]);
    let seen = lines.join().unwrap();
    let _ = watch.kill();
    let _ = watch.wait();
    let reasons: Vec<&str> = seen.iter().map(|e| e["reason"].as_str().unwrap()).collect();
    for want in ["Created", "Started", "Killing"] {
        assert!(reasons.contains(&want), "{want} in {reasons:?}");
    }
}

/// Every command that prints ends quietly when its reader goes (`| head -1`) and says so
/// clearly, without a panic, on a full disk (`> /dev/full`).
#[test]
#[ignore = "needs root: scripts/test runs it"]
fn output_behaves_as_a_unix_tool() {
    let env = Env::new();
    let _d = env.daemon();
    for i in 0..3 {
        let spec = env.spec(&format!("p{i}.toml"), &env.kv_spec(&format!("p{i}"), ""));
        env.ctl_ok(&["apply", "-f", spec.to_str().unwrap()]);
    }
    env.wait_running("p2");
    let commands: [&[&str]; 9] = [
        &["ps"],
        &["ps", "-o", "json"],
        &["get", "pods"],
        &["get", "pods", "-o", "yaml"],
        &["inspect", "p0"],
        &["describe", "pod", "p0"],
        &["events"],
        &["top", "--interval", "10ms"],
        &["logs", "p0"],
    ];
    for args in commands {
        // The reader takes nothing and goes: the write fails with EPIPE.
        let mut c = env.peapod(args);
        let mut child = c
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        let out = child_wait(child);
        assert!(
            out.0 == Some(0) && !out.1.contains("panicked"),
            "{args:?} | head: {:?}: {}",
            out.0,
            out.1
        );
        // A full disk.
        let full = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap();
        let out = env.peapod(args).stdout(full).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        if out.status.success() {
            // Nothing to print (no log lines yet): nothing failed.
            assert!(err.is_empty(), "{args:?} > /dev/full: {err}");
            continue;
        }
        assert_eq!(out.status.code(), Some(3), "{args:?} > /dev/full: {err}");
        assert!(
            err.contains("cannot write to standard output") && !err.contains("panicked"),
            "{args:?} > /dev/full: {err}"
        );
    }
}

/// Waits for `child`; its exit code and stderr.
fn child_wait(mut child: std::process::Child) -> (Option<i32>, String) {
    use std::io::Read;
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    (child.wait().unwrap().code(), err)
}

/// A free TCP port on 127.0.0.1 (bound, then let go for the caller).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `/metrics` on `[metrics] listen` passes `promtool check metrics` (Debian's prometheus
/// package), and a real Prometheus server started here scrapes it: one series is queried back.
#[test]
#[ignore = "needs root: scripts/test runs it"]
fn a_real_prometheus_scrapes_the_metrics() {
    let have = |tool: &str| {
        std::process::Command::new(tool)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !have("promtool") || !have("prometheus") {
        assert!(
            std::env::var("CI").is_err(),
            "promtool and prometheus are needed (scripts/setup installs Debian's prometheus)"
        );
        eprintln!("skipped: no promtool/prometheus (scripts/setup installs them)");
        return;
    }
    let env = Env::new();
    let port = free_port();
    let config = env.spec(
        "peapod.toml",
        &format!("[metrics]\nlisten = \"127.0.0.1:{port}\"\n"),
    );
    env.pod_file("web.toml", &env.kv_spec("web", ""));
    let _d = env.daemon_with(|c| {
        c.env("PEAPOD_CONFIG", &config);
    });
    env.wait_running("web");
    let text = std::process::Command::new("curl")
        .args(["-fsS", &format!("http://127.0.0.1:{port}/metrics")])
        .output()
        .unwrap();
    assert!(text.status.success());
    // Only /metrics is on the TCP address: the API stays on the socket.
    let api = std::process::Command::new("curl")
        .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}"])
        .arg(format!("http://127.0.0.1:{port}/v1/pods"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&api.stdout), "404");
    let mut check = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        check.stdin.take().unwrap().write_all(&text.stdout).unwrap();
    }
    let checked = check.wait_with_output().unwrap();
    assert!(
        checked.status.success() && checked.stdout.is_empty() && checked.stderr.is_empty(),
        "promtool: {}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );

    // A Prometheus server of the test's own, scraping every second; stopped by its PID.
    let dir = env.dir.path().join("prometheus");
    std::fs::create_dir_all(&dir).unwrap();
    let yml = dir.join("prometheus.yml");
    std::fs::write(
        &yml,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: peapod\n    \
             static_configs:\n      - targets: ['127.0.0.1:{port}']\n"
        ),
    )
    .unwrap();
    let web = free_port();
    let server = std::process::Command::new("prometheus")
        .arg(format!("--config.file={}", yml.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{web}"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("log")).unwrap())
        .spawn()
        .unwrap();
    struct Stop(std::process::Child);
    impl Drop for Stop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _server = Stop(server);
    let query = format!(
        "http://127.0.0.1:{web}/api/v1/query?query=peapod_pods%7Bstatus%3D%22running%22%7D"
    );
    let t0 = Instant::now();
    let value = loop {
        let out = std::process::Command::new("curl")
            .args(["-fsS", &query])
            .output()
            .unwrap();
        if out.status.success() {
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            if let Some(sample) = v["data"]["result"][0]["value"][1].as_str() {
                break sample.to_string();
            }
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "no sample in 60 s: {}",
            std::fs::read_to_string(dir.join("log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    assert_eq!(value, "1", "one pod running, as Prometheus scraped it");
}

/// kubectl's habits around apply and delete: `-f DIR` reads subdirectories too, `delete -f`
/// deletes what the files name, `pod/NAME` is a name, `--all` deletes every applied pod (not
/// the pods directory's); podman's `stop`/`rm` point at `delete`.
#[test]
#[ignore = "needs root: scripts/test runs it"]
fn apply_and_delete_by_file_directory_name_and_all() {
    let env = Env::new();
    env.pod_file("owned.toml", &env.kv_spec("owned", ""));
    let _d = env.daemon();
    let dir = env.dir.path().join("specs");
    std::fs::create_dir_all(dir.join("more/deeper")).unwrap();
    std::fs::create_dir_all(dir.join(".hidden")).unwrap();
    std::fs::write(dir.join("a.toml"), env.kv_spec("a", "")).unwrap();
    std::fs::write(dir.join("more/b.toml"), env.kv_spec("b", "")).unwrap();
    std::fs::write(dir.join("more/deeper/c.toml"), env.kv_spec("c", "")).unwrap();
    std::fs::write(dir.join(".hidden/x.toml"), "not a spec").unwrap();
    let out = env.ctl_ok(&["apply", "-f", dir.to_str().unwrap()]);
    for p in ["a", "b", "c"] {
        assert!(out.contains(&format!("pod/{p} created")), "{out}");
    }
    let names = |env: &Env| -> Vec<String> {
        let out = env.ctl_ok(&["get", "pods", "-o", "name"]);
        out.lines().map(str::to_string).collect()
    };
    assert_eq!(names(&env), ["pod/a", "pod/b", "pod/c", "pod/owned"]);

    let out = env.ctl_ok(&["delete", "-f", dir.join("more/b.toml").to_str().unwrap()]);
    assert_eq!(out.trim(), "pod/b deleted");
    let out = env.ctl_ok(&["delete", "pod/c"]);
    assert_eq!(out.trim(), "pod/c deleted");
    env.ctl_ok(&["apply", "-f", dir.join("more").to_str().unwrap()]);
    let out = env.ctl_ok(&["delete", "--all"]);
    assert_eq!(out.lines().count(), 3, "{out}");
    assert_eq!(names(&env), ["pod/owned"], "the file's pod stays");

    let (code, _, err) = env.ctl(&["stop", "owned"]);
    assert_eq!(code, 2);
    assert!(err.contains("peapod delete POD"), "{err}");
    let (code, _, err) = env.ctl(&["rm", "-f", "owned"]);
    assert_eq!(code, 2, "{err}");
}

/// A second daemon on the same state directory (another run dir and socket) is refused: it
/// would take over the first one's pods.
#[test]
#[ignore = "needs root: scripts/test runs it"]
fn a_second_daemon_on_the_same_state_dir_is_refused() {
    let env = Env::new();
    let _d = env.daemon();
    let other_run = env.dir.path().join("run2");
    let out = env
        .peapod(&["daemon"])
        .arg("--run-dir")
        .arg(&other_run)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("another peapod daemon is running with state_dir"),
        "{err}"
    );
}

/// Completions and man pages come from the CLI's definitions: the bash script parses and
/// completes the verbs; the man page is roff with a page per command. No root needed.
#[test]
fn completions_and_man_pages_are_generated_from_the_cli() {
    let env = Env::new();
    let out = env.peapod(&["completion", "bash"]).output().unwrap();
    assert!(out.status.success());
    let script = String::from_utf8(out.stdout).unwrap();
    for verb in [
        "apply", "get", "describe", "events", "top", "logs", "delete",
    ] {
        assert!(script.contains(verb), "{verb} in the bash completion");
    }
    let checked = std::process::Command::new("bash")
        .args(["-n", "-c", &script])
        .output()
        .unwrap();
    assert!(
        checked.status.success(),
        "{}",
        String::from_utf8_lossy(&checked.stderr)
    );
    for shell in ["zsh", "fish"] {
        let out = env.peapod(&["completion", shell]).output().unwrap();
        assert!(out.status.success() && out.stdout.len() > 1000, "{shell}");
    }
    let man = env.ctl_ok(&["man"]);
    assert!(
        man.starts_with(".ie") || man.contains(".TH peapod 1"),
        "{}",
        &man[..200.min(man.len())]
    );
    assert!(man.contains("describe"));
    let dir = env.dir.path().join("man");
    env.ctl_ok(&["man", "--dir", dir.to_str().unwrap()]);
    let page = std::fs::read_to_string(dir.join("peapod-get.1")).unwrap();
    assert!(
        page.contains(".TH peapod-get 1") && page.contains("selector"),
        "{page}"
    );
    assert!(
        !dir.join("peapod-stop.1").exists(),
        "hidden tips get no page"
    );
}

/// A restart in place leaves a mark in the container's log, and `logs -p` is the previous run
/// (kubectl's `--previous`); `--previous-sandbox` is the output before the last re-create.
#[test]
#[ignore = "needs root: scripts/test runs it"]
fn logs_mark_each_run_and_previous_is_the_run_before() {
    let env = Env::new();
    let _d = env.daemon();
    let spec = env.spec(
        "x.toml",
        &format!(
            "[pod]\nname = \"x\"\n[pod.restart_backoff]\ninitial = \"300ms\"\nmax = \"300ms\"\n\n\
             [[containers]]\nname = \"c\"\nmodule = {TOOLBOX:?}\nargs = [\"exit\", \"3\"]\n"
        ),
    );
    env.ctl_ok(&["apply", "-f", spec.to_str().unwrap()]);
    // Before any restart: no previous run, and no previous sandbox either.
    let (code, _, err) = env.ctl(&["logs", "-p", "x"]);
    let restarted = wait_container(&env, "x", |c| c["restarts"].as_u64() >= Some(2));
    let runs = restarted["restarts"].as_u64().unwrap() + 1;
    if code != 0 {
        assert!(err.contains("has no previous run"), "{err}");
    }
    let all = env.ctl_ok(&["logs", "x"]);
    assert!(
        // (a wasip2 `exit(3)` says only "error": reported as code 1)
        all.contains("--- peapod: run 2 of c (the last one: exited with code 1) ---"),
        "{all}"
    );
    let marks = all
        .lines()
        .filter(|l| l.starts_with("--- peapod: run "))
        .count() as u64;
    assert!(marks >= 2, "{all}");
    let previous = env.ctl_ok(&["logs", "-p", "x"]);
    let lines: Vec<&str> = previous.lines().collect();
    // One run: its mark (the previous run began at a restart), then what it printed.
    assert!(lines[0].starts_with("--- peapod: run "), "{previous}");
    assert_eq!(&lines[1..], ["exiting with 3"], "{previous}");
    assert!(runs >= 3);
    // Re-created: -p is the last run in the previous sandbox; --previous-sandbox all of it.
    env.ctl_ok(&["restart", "x"]);
    let old = env.ctl_ok(&["logs", "--previous-sandbox", "x"]);
    assert!(old.matches("exiting with 3").count() >= 3, "{old}");
    let (code, _, err) = env.ctl(&["logs", "-p", "--previous-sandbox", "x"]);
    assert_eq!(code, 2, "{err}");
}

/// `logs --all-containers --prefix`: every container's output, each line saying whose.
#[test]
#[ignore = "needs root: scripts/test runs it"]
fn logs_of_all_containers_with_their_prefix() {
    let env = Env::new();
    let _d = env.daemon();
    let c = |name: &str, code: u8| {
        format!(
            "[[containers]]\nname = \"{name}\"\nmodule = {TOOLBOX:?}\nargs = [\"exit\", \"{code}\"]\n\
             restart_policy = \"Never\"\n"
        )
    };
    let spec = env.spec(
        "two.toml",
        &format!("[pod]\nname = \"two\"\n\n{}\n{}", c("a", 0), c("b", 0)),
    );
    env.ctl_ok(&["apply", "-f", spec.to_str().unwrap()]);
    let t0 = Instant::now();
    let out = loop {
        let out = env.ctl_ok(&["logs", "two", "--all-containers", "--prefix"]);
        if out.lines().count() >= 2 {
            break out;
        }
        assert!(t0.elapsed() < Duration::from_secs(30), "{out}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        ["[pod/two/a] exiting with 0", "[pod/two/b] exiting with 0"],
        "one container after the other, in the pod's order"
    );
    let (code, _, err) = env.ctl(&["logs", "two"]);
    assert_eq!(code, 2, "two containers: one must be named: {err}");
    assert!(
        err.contains("--all-containers") || err.contains("name one"),
        "{err}"
    );
}

/// `get pods` lists the pods `peapod run` runs on the same run dir (source `run`), beside the
/// daemon's; `ps` keeps to the daemon's.
#[test]
#[ignore = "needs root: scripts/test runs it"]
fn get_lists_the_pods_of_peapod_run_too() {
    let env = Env::new();
    env.pod_file("d.toml", &env.kv_spec("d", ""));
    let _d = env.daemon();
    env.wait_running("d");
    let spec = env.spec("solo.toml", &env.kv_spec("solo", ""));
    let mut run = env.start(&spec);
    run.started("solo");
    let wide = env.ctl_ok(&["get", "pods", "-o", "wide"]);
    let row = wide
        .lines()
        .find(|l| l.starts_with("solo "))
        .expect("solo listed");
    let ip = env
        .leases()
        .into_iter()
        .find(|(p, _)| p == "solo")
        .unwrap()
        .1;
    assert!(
        row.contains(" run ") && row.contains(&ip.to_string()),
        "{wide}"
    );
    let d = wide
        .lines()
        .find(|l| l.starts_with("d "))
        .expect("the daemon's pod listed");
    assert!(d.contains("file:"), "{wide}");
    assert_eq!(
        env.ctl_ok(&["get", "pod/solo", "-o", "name"]).trim(),
        "pod/solo"
    );
    assert!(
        !env.ctl_ok(&["ps"]).contains("solo"),
        "ps keeps to the daemon's pods"
    );
    // inspect and logs read it from its files.
    let v: serde_json::Value = serde_json::from_str(&env.ctl_ok(&["inspect", "solo"])).unwrap();
    assert_eq!(v["source"], "run", "{v}");
    assert_eq!(v["ip"], ip.to_string(), "{v}");
    let logs = env.ctl_ok(&["logs", "solo", "--prefix"]);
    assert!(
        logs.contains("[pod/solo/app] kv-server listening on"),
        "the output `peapod run` printed is in its log too: {logs}"
    );
    let (code, _, err) = env.ctl(&["logs", "solo/nope"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("no container \"nope\"") && err.contains("app"),
        "{err}"
    );
    // `logs -f` follows it until the pod ends, then ends by itself.
    let follow = env
        .peapod(&["logs", "-f", "solo"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    run.terminate();
    let out = follow.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let out = String::from_utf8_lossy(&out.stdout);
    assert!(out.contains("kv-server listening on"), "{out}");
}

/// Two containers of a pod that bind one port (not declared in `ports`, so the spec cannot
/// tell): the second's guest gets "address in use", and peapod says which container holds the
/// port, as a `PortInUse` event on the one refused.
#[test]
#[ignore = "needs root: scripts/test runs it"]
fn a_port_bound_twice_in_a_pod_names_its_holder() {
    let env = Env::new();
    let _d = env.daemon();
    let c = |name: &str| {
        format!(
            "[[containers]]\nname = \"{name}\"\nmodule = {KV_SERVER:?}\n\
             args = [\"--listen\", \"0.0.0.0:8080\"]\n"
        )
    };
    let spec = env.spec(
        "clash.toml",
        &format!("[pod]\nname = \"clash\"\n\n{}\n{}", c("a"), c("b")),
    );
    env.ctl_ok(&["apply", "-f", spec.to_str().unwrap()]);
    let t0 = Instant::now();
    let event = loop {
        let out = env.ctl_ok(&["events", "clash", "-o", "json"]);
        let events: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
        let found = events.into_iter().find(|e| e["reason"] == "PortInUse");
        if let Some(e) = found {
            break e;
        }
        assert!(t0.elapsed() < Duration::from_secs(30), "{out}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let (refused, holder) = match event["object"].as_str() {
        Some("pod/clash/b") => ("b", "a"),
        Some("pod/clash/a") => ("a", "b"),
        other => panic!("{other:?}: {event}"),
    };
    let message = event["message"].as_str().unwrap();
    assert!(
        message.contains(&format!("container {refused:?}: bind 0.0.0.0:8080/TCP"))
            && message.contains(&format!("container {holder:?} of the pod holds it")),
        "{message}"
    );
}

/// The verbs that talk to the daemon leave the options that make sandboxes (`--bridge`,
/// `--subnet`, `--egress`, `--pods-dir`) out of their help, and still accept them.
#[test]
fn client_verbs_help_leaves_out_the_sandbox_options() {
    let env = Env::new();
    let help = env.ctl_ok(&["get", "--help"]);
    assert!(help.contains("--socket"), "{help}");
    for hidden in ["--bridge", "--subnet", "--egress", "--pods-dir"] {
        assert!(!help.contains(hidden), "{hidden} in:\n{help}");
        let daemon = env.ctl_ok(&["daemon", "--help"]);
        assert!(daemon.contains(hidden), "{hidden} not in:\n{daemon}");
    }
    let socket = env.dir.path().join("nobody.sock");
    let (code, _, err) = env.ctl(&[
        "get",
        "pods",
        "--bridge",
        "pp-x",
        "--subnet",
        "10.9.0.0/24",
        "--pods-dir",
        "/nonexistent",
        "--socket",
        socket.to_str().unwrap(),
    ]);
    assert_eq!(code, 3, "accepted, then the daemon is not there: {err}");
    assert!(err.contains("cannot reach the peapod daemon"), "{err}");
}
