//! The sync sidecar in the harness: the app is the real kv-server, the remote a fake one that
//! is down (nothing listens), then up. Changes queue on the volume while it is down, survive a
//! restart of the sidecar, and arrive in order, each once, with its idempotency key.

use std::path::Path;
use std::time::Duration;

mod common;

use common::{body, kv_app, put};
use peapod_guests::SYNC;
use peapod_harness::{FakeApp, Running, Sidecar, eventually, free_addr, http};

fn sync(app: &str, remote: &str, queue: &Path, admin: &str) -> Running {
    let s = Sidecar::new(SYNC)
        .env("APP", app)
        .env("REMOTE", remote)
        .env("QUEUE_DIR", "/queue")
        .env("ID", "board7")
        .env("INTERVAL", "50ms")
        .env("ADMIN", admin)
        .mount(queue, "/queue")
        .start();
    s.wait_for_log("sync started", Duration::from_secs(30));
    s
}

fn status(admin: &str) -> String {
    body(&http(admin, "GET /status HTTP/1.1\r\nHost: x\r\n\r\n")).to_string()
}

#[test]
fn changes_wait_offline_survive_a_restart_and_arrive_once_in_order() {
    let app = free_addr();
    let _kv = kv_app(&app);
    let queue = tempfile::tempdir().unwrap();
    let remote = free_addr(); // nothing listens there yet: the link is down
    let admin = free_addr();
    let s = sync(&app, &remote, queue.path(), &admin);
    put(&app, "a", "1");
    eventually("a queued change", || {
        status(&admin).starts_with("queued=1 ")
    });
    put(&app, "b", "2");
    eventually("two queued changes", || {
        status(&admin).starts_with("queued=2 ")
    });
    assert!(s.logs().contains("remote unreachable"), "{}", s.logs());
    // The sidecar restarts (the pod, the daemon, the board): the queue is on the volume.
    drop(s);
    let s = sync(&app, &remote, queue.path(), &admin);
    assert!(
        status(&admin).starts_with("queued=2 next=3 "),
        "{}",
        status(&admin)
    );
    put(&app, "a", "3");
    eventually("three queued changes", || {
        status(&admin).starts_with("queued=3 ")
    });
    // The link comes back.
    let fake = FakeApp::start_on(&remote, |_| (200, b"ok".to_vec()));
    eventually("all sent", || status(&admin).starts_with("queued=0 "));
    let got = fake.received();
    let keys: Vec<&str> = got
        .iter()
        .map(|r| r.header("idempotency-key").unwrap())
        .collect();
    assert_eq!(
        keys,
        ["board7-1", "board7-2", "board7-3"],
        "in order, each once"
    );
    let bodies: Vec<String> = got
        .iter()
        .map(|r| String::from_utf8_lossy(&r.body).into_owned())
        .collect();
    assert_eq!(bodies, ["+a=1\n", "+b=2\n", "-a=1\n+a=3\n"]);
    assert!(
        got.iter()
            .all(|r| r.method == "POST" && r.path == "/ingest")
    );
    let left: Vec<_> = std::fs::read_dir(queue.path())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".change"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    drop(s);
}

#[test]
fn a_remote_that_refuses_is_retried_and_pull_reaches_the_app() {
    let app = free_addr();
    let _kv = kv_app(&app);
    let refused = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = refused.clone();
    // The remote answers 503 twice, then takes changes; its config is pulled into the app.
    let fake = FakeApp::start(move |r| match r.path.as_str() {
        "/config" => (200, b"mode=field\n".to_vec()),
        _ if count.fetch_add(1, std::sync::atomic::Ordering::SeqCst) < 2 => (503, b"busy".to_vec()),
        _ => (200, b"ok".to_vec()),
    });
    let queue = tempfile::tempdir().unwrap();
    let admin = free_addr();
    let s = Sidecar::new(SYNC)
        .env("APP", &app)
        .env("REMOTE", &fake.addr().to_string())
        .env("PULL", "GET /config")
        .env("QUEUE_DIR", "/queue")
        .env("INTERVAL", "50ms")
        .env("ADMIN", &admin)
        .mount(queue.path(), "/queue")
        .start();
    s.wait_for_log("pulled into the app", Duration::from_secs(30));
    let kv_state = http(&app, "GET /kv HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(kv_state.ends_with("mode=field\n"), "{kv_state}");
    // The pulled line is a change of the app's state too: pushed after the retries.
    eventually("sent after two refusals", || {
        fake.received()
            .iter()
            .filter(|r| r.path == "/ingest")
            .count()
            == 3
            && status(&admin).starts_with("queued=0")
    });
    let pushes: Vec<_> = fake
        .received()
        .into_iter()
        .filter(|r| r.path == "/ingest")
        .collect();
    assert!(
        pushes
            .iter()
            .all(|r| r.header("idempotency-key") == Some("peapod-1")),
        "the same change, the same key"
    );
}
