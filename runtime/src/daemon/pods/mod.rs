//! The daemon's pods: what should run (the pods directory and the pods created through the API)
//! and what runs, kept equal.
//!
//! A pod is identified by its name. Its *digest* covers its parsed spec and its modules' bytes
//! ([`super::load`]): when either changes, the pod is re-created (new sandbox, new IP). A pod whose start failed stays
//! listed with its error and is tried again on the next reload. A pod the daemon died for, more
//! than once in a row, waits out a backoff before it starts ([`super::crashguard`]).
//!
//! A running pod is stopped by a task of its own, outside the lock: its `pre_stop` hooks may
//! take the whole grace period, and `ps`, `logs` and the other pods' requests go on meanwhile
//! (`ps` shows it as terminating). A pod of the same name (a re-create, a delete then an apply)
//! waits as "starting" until that stop is done, then gets its new sandbox: [`settle`] (the
//! caller, without the lock) or [`Pods::tick`] starts it.

use super::events::Recorder;
use super::metrics::Metrics;
use crate::event::Events;
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use tokio::time::Instant;

mod rollout;
#[cfg(test)]
mod tests;
mod view;

pub(super) use view::PodView;

use super::crashguard::CrashGuard;
use super::host::{Host, Kernel, Running};
pub(super) use super::load::{Loaded, Origin, ReloadPlan, plan, plan_reload, plan_stored};
use super::load::{compile, parse, pod_files};
use super::store::{Record, Store};
use crate::admission::Admitted;
use crate::caller::Caller;
use crate::config::Config;
use crate::run::pod::Options;
use crate::spec::{PodSpec, SpecError};
use crate::wasm::executor::{Executor, Prepared};

/// A reload of the shared pods that reads and compiles without holding their lock (the API
/// answers meanwhile), then commits under it. Returns the problems, as [`Pods::reload`] does.
pub(super) async fn reload_beside(pods: &tokio::sync::Mutex<Pods>) -> Vec<String> {
    // One reload at a time from plan to commit: a plan of an older directory never lands after
    // a newer one.
    static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let _turn = ONE_AT_A_TIME.lock().await;
    let (cfg, exec) = pods.lock().await.planner();
    let problems = match tokio::task::spawn_blocking(move || plan_reload(&cfg, &exec)).await {
        Ok(plan) => pods.lock().await.commit_reload(plan).await,
        Err(e) => return vec![format!("reload: {e}")],
    };
    // The pods it re-created start once their old sandboxes are gone.
    settle(pods, None).await;
    problems
}

/// Waits, without holding the lock, for the stops under way of pod `name` (of every pod: `None`),
/// then starts the pods that waited for them. Stops that begin meanwhile are left to their own
/// callers (and to [`Pods::tick`]).
pub(super) async fn settle(pods: &tokio::sync::Mutex<Pods>, name: Option<&str>) {
    let stops = pods.lock().await.stops(name);
    if stops.is_empty() {
        return;
    }
    futures::future::join_all(stops.into_iter().map(Stopped::wait)).await;
    pods.lock().await.launch_pending(name).await;
}

/// The end of a pod's stop, to wait for without the lock.
#[derive(Clone)]
pub(super) struct Stopped(tokio::sync::watch::Receiver<bool>);

impl Stopped {
    pub(super) async fn wait(mut self) {
        // An error: the task is gone (it ended), which is done too.
        let _ = self.0.wait_for(|done| *done).await;
    }

    fn is_done(&self) -> bool {
        *self.0.borrow() || self.0.has_changed().is_err()
    }
}

/// A pod being stopped by its task: what `ps` shows of it until it is gone.
struct Stopping {
    done: Stopped,
    origin: Origin,
    created: SystemTime,
    ip: Option<Ipv4Addr>,
    netns: Option<PathBuf>,
}

/// What becomes of a removed pod's logs.
#[derive(Clone, Copy)]
enum Logs {
    /// Deleted with the pod.
    Drop,
    /// Kept as the previous sandbox's (a re-create).
    Keep,
}

struct Entry {
    origin: Origin,
    /// Whose it is: the uid of the client that applied it (root's for the pods directory's).
    owner: u32,
    spec: PodSpec,
    modules: Vec<Prepared>,
    digest: String,
    created: SystemTime,
    running: Option<Box<dyn Running>>,
    error: Option<String>,
    /// Held back by the crash guard until then.
    delayed: Option<Instant>,
    /// An applied revision not proven yet ([`rollout`]).
    rollout: Option<rollout::Rollout>,
}

pub(super) use crate::wire::Action;

/// Who uses one stored module of a registry.
#[derive(Debug, Default)]
pub(super) struct ImageUse {
    /// The pods running it.
    pub running: BTreeSet<String>,
    /// The pods whose history keeps it (a rollback or `rollout undo` may need it).
    pub kept: BTreeSet<String>,
    /// A reference pinned to it (`REG/REPO:TAG@sha256:...`), as a pod resolved it.
    pub pinned: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub(super) enum OpError {
    #[error("no pod named {0:?}")]
    NotFound(String),
    #[error("pod {pod:?} has no container named {container:?} (it has: {have})")]
    NoContainer {
        pod: String,
        container: String,
        have: String,
    },
    #[error("{0}")]
    Conflict(String),
    /// A caller other than root acting on a pod that is not theirs.
    #[error("{0}")]
    Forbidden(String),
    #[error(transparent)]
    Invalid(#[from] SpecError),
    /// Does not fit beside the pods admitted already (the board's memory, the caller's quotas).
    #[error("{0}")]
    Unfit(String),
    #[error("{0}")]
    Failed(String),
}

pub(super) struct Pods {
    cfg: Config,
    exec: Executor,
    /// The machine: sandboxes and modules ([`Kernel`], or a test's fake).
    host: std::sync::Arc<dyn Host>,
    store: Store,
    entries: BTreeMap<String, Entry>,
    /// Problems of the last reload of the pods directory (file -> message).
    problems: BTreeMap<PathBuf, String>,
    guard: CrashGuard,
    /// Pods whose stop is under way (finished ones are swept by [`Pods::tick`]).
    stopping: BTreeMap<String, Stopping>,
    /// What happened, for `peapod events` and `describe`.
    recorder: std::sync::Arc<Recorder>,
    /// Records into `recorder` (and counts in `metrics`).
    events: Events,
    /// What `/metrics` says was observed.
    metrics: std::sync::Arc<Metrics>,
}

impl Pods {
    pub(super) fn new(cfg: Config, exec: Executor) -> Self {
        let host = Kernel {
            cfg: cfg.clone(),
            exec: exec.clone(),
        };
        Self::with_host(cfg, exec, std::sync::Arc::new(host))
    }

    /// Pods on `host` (a test's fake).
    pub(super) fn with_host(cfg: Config, exec: Executor, host: std::sync::Arc<dyn Host>) -> Self {
        let recorder = std::sync::Arc::new(Recorder::load(&cfg.state_dir));
        let metrics = std::sync::Arc::new(Metrics::new());
        let events = {
            let (recorder, metrics) = (recorder.clone(), metrics.clone());
            Events::new(move |note| {
                metrics.note(&note);
                recorder.record(note);
            })
        };
        Pods {
            events,
            recorder,
            metrics,
            host,
            store: Store::new(&cfg.state_dir),
            guard: CrashGuard::load(&cfg.state_dir),
            cfg,
            exec,
            entries: BTreeMap::new(),
            problems: BTreeMap::new(),
            stopping: BTreeMap::new(),
        }
    }

    /// What `/metrics` says was observed.
    pub(super) fn metrics(&self) -> &std::sync::Arc<Metrics> {
        &self.metrics
    }

    /// The record of what happened.
    pub(super) fn recorder(&self) -> &std::sync::Arc<Recorder> {
        &self.recorder
    }

    pub(super) fn log_settings(&self) -> &crate::logs::cri::LogSettings {
        &self.cfg.logs
    }

    /// At daemon start: removes the sandbox parts of pods that are neither in the pods directory
    /// nor stored (orphans), then starts the stored pods and the directory's, taking over the
    /// sandboxes they left (same namespace, same IP).
    pub(super) async fn start_all(&mut self) {
        let (records, bad) = self.store.load_all();
        for b in bad {
            tracing::error!("stored pod: {b}");
        }
        let mut keep: BTreeSet<String> = records.iter().map(|(n, _)| n.clone()).collect();
        for (path, text) in pod_files(&self.cfg) {
            if let Ok(Ok(spec)) = text.map(|t| PodSpec::parse(&path, &t)) {
                keep.insert(spec.name);
            }
        }
        // `peapod run`'s pods (their locks are held by another process) keep their logs.
        keep.extend(
            crate::host::sandbox::held_pods(&self.cfg)
                .into_iter()
                .map(|(n, _)| n),
        );
        // Temp files of writers killed half-way (the crash guard's marks, the leases).
        crate::durable::sweep(&self.cfg.state_dir);
        crate::host::ipam::Ipam::new(&self.cfg).sweep();
        let stale_logs = self.cfg.logs.collect_orphans(&keep);
        if !stale_logs.is_empty() {
            tracing::info!("removed orphaned logs: {}", stale_logs.join(", "));
        }
        match self.host.collect_orphans(&keep).await {
            Ok(removed) if !removed.is_empty() => {
                tracing::info!("removed orphaned sandbox parts of {}", removed.join(", "))
            }
            Ok(_) => {}
            Err(e) => tracing::error!("collecting orphans: {e}"),
        }
        let me = Caller::myself();
        for (name, r) in records {
            // After a power cut mid-update: the history agrees with what ran.
            let r = match self.store.reconcile(&name, r) {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!("stored pod {name}: its history: {e}");
                    continue;
                }
            };
            let progressing = self.store.history(&name).iter().any(|h| {
                h.revision == r.revision && h.state == crate::wire::RevisionState::Progressing
            });
            let stored = super::load::Stored {
                modules: &r.modules,
                images: &r.images,
            };
            let loaded = parse(&r.source, &r.text, Some(stored), me, &self.cfg)
                .and_then(|p| compile(&self.exec, p));
            match loaded {
                Ok(l) if l.spec.name == name => {
                    // A revision the stop interrupted before it was proven: watched again.
                    let watch = progressing.then(|| rollout::Rollout::new(r.revision, &l.spec));
                    self.start(Origin::Api, r.owner, l).await;
                    if let Some(e) = self.entries.get_mut(&name) {
                        e.rollout = watch;
                    }
                }
                Ok(l) => tracing::error!(
                    "stored pod {name}: its spec names pod {:?}; not started",
                    l.spec.name
                ),
                Err(e) => tracing::error!("stored pod {name}: {e}"),
            }
        }
        self.reload().await;
    }

    /// The `*.toml` files of the pods directory, sorted, with their text (or why not).
    /// Makes the running file pods equal to the pods directory, and tries again the pods that had
    /// failed to start. A file that does not validate is reported and changes nothing: whatever
    /// pod it described keeps running as it was.
    /// Returns the problems (one message per bad file).
    pub(super) async fn reload(&mut self) -> Vec<String> {
        // Reading and compiling blocks: on a blocking thread, not the runtime's workers.
        let (cfg, exec) = self.planner();
        match tokio::task::spawn_blocking(move || plan_reload(&cfg, &exec)).await {
            Ok(plan) => self.commit_reload(plan).await,
            Err(e) => vec![format!("reload: {e}")],
        }
    }

    /// [`Pods::reload`]'s second half, with what [`plan_reload`] found.
    pub(super) async fn commit_reload(&mut self, plan: ReloadPlan) -> Vec<String> {
        let failed_before: BTreeSet<String> = self
            .entries
            .iter()
            .filter(|(_, e)| e.running.is_none() && e.error.is_some())
            .map(|(n, _)| n.clone())
            .collect();
        let mut problems: BTreeMap<PathBuf, String> = BTreeMap::new();
        let mut found: BTreeMap<String, (PathBuf, Loaded)> = BTreeMap::new();
        for (path, loaded) in plan.0 {
            let p = match loaded {
                Ok(p) => p,
                Err(e) => {
                    problems.insert(path, e);
                    continue;
                }
            };
            let name = p.spec.name.clone();
            if let Some((other, _)) = found.get(&name) {
                let msg = format!(
                    "{}: pod.name: pod {name:?} is already defined by {}",
                    path.display(),
                    other.display()
                );
                problems.insert(path, msg);
            } else if self
                .entries
                .get(&name)
                .is_some_and(|e| e.origin == Origin::Api)
            {
                let msg = format!(
                    "{}: pod.name: pod {name:?} exists already (created with `peapod apply`); delete it first",
                    path.display()
                );
                problems.insert(path, msg);
            } else if let Err(unfit) = self.admit(Caller::root(), &p.spec) {
                let msg = format!("{}: {unfit}", path.display());
                problems.insert(path, msg);
            } else {
                found.insert(name, (path, p));
            }
        }
        // Pods whose file is gone (or now names another pod) go, unless the file is only broken.
        let gone: Vec<String> = self
            .entries
            .iter()
            .filter_map(|(name, e)| match &e.origin {
                Origin::File(p) if !problems.contains_key(p) => {
                    let same = found.get(name).is_some_and(|(fp, _)| fp == p);
                    (!same).then(|| name.clone())
                }
                _ => None,
            })
            .collect();
        for name in gone {
            tracing::info!("pod {name}: its file is gone; deleting");
            let object = format!("pod/{name}");
            self.events
                .normal(&object, "Killing", "its file is gone: deleting the pod");
            self.remove(&name, Logs::Drop);
        }
        for (name, (path, l)) in found {
            let current = self.entries.get(&name);
            let unchanged = current.is_some_and(|e| e.digest == l.digest);
            if unchanged && current.is_some_and(|e| e.running.is_some()) {
                continue;
            }
            if current.is_some() {
                tracing::info!("pod {name}: {} changed; re-creating", path.display());
                let message = format!("{} changed: re-creating the pod", path.display());
                self.events
                    .normal(&format!("pod/{name}"), "Recreating", message);
                self.remove(&name, Logs::Keep);
            }
            self.start(Origin::File(path), 0, l).await;
        }
        // Pods that failed to start (API pods too: a full or read-only disk, a missing
        // directory) are tried again: a reload is the user's word that the cause may be gone.
        let failed: Vec<String> = self
            .entries
            .iter()
            .filter(|(n, e)| {
                failed_before.contains(*n)
                    && e.running.is_none()
                    && e.error.is_some()
                    && e.delayed.is_none()
            })
            .map(|(n, _)| n.clone())
            .collect();
        for name in failed {
            tracing::info!("pod {name}: failed to start before; trying again");
            self.launch(&name).await;
        }
        for (path, msg) in &problems {
            tracing::error!("{msg}; pods of {} left as they were", path.display());
            let message = format!("{msg}; pods of {} left as they were", path.display());
            self.events.warning("daemon", "InvalidSpec", message);
        }
        let list = problems.values().cloned().collect();
        self.problems = problems;
        list
    }

    /// Registers a pod and starts it (taking over a sandbox it left, if any), failed or not; a
    /// pod the crash guard holds back is registered as waiting and started by [`Pods::tick`].
    async fn start(&mut self, origin: Origin, owner: u32, l: Loaded) {
        let name = l.spec.name.clone();
        for w in l.spec.warning_lines() {
            tracing::warn!("{w}");
        }
        let delay = self.guard.delay(&name);
        let delayed = (!delay.is_zero()).then(|| {
            tracing::warn!(
                "pod {name}: the daemon stopped {} times in a row within {}s of starting it; \
                 starting it in {} (delete it meanwhile if it is the cause)",
                self.guard.deaths(&name),
                super::crashguard::STABLE_AFTER.as_secs(),
                humantime::format_duration(delay)
            );
            let message = format!(
                "the daemon stopped {} times in a row soon after starting this pod: held back for {}",
                self.guard.deaths(&name),
                humantime::format_duration(delay)
            );
            self.events.warning(&format!("pod/{name}"), "CrashGuard", message);
            Instant::now() + delay
        });
        self.entries.insert(
            name.clone(),
            Entry {
                origin,
                owner,
                spec: l.spec,
                modules: l.modules,
                digest: l.digest,
                created: SystemTime::now(),
                running: None,
                error: None,
                delayed,
                rollout: None,
            },
        );
        if delayed.is_none() {
            self.launch(&name).await;
        }
    }

    /// Starts the containers of a registered pod, unless the sandbox of an earlier pod of its name
    /// is still being stopped: then it stays pending ("starting"), for [`settle`] or
    /// [`Pods::tick`] to start.
    async fn launch(&mut self, name: &str) {
        let Some(e) = self.entries.get(name) else {
            return;
        };
        if self.stop_under_way(name).is_some() {
            return;
        }
        let (spec, modules) = (e.spec.clone(), e.modules.clone());
        let opts = Options {
            sink: None,
            logs: Some(self.cfg.logs.clone()),
            linger: true,
            open_files: Some(self.cfg.limits.open_files),
            restart_floor: if e.owner == 0 {
                crate::spec::MIN_BACKOFF
            } else {
                self.cfg.quotas.restart_floor
            },
            events: self.events.clone(),
        };
        self.guard.starting(name);
        let t0 = std::time::Instant::now();
        let result = self.host.start(&spec, modules, &opts).await;
        if result.is_ok() {
            self.metrics.pod_started(t0.elapsed());
        }
        let (running, error) = match result {
            Ok(started) => {
                let (object, ip) = (format!("pod/{name}"), started.pod.ip());
                if started.recovered {
                    tracing::info!("pod {name}: recovered its sandbox (ip {ip})");
                    let message = format!("took over the sandbox it had (same namespace, ip {ip})");
                    self.events.normal(&object, "Recovered", message);
                } else {
                    let message = format!("sandbox created, ip {ip}");
                    self.events.normal(&object, "Created", message);
                }
                (Some(started.pod), None)
            }
            Err(e) => {
                // Shown by `ps` and `inspect` as the pod's error.
                let message = e.to_string();
                tracing::error!("{message}");
                let object = format!("pod/{name}");
                self.events.warning(&object, "FailedCreate", &message);
                self.guard.forget(name);
                (None, Some(message))
            }
        };
        if let Some(e) = self.entries.get_mut(name) {
            // A recovered sandbox keeps its age.
            e.created = running
                .as_ref()
                .map_or_else(SystemTime::now, |p| p.created());
            e.running = running;
            e.error = error;
            e.delayed = None;
        }
    }

    /// Now and then (the main loop's tick): clears the crash guard's marks of pods that run
    /// stably and starts the pods whose crash-guard delay is over.
    pub(super) async fn tick(&mut self) {
        self.guard.tick();
        let due: Vec<String> = self
            .entries
            .iter()
            .filter(|(_, e)| e.delayed.is_some_and(|t| t <= Instant::now()))
            .map(|(n, _)| n.clone())
            .collect();
        for name in due {
            tracing::info!("pod {name}: crash-guard delay over; starting");
            self.launch(&name).await;
        }
        self.watch_rollouts().await;
        // Pods left pending when the request that re-created them went away before their old
        // sandbox was gone (and those a rollback re-created).
        self.launch_pending(None).await;
    }

    /// The stop under way of pod `name`, if there is one.
    fn stop_under_way(&self, name: &str) -> Option<&Stopping> {
        self.stopping.get(name).filter(|s| !s.done.is_done())
    }

    /// The stops under way of pod `name` (of every pod: `None`).
    fn stops(&self, name: Option<&str>) -> Vec<Stopped> {
        self.stopping
            .iter()
            .filter(|(n, s)| name.is_none_or(|want| want == *n) && !s.done.is_done())
            .map(|(_, s)| s.done.clone())
            .collect()
    }

    /// Starts the pods (pod `name`, or all: `None`) that waited for an earlier sandbox of their
    /// name to go, if it has; forgets the stops that are done.
    async fn launch_pending(&mut self, name: Option<&str>) {
        self.stopping.retain(|_, s| !s.done.is_done());
        let pending: Vec<String> = self
            .entries
            .iter()
            .filter(|(n, e)| {
                name.is_none_or(|want| want == *n)
                    && e.running.is_none()
                    && e.error.is_none()
                    && e.delayed.is_none()
                    && !self.stopping.contains_key(*n)
            })
            .map(|(n, _)| n.clone())
            .collect();
        for name in pending {
            self.launch(&name).await;
        }
    }

    /// Stops a pod and removes its sandbox, in a task of its own (after any stop of its name
    /// still under way); its logs go (`Logs::Drop`, the pod is deleted) or become the previous
    /// sandbox's (`Logs::Keep`, it is re-created). Not its stored record. Returns the stop's end.
    fn remove(&mut self, name: &str, logs: Logs) -> Option<Stopped> {
        let e = self.entries.remove(name)?;
        self.guard.forget(name);
        let before = self.stop_under_way(name).map(|s| s.done.clone());
        let (tx, rx) = tokio::sync::watch::channel(false);
        let stopping = Stopping {
            done: Stopped(rx),
            origin: e.origin,
            created: e.created,
            ip: e.running.as_ref().map(|p| p.ip()),
            netns: e.running.as_ref().map(|p| p.netns_path().to_path_buf()),
        };
        let done = stopping.done.clone();
        self.stopping.insert(name.into(), stopping);
        let (cfg, name, host) = (self.cfg.clone(), name.to_string(), self.host.clone());
        tokio::spawn(async move {
            if let Some(before) = before {
                before.wait().await;
            }
            let stopped = match e.running {
                Some(p) => p.stop(false).await,
                None => host.remove(&name).await,
            };
            if let Err(err) = stopped {
                tracing::error!("pod {name}: {err}");
            }
            let done = match logs {
                Logs::Drop => cfg.logs.remove_pod(&name),
                Logs::Keep => cfg.logs.retire_pod(&name),
            };
            if let Err(err) = done {
                tracing::warn!("pod {name}: logs: {err}");
            }
            let _ = tx.send(true);
        });
        Some(done)
    }

    /// Whether pod `spec`, asked for by `caller`, fits beside every pod registered (the one of
    /// its name, which it would replace, left out): see [`crate::admission`].
    fn admit(&self, caller: Caller, spec: &PodSpec) -> Result<(), crate::admission::Unfit> {
        let others: Vec<Admitted<'_>> = self
            .entries
            .iter()
            .filter(|(n, _)| **n != spec.name)
            .map(|(_, e)| Admitted {
                owner: e.owner,
                spec: &e.spec,
            })
            .collect();
        crate::admission::admit(&self.cfg, caller, spec, &others)
    }

    /// Every `oci://` module the pods run or keep (module digest -> who): what `images` shows
    /// and `image prune` keeps.
    pub(super) fn image_users(&self) -> BTreeMap<String, ImageUse> {
        let mut uses: BTreeMap<String, ImageUse> = BTreeMap::new();
        for (name, e) in &self.entries {
            for c in &e.spec.containers {
                if let Some(image) = &c.image
                    && let Some(r) = &image.resolved
                {
                    let u = uses.entry(r.module.clone()).or_default();
                    u.running.insert(name.clone());
                    u.pinned.get_or_insert_with(|| image.pinned());
                }
            }
        }
        let (records, _) = self.store.load_all();
        for (name, r) in records {
            for i in r.images.into_iter().flatten() {
                uses.entry(i.module).or_default();
            }
            for h in self.store.history(&name) {
                for (i, change) in h.record.images.iter().zip(&h.change) {
                    if let Some(i) = i {
                        let u = uses.entry(i.module.clone()).or_default();
                        if !u.running.contains(&name) {
                            u.kept.insert(name.clone());
                        }
                        if let Some((_, pinned)) = change.split_once("=oci://") {
                            u.pinned.get_or_insert_with(|| pinned.to_string());
                        }
                    }
                }
            }
        }
        uses
    }

    /// The settings and the engine, for [`plan`] outside the lock.
    pub(super) fn planner(&self) -> (Config, Executor) {
        (self.cfg.clone(), self.exec.clone())
    }

    /// `peapod apply`, second half: what [`plan`] compiled becomes the pod `l.spec.name`:
    /// created, re-created if its spec or modules changed, or left as it is. A re-created pod
    /// starts once its old sandbox is gone: [`settle`] it, then read the outcome with
    /// [`Pods::committed`].
    pub(super) async fn commit(
        &mut self,
        source: &Path,
        text: &str,
        l: Loaded,
        caller: Caller,
    ) -> Result<Action, OpError> {
        let name = l.spec.name.clone();
        let current = self.entries.get(&name);
        if let Some(Origin::File(f)) = current.map(|e| &e.origin) {
            return Err(OpError::Conflict(format!(
                "pod {name:?} is defined by {}; edit that file instead",
                f.display()
            )));
        }
        self.owned_by(&name, caller)?;
        if current.is_some_and(|e| e.digest == l.digest && e.running.is_some()) {
            return Ok(Action::Unchanged);
        }
        self.admit(caller, &l.spec)
            .map_err(|u| OpError::Unfit(u.to_string()))?;
        // A registry's module is kept in the image store already; a file's is copied.
        let stored = l
            .read
            .iter()
            .zip(&l.spec.containers)
            .map(|(m, c)| match c.image {
                Some(_) => Ok(c.module.clone()),
                None => self.store.put_module(m),
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| OpError::Failed(format!("storing modules: {e}")))?;
        let images = (l.spec.containers.iter())
            .map(|c| c.image.as_ref().and_then(|i| i.resolved.clone()))
            .collect::<Vec<_>>();
        let mut record = Record {
            source: source.to_path_buf(),
            text: text.to_string(),
            modules: stored.clone(),
            owner: caller.uid,
            images: if images.iter().any(Option::is_some) {
                images
            } else {
                Vec::new()
            },
            revision: 0,
        };
        self.begin_revision(&name, &mut record, &l.spec)
            .and_then(|()| self.store.save(&name, &record))
            .map_err(|e| OpError::Failed(format!("storing pod: {e}")))?;
        let action = if self.entries.contains_key(&name) {
            self.remove(&name, Logs::Keep);
            Action::Recreated
        } else {
            Action::Created
        };
        let mut l = l;
        for (c, p) in l.spec.containers.iter_mut().zip(stored) {
            c.module = p;
        }
        let watch = rollout::Rollout::new(record.revision, &l.spec);
        self.start(Origin::Api, caller.uid, l).await;
        if let Some(e) = self.entries.get_mut(&name) {
            e.rollout = Some(watch);
        }
        Ok(action)
    }

    /// What a [`Pods::commit`] came to, once settled. A new pod that cannot start is not kept
    /// (nothing of a failed apply is left once the returned stop is done).
    pub(super) fn committed(
        &mut self,
        name: &str,
        action: Action,
    ) -> (Result<(Action, PodView), OpError>, Option<Stopped>) {
        // (Not found: deleted meanwhile by another request.)
        match self.outcome(name) {
            Err(e @ OpError::Failed(_)) if action == Action::Created => {
                if let Err(err) = self.store.remove(name) {
                    tracing::warn!("pod {name}: forgetting the failed apply: {err}");
                }
                (Err(e), self.remove(name, Logs::Drop))
            }
            r => (r.map(|view| (action, view)), None),
        }
    }

    /// Whether `caller` may change pod `name` (delete, restart, re-apply): root may change any
    /// pod; another user the pods they applied. A pod that does not exist passes (the verb says
    /// it is not found).
    pub(super) fn owned_by(&self, name: &str, caller: Caller) -> Result<(), OpError> {
        match self.entries.get(name) {
            Some(e) if !caller.is_root() && e.owner != caller.uid => {
                Err(OpError::Forbidden(format!(
                    "pod {name:?} belongs to {}; user {} may change only the pods they applied",
                    if e.owner == 0 {
                        "root".to_string()
                    } else {
                        format!("user {}", e.owner)
                    },
                    caller.uid
                )))
            }
            _ => Ok(()),
        }
    }

    /// `peapod delete`: pods created through the API only (a file's pod goes with its file).
    /// Returns the stop to wait for (without the lock); a pod already being deleted returns
    /// that stop.
    pub(super) fn delete(&mut self, name: &str) -> Result<Stopped, OpError> {
        match self.entries.get(name).map(|e| &e.origin) {
            None => match self.stop_under_way(name) {
                Some(s) if matches!(s.origin, Origin::Api) => Ok(s.done.clone()),
                _ => Err(OpError::NotFound(name.into())),
            },
            Some(Origin::File(f)) => Err(OpError::Conflict(format!(
                "pod {name:?} is defined by {}; remove that file to delete it",
                f.display()
            ))),
            Some(Origin::Api) => {
                self.store
                    .remove(name)
                    .map_err(|e| OpError::Failed(format!("forgetting pod: {e}")))?;
                let object = format!("pod/{name}");
                self.events
                    .normal(&object, "Killing", "deleted: stopping the pod");
                Ok(self.remove(name, Logs::Drop).expect("registered"))
            }
        }
    }

    /// `peapod restart POD`: a new sandbox (new IP), the containers from scratch, once the old
    /// one is gone: [`settle`] it, then read the outcome with [`Pods::outcome`].
    pub(super) async fn restart(&mut self, name: &str) -> Result<(), OpError> {
        let e = self
            .entries
            .remove(name)
            .ok_or_else(|| OpError::NotFound(name.into()))?;
        let l = Loaded {
            spec: e.spec.clone(),
            modules: e.modules.clone(),
            digest: e.digest.clone(),
            read: Vec::new(),
        };
        if e.delayed.is_some() {
            // An explicit restart is the user's word: the crash-guard delay ends.
            self.guard.forget(name);
        }
        let (origin, owner) = (e.origin.clone(), e.owner);
        self.entries.insert(name.into(), e);
        let object = format!("pod/{name}");
        self.events.normal(
            &object,
            "Recreating",
            "restart asked for: a new sandbox and ip",
        );
        self.remove(name, Logs::Keep);
        self.start(origin, owner, l).await;
        Ok(())
    }

    /// The pod as it is now, or why it is not running.
    pub(super) fn outcome(&self, name: &str) -> Result<PodView, OpError> {
        let view = self
            .view(name)
            .ok_or_else(|| OpError::NotFound(name.into()))?;
        match view.error {
            Some(err) => Err(OpError::Failed(err)),
            None => Ok(view),
        }
    }

    /// `peapod restart POD/CONTAINER`: in place, same namespace and IP.
    pub(super) fn restart_container(&self, name: &str, container: &str) -> Result<(), OpError> {
        let e = self
            .entries
            .get(name)
            .ok_or_else(|| OpError::NotFound(name.into()))?;
        let no_container = || OpError::NoContainer {
            pod: name.into(),
            container: container.into(),
            have: e
                .spec
                .containers
                .iter()
                .map(|c| c.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        };
        if !e.spec.containers.iter().any(|c| c.name == container) {
            return Err(no_container());
        }
        match &e.running {
            Some(p) if p.restart_container(container) => Ok(()),
            Some(_) => Err(no_container()),
            None => Err(OpError::Conflict(format!(
                "pod {name:?} is not running ({}); restart the pod",
                e.error.as_deref().unwrap_or(if e.delayed.is_some() {
                    "held back by the crash guard"
                } else {
                    "failed"
                })
            ))),
        }
    }

    /// Container names of a pod.
    pub(super) fn containers(&self, name: &str) -> Result<Vec<String>, OpError> {
        self.entries
            .get(name)
            .map(|e| e.spec.containers.iter().map(|c| c.name.clone()).collect())
            .ok_or_else(|| OpError::NotFound(name.into()))
    }

    /// Problems of the last reload of the pods directory.
    pub(super) fn problems(&self) -> Vec<String> {
        self.problems.values().cloned().collect()
    }

    /// Clean stop of the daemon: the modules stop, the sandboxes stay (same IPs next start).
    /// Every pod stops at once, and the whole stop takes at most `limits.stop_timeout` (under
    /// systemd's stop timeout): what is still stopping then (a `pre_stop` hook within its
    /// grace period) is left, its sandbox kept, as a kill would leave it.
    pub(super) async fn stop_all(&mut self) {
        let within = self.cfg.limits.stop_timeout;
        let deadline = Instant::now() + within;
        // Stops under way end first (a pod being deleted is deleted whole), if they can in time.
        let under_way = futures::future::join_all(self.stops(None).into_iter().map(Stopped::wait));
        let _ = tokio::time::timeout_at(deadline, under_way).await;
        self.guard.clear();
        let stops = std::mem::take(&mut self.entries)
            .into_iter()
            .filter_map(|(name, e)| e.running.map(|p| (name, p)))
            .map(|(name, p)| async move {
                if let Err(err) = p.stop(true).await {
                    tracing::error!("pod {name}: {err}");
                }
            });
        if tokio::time::timeout_at(deadline, futures::future::join_all(stops))
            .await
            .is_err()
        {
            tracing::warn!(
                "pods still stopping after {} (limits.stop_timeout): left as they are, their \
                 sandboxes kept",
                humantime::format_duration(within)
            );
        }
    }
}
