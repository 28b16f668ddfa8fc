//! A running pod: its sandbox, plus one thread inside the pod's namespace that runs every container
//! of the pod under its supervisor.
//!
//! The pod thread enters the namespace before it builds its current-thread tokio runtime, and the
//! runtime's blocking-pool threads (used by WASI for blocking work) enter it in `on_thread_start`:
//! every socket a module opens therefore belongs to the pod, and all modules of a pod share one
//! loopback. The daemon's own threads never enter a pod namespace.

use crate::wasm::names::PodAddresses;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::config::DEFAULT_OPEN_FILES;
use crate::host::netns;
use crate::host::sandbox::{Sandbox, SandboxError};
use crate::logs::cri::LogSettings;
use crate::logs::{ContainerLog, LogSink};
use crate::run::lanes::{self, Lanes};
use crate::run::supervisor::{
    Container, Control, Final, ModuleRunner, RestartFloor, Status, supervise,
};
use crate::spec::{Kind, PodSpec, mount_of};
use crate::wasm::executor::{EnvFile, Executor, Mount, Prepared, RunSpec};

#[derive(Debug, thiserror::Error)]
pub enum PodError {
    #[error("pod {pod}: {source}")]
    Sandbox {
        pod: String,
        #[source]
        source: SandboxError,
    },
    #[error("pod {pod}: pod thread: {message}")]
    Thread { pod: String, message: String },
    #[error("pod {pod}: {source}")]
    Volume {
        pod: String,
        #[source]
        source: crate::host::volumes::VolumeError,
    },
    /// A start failed (`cause`), and so did removing what it had made (`undo`): both are said,
    /// the cause first (what is left is the next start's or the daemon's to collect).
    #[error("{cause}; and cleaning up after it: {undo}")]
    Undone {
        #[source]
        cause: Box<PodError>,
        undo: SandboxError,
    },
}

impl PodError {
    /// `self`, with what undoing the start left to say.
    fn undone(self, undo: Result<(), SandboxError>) -> PodError {
        match undo {
            Ok(()) => self,
            Err(undo) => PodError::Undone {
                cause: Box::new(self),
                undo,
            },
        }
    }
}

/// How a pod's containers are run, beyond their spec.
#[derive(Clone)]
pub struct Options {
    /// Every output line is also handed to this.
    pub sink: Option<LogSink>,
    /// Output goes to CRI log files here instead of the process log.
    pub logs: Option<LogSettings>,
    /// Containers that ended for good wait for a restart request instead of ending the pod (the
    /// daemon keeps pods until they are deleted).
    pub linger: bool,
    /// Open-handle cap of containers whose spec sets none (`limits.open_files`).
    pub open_files: Option<usize>,
    /// The shortest time between two restarts of the pod's containers, all together (at least
    /// [`crate::spec::MIN_BACKOFF`]; `quotas.restart_floor` for a pod of a user other than root).
    pub restart_floor: Duration,
    /// Where the containers' runs, ends, backoffs and probe results are told.
    pub events: crate::event::Events,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            sink: None,
            logs: None,
            linger: false,
            open_files: None,
            restart_floor: crate::spec::MIN_BACKOFF,
            events: crate::event::Events::default(),
        }
    }
}

/// A pod whose containers are running.
pub struct RunningPod {
    pub name: String,
    pub ip: Ipv4Addr,
    pub netns_path: PathBuf,
    /// How long creating the sandbox took (namespace, veth, lease, addresses, routes).
    pub sandbox_time: Duration,
    sandbox: Sandbox,
    controls: Vec<Control>,
    stop: CancellationToken,
    thread: Option<std::thread::JoinHandle<()>>,
    results: oneshot::Receiver<Result<Vec<Final>, String>>,
    finished: Option<Result<Vec<Final>, String>>,
}

/// How a pod ended.
#[derive(Debug)]
pub struct PodReport {
    pub name: String,
    pub ip: Ipv4Addr,
    pub containers: Vec<Final>,
    /// Errors while tearing the sandbox down (nothing is left half-removed silently).
    pub teardown: Option<SandboxError>,
}

impl PodReport {
    /// True when every container's last run exited 0.
    pub fn success(&self) -> bool {
        self.containers.iter().all(|c| {
            c.ended_on_stop
                .as_ref()
                .or(c.last.as_ref())
                .is_none_or(|o| o.success())
        })
    }
}

impl RunningPod {
    /// Creates the sandbox and starts every container of `spec` in it.
    pub async fn start(
        cfg: &Config,
        exec: &Executor,
        spec: &PodSpec,
        modules: Vec<Prepared>,
    ) -> Result<RunningPod, PodError> {
        Self::start_with_logs(cfg, exec, spec, modules, None).await
    }

    /// [`RunningPod::start`], with every output line handed to `sink` (instead of the process
    /// log).
    pub async fn start_with_logs(
        cfg: &Config,
        exec: &Executor,
        spec: &PodSpec,
        modules: Vec<Prepared>,
        sink: Option<LogSink>,
    ) -> Result<RunningPod, PodError> {
        let opts = Options {
            sink,
            ..Options::default()
        };
        Self::start_with(cfg, exec, spec, modules, opts).await
    }

    /// [`RunningPod::start`] with `opts` (`open_files` defaults to `limits.open_files`).
    pub async fn start_with(
        cfg: &Config,
        exec: &Executor,
        spec: &PodSpec,
        modules: Vec<Prepared>,
        opts: Options,
    ) -> Result<RunningPod, PodError> {
        let t0 = std::time::Instant::now();
        let sandbox = Sandbox::create(cfg, &spec.name, &spec.published_ports())
            .await
            .map_err(|source| PodError::Sandbox {
                pod: spec.name.clone(),
                source,
            })?;
        let opts = Options {
            open_files: opts.open_files.or(Some(cfg.limits.open_files)),
            ..opts
        };
        Self::launch(sandbox, t0.elapsed(), exec, spec, modules, &opts).await
    }

    /// Starts every container of `spec` in `sandbox` (made by [`Sandbox::create`] or
    /// [`Sandbox::recover`]). If that fails the sandbox is removed.
    pub async fn launch(
        sandbox: Sandbox,
        sandbox_time: Duration,
        exec: &Executor,
        spec: &PodSpec,
        modules: Vec<Prepared>,
        opts: &Options,
    ) -> Result<RunningPod, PodError> {
        let dirs = match crate::host::volumes::prepare(sandbox.config(), spec) {
            Ok(dirs) => dirs,
            Err(source) => {
                let pod = spec.name.clone();
                return Err(PodError::Volume { pod, source }.undone(sandbox.destroy().await));
            }
        };
        let pod_names: Arc<dyn PodAddresses> =
            Arc::new(crate::host::ipam::Ipam::new(sandbox.config()));
        let lookups = crate::wasm::names::Lookups::default();
        let binds = crate::wasm::binds::Binds::new(&spec.name, opts.events.clone()).with_handoff();
        // The pod's threads: its own, and one more per core its containers' limits ask for.
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let limits: Vec<Option<u32>> = spec.containers.iter().map(|c| c.cpu_limit).collect();
        let lane_of = lanes::placement(&limits, cores);
        let lane_count = lane_of.iter().max().map_or(1, |m| m + 1);
        // Siblings are counted per thread: a spinner slows only those it shares a thread with.
        let siblings: Vec<_> = (0..lane_count)
            .map(|l| crate::wasm::ticker::Siblings::of(lane_of.iter().filter(|&&x| x == l).count()))
            .collect();
        let stop = CancellationToken::new();
        let (tx, results) = oneshot::channel();
        let mut controls = Vec::new();
        let mut containers = Vec::new();
        let floor = RestartFloor::new(opts.restart_floor.max(crate::spec::MIN_BACKOFF));
        let blocking = crate::wasm::cpu::Blocking::default();
        for ((c, module), lane) in spec.containers.iter().zip(modules).zip(lane_of) {
            let mut log = ContainerLog::new(&spec.name, &c.name, opts.sink.clone());
            if let Some(settings) = &opts.logs {
                match settings.open(&spec.name, &c.name) {
                    Ok(f) => log = log.with_file(Arc::new(f)),
                    // A container runs without its log file (a read-only or full state dir):
                    // its lines go to the daemon's own log instead.
                    Err(e) => tracing::warn!(
                        "{}/{}: log file {}: {e}; its output goes to this log instead",
                        spec.name,
                        c.name,
                        settings.path(&spec.name, &c.name).display()
                    ),
                }
            }
            // A plain init container's supervisor ends with its run: the sequence goes on.
            let control = Control::new(&c.name, c.kind, opts.linger && c.kind != Kind::Init)
                .with_events(opts.events.clone(), &spec.name);
            let run = RunSpec {
                name: c.name.clone(),
                args: c.args.clone(),
                env: c.env.clone(),
                memory_limit: c.memory_limit,
                open_files: c
                    .open_files
                    .or(opts.open_files)
                    .unwrap_or(DEFAULT_OPEN_FILES),
                mounts: c
                    .volume_mounts
                    .iter()
                    .map(|m| Mount {
                        host: dirs[&m.volume].path(),
                        hold: Some(dirs[&m.volume].fd()),
                        guest: m.mount_path.clone(),
                        read_only: m.read_only,
                    })
                    .collect(),
                env_files: c
                    .env_from_files
                    .iter()
                    .filter_map(|e| {
                        let (m, rel) = mount_of(&c.volume_mounts, &e.path)?;
                        Some(EnvFile {
                            var: e.var.clone(),
                            path: e.path.clone(),
                            dir: dirs[&m.volume].path(),
                            hold: Some(dirs[&m.volume].fd()),
                            rel,
                        })
                    })
                    .collect(),
                log,
                usage: control.usage(),
                pod_names: Some(pod_names.clone()),
                lookups: lookups.clone(),
                binds: binds.clone(),
                siblings: siblings[lane].clone(),
            };
            controls.push(control.clone());
            let container = Container {
                runner: Box::new(ModuleRunner {
                    exec: exec.clone(),
                    module,
                }),
                run,
                policy: c.restart_policy,
                backoff: spec.backoff,
                probes: c.probes.clone(),
                cpu_limit: c.cpu_limit,
                pre_stop: c.pre_stop.clone(),
                grace: spec.termination_grace_period,
                floor: floor.clone(),
                blocking: blocking.clone(),
            };
            containers.push((c.kind, container, control, lane));
        }
        // The blocking threads' CPU is the pod's containers' (their file I/O), metered with
        // theirs.
        let hooks = {
            let (started, stopped) = (blocking.clone(), blocking);
            netns::ThreadHooks {
                started: Some(Arc::new(move || started.thread_started())),
                stopped: Some(Arc::new(move || stopped.thread_stopped())),
            }
        };
        let lanes = match Lanes::start(&spec.name, lane_count, &sandbox.netns, &hooks).await {
            Ok(l) => l,
            Err(e) => {
                let cause = PodError::Thread {
                    pod: spec.name.clone(),
                    message: format!("a lane thread: {e}"),
                };
                return Err(cause.undone(sandbox.destroy().await));
            }
        };
        let threads = lanes.count();
        let thread = {
            let stop = stop.clone();
            netns::spawn(
                format!("pod-{}", spec.name),
                sandbox.netns.clone(),
                hooks,
                move || async move {
                    let mut lanes = lanes;
                    let r = run_containers(containers, stop, &lanes).await;
                    lanes.stop_now();
                    r
                },
                move |r| {
                    let r = r.map_err(|e| format!("pod thread: {e}")).and_then(|r| r);
                    let _ = tx.send(r);
                },
            )
        };
        let thread = match thread {
            Ok(t) => t,
            Err(e) => {
                let cause = PodError::Thread {
                    pod: spec.name.clone(),
                    message: e.to_string(),
                };
                return Err(cause.undone(sandbox.destroy().await));
            }
        };
        tracing::info!(
            "pod {} started: ip={} netns={} containers={} threads={threads} sandbox={:.1?}",
            spec.name,
            sandbox.ip,
            sandbox.netns_path.display(),
            spec.containers.len(),
            sandbox_time
        );
        Ok(RunningPod {
            name: spec.name.clone(),
            ip: sandbox.ip,
            netns_path: sandbox.netns_path.clone(),
            sandbox_time,
            sandbox,
            controls,
            stop,
            thread: Some(thread),
            results,
            finished: None,
        })
    }

    /// When its sandbox was created (the same after a daemon restart that recovered it).
    pub fn created(&self) -> std::time::SystemTime {
        self.sandbox.created()
    }

    /// The namespace's identity (inode), stable across container restarts.
    pub fn netns_inode(&self) -> std::io::Result<u64> {
        netns::inode(&*self.sandbox.netns)
    }

    /// Every container's status, in spec order.
    pub fn statuses(&self) -> Vec<Status> {
        self.controls.iter().map(Control::status).collect()
    }

    /// Restarts container `name` in place (same namespace, same IP). False if there is no such
    /// container.
    pub fn restart_container(&self, name: &str) -> bool {
        match self.controls.iter().find(|c| c.status().name == name) {
            Some(c) => {
                c.restart();
                true
            }
            None => false,
        }
    }

    /// Waits until every container has ended for good (by its restart policy).
    pub async fn wait(&mut self) {
        if self.finished.is_none() {
            let r = (&mut self.results)
                .await
                .unwrap_or_else(|_| Err("pod thread died".into()));
            self.finished = Some(r);
        }
    }

    /// Stops the containers (if still running), joins the pod thread and removes the sandbox.
    pub async fn stop(self) -> Result<PodReport, PodError> {
        self.stop_and(true).await
    }

    /// Stops the containers but keeps the sandbox (namespace, veth, lease) for
    /// [`Sandbox::recover`]: the pod keeps its IP across a restart of the daemon.
    pub async fn stop_keep_sandbox(self) -> Result<PodReport, PodError> {
        self.stop_and(false).await
    }

    async fn stop_and(mut self, remove: bool) -> Result<PodReport, PodError> {
        self.stop.cancel();
        let thread = self.thread.take().expect("joined once");
        let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        self.wait().await;
        let containers = match self.finished.take().expect("waited") {
            Ok(finals) => finals,
            Err(message) => {
                if remove {
                    let _ = self.sandbox.destroy().await;
                }
                return Err(PodError::Thread {
                    pod: self.name,
                    message,
                });
            }
        };
        let teardown = if remove {
            self.sandbox.destroy().await.err()
        } else {
            tracing::info!("pod {} stopped; sandbox kept (ip {})", self.name, self.ip);
            None
        };
        if let Some(e) = &teardown {
            tracing::error!("pod {}: teardown: {e}", self.name);
        } else if remove {
            tracing::info!("pod {} removed", self.name);
        }
        Ok(PodReport {
            name: self.name,
            ip: self.ip,
            containers,
            teardown,
        })
    }
}

/// Runs a pod's containers in Kubernetes' order, on the pod thread: each init container to
/// completion and each native sidecar until it has started (its startup probe passed), one by
/// one; then the app containers, together. Returns when the app containers have ended for good
/// (or an init container failed for good), or on `stop`: app containers stop first, then the
/// sidecars in reverse order. The finals are in spec order; a container that never ran has
/// `last: None`.
async fn run_containers(
    containers: Vec<(Kind, Container, Control, usize)>,
    stop: CancellationToken,
    lanes: &Lanes,
) -> Result<Vec<Final>, String> {
    let names: Vec<String> = containers.iter().map(|c| c.1.run.name.clone()).collect();
    let mut finals: Vec<Option<Final>> = vec![None; containers.len()];
    let joined =
        |r: Result<Final, tokio::task::JoinError>| r.map_err(|e| format!("supervisor: {e}"));
    let mut sidecars = Vec::new();
    let mut apps = Vec::new();
    let apps_stop = CancellationToken::new();
    let mut go_on = true;
    for (i, (kind, container, control, lane)) in containers.into_iter().enumerate() {
        if !go_on || stop.is_cancelled() {
            break;
        }
        match kind {
            Kind::App => {
                let task = lanes.spawn(lane, supervise(container, apps_stop.clone(), control));
                apps.push((i, task));
            }
            Kind::Sidecar => {
                let own = CancellationToken::new();
                let task = lanes.spawn(lane, supervise(container, own.clone(), control.clone()));
                sidecars.push((i, own, task));
                tokio::select! {
                    _ = control.until(|s| s.started) => {}
                    _ = stop.cancelled() => go_on = false,
                }
            }
            Kind::Init => {
                let id = container.run.log.id().to_string();
                let own = CancellationToken::new();
                let mut task =
                    lanes.spawn(lane, supervise(container, own.clone(), control.clone()));
                let f = tokio::select! {
                    f = &mut task => joined(f)?,
                    _ = stop.cancelled() => {
                        own.cancel();
                        joined(task.await)?
                    }
                };
                // Ended for good: exited 0, or failed under a policy of Never.
                go_on = f.last.as_ref().is_some_and(|o| o.success()) && !f.stopped;
                if !go_on && !f.stopped {
                    tracing::warn!(
                        "{id}: init container failed for good: the pod's containers do not start"
                    );
                }
                finals[i] = Some(f);
            }
        }
    }
    if !apps.is_empty() {
        let index: Vec<usize> = apps.iter().map(|a| a.0).collect();
        let all = futures::future::join_all(apps.into_iter().map(|(_, t)| t));
        tokio::pin!(all);
        let ended = tokio::select! {
            ended = &mut all => Some(ended),
            _ = stop.cancelled() => None,
        };
        let ended = match ended {
            Some(ended) => ended,
            None => {
                apps_stop.cancel();
                all.await
            }
        };
        for (i, f) in index.into_iter().zip(ended) {
            finals[i] = Some(joined(f)?);
        }
    }
    for (i, own, task) in sidecars.into_iter().rev() {
        own.cancel();
        finals[i] = Some(joined(task.await)?);
    }
    Ok(finals
        .into_iter()
        .zip(names)
        .map(|(f, name)| {
            f.unwrap_or(Final {
                name,
                last: None,
                restarts: 0,
                stopped: false,
                ended_on_stop: None,
            })
        })
        .collect())
}

/// The pods a guest can find by name are its bridge's leases, read at each lookup (a re-created
/// pod is found at its new address). An unreadable lease file is no pod: the name goes to the
/// host.
impl PodAddresses for crate::host::ipam::Ipam {
    fn address(&self, name: &str) -> Option<Ipv4Addr> {
        self.leases().ok()?.get(name).copied()
    }
}
