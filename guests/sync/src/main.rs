//! sync: pushes the app's changes to a remote HTTP endpoint, and pulls from it if asked, through
//! an offline queue on a volume: a board that is offline (the normal state of an edge board)
//! keeps its changes and sends them, in order and at least once, when the link is back — also
//! after the pod or the daemon restarted.
//!
//! | variable     | default          | what                                                  |
//! | ------------ | ---------------- | ----------------------------------------------------- |
//! | `APP`        | `127.0.0.1:8080` | the app, on the pod's loopback                        |
//! | `EXPORT`     | `GET /kv`        | the request whose answer is the app's state (lines)   |
//! | `REMOTE`     | (required)       | `host:port` of the remote                             |
//! | `PUSH`       | `POST /ingest`   | where changes go on the remote                        |
//! | `PULL`       | (none)           | `GET /path` on the remote whose answer is imported    |
//! | `IMPORT`     | `POST /import`   | the app's request that takes what was pulled          |
//! | `QUEUE_DIR`  | (none)           | the queue (a volume); without it the queue is memory  |
//! | `ID`         | `peapod`         | this board's name in the idempotency keys             |
//! | `INTERVAL`   | `2s`             | how often the app is read (and the remote pulled)     |
//! | `MAX_QUEUE`  | `10000`          | queued changes at most (then changes wait in the app) |
//! | `PUSH_EMPTY` | `false`          | an empty reading after a non-empty one is not pushed  |
//! |              |                  | (an app restarted without its state: the backup's to  |
//! |              |                  | repair); `true` pushes it as deletions                |
//! | `ADMIN`      | `127.0.0.1:9905` | `/healthz`, `/readyz`, `/prestop`, `/status`          |
//!
//! A change is the difference between two readings of the app's state, line by line: `+LINE`
//! for a line that appeared, `-LINE` for one that went. Each change is queued as a file
//! (`q-<seq>.change`, written atomically) before the reading is remembered (`seen`), and sent
//! with `Idempotency-Key: <ID>-<seq>`; it leaves the queue only once the remote answered 2xx.
//! A crash between an answer and the removal sends it again with the same key: the remote
//! drops what it has seen (at-least-once delivery).

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;

use peapod_sdk::http::{self, Request, Response};
use peapod_sdk::net::Listener;
use peapod_sdk::retry::Backoff;
use peapod_sdk::{Error, Result, config, fs, info, stop, warn};

struct Settings {
    app: String,
    export: (String, String),
    remote: String,
    push: (String, String),
    pull: Option<(String, String)>,
    import: (String, String),
    dir: Option<PathBuf>,
    id: String,
    interval: Duration,
    max_queue: usize,
    push_empty: bool,
}

impl Settings {
    fn from_env() -> Result<Self> {
        Ok(Settings {
            app: config::env_or("APP", "127.0.0.1:8080"),
            export: config::request_or("EXPORT", "GET /kv")?,
            remote: config::env("REMOTE")?,
            push: config::request_or("PUSH", "POST /ingest")?,
            pull: match std::env::var("PULL") {
                Ok(v) if !v.trim().is_empty() => Some(config::request_or("PULL", "")?),
                _ => None,
            },
            import: config::request_or("IMPORT", "POST /import")?,
            dir: std::env::var("QUEUE_DIR")
                .ok()
                .filter(|d| !d.is_empty())
                .map(PathBuf::from),
            id: config::env_or("ID", "peapod"),
            interval: config::duration_or("INTERVAL", Duration::from_secs(2))?,
            max_queue: config::parse_or("MAX_QUEUE", 10_000usize)?.max(1),
            push_empty: config::parse_or("PUSH_EMPTY", false)?,
        })
    }
}

/// The queue: changes by sequence number, on disk when there is a `QUEUE_DIR`.
struct Queue {
    dir: Option<PathBuf>,
    /// (seq, change), oldest first.
    items: Vec<(u64, Vec<u8>)>,
    next: u64,
    /// The app's state as last queued.
    seen: Vec<u8>,
}

impl Queue {
    fn open(dir: Option<PathBuf>) -> Result<Self> {
        let mut q = Queue {
            dir,
            items: Vec::new(),
            next: 1,
            seen: Vec::new(),
        };
        let Some(dir) = &q.dir else {
            return Ok(q);
        };
        fs::sweep_temp(dir);
        let mut found: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)
            .map_err(|source| Error::File {
                path: dir.clone(),
                source,
            })?
            .flatten()
            .filter_map(|e| {
                let n = e.file_name().into_string().ok()?;
                Some((
                    n.strip_prefix("q-")?
                        .strip_suffix(".change")?
                        .parse()
                        .ok()?,
                    e.path(),
                ))
            })
            .collect();
        found.sort();
        for (seq, path) in found {
            let body = fs::read_if_exists(&path)?.unwrap_or_default();
            q.items.push((seq, body));
            q.next = q.next.max(seq + 1);
        }
        // The sequence goes on past every change ever sent (kept in `next`).
        if let Some(b) = fs::read_if_exists(dir.join("next"))? {
            let kept: u64 = String::from_utf8_lossy(&b).trim().parse().unwrap_or(1);
            q.next = q.next.max(kept);
        }
        q.seen = fs::read_if_exists(dir.join("seen"))?.unwrap_or_default();
        Ok(q)
    }

    /// Queues the change from `seen` to `state` (none when equal); true when one was queued.
    fn record(&mut self, state: Vec<u8>) -> Result<bool> {
        let change = diff(&self.seen, &state);
        if change.is_empty() {
            return Ok(false);
        }
        let seq = self.next;
        if let Some(dir) = &self.dir {
            // The change first, then the sequence and the reading: a crash in between queues
            // the change again (sent twice, never lost).
            fs::write_atomic(dir.join(format!("q-{seq:016}.change")), &change)?;
            fs::write_atomic(dir.join("next"), format!("{}\n", seq + 1).as_bytes())?;
            fs::write_atomic(dir.join("seen"), &state)?;
        }
        self.items.push((seq, change));
        self.next = seq + 1;
        self.seen = state;
        Ok(true)
    }

    /// The oldest change was delivered.
    fn delivered(&mut self) -> Result<()> {
        if self.items.is_empty() {
            return Ok(());
        }
        let (seq, _) = self.items.remove(0);
        if let Some(dir) = &self.dir {
            let path = dir.join(format!("q-{seq:016}.change"));
            std::fs::remove_file(&path).map_err(|source| Error::File { path, source })?;
        }
        Ok(())
    }
}

/// `+LINE` for each line of `new` not in `old`, `-LINE` for each of `old` not in `new`.
fn diff(old: &[u8], new: &[u8]) -> Vec<u8> {
    let lines = |b: &[u8]| -> BTreeSet<Vec<u8>> {
        b.split(|c| *c == b'\n')
            .filter(|l| !l.is_empty())
            .map(<[u8]>::to_vec)
            .collect()
    };
    let (a, b) = (lines(old), lines(new));
    let mut out = Vec::new();
    for l in a.difference(&b) {
        out.push(b'-');
        out.extend_from_slice(l);
        out.push(b'\n');
    }
    for l in b.difference(&a) {
        out.push(b'+');
        out.extend_from_slice(l);
        out.push(b'\n');
    }
    out
}

#[derive(Default)]
struct Status {
    sent: u64,
    last_error: Option<String>,
}

fn main() {
    peapod_sdk::run(async {
        config::load_file("CONFIG_FILE")?;
        let s = Rc::new(Settings::from_env()?);
        let queue = Rc::new(RefCell::new(Queue::open(s.dir.clone())?));
        let status = Rc::new(RefCell::new(Status::default()));
        serve_status(
            &config::env_or("ADMIN", "127.0.0.1:9905"),
            queue.clone(),
            status.clone(),
        )
        .await?;
        if s.dir.is_none() {
            warn!("no QUEUE_DIR: the queue is kept in memory (lost with the pod)");
        }
        info!(
            "sync started";
            remote = s.remote,
            queued = queue.borrow().items.len(),
            next = queue.borrow().next
        );
        // The sender: the oldest change, again and again until the remote takes it.
        {
            let (s, queue, status) = (s.clone(), queue.clone(), status.clone());
            peapod_sdk::spawn(async move { send_loop(&s, &queue, &status).await });
        }
        let mut pulled: Option<Vec<u8>> = None;
        while !stop::requested() {
            let req = Request::new(&s.export.0, &s.export.1);
            match http::send(&s.app, &req).await.and_then(Response::success) {
                Ok(r) => {
                    let full = queue.borrow().items.len() >= s.max_queue;
                    let emptied = r.body.is_empty() && !queue.borrow().seen.is_empty();
                    if full {
                        warn!("the queue is full: changes wait in the app"; max = s.max_queue);
                    } else if emptied && !s.push_empty {
                        peapod_sdk::debug!("the app's state is empty: not pushed (PUSH_EMPTY)");
                    } else if let Err(e) = queue.borrow_mut().record(r.body) {
                        warn!("cannot queue a change: {e}");
                    }
                }
                Err(e) => warn!("cannot read the app's state: {e}"),
            }
            if let Some(pull) = &s.pull {
                pull_once(&s, pull, &mut pulled).await;
            }
            stop::sleep(s.interval).await;
        }
        info!("sync stopping"; queued = queue.borrow().items.len());
        Ok(())
    })
}

async fn send_loop(s: &Settings, queue: &RefCell<Queue>, status: &RefCell<Status>) {
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(30));
    loop {
        let next = queue.borrow().items.first().cloned();
        let Some((seq, change)) = next else {
            peapod_sdk::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let key = format!("{}-{seq}", s.id);
        let req = Request::new(&s.push.0, &s.push.1)
            .with_header("Idempotency-Key", &key)
            .with_header("Content-Type", "text/plain")
            .with_body(change);
        match http::send(&s.remote, &req)
            .await
            .and_then(Response::success)
        {
            Ok(_) => {
                if let Err(e) = queue.borrow_mut().delivered() {
                    warn!("cannot take a sent change off the queue: {e}");
                }
                info!("sent"; key = key, queued = queue.borrow().items.len());
                let mut st = status.borrow_mut();
                st.sent += 1;
                st.last_error = None;
                backoff.reset();
            }
            Err(e) => {
                let wait = backoff.next_delay();
                warn!("remote unreachable, retrying: {e}"; key = key, retry_in_ms = wait.as_millis());
                status.borrow_mut().last_error = Some(e.to_string());
                peapod_sdk::time::sleep(wait).await;
            }
        }
    }
}

/// Pulls from the remote and imports what changed since the last pull.
async fn pull_once(s: &Settings, pull: &(String, String), last: &mut Option<Vec<u8>>) {
    let req = Request::new(&pull.0, &pull.1);
    let body = match http::send(&s.remote, &req)
        .await
        .and_then(Response::success)
    {
        Ok(r) => r.body,
        Err(e) => {
            warn!("cannot pull: {e}");
            return;
        }
    };
    if body.is_empty() || last.as_ref() == Some(&body) {
        return;
    }
    let req = Request::new(&s.import.0, &s.import.1).with_body(body.clone());
    match http::send(&s.app, &req).await.and_then(Response::success) {
        Ok(_) => {
            info!("pulled into the app"; bytes = body.len());
            *last = Some(body);
        }
        Err(e) => warn!("cannot import what was pulled: {e}"),
    }
}

/// `/status` beside peapod's endpoints.
async fn serve_status(
    addr: &str,
    queue: Rc<RefCell<Queue>>,
    status: Rc<RefCell<Status>>,
) -> Result<()> {
    let listener = Listener::bind(addr).await?;
    peapod_sdk::spawn(async move {
        let _ = http::serve(listener, move |req| {
            let (queue, status) = (queue.clone(), status.clone());
            async move {
                if let Some(r) = http::health(&req) {
                    return r;
                }
                if req.path() != "/status" {
                    return Response::text(404, "not found\n");
                }
                let (q, st) = (queue.borrow(), status.borrow());
                Response::text(
                    200,
                    format!(
                        "queued={} next={} sent={} last_error={}\n",
                        q.items.len(),
                        q.next,
                        st.sent,
                        st.last_error.as_deref().unwrap_or("-")
                    ),
                )
            }
        })
        .await;
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_are_lines_that_came_and_went() {
        assert_eq!(
            diff(b"a=1\nb=2\n", b"a=1\nb=3\nc=4\n"),
            b"-b=2\n+b=3\n+c=4\n"
        );
        assert!(diff(b"a=1\n", b"a=1\n").is_empty());
    }
}
