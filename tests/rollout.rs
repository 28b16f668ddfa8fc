//! Updates that roll back by themselves (issue 28): an apply that replaces a running pod is a
//! revision, proven once ready for `update.min_ready`; one that is not ready by
//! `update.deadline`, or crash-loops, is undone by the daemon. `rollout history|undo|status`,
//! and a `kill -9` of the daemon at any point of an update leaving the old or the new version
//! running, never neither.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::*;

/// `bytes` with a custom section appended: another module digest, the same program.
fn variant(bytes: &[u8], tag: &str) -> Vec<u8> {
    let name = b"peapod-test";
    let mut payload = vec![name.len() as u8];
    payload.extend_from_slice(name);
    payload.extend_from_slice(tag.as_bytes());
    let mut out = bytes.to_vec();
    out.push(0);
    out.push(payload.len() as u8);
    out.extend(payload);
    out
}

/// A version of the app: a kv-server build of its own (`tag`) listening on `port`, behind a
/// readiness probe on 8080 (so a version on another port is never ready).
fn version(env: &Env, tag: &str, port: u16) -> String {
    let kv = std::fs::read(KV_SERVER).unwrap();
    let module = env.dir.path().join(format!("kv-{tag}.wasm"));
    std::fs::write(&module, variant(&kv, tag)).unwrap();
    format!(
        "[pod]\nname = \"up\"\nrestart_backoff = {{ initial = \"50ms\", max = \"50ms\" }}\n\
         [update]\ndeadline = \"6s\"\nmin_ready = \"1s\"\n\
         [[containers]]\nname = \"app\"\nmodule = {module:?}\n\
         args = [\"--listen\", \"0.0.0.0:{port}\"]\n\
         readiness_probe = {{ http_get = {{ path = \"/healthz\", port = 8080 }}, period = \"200ms\" }}\n"
    )
}

/// A version that exits with 1 at once: a crash loop.
fn crashing(env: &Env) -> String {
    let m = env.wat("crash.wasm", r#"(module (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32))) (memory (export "memory") 1) (func (export "_start") (call $exit (i32.const 1))))"#);
    format!(
        "[pod]\nname = \"up\"\nrestart_backoff = {{ initial = \"50ms\", max = \"50ms\" }}\n\
         [update]\ndeadline = \"30s\"\nmin_ready = \"1s\"\n\
         [[containers]]\nname = \"app\"\nmodule = {m:?}\n"
    )
}

fn apply(env: &Env, text: &str) -> String {
    let f: PathBuf = env.spec(&format!("{}.toml", unique("up")), text);
    env.ctl_ok(&["apply", "-f", f.to_str().unwrap()])
}

/// `rollout status up`: (exit code, output).
fn status(env: &Env) -> (i32, String) {
    let (code, out, err) = env.ctl(&["rollout", "status", "up", "--timeout", "60s"]);
    (code, format!("{out}{err}"))
}

fn history(env: &Env) -> Vec<serde_json::Value> {
    let (code, body) = raw_api(env, "GET", "/v1/pods/up/rollout", "");
    assert_eq!(code, 200, "{body}");
    body["revisions"].as_array().unwrap().clone()
}

/// The module file the pod runs now (its stored copy is named by its SHA-256).
fn running_module(env: &Env) -> String {
    let v: serde_json::Value = serde_json::from_str(&env.ctl_ok(&["inspect", "up"])).unwrap();
    v["spec"][0]["module"].as_str().unwrap().to_string()
}

fn sha_of(env: &Env, tag: &str) -> String {
    use sha2::Digest;
    let b = std::fs::read(env.dir.path().join(format!("kv-{tag}.wasm"))).unwrap();
    sha2::Sha256::digest(&b)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
#[ignore = "needs root: scripts/test runs it"]
fn a_broken_update_rolls_back_by_itself_and_undo_goes_back() {
    let env = Env::new();
    let mut daemon = env.daemon();
    apply(&env, &version(&env, "v1", 8080));
    let (code, out) = status(&env);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("revision 1 is ready"), "{out}");

    apply(&env, &version(&env, "v2", 8080));
    let (code, out) = status(&env);
    assert!(code == 0 && out.contains("revision 2 is ready"), "{out}");
    let ip = env.wait_running("up");
    wait_healthy((ip, 8080).into());

    // Never ready (it listens where the probe does not look): rolled back at the deadline.
    let t0 = std::time::Instant::now();
    apply(&env, &version(&env, "v3", 9999));
    let (code, out) = status(&env);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("revision 3 was rolled back to revision 2")
            && out.contains("app not ready within 6s: readiness probe failed"),
        "{out}"
    );
    assert!(
        t0.elapsed() >= Duration::from_secs(6),
        "not before the deadline"
    );
    let ip = env.wait_running("up");
    wait_healthy((ip, 8080).into());
    assert!(
        running_module(&env).contains(&sha_of(&env, "v2")),
        "v2 runs again"
    );
    let h = history(&env);
    let states: Vec<(u64, &str, bool)> = h
        .iter()
        .map(|r| {
            (
                r["revision"].as_u64().unwrap(),
                r["state"].as_str().unwrap(),
                r["current"] == true,
            )
        })
        .collect();
    assert_eq!(
        states,
        [
            (1, "superseded", false),
            (2, "ready", true),
            (3, "rolled-back", false)
        ]
    );
    let out = env.ctl_ok(&["describe", "pod", "up"]);
    assert!(
        out.contains("RolledBack") && out.contains("rolled back to revision 2"),
        "{out}"
    );
    // The failed version's logs are kept, as the previous sandbox's.
    let out = env.ctl_ok(&["logs", "up", "--previous-sandbox"]);
    assert!(out.contains("listening on 0.0.0.0:9999"), "{out}");

    // A crash loop rolls back before the deadline (30s).
    let t0 = std::time::Instant::now();
    apply(&env, &crashing(&env));
    let (code, out) = status(&env);
    assert!(
        code == 1 && out.contains("app crash-looped") && out.contains("last: Error (exit code 1)"),
        "{out}"
    );
    assert!(t0.elapsed() < Duration::from_secs(30), "{:?}", t0.elapsed());
    let ip = env.wait_running("up");
    wait_healthy((ip, 8080).into());

    // Undo to revision 1, as kubectl's: a new revision with revision 1's modules.
    let out = env.ctl_ok(&["rollout", "undo", "up", "--to-revision", "1"]);
    assert!(out.contains("rolled back"), "{out}");
    let (code, out) = status(&env);
    assert!(code == 0 && out.contains("revision 5 is ready"), "{out}");
    assert!(running_module(&env).contains(&sha_of(&env, "v1")));
    let out = env.ctl_ok(&["rollout", "history", "up"]);
    assert!(
        out.contains("ready (current)") && out.contains("rolled-back"),
        "{out}"
    );
    let (code, _, err) = env.ctl(&["rollout", "undo", "up", "--to-revision", "42"]);
    assert!(code == 1 && err.contains("no revision 42"), "{err}");
    daemon.terminate();
}

/// Waits until pod `up` serves on 8080; returns which version (its stored module) serves.
fn serving(env: &Env) -> String {
    let ip = env.wait_running("up");
    wait_healthy((ip, 8080).into());
    running_module(env)
}

#[test]
#[ignore = "needs root: scripts/test runs it"]
fn a_power_cut_at_any_point_of_an_update_leaves_the_old_or_the_new_version() {
    let env = Env::new();
    let good = |tag: &str| version(&env, tag, 8080);
    // Stops at the two points between the history and the record.
    for (point, next) in [
        ("update-history-written", good("p1")),
        ("rollback-history-written", version(&env, "p2", 9999)),
    ] {
        let mut daemon = env.daemon();
        apply(&env, &good("base"));
        let (code, out) = status(&env);
        assert_eq!(code, 0, "{out}");
        daemon.terminate();
        let mut daemon = env.daemon_with(|c| {
            c.env("PEAPOD_CRASH_AT", point);
        });
        let f = env.spec("next.toml", &next);
        let _ = env.peapod(&["apply", "-f", f.to_str().unwrap()]).output();
        daemon.wait_exit(Duration::from_secs(30));
        let _daemon = env.daemon();
        let module = serving(&env);
        assert!(
            module.contains(&sha_of(&env, "base")),
            "{point}: the old version runs: {module}"
        );
        let h = history(&env);
        let current = h.iter().find(|r| r["current"] == true).unwrap();
        assert_eq!(current["state"], "ready", "{point}: {h:?}");
        assert_eq!(current["change"][0], "app=kv-base.wasm", "{point}: {h:?}");
        env.ctl_ok(&["delete", "up"]);
        drop(_daemon);
    }

    // kill -9 at random moments of an update loop (good and broken versions in turn).
    let mut daemon = env.daemon();
    apply(&env, &good("g0"));
    assert_eq!(status(&env).0, 0);
    let rounds = if emulated() { 3 } else { 6 };
    let mut seed = std::process::id() as u64;
    for i in 0..rounds {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let wait = Duration::from_millis((seed >> 33) % 1500);
        let next = if i % 2 == 0 {
            good(&format!("g{}", i + 1))
        } else {
            version(&env, &format!("b{i}"), 9999)
        };
        let f = env.spec("next.toml", &next);
        let mut applying = env
            .peapod(&["apply", "-f", f.to_str().unwrap()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(wait);
        daemon.signal(nix::sys::signal::Signal::SIGKILL);
        daemon.wait_exit(Duration::from_secs(10));
        let _ = applying.wait();
        daemon = env.daemon();
        // Old or new, never neither: the pod runs a version at once...
        env.wait_running("up");
        // ...and, once its rollout is over, a good one serves.
        let (code, out) = status(&env);
        let module = serving(&env);
        let goods: Vec<String> = std::iter::once(0)
            .chain((0..=i).filter(|j| j % 2 == 0).map(|j| j + 1))
            .map(|g| sha_of(&env, &format!("g{g}")))
            .collect();
        assert!(
            goods.iter().any(|g| module.contains(g)),
            "round {i} (killed after {wait:?}): {code} {out}: {module} is not a good version"
        );
    }
    daemon.terminate();
}
