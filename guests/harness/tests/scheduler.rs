//! The scheduler in the harness: jobs call a fake app on time; missed runs after downtime are
//! run once or skipped as `MISSED` says; `/status` tells each job's last and next run.

use std::time::Duration;

use peapod_guests::SCHEDULER;
use peapod_harness::{FakeApp, Sidecar, free_addr, http};

fn ok_app() -> FakeApp {
    FakeApp::start(|_| (200, b"done".to_vec()))
}

#[test]
fn jobs_run_on_time_and_status_tells_them() {
    let app = ok_app();
    let admin = free_addr();
    let state = tempfile::tempdir().unwrap();
    let s = Sidecar::new(SCHEDULER)
        .env(
            "SCHEDULE",
            "tick * * * * * * POST /tick\nnightly 0 3 * * * GET /nightly",
        )
        .env("APP", &app.addr().to_string())
        .env("ADMIN", &admin)
        .env("STATE_DIR", "/state")
        .mount(state.path(), "/state")
        .start();
    s.wait_for_log("scheduler started", Duration::from_secs(30));
    let t0 = std::time::Instant::now();
    while app.received().len() < 2 {
        assert!(t0.elapsed() < Duration::from_secs(10), "{}", s.logs());
        std::thread::sleep(Duration::from_millis(50));
    }
    let got = app.received();
    assert!(
        got.iter().all(|r| r.method == "POST" && r.path == "/tick"),
        "{got:?}"
    );
    let status = http(&admin, "GET /status HTTP/1.1\r\nHost: x\r\n\r\n");
    let tick = status
        .lines()
        .find(|l| l.starts_with("tick "))
        .expect(&status);
    assert!(
        tick.contains("result=200") && tick.contains("next=20"),
        "{status}"
    );
    let nightly = status
        .lines()
        .find(|l| l.starts_with("nightly "))
        .expect(&status);
    assert!(
        nightly.contains("last=- result=-") && nightly.contains("T03:00:00"),
        "{status}"
    );
    // Its last run is kept (atomically) in the state volume.
    let kept = std::fs::read_to_string(state.path().join("tick.last")).unwrap();
    assert!(kept.trim_end().ends_with(" 200"), "{kept:?}");
    // The pre-stop hook ends it.
    http(&admin, "GET /prestop HTTP/1.1\r\nHost: x\r\n\r\n");
    let ended = s.wait(Duration::from_secs(10));
    assert_eq!(ended.exit_code, Some(0), "{}", ended.logs);
}

/// A job whose last kept run is two hours old missed its hourly run.
fn missed(policy: &str) -> (FakeApp, String) {
    let app = ok_app();
    let state = tempfile::tempdir().unwrap();
    let two_hours_ago = std::time::SystemTime::now() - Duration::from_secs(7200);
    let stamp = humantime_rfc3339(two_hours_ago);
    std::fs::write(state.path().join("hourly.last"), format!("{stamp} 200\n")).unwrap();
    let s = Sidecar::new(SCHEDULER)
        .env("SCHEDULE", "hourly @hourly POST /hourly")
        .env("APP", &app.addr().to_string())
        .env("ADMIN", &free_addr())
        .env("MISSED", policy)
        .env("STATE_DIR", "/state")
        .mount(state.path(), "/state")
        .start();
    s.wait_for_log("missed run", Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(500));
    let logs = s.stop().logs;
    (app, logs)
}

fn humantime_rfc3339(t: std::time::SystemTime) -> String {
    let secs = t.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    // Civil date from days since 1970 (Howard Hinnant's algorithm).
    let (days, rem) = (secs / 86400, secs % 86400);
    let z = days as i64 + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[test]
fn a_missed_run_runs_once_at_start() {
    let (app, logs) = missed("once");
    assert!(logs.contains("missed run, running it once now"), "{logs}");
    let got = app.received();
    assert_eq!(got.len(), 1, "{got:?}\n{logs}");
    assert_eq!(got[0].path, "/hourly");
}

#[test]
fn a_missed_run_is_skipped_when_asked() {
    let (app, logs) = missed("skip");
    assert!(logs.contains("missed run skipped"), "{logs}");
    assert!(app.received().is_empty(), "{logs}");
}

#[test]
fn a_bad_schedule_is_refused_line_by_line() {
    let ended = Sidecar::new(SCHEDULER)
        .env(
            "SCHEDULE",
            "ok * * * * * GET /ok\nbad 99 * * * * GET /x\nshort * * GET /y",
        )
        .env("ADMIN", &free_addr())
        .start()
        .wait(Duration::from_secs(30));
    assert_eq!(ended.exit_code, Some(1));
    assert!(
        ended.logs.contains("SCHEDULE: line 2:") && ended.logs.contains("line 3:"),
        "{}",
        ended.logs
    );
}
