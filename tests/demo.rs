//! The shipped example pods, run as they are: `configs/demo.toml` (app, auth proxy, backup) and
//! `configs/job-p1.toml` (a wasip1 job).

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use common::*;

fn config(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../configs")
        .join(name)
}

/// The demo's token (in its `secret` volume) and the header that carries it.
const TOKEN: &str = "demo-token-of-the-test";
const AUTH: &str = "Authorization: Bearer demo-token-of-the-test\r\n";

/// `configs/demo.toml` as it is, but with its modules at their absolute paths, its token and
/// backup directory in the test's own directory instead of /etc/peapod/secrets and
/// /var/lib/peapod-demo, and without its published port (which would change the machine's
/// firewall: published ports are tested in tests/network.rs, in a network namespace of the
/// test's own).
fn demo_spec(env: &Env) -> (PathBuf, PathBuf) {
    let text = std::fs::read_to_string(config("demo.toml")).unwrap();
    let backups = env.dir.path().join("backups");
    let token = env.dir.path().join("demo-token");
    std::fs::write(&token, TOKEN).unwrap();
    let published = "ports = [{ container_port = 8443, host_port = 18080 }]";
    assert!(
        text.contains(published),
        "demo.toml changed: no {published}"
    );
    let edited = text
        .replace("../target/guests/kv-server.wasm", KV_SERVER)
        .replace("../target/guests/backup.wasm", BACKUP)
        .replace("../target/guests/auth-proxy.wasm", AUTH_PROXY)
        .replace("/var/lib/peapod-demo/backups", backups.to_str().unwrap())
        .replace("/etc/peapod/secrets/demo-token", token.to_str().unwrap())
        .replace(published, "");
    let settings: Vec<&str> = edited.lines().filter(|l| !l.starts_with('#')).collect();
    for gone in ["../target/guests/", "/var/lib/peapod-demo", "/etc/peapod"] {
        assert!(
            !settings.iter().any(|l| l.contains(gone)),
            "demo.toml changed: {gone} is left"
        );
    }
    (env.spec("demo.toml", &edited), backups)
}

#[test]
#[ignore = "needs root: scripts/test runs it"]
fn the_demo_sidecar_backs_up_and_restores_the_app_over_localhost() {
    let env = Env::new();
    let (spec, backups) = demo_spec(&env);
    let mut p = env.start(&spec);
    let s = p.started("demo");
    // The app behind its auth proxy: the proxy's port, with the token.
    let app = SocketAddr::from((s.ip, 8443));
    let first = wait_healthy_with(app, AUTH);
    assert_eq!(
        http(app, "GET", "/kv", "").unwrap().status,
        401,
        "no token, no app"
    );
    let direct = std::net::TcpStream::connect_timeout(&(s.ip, 8080).into(), Duration::from_secs(2));
    assert!(direct.is_err(), "the app binds 127.0.0.1 only");
    assert_eq!(
        http_with(app, "PUT", "/kv/board", AUTH, "pi")
            .unwrap()
            .status,
        201
    );
    p.wait_for(
        "demo/backup: level=info msg=\"snapshot of 1 keys\"",
        Duration::from_secs(30),
    );

    assert_eq!(
        http_with(app, "POST", "/crash", AUTH, "").unwrap().status,
        200
    );
    p.wait_for("demo/app trapped", Duration::from_secs(30));
    let line = p.wait_for("restored 1 keys", Duration::from_secs(30));
    assert!(line.contains(&format!("from={first} to=")), "{line}");
    let r = http_with(app, "GET", "/kv/board", AUTH, "").unwrap();
    assert_eq!((r.status, r.body.as_str()), (200, "pi\n"));
    assert_ne!(
        r.instance, first,
        "served by the restarted instance, same IP"
    );
    p.wait_for("read /etc/backup/backup.conf", Duration::from_secs(1));
    // The shipped lookup job finds the demo pod by its name.
    let lookup = std::fs::read_to_string(config("lookup.toml"))
        .unwrap()
        .replace("../target/guests/toolbox.wasm", TOOLBOX);
    let lookup = env.spec("lookup.toml", &lookup);
    let (status, out) = env.run_to_end(&lookup, Duration::from_secs(60));
    assert!(status.success(), "{out}");
    assert!(
        out.contains(&format!("lookup/resolve: demo: {}\n", s.ip)),
        "{out}"
    );
    assert!(
        out.contains("lookup/resolve: localhost: 127.0.0.1 ::1\n"),
        "{out}"
    );

    assert!(p.terminate().success());
    // The snapshot is in the host directory (made by DirectoryOrCreate), and outlives the pod.
    let mut saved: Vec<_> = std::fs::read_dir(&backups)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    saved.sort();
    let newest = saved.last().expect("a snapshot");
    assert!(
        newest
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("snapshot-"),
        "{saved:?}"
    );
    assert_eq!(std::fs::read_to_string(newest).unwrap(), "board=pi\n");

    // A re-created pod: a new sandbox, a new IP, an empty app; the keys come back from disk.
    let mut p = env.start(&spec);
    let s2 = p.started("demo");
    assert_ne!(s2.ip, s.ip);
    p.wait_for("restored 1 keys\" from=(saved)", Duration::from_secs(30));
    let r = http_with(
        SocketAddr::from((s2.ip, 8443)),
        "GET",
        "/kv/board",
        AUTH,
        "",
    )
    .unwrap();
    assert_eq!((r.status, r.body.as_str()), (200, "pi\n"));
    assert!(p.terminate().success());
}

#[test]
#[ignore = "needs root: scripts/test runs it"]
fn the_example_wasip1_job_succeeds() {
    let env = Env::new();
    let (status, out) = env.run_to_end(&config("job-p1.toml"), Duration::from_secs(60));
    assert!(status.success(), "{out}");
    assert!(out.contains("hello-job/hello: env GREETING=hi"), "{out}");
    assert!(env.leases().is_empty());
}

/// `configs/sidecars.toml`, the four sidecars beside the app, as it is but for its paths (the
/// test's own), without its published port, and with the sync's remote on the pod's own
/// loopback (nothing listens: its changes wait in the queue; no packet leaves the machine):
/// every container runs, the proxy is the door, the backup writes, the queue fills, and the
/// scheduler answers its status.
#[test]
#[ignore = "needs root: scripts/test runs it"]
fn the_example_pod_of_the_four_sidecars_runs() {
    let env = Env::new();
    let text = std::fs::read_to_string(config("sidecars.toml")).unwrap();
    let root = env.dir.path();
    std::fs::write(root.join("edge-token"), TOKEN).unwrap();
    let published = "ports = [{ container_port = 8443, host_port = 18443 }]";
    let remote = "REMOTE = \"192.0.2.10:80\"";
    for must in [published, remote] {
        assert!(text.contains(must), "sidecars.toml changed: no {must}");
    }
    let edited = text
        .replace("../target/guests/kv-server.wasm", KV_SERVER)
        .replace("../target/guests/auth-proxy.wasm", AUTH_PROXY)
        .replace("../target/guests/backup.wasm", BACKUP)
        .replace("../target/guests/sync.wasm", SYNC)
        .replace("../target/guests/scheduler.wasm", SCHEDULER)
        .replace(
            "/etc/peapod/secrets/edge-token",
            root.join("edge-token").to_str().unwrap(),
        )
        .replace("/var/lib/peapod-edge", root.join("edge").to_str().unwrap())
        .replace(published, "")
        .replace(remote, "REMOTE = \"127.0.0.1:9\"")
        .replace("INTERVAL = \"30s\"", "INTERVAL = \"200ms\"")
        .replace("INTERVAL = \"10s\"", "INTERVAL = \"200ms\"");
    let settings: Vec<&str> = edited.lines().filter(|l| !l.starts_with('#')).collect();
    for gone in [
        "../target/guests/",
        "/var/lib/peapod-edge",
        "/etc/peapod",
        "192.0.2.",
    ] {
        assert!(
            !settings.iter().any(|l| l.contains(gone)),
            "sidecars.toml changed: {gone} is left"
        );
    }
    let spec = env.spec("sidecars.toml", &edited);
    let mut p = env.start(&spec);
    let s = p.started("edge");
    let door = SocketAddr::from((s.ip, 8443));
    wait_healthy_with(door, AUTH);
    assert_eq!(http(door, "GET", "/kv", "").unwrap().status, 401);
    assert_eq!(
        http_with(door, "PUT", "/kv/site", AUTH, "field")
            .unwrap()
            .status,
        201
    );
    p.wait_for(
        "edge/backup: level=info msg=\"snapshot of 1 keys\"",
        Duration::from_secs(30),
    );
    p.wait_for(
        "edge/sync: level=warn msg=\"remote unreachable",
        Duration::from_secs(30),
    );
    p.wait_for(
        "edge/scheduler: level=info msg=\"scheduler started\"",
        Duration::from_secs(30),
    );
    let queued = std::fs::read_dir(root.join("edge/queue"))
        .unwrap()
        .flatten()
        .any(|e| e.file_name().to_string_lossy().ends_with(".change"));
    assert!(queued, "the change waits in the queue on the volume");
    assert!(p.terminate().success(), "{}", p.output());
    for c in ["app", "auth-proxy", "backup", "sync", "scheduler"] {
        assert!(
            p.output().contains(&format!("edge/{c}: stopped")),
            "{c} ran to the stop: {}",
            p.output()
        );
    }
}
