//! `peapod daemon`: the process around the library's [`peapod::daemon::serve`] — the daemon
//! lock, the API socket, signals, the pods directory's watcher, and systemd's notifications and
//! watchdog.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use notify::Watcher;
use peapod::client::Client;
use peapod::config::Config;
use peapod::daemon::{Control, Report, SOCKET_GROUP};
use peapod::wasm::executor::Executor;
use sd_notify::NotifyState;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};

use super::EXIT_OK;

/// Run pods as a service: the pods directory and the pods applied through the API, kept running;
/// the control API on a unix socket; systemd notification and watchdog.
///
/// SIGHUP (or any change in the pods directory) reloads the pods directory. SIGTERM stops the
/// modules but keeps every pod's namespace and IP for the next start.
#[derive(clap::Args, Debug)]
pub(super) struct Daemon {}

impl Daemon {
    pub(super) fn exec(self, config: Config) -> anyhow::Result<ExitCode> {
        let exec = Executor::new()
            .map_err(|e| anyhow::anyhow!("{e:#}"))
            .context("create wasm engine")?
            .with_cache(&config.state_dir);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .context("create runtime")?;
        let r = rt.block_on(run(config, exec));
        // A pod left stopping past limits.stop_timeout has its thread's join on a blocking
        // task: the exit does not wait for it (its sandbox is kept, as a kill would keep it).
        rt.shutdown_timeout(Duration::from_millis(500));
        r?;
        Ok(ExitCode::from(EXIT_OK))
    }
}

/// The daemon until SIGTERM or SIGINT (SIGHUP and changes of the pods directory reload).
async fn run(cfg: Config, exec: Executor) -> anyhow::Result<()> {
    let t0 = Instant::now();
    let _lock = peapod::daemon::lock(&cfg)?;
    let (control_tx, control) = tokio::sync::mpsc::unbounded_channel();
    signals(control_tx.clone())?;
    let listener = bind(&cfg.socket)?;
    std::fs::create_dir_all(&cfg.pods_dir)
        .with_context(|| format!("create {}", cfg.pods_dir.display()))?;
    let _watcher = watch(&cfg.pods_dir, control_tx.clone())?;
    let (reports_tx, reports) = tokio::sync::mpsc::unbounded_channel();
    let told = tokio::spawn(tell_systemd(reports, cfg.socket.clone(), control_tx));
    // The board as a Kubernetes node: a client of this daemon's API (ends with the runtime).
    #[cfg(feature = "kubernetes")]
    if let Some(node) = cfg.kubernetes.clone() {
        tokio::spawn(peapod::node::run(node, cfg.clone()));
    }
    let served = peapod::daemon::serve(cfg, exec, listener, control, reports_tx, t0).await;
    // The reports' channel closed with `serve`: what systemd was told ends with it.
    let told = told.await.context("the systemd notifier")?;
    served.and(told)
}

/// SIGTERM and SIGINT as [`Control::Stop`], SIGHUP as [`Control::Reload`], handled from now on.
fn signals(tx: UnboundedSender<Control>) -> anyhow::Result<()> {
    let mut term = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("SIGINT handler")?;
    let mut hup = signal(SignalKind::hangup()).context("SIGHUP handler")?;
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
    Ok(())
}

/// Watches the pods directory: a change (editors write in several steps: once it has settled
/// for 200 ms) is a [`Control::Reload`]. Watched while the returned watcher lives.
fn watch(
    dir: &Path,
    control: UnboundedSender<Control>,
) -> anyhow::Result<notify::RecommendedWatcher> {
    let (changed_tx, mut changed) = tokio::sync::mpsc::unbounded_channel();
    let mut watcher = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
        if ev.is_ok_and(|e| !e.kind.is_access()) {
            let _ = changed_tx.send(());
        }
    })
    .context("watch the pods directory")?;
    watcher
        .watch(dir, notify::RecursiveMode::NonRecursive)
        .with_context(|| format!("watch {}", dir.display()))?;
    tokio::spawn(async move {
        while changed.recv().await.is_some() {
            tokio::time::sleep(Duration::from_millis(200)).await;
            while changed.try_recv().is_ok() {}
            if control
                .send(Control::Reload("the pods directory changed"))
                .is_err()
            {
                return;
            }
        }
    });
    Ok(watcher)
}

/// Tells systemd what the daemon reports: `READY=1` once the API answers on its own socket (or
/// stops the daemon when it does not), `STATUS=` lines, `STOPPING=1`, and the watchdog's pings
/// in between. Returns when the reports end.
async fn tell_systemd(
    mut reports: UnboundedReceiver<Report>,
    socket: std::path::PathBuf,
    control: UnboundedSender<Control>,
) -> anyhow::Result<()> {
    // Pinged from READY=1 to STOPPING=1.
    let mut watchdog: Option<tokio::time::Interval> = None;
    let mut failed = None;
    loop {
        let report = tokio::select! {
            r = reports.recv() => match r {
                Some(r) => r,
                None => return failed.map_or(Ok(()), Err),
            },
            _ = async { watchdog.as_mut().expect("some").tick().await }, if watchdog.is_some() => {
                notify(&[NotifyState::Watchdog]);
                continue;
            }
        };
        match report {
            Report::Ready { pods } => {
                if let Err(e) = Client::new(&socket).health().await {
                    failed = Some(anyhow::anyhow!(
                        "the API does not answer on its own socket {}: {e:#}",
                        socket.display()
                    ));
                    let _ = control.send(Control::Stop);
                    continue;
                }
                let status = format!("{pods} pods; api on {}", socket.display());
                notify(&[NotifyState::Ready, NotifyState::Status(&status)]);
                watchdog = watchdog_interval().map(tokio::time::interval);
            }
            Report::Pods { pods, ready } => {
                let status = format!("{pods} pods, {ready} ready; api on {}", socket.display());
                notify(&[NotifyState::Status(&status)]);
            }
            Report::Stopping => {
                notify(&[NotifyState::Stopping]);
                watchdog = None;
            }
        }
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
