//! `peapod daemon`: many pods at once, kept equal to the pods directory and to what was applied
//! through the API, controlled over a unix socket.
//!
//! [`serve`] is the daemon on a socket and a control channel its caller owns (as mini-redis'
//! `server::run`): it starts the pods (taking over the sandboxes the last run left: same
//! namespace, same IP), serves the API (requests wait until the pods are up), reloads when told,
//! and on [`Control::Stop`] drains the API's connections and stops the modules; the sandboxes
//! stay (a restarted daemon gives every pod its IP back). What it has to say ([`Report`]) goes
//! back on a channel. The process around it (signals, binding the socket, watching the pods
//! directory, systemd's notifications and watchdog) is the binary's `commands/daemon.rs`.

mod api;
mod crashguard;
mod events;
mod host;
mod images;
mod load;
mod metrics;
mod pods;
mod server;
mod store;

use std::fs::File;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use nix::fcntl::Flock;
use tokio::sync::Mutex;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::wasm::executor::Executor;
use pods::Pods;

/// The group that may use the API socket besides root (if it exists).
pub const SOCKET_GROUP: &str = "peapod";

/// What the daemon is told while it runs (by signals and the pods directory's watcher, under
/// systemd; by a test's channel in process).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// Re-read the pods directory; the reason is logged (`SIGHUP`, a change in the directory).
    Reload(&'static str),
    /// Drain the API, stop the modules and return; the sandboxes stay.
    Stop,
}

/// What the daemon says while it runs (to systemd, through the binary).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Report {
    /// The pods are started (or held by the crash guard) and the API takes requests.
    Ready { pods: usize },
    /// The number of pods, or of ready ones, changed.
    Pods { pods: usize, ready: usize },
    /// Told to stop: the modules are stopping.
    Stopping,
}

/// The daemon's locks: one daemon per run directory, and one per state directory (a second
/// daemon with another run dir and socket on the same state dir would take over the first
/// one's pods). Held while this lives.
pub struct Locks {
    _run: Flock<File>,
    _state: Flock<File>,
}

/// Takes the daemon locks of `cfg.run_dir` and `cfg.state_dir`.
pub fn lock(cfg: &Config) -> anyhow::Result<Locks> {
    let take = |dir: &std::path::Path, what: &str| -> anyhow::Result<Flock<File>> {
        let root_hint = || {
            if nix::unistd::geteuid().is_root() {
                String::new()
            } else {
                " (the daemon runs as root: it makes namespaces, links and mounts)".into()
            }
        };
        if what == "state_dir" {
            crate::durable::private_dir(dir)
        } else {
            std::fs::create_dir_all(dir)
        }
        .with_context(|| format!("create {}{}", dir.display(), root_hint()))?;
        let path = dir.join("daemon.lock");
        crate::durable::lock(&path, false)
            .with_context(|| format!("lock {}{}", path.display(), root_hint()))?
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "another peapod daemon is running with {what} {} (its lock {} is held)",
                    dir.display(),
                    path.display()
                )
            })
    };
    Ok(Locks {
        _run: take(&cfg.run_dir, "run_dir")?,
        _state: take(&cfg.state_dir, "state_dir")?,
    })
}

/// The daemon on `listener` until `control` says [`Control::Stop`] (or is closed): the pods
/// started, the API served, reloads done when asked; what it has to say goes to `reports`.
/// `t0` is when the start began.
pub async fn serve(
    cfg: Config,
    exec: Executor,
    listener: tokio::net::UnixListener,
    mut control: UnboundedReceiver<Control>,
    reports: UnboundedSender<Report>,
    t0: Instant,
) -> anyhow::Result<()> {
    raise_fd_limit();
    std::fs::create_dir_all(&cfg.pods_dir)
        .with_context(|| format!("create {}", cfg.pods_dir.display()))?;
    for d in [&cfg.state_dir, &cfg.logs.dir] {
        crate::durable::private_dir(d).with_context(|| format!("create {} (0700)", d.display()))?;
    }
    let pods = Arc::new(Mutex::new(Pods::new(cfg.clone(), exec)));
    let shutdown = CancellationToken::new();
    // `[metrics] listen`: bound before anything starts, so a port in use is said at once.
    let metrics_server = match cfg.metrics_listen {
        None => None,
        Some(addr) => {
            let l = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("metrics.listen: cannot listen on {addr}"))?;
            tracing::info!("metrics on http://{addr}/metrics");
            let served = axum::serve(l, api::metrics_router(pods.clone()))
                .with_graceful_shutdown(shutdown.clone().cancelled_owned());
            Some(tokio::spawn(IntoFuture::into_future(served)))
        }
    };
    // Hold the pods while starting them: API requests wait for the start-up to finish.
    let mut starting = pods.clone().lock_owned().await;
    let ready = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let server = tokio::spawn(server::serve(
        listener,
        api::router(pods.clone(), ready.clone(), cfg.quotas.follow_streams),
        server::ConnBounds {
            max: cfg.limits.api_connections,
            per_user: cfg.quotas.api_connections,
        },
        shutdown.clone().cancelled_owned(),
    ));
    starting.start_all().await;
    // The firewall is derived state (a reboot, a `nft flush ruleset` or a stop between a
    // lease's change and its chain's loses it): made again from the leases of the recovered
    // pods.
    let ipam = crate::host::ipam::Ipam::new(&cfg);
    match tokio::task::spawn_blocking(move || ipam.sync_firewall()).await {
        Ok(Err(e)) => tracing::warn!("firewall: {e}"),
        Err(e) => tracing::warn!("firewall: {e}"),
        Ok(Ok(())) => {}
    }
    let count = starting.views().len();
    ready.store(true, std::sync::atomic::Ordering::Release);
    drop(starting);
    tracing::info!(
        "ready in {:.1?}: {count} pods; api on {}",
        t0.elapsed(),
        cfg.socket.display()
    );
    let _ = reports.send(Report::Ready { pods: count });

    // Reloads, crash-guard launches and reports run in a worker of their own: a reload may
    // compile modules or wait out a pre_stop grace period, and control must keep being read.
    let reload = Arc::new(tokio::sync::Notify::new());
    let worker_stop = CancellationToken::new();
    let worker = tokio::spawn(worker(
        pods.clone(),
        reload.clone(),
        worker_stop.clone(),
        reports.clone(),
    ));
    // Until Stop, or the control channel closes.
    while let Some(Control::Reload(why)) = control.recv().await {
        tracing::info!("{why}: reloading {}", cfg.pods_dir.display());
        reload.notify_one();
    }
    tracing::info!("stopping: modules stop, sandboxes and leases stay");
    let _ = reports.send(Report::Stopping);
    // The API drains (requests in flight finish, streams are given `server::DRAIN_LIMIT`)
    // while the modules stop.
    shutdown.cancel();
    // A reload under way is finished, not cut in half.
    worker_stop.cancel();
    let _ = worker.await;
    pods.lock().await.stop_all().await;
    let _ = server.await;
    if let Some(m) = metrics_server {
        let _ = m.await;
    }
    let _ = std::fs::remove_file(&cfg.socket);
    tracing::info!("stopped");
    Ok(())
}

/// The daemon's background work: reloads on request (coalesced: requests that arrive during
/// one make one more), and every second the crash guard's due launches and a
/// [`Report::Pods`] when the number of pods or of ready pods changed. Returns on `stop`,
/// between two pieces of work.
async fn worker(
    pods: api::Shared,
    reload: Arc<tokio::sync::Notify>,
    stop: CancellationToken,
    reports: UnboundedSender<Report>,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    // While an update is watched or a pod waits for its old sandbox to go: a rollback (or a
    // proof) at its moment, not up to a second late.
    let mut rollouts = tokio::time::interval(Duration::from_millis(100));
    rollouts.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // What the last report said: pods, and pods ready (none yet: Ready said pods only).
    let mut readiness = None;
    loop {
        tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            _ = reload.notified() => {
                // Problems are logged and shown by `ps`.
                let _ = pods::reload_beside(&pods).await;
            }
            _ = rollouts.tick() => pods.lock().await.rollout_tick().await,
            _ = tick.tick() => {
                let mut p = pods.lock().await;
                p.tick().await;
                let now = p.readiness();
                if readiness != Some(now) {
                    readiness = Some(now);
                    let _ = reports.send(Report::Pods { pods: now.0, ready: now.1 });
                }
            }
        }
    }
}

/// Raises the soft limit on open fds to the hard one (as Go daemons do): every pod's sockets
/// are this process's fds. Each container has its own cap (`open_files_limit`) below it.
fn raise_fd_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => tracing::debug!("open files limit raised from {soft} to {hard}"),
            Err(e) => tracing::warn!("cannot raise the open files limit from {soft}: {e}"),
        },
        Ok(_) => {}
        Err(e) => tracing::warn!("open files limit: {e}"),
    }
}

/// The daemon in process, on a socket and a control channel of the test's own (no root: its pods
/// directory holds no pod that would start).
#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::Client;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn serves_in_process_reloads_and_stops_when_told() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = Config {
            run_dir: dir.path().join("run"),
            state_dir: dir.path().join("state"),
            pods_dir: dir.path().join("pods"),
            socket: dir.path().join("api.sock"),
            // A bridge nobody has: the start's orphan scan finds nothing of the machine's.
            bridge: format!("ppu{}", std::process::id() % 1_000_000),
            egress: false,
            ..Config::default()
        };
        cfg.logs.dir = dir.path().join("logs");
        // A pod file whose module is outside the pods directory (so the directory's watcher
        // does not see it change): missing at first.
        let module = dir.path().join("app.wasm");
        std::fs::create_dir_all(&cfg.pods_dir).unwrap();
        std::fs::write(
            cfg.pods_dir.join("app.toml"),
            format!(
                "[pod]\nname = \"app\"\n[[containers]]\nname = \"app\"\nmodule = {:?}\n",
                module.display().to_string()
            ),
        )
        .unwrap();
        let listener = tokio::net::UnixListener::bind(&cfg.socket).unwrap();
        let (control, rx) = tokio::sync::mpsc::unbounded_channel();
        let (reports_tx, mut reports) = tokio::sync::mpsc::unbounded_channel();
        let daemon = tokio::spawn(serve(
            cfg.clone(),
            Executor::new().unwrap(),
            listener,
            rx,
            reports_tx,
            Instant::now(),
        ));
        assert_eq!(reports.recv().await, Some(Report::Ready { pods: 0 }));
        let client = Client::new(&cfg.socket);
        let problems = || async {
            let v = client.pods().await.unwrap();
            assert!(v.pods.is_empty(), "{v:?}");
            v.problems.join("\n")
        };
        let first = problems().await;
        assert!(
            first.contains("app.toml") && first.contains("cannot read"),
            "{first}"
        );

        // The module appears, as bytes that are no module: only a reload sees it.
        std::fs::write(&module, b"not wasm").unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(problems().await, first, "nothing reloaded yet");
        control.send(Control::Reload("test")).unwrap();
        let mut now = first.clone();
        for _ in 0..100 {
            now = problems().await;
            if now != first {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(
            now.contains("app.toml") && now.contains("not a WebAssembly module"),
            "{first} -> {now}"
        );

        control.send(Control::Stop).unwrap();
        while let Some(r) = reports.recv().await {
            if r == Report::Stopping {
                break;
            }
            assert!(matches!(r, Report::Pods { pods: 0, .. }), "{r:?}");
        }
        let ended = tokio::time::timeout(Duration::from_secs(30), daemon).await;
        assert!(matches!(ended, Ok(Ok(Ok(())))), "{ended:?}");
        assert!(!cfg.socket.exists(), "the socket is removed on stop");
    }
}
