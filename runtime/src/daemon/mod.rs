//! `peapod daemon`: many pods at once, kept equal to the pods directory and to what was applied
//! through the API, controlled over a unix socket, under systemd.
//!
//! Start-up: take the daemon lock, serve the API (requests wait until the pods are up), remove
//! orphaned sandbox parts, take over the sandboxes the last run left (same namespace, same IP)
//! and start the pods, then tell systemd `READY=1`. The main loop reloads on SIGHUP and on changes
//! in the pods directory, and pings the watchdog. SIGTERM/SIGINT: `STOPPING=1`, the modules stop,
//! the sandboxes stay (a restarted daemon gives every pod its IP back).

mod api;
mod crashguard;
mod host;
mod load;
mod pods;
mod server;
mod store;

use std::fs::File;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use nix::fcntl::Flock;
use notify::Watcher;
use sd_notify::NotifyState;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use crate::client::Client;
use crate::config::Config;
use crate::wasm::executor::Executor;
use pods::Pods;

/// The group that may use the API socket besides root (if it exists).
pub const SOCKET_GROUP: &str = "peapod";

/// What the daemon is told while it runs: by signals under systemd ([`run`]), by a channel of
/// the caller's in process ([`serve`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// Re-read the pods directory; the reason is logged (`SIGHUP`).
    Reload(&'static str),
    /// Stop the modules and return; the sandboxes stay.
    Stop,
}

/// Runs the daemon until SIGTERM or SIGINT (SIGHUP reloads): takes the daemon lock, binds the
/// API socket, then [`serve`]s.
pub async fn run(cfg: Config, exec: Executor) -> anyhow::Result<()> {
    let t0 = Instant::now();
    let _lock = lock_daemon(&cfg)?;
    raise_fd_limit();
    let control = signals()?;
    let listener = bind(&cfg.socket)?;
    serve(cfg, exec, listener, control, t0).await
}

/// SIGTERM and SIGINT as [`Control::Stop`], SIGHUP as [`Control::Reload`], handled from now on.
fn signals() -> anyhow::Result<tokio::sync::mpsc::UnboundedReceiver<Control>> {
    let mut term = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("SIGINT handler")?;
    let mut hup = signal(SignalKind::hangup()).context("SIGHUP handler")?;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let c = tokio::select! {
                _ = term.recv() => Control::Stop,
                _ = int.recv() => Control::Stop,
                _ = hup.recv() => Control::Reload("SIGHUP"),
            };
            if tx.send(c).is_err() {
                return;
            }
        }
    });
    Ok(rx)
}

/// The daemon on `listener` until `control` says [`Control::Stop`] (or is closed): the pods
/// started (the sandboxes the last run left taken over), the API served, the pods directory
/// watched, systemd notified. The caller owns the socket and what controls the daemon (as
/// mini-redis' `server::run`), so a test runs it in process; `t0` is when the start began.
pub async fn serve(
    cfg: Config,
    exec: Executor,
    listener: tokio::net::UnixListener,
    mut control: tokio::sync::mpsc::UnboundedReceiver<Control>,
    t0: Instant,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(&cfg.pods_dir)
        .with_context(|| format!("create {}", cfg.pods_dir.display()))?;
    for d in [&cfg.state_dir, &cfg.logs.dir] {
        crate::durable::private_dir(d).with_context(|| format!("create {} (0700)", d.display()))?;
    }
    let (changed_tx, mut changed) = tokio::sync::mpsc::unbounded_channel();
    let mut watcher = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
        if ev.is_ok_and(|e| !e.kind.is_access()) {
            let _ = changed_tx.send(());
        }
    })
    .context("watch the pods directory")?;
    watcher
        .watch(&cfg.pods_dir, notify::RecursiveMode::NonRecursive)
        .with_context(|| format!("watch {}", cfg.pods_dir.display()))?;

    let pods = Arc::new(Mutex::new(Pods::new(cfg.clone(), exec)));
    // Hold the pods while starting them: API requests wait for the start-up to finish.
    let mut starting = pods.clone().lock_owned().await;
    let shutdown = CancellationToken::new();
    let ready = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let server = tokio::spawn(server::serve(
        listener,
        api::router(pods.clone(), ready.clone(), cfg.quotas.follow_streams),
        server::ConnBounds {
            max: cfg.limits.api_connections,
            per_user: cfg.quotas.api_connections,
        },
        shutdown.clone(),
    ));
    starting.start_all().await;
    // The firewall is derived state (a reboot, a `nft flush ruleset` or a stop between a
    // lease's change and its chain's loses it): made again from the leases of the recovered
    // pods.
    if let Err(e) = crate::host::ipam::Ipam::new(&cfg).sync_firewall() {
        tracing::warn!("firewall: {e}");
    }
    let count = starting.views().len();
    ready.store(true, std::sync::atomic::Ordering::Release);
    drop(starting);
    Client::new(&cfg.socket)
        .get("/v1/healthz")
        .await
        .context("the API does not answer on its own socket")?;
    let status = format!("{count} pods; api on {}", cfg.socket.display());
    notify(&[NotifyState::Ready, NotifyState::Status(&status)]);
    tracing::info!("ready in {:.1?}: {status}", t0.elapsed());

    let mut watchdog = watchdog_interval().map(tokio::time::interval);
    // Reloads, crash-guard launches and STATUS= lines run in a worker of their own: a reload
    // may compile modules or wait out a pre_stop grace period, and the main loop must keep
    // pinging the watchdog meanwhile.
    let reload = Arc::new(tokio::sync::Notify::new());
    let worker_stop = CancellationToken::new();
    let worker = tokio::spawn(worker(
        pods.clone(),
        reload.clone(),
        worker_stop.clone(),
        cfg.socket.clone(),
    ));
    loop {
        tokio::select! {
            c = control.recv() => match c {
                Some(Control::Reload(why)) => {
                    tracing::info!("{why}: reloading {}", cfg.pods_dir.display());
                    reload.notify_one();
                }
                Some(Control::Stop) | None => break,
            },
            Some(()) = changed.recv() => {
                // Editors write in several steps: wait for the directory to settle.
                tokio::time::sleep(Duration::from_millis(200)).await;
                while changed.try_recv().is_ok() {}
                tracing::info!("{} changed: reloading", cfg.pods_dir.display());
                reload.notify_one();
            }
            _ = async { watchdog.as_mut().expect("some").tick().await }, if watchdog.is_some() => {
                notify(&[NotifyState::Watchdog]);
            }
        }
    }
    tracing::info!("stopping: modules stop, sandboxes and leases stay");
    notify(&[NotifyState::Stopping]);
    drop(watcher);
    shutdown.cancel();
    // A reload under way is finished, not cut in half.
    worker_stop.cancel();
    let _ = worker.await;
    pods.lock().await.stop_all().await;
    // Streams (logs -f) may keep the server busy: give it a moment, then go.
    let _ = tokio::time::timeout(Duration::from_secs(2), server).await;
    let _ = std::fs::remove_file(&cfg.socket);
    tracing::info!("stopped");
    Ok(())
}

/// The daemon's background work: reloads on request (coalesced: requests that arrive during
/// one make one more), and every second the crash guard's due launches and a `STATUS=` line to
/// systemd when the number of pods or of ready pods changed. Returns on `stop`, between two
/// pieces of work.
async fn worker(
    pods: api::Shared,
    reload: Arc<tokio::sync::Notify>,
    stop: CancellationToken,
    socket: std::path::PathBuf,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    // What the last STATUS= line said: pods, and pods ready (none yet: READY=1 said pods only).
    let mut readiness = None;
    loop {
        tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            _ = reload.notified() => {
                // Problems are logged and shown by `ps`.
                let _ = pods::reload_beside(&pods).await;
            }
            _ = tick.tick() => {
                let mut p = pods.lock().await;
                p.tick().await;
                let now = p.readiness();
                if readiness != Some(now) {
                    readiness = Some(now);
                    let status =
                        format!("{} pods, {} ready; api on {}", now.0, now.1, socket.display());
                    notify(&[NotifyState::Status(&status)]);
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

fn notify(state: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(false, state) {
        tracing::warn!("sd_notify: {e}");
    }
}

/// Half the watchdog period systemd asked for, if it asked: `WATCHDOG_USEC`, for this process
/// when `WATCHDOG_PID` names it or is absent (as sd_watchdog_enabled(3) reads them).
fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    if let Ok(pid) = std::env::var("WATCHDOG_PID")
        && pid.parse() != Ok(std::process::id())
    {
        return None;
    }
    (usec > 0).then(|| Duration::from_micros(usec / 2))
}

fn lock_daemon(cfg: &Config) -> anyhow::Result<Flock<File>> {
    std::fs::create_dir_all(&cfg.run_dir)
        .with_context(|| format!("create {}", cfg.run_dir.display()))?;
    let path = cfg.run_dir.join("daemon.lock");
    crate::durable::lock(&path, false)
        .with_context(|| format!("lock {}", path.display()))?
        .ok_or_else(|| {
            anyhow::anyhow!(
                "another peapod daemon is running with run_dir {} (its lock {} is held)",
                cfg.run_dir.display(),
                path.display()
            )
        })
}

/// Binds the API socket: mode 0660, group `peapod` when that group exists. A socket file left by
/// a dead daemon is replaced; one a live daemon answers on is not.
fn bind(path: &Path) -> anyhow::Result<tokio::net::UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            bail!("{}: another daemon answers on this socket", path.display());
        }
        std::fs::remove_file(path).with_context(|| format!("remove stale {}", path.display()))?;
    }
    let listener =
        tokio::net::UnixListener::bind(path).with_context(|| format!("bind {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
        .with_context(|| format!("chmod {}", path.display()))?;
    if let Ok(Some(group)) = nix::unistd::Group::from_name(SOCKET_GROUP) {
        nix::unistd::chown(path, Some(nix::unistd::Uid::from_raw(0)), Some(group.gid))
            .with_context(|| format!("chown {} to root:{SOCKET_GROUP}", path.display()))?;
    }
    Ok(listener)
}

/// The daemon in process, on a socket and a control channel of the test's own (no root: its pods
/// directory holds no pod that would start).
#[cfg(test)]
mod tests {
    use super::*;

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
        let daemon = tokio::spawn(serve(
            cfg.clone(),
            Executor::new().unwrap(),
            listener,
            rx,
            Instant::now(),
        ));
        let client = Client::new(&cfg.socket);
        let problems = || async {
            let v = client.get("/v1/pods").await.unwrap();
            assert_eq!(v["pods"], serde_json::json!([]), "{v}");
            v["problems"].to_string()
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
        let ended = tokio::time::timeout(Duration::from_secs(30), daemon).await;
        assert!(matches!(ended, Ok(Ok(Ok(())))), "{ended:?}");
        assert!(!cfg.socket.exists(), "the socket is removed on stop");
    }
}
