//! backup: snapshots the app's state through its HTTP API into a volume (a `host_path` on the
//! SD card), keeps the newest `KEEP` (and none older than `MAX_AGE`), and restores the newest
//! into a fresh app: after the app restarts in place (a new instance, empty) and after the pod
//! is re-created (a new sandbox, the snapshots on the host).
//!
//! | variable          | default          | what                                                |
//! | ----------------- | ---------------- | --------------------------------------------------- |
//! | `APP`             | `127.0.0.1:8080` | the app, on the pod's loopback                      |
//! | `EXPORT`          | `GET /kv`        | the request whose answer is the app's state         |
//! | `IMPORT`          | `POST /import`   | the request that takes a snapshot back              |
//! | `INSTANCE_HEADER` | `X-Instance`     | the header that tells a restarted app               |
//! | `DIR`             | (none)           | where snapshots go (a volume); without it they are  |
//! |                   |                  | kept in memory (an app restarted in place gets its  |
//! |                   |                  | state back, a re-created pod does not)              |
//! | `INTERVAL`        | `3s`             | how often the state is read                         |
//! | `KEEP`            | `10`             | snapshots kept (the newest)                         |
//! | `MAX_AGE`         | (none)           | snapshots older than this go (the newest stays)     |
//! | `ADMIN`           | `127.0.0.1:9904` | `/healthz`, `/readyz`, `/prestop` (a last snapshot) |
//! | `CONFIG_FILE`     |                  | `KEY = value` lines for the above (a `files` volume)|
//!
//! A snapshot is written only when the state changed, as `DIR/snapshot-<unix ms>.txt`: to a
//! temporary file, synced, renamed into place, so a pod killed in the middle of a write leaves
//! the snapshots before it whole (and a `.tmp` file, removed at the next start). The app is
//! restored when the backup sees it first or sees a new instance of it, and its state is empty.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use peapod_sdk::http::{self, Request};
use peapod_sdk::{Result, config, fs, info, stop, warn};

struct Settings {
    app: String,
    export: (String, String),
    import: (String, String),
    instance_header: String,
    dir: Option<PathBuf>,
    interval: Duration,
    keep: usize,
    max_age: Option<Duration>,
}

impl Settings {
    fn from_env() -> Result<Self> {
        let max_age = match config::duration_or("MAX_AGE", Duration::ZERO)? {
            d if d.is_zero() => None,
            d => Some(d),
        };
        Ok(Settings {
            app: config::env_or("APP", "127.0.0.1:8080"),
            export: config::request_or("EXPORT", "GET /kv")?,
            import: config::request_or("IMPORT", "POST /import")?,
            instance_header: config::env_or("INSTANCE_HEADER", "X-Instance"),
            dir: std::env::var("DIR")
                .ok()
                .filter(|d| !d.is_empty())
                .map(PathBuf::from),
            interval: config::duration_or("INTERVAL", Duration::from_secs(3))?,
            keep: config::parse_or("KEEP", 10usize)?.max(1),
            max_age,
        })
    }
}

/// The snapshots in `dir`, oldest first: (unix ms, path).
fn snapshots(dir: &Path) -> Vec<(u128, PathBuf)> {
    let mut found: Vec<(u128, PathBuf)> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .filter_map(|e| {
                    let name = e.file_name().into_string().ok()?;
                    let ms = name
                        .strip_prefix("snapshot-")?
                        .strip_suffix(".txt")?
                        .parse()
                        .ok()?;
                    Some((ms, e.path()))
                })
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found
}

fn now_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
}

/// Writes a snapshot into `dir`, then applies the retention (the newest is never removed).
fn save(s: &Settings, dir: &Path, state: &[u8]) -> Result<PathBuf> {
    let path = dir.join(format!("snapshot-{:016}.txt", now_ms()));
    fs::write_atomic(&path, state)?;
    let all = snapshots(dir);
    let newest = all.len().saturating_sub(1);
    let now = now_ms();
    for (i, (ms, p)) in all.iter().enumerate() {
        let too_many = i + s.keep < all.len();
        let too_old = s
            .max_age
            .is_some_and(|a| now.saturating_sub(*ms) > a.as_millis());
        if i < newest
            && (too_many || too_old)
            && let Err(e) = std::fs::remove_file(p)
        {
            warn!("cannot remove an old snapshot: {e}"; file = p.display());
        }
    }
    Ok(path)
}

fn main() {
    peapod_sdk::run(async {
        let file = config::load_file("CONFIG_FILE")?;
        let s = Settings::from_env()?;
        if let Some(f) = file {
            info!("read {f}");
        }
        // The newest snapshot on disk: what a fresh app gets back.
        let mut last: Option<Vec<u8>> = None;
        match &s.dir {
            None => {
                warn!("no DIR: snapshots are kept in memory only (a re-created pod starts empty)")
            }
            Some(dir) => {
                let swept = fs::sweep_temp(dir);
                if swept > 0 {
                    info!("removed {swept} half-written snapshots (a write was cut off)"; dir = dir.display());
                }
                match snapshots(dir).last() {
                    Some((_, p)) => {
                        let b = fs::read_if_exists(p)?.unwrap_or_default();
                        info!("found a snapshot"; file = p.display(), bytes = b.len(), keys = lines(&b));
                        last = Some(b);
                    }
                    None => info!("no snapshot yet"; dir = dir.display()),
                }
            }
        }
        http::serve_admin(&config::env_or("ADMIN", "127.0.0.1:9904")).await?;
        info!("watching the app"; app = s.app, every = format!("{:?}", s.interval));
        // The app instance seen last (`None`: not seen yet).
        let mut instance: Option<String> = None;
        loop {
            let stopping = !stop::sleep(s.interval).await;
            let req = Request::new(&s.export.0, &s.export.1);
            let answer = match http::send(&s.app, &req).await.and_then(|r| r.success()) {
                Ok(r) => r,
                Err(e) => {
                    warn!("cannot read the app's state: {e}");
                    if stopping {
                        break;
                    }
                    continue;
                }
            };
            let seen = answer.header(&s.instance_header).unwrap_or("").to_string();
            let fresh = instance.as_ref() != Some(&seen);
            let state = answer.body;
            if fresh && state.is_empty() && last.as_ref().is_some_and(|l| !l.is_empty()) {
                let snap = last.clone().unwrap_or_default();
                let req = Request::new(&s.import.0, &s.import.1).with_body(snap.clone());
                match http::send(&s.app, &req).await.and_then(|r| r.success()) {
                    Ok(_) => {
                        let before = instance.as_deref().unwrap_or("(saved)");
                        info!("restored {} keys", lines(&snap); from = before, to = seen);
                        instance = Some(seen);
                    }
                    Err(e) => warn!("restore failed, will retry: {e}"),
                }
                continue;
            }
            instance = Some(seen);
            if last.as_ref() != Some(&state) {
                match &s.dir {
                    None => {
                        info!("snapshot of {} keys", lines(&state); bytes = state.len());
                        last = Some(state);
                    }
                    Some(dir) => match save(&s, dir, &state) {
                        Ok(p) => {
                            info!("snapshot of {} keys", lines(&state); file = p.display(), bytes = state.len());
                            last = Some(state);
                        }
                        Err(e) => warn!("cannot save a snapshot: {e}"),
                    },
                }
            }
            if stopping {
                break;
            }
        }
        info!("stopped after a last snapshot");
        Ok(())
    })
}

/// Lines of a snapshot (keys, for `key=value` states).
fn lines(b: &[u8]) -> usize {
    b.split(|c| *c == b'\n').filter(|l| !l.is_empty()).count()
}
