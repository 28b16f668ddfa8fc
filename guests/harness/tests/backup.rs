//! The backup sidecar in the harness, against the real demo app (kv-server) run beside it:
//! snapshots on change with retention, a restore into a restarted app and into a new one.

use std::path::Path;
use std::time::Duration;

mod common;

use common::{body, kv_app as app, put};
use peapod_guests::BACKUP;
use peapod_harness::{Running, Sidecar, eventually, free_addr, http};

fn backup(app: &str, dir: &Path, keep: u32) -> Running {
    Sidecar::new(BACKUP)
        .env("APP", app)
        .env("DIR", "/backups")
        .env("INTERVAL", "50ms")
        .env("KEEP", &keep.to_string())
        .env("ADMIN", &free_addr())
        .mount(dir, "/backups")
        .start()
}

fn snapshots(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("snapshot-"))
        .collect();
    names.sort();
    names
}

#[test]
fn snapshots_follow_changes_and_keep_the_newest() {
    let dir = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let _app = app(&addr);
    let b = backup(&addr, dir.path(), 3);
    for i in 0..5 {
        put(&addr, "n", &i.to_string());
        b.wait_for_log("snapshot of 1 keys", Duration::from_secs(20));
        eventually("the snapshot of this change", || {
            let s = snapshots(dir.path());
            s.last().is_some_and(|l| {
                std::fs::read_to_string(dir.path().join(l)).unwrap() == format!("n={i}\n")
            })
        });
    }
    // (The retention follows each write: a moment after the rename.)
    eventually("KEEP=3", || snapshots(dir.path()).len() <= 3);
    let kept = snapshots(dir.path());
    // Unchanged state: no new file.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(snapshots(dir.path()), kept);
}

#[test]
fn a_restarted_app_and_a_new_pod_get_the_state_back() {
    let dir = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let first = app(&addr);
    let b = backup(&addr, dir.path(), 10);
    put(&addr, "board", "pi");
    put(&addr, "site", "field");
    b.wait_for_log("snapshot of 2 keys", Duration::from_secs(20));
    // The app restarts in place: a new instance, empty.
    drop(first);
    let second = app(&addr);
    b.wait_for_log("restored 2 keys", Duration::from_secs(20));
    assert_eq!(
        body(&http(&addr, "GET /kv HTTP/1.1\r\nHost: x\r\n\r\n")),
        "board=pi\nsite=field\n"
    );
    // The pod is re-created: a new backup and a new app; the snapshots were on the volume.
    drop(b);
    drop(second);
    let _third = app(&addr);
    let b = backup(&addr, dir.path(), 10);
    let line = b.wait_for_log("restored 2 keys", Duration::from_secs(20));
    assert!(line.contains("from=(saved)"), "{line}");
    assert_eq!(
        body(&http(&addr, "GET /kv/site HTTP/1.1\r\nHost: x\r\n\r\n")),
        "field\n"
    );
}

#[test]
fn half_written_snapshots_are_swept_and_never_restored() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("snapshot-0000000000000001.txt"),
        "whole=yes\n",
    )
    .unwrap();
    // What a write cut off by a power cut leaves: the temporary file, never the snapshot.
    std::fs::write(
        dir.path().join(".snapshot-0000000000000002.txt.tmp"),
        "half=",
    )
    .unwrap();
    let addr = free_addr();
    let _app = app(&addr);
    let b = backup(&addr, dir.path(), 10);
    b.wait_for_log("removed 1 half-written", Duration::from_secs(20));
    b.wait_for_log("restored 1 keys", Duration::from_secs(20));
    assert_eq!(
        body(&http(&addr, "GET /kv HTTP/1.1\r\nHost: x\r\n\r\n")),
        "whole=yes\n"
    );
}
