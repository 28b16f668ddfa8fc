//! The sidecars in real pods (issue 25): the backup cut off in the middle of its writes, and the
//! template of `peapod new sidecar`. (The auth proxy and sync, which need published ports and an
//! outside, are in tests/network.rs, in network namespaces of the test's own.)

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;

/// `peapod new sidecar`: a crate from the template (its building and test run in scripts/test);
/// bad input is refused with nothing made. No root needed.
#[test]
fn new_sidecar_makes_a_crate_or_nothing() {
    let env = Env::new();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap();
    let dir = env.dir.path().join("watch-it");
    let dir_s = dir.to_str().unwrap();
    let root_s = root.to_str().unwrap();
    let out = env.ctl_ok(&[
        "new", "sidecar", "watch-it", "--dir", dir_s, "--peapod", root_s,
    ]);
    assert_eq!(out.trim(), dir_s);
    let cargo = std::fs::read_to_string(dir.join("Cargo.toml")).unwrap();
    assert!(cargo.contains("name = \"watch-it\""), "{cargo}");
    assert!(
        cargo.contains(&format!(
            "{}/guests/sdk",
            root.canonicalize().unwrap().display()
        )),
        "{cargo}"
    );
    for f in [
        "src/main.rs",
        "tests/sidecar.rs",
        "pod.toml",
        "README.md",
        "Cargo.lock",
    ] {
        assert!(dir.join(f).is_file(), "{f}");
    }
    let pod = std::fs::read_to_string(dir.join("pod.toml")).unwrap();
    assert!(!pod.contains("{{"), "every placeholder filled: {pod}");

    // A directory that exists is left alone.
    let (code, _, err) = env.ctl(&[
        "new", "sidecar", "watch-it", "--dir", dir_s, "--peapod", root_s,
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("exists already"), "{err}");
    // A bad name; a tree that is not peapod's.
    let (code, _, err) = env.ctl(&["new", "sidecar", "Bad_Name", "--peapod", root_s]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("not a sidecar name"), "{err}");
    let other = env.dir.path().join("other");
    let (code, _, err) = env.ctl(&[
        "new",
        "sidecar",
        "x",
        "--dir",
        other.to_str().unwrap(),
        "--peapod",
        env.dir.path().to_str().unwrap(),
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("not a peapod source tree") && !other.exists(),
        "{err}"
    );
    let leftovers: Vec<_> = std::fs::read_dir(env.dir.path())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains("peapod-new"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// The backup in a real pod, cut off again and again in the middle of its writes (the pod's
/// process killed with SIGKILL, as a power cut would): every snapshot left is whole, and each new
/// pod gets the whole state back.
#[test]
#[ignore = "needs root: scripts/test runs it"]
fn a_backup_cut_off_mid_write_leaves_whole_snapshots() {
    let env = Env::new();
    let backups = env.dir.path().join("vault-backups");
    let spec = env.spec(
        "vault.toml",
        &format!(
            r#"[pod]
name = "vault"

[[volumes]]
name = "backups"
host_path = {{ path = {backups:?}, type = "DirectoryOrCreate" }}

[[containers]]
name = "app"
module = {KV_SERVER:?}
args = ["--listen", "0.0.0.0:8080"]

[[containers]]
name = "backup"
module = {BACKUP:?}
env = {{ DIR = "/backups", INTERVAL = "10ms", KEEP = "1000" }}
volume_mounts = [{{ name = "backups", mount_path = "/backups" }}]
"#
        ),
    );
    // 4 MiB of state: 64 values of 64 KiB, and a round counter.
    let filler = "x".repeat(64 * 1024);
    let whole = |text: &str| {
        let lines: Vec<&str> = text.lines().collect();
        lines.len() == 65
            && lines.iter().filter(|l| l.len() == 64 * 1024 + 4).count() == 64
            && lines.iter().any(|l| l.starts_with("round="))
    };
    let rounds = if emulated() { 2 } else { 4 };
    // Starts that found a write cut off (its temporary file).
    let mut cut_off = 0;
    for round in 0..rounds {
        let mut p = env.start(&spec);
        let s = p.started("vault");
        let app = SocketAddr::from((s.ip, 8080));
        p.wait_for("watching the app", Duration::from_secs(30));
        cut_off += p.count("half-written snapshots");
        wait_healthy(app);
        if round == 0 {
            for k in 0..64 {
                assert_eq!(
                    http(app, "PUT", &format!("/kv/f{k:02}"), &filler)
                        .unwrap()
                        .status,
                    201
                );
            }
        } else {
            // The state came back whole from the newest snapshot.
            let t0 = Instant::now();
            loop {
                let kv = http(app, "GET", "/kv", "").unwrap().body;
                if whole(&kv) {
                    break;
                }
                assert!(
                    t0.elapsed() < Duration::from_secs(30),
                    "not restored: {} lines",
                    kv.lines().count()
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        assert_eq!(
            http(app, "PUT", "/kv/round", &round.to_string())
                .unwrap()
                .status,
            201
        );
        // A whole snapshot of this round is on disk...
        let t0 = Instant::now();
        while !newest(&backups)
            .is_some_and(|t| whole(&t) && t.contains(&format!("round={round}\n")))
        {
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "no snapshot of round {round}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        // ...then a change, so a write starts: the kill lands while its temporary file exists.
        assert_eq!(
            http(app, "PUT", "/kv/round", &format!("{round}b"))
                .unwrap()
                .status,
            201
        );
        let t0 = Instant::now();
        while !std::fs::read_dir(&backups)
            .unwrap()
            .flatten()
            .any(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
            && t0.elapsed() < Duration::from_secs(5)
        {}
        p.signal(nix::sys::signal::Signal::SIGKILL);
        p.wait_exit(Duration::from_secs(30));
        let snapshots: Vec<_> = std::fs::read_dir(&backups)
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("snapshot-"))
            .collect();
        assert!(!snapshots.is_empty());
        for f in &snapshots {
            let text = std::fs::read_to_string(f.path()).unwrap();
            // (The first snapshots, of round 0, hold part of the filling: whole lines still.)
            assert!(
                whole(&text) || text.lines().all(|l| l.len() == 64 * 1024 + 4),
                "{}: {} bytes, not a state the app had",
                f.path().display(),
                text.len()
            );
        }
    }
    // The next start said it found (and removed) a half-written file: the kills did land in
    // the middle of writes.
    let mut p = env.start(&spec);
    p.wait_for("watching the app", Duration::from_secs(30));
    cut_off += p.count("half-written snapshots");
    assert!(cut_off >= 1, "no kill landed in a write");
    p.terminate();
}

/// The newest snapshot's text in `dir`.
fn newest(dir: &std::path::Path) -> Option<String> {
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("snapshot-"))
        })
        .collect();
    names.sort();
    std::fs::read_to_string(names.last()?).ok()
}

/// The walk-through of docs/sidecars.md: `peapod new sidecar`, built for wasm32-wasip2, runs next
/// to the demo app with its own `pod.toml`; it asks the app and stops on the pre-stop hook.
#[test]
#[ignore = "needs root: scripts/test runs it"]
fn a_new_sidecar_runs_next_to_the_demo_app() {
    let env = Env::new();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap();
    let dir = env.dir.path().join("pinger");
    env.ctl_ok(&[
        "new",
        "sidecar",
        "pinger",
        "--dir",
        dir.to_str().unwrap(),
        "--peapod",
        root.to_str().unwrap(),
    ]);
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let built = std::process::Command::new(cargo)
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--target-dir",
            "target/wasm",
        ])
        .current_dir(&dir)
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET")
        .status()
        .unwrap();
    assert!(built.success());
    // Its pod file as `peapod new` wrote it (module paths relative to it).
    let mut p = env.start(&dir.join("pod.toml"));
    p.wait_for("pod pinger-demo started", Duration::from_secs(60));
    p.wait_for(
        "pinger-demo/pinger: level=info msg=\"app answered\" status=200",
        Duration::from_secs(30),
    );
    assert!(p.terminate().success(), "{}", p.output());
    assert!(
        p.output().contains("msg=\"pinger stopping\""),
        "stopped by its pre-stop hook: {}",
        p.output()
    );
}
