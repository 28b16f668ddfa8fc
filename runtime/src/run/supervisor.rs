//! The supervisor: runs one container again and again per its restart policy, with backoff.
//!
//! A restart is in place: same pod thread, same namespace, same IP, the same compiled module; only
//! the store is new. The delay before a restart starts at the pod's `initial`, doubles on each
//! restart, is capped at `max`, and falls back to `initial` after a run of at least `reset_after`
//! (what Kubernetes does for CrashLoopBackOff). Whatever the settings, a container starts at most
//! once per [`MIN_BACKOFF`] (10 ms): a module that exits at once cannot spin the pod's thread.
//! And the restarts of a pod's containers together come at most once per the pod's
//! [`RestartFloor`] after a short burst (`MIN_BACKOFF` too, or `quotas.restart_floor` for a pod
//! of a user other than root): fifty containers that exit at once restart no more often than one
//! would.
//!
//! Beside each run go its probes ([`crate::run::probe::watch`]): a failed liveness or startup probe
//! ends the run as `Unhealthy`, which the policy treats as a failure. Each run is metered for CPU
//! and held to its `cpu_limit` ([`crate::wasm::cpu`]). On stop, a container with a `pre_stop` hook gets
//! the call and up to the pod's grace period to exit on its own; WASI has no signals, so one
//! without a hook is ended at once.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::event::Events;
use crate::run::probe::Observer;
use crate::spec::{Backoff, Kind, MIN_BACKOFF, ProbeAction, Probes, RestartPolicy};
use crate::wasm::cpu::{Metered, Usage};
use crate::wasm::executor::{Executor, Outcome, Prepared, RunSpec};

/// Whether a container that ended with `outcome` is started again.
pub fn should_restart(policy: RestartPolicy, outcome: &Outcome) -> bool {
    match policy {
        RestartPolicy::Always => true,
        RestartPolicy::OnFailure => !outcome.success(),
        RestartPolicy::Never => false,
    }
}

/// The delay sequence of one container.
#[derive(Debug, Clone)]
pub struct BackoffState {
    cfg: Backoff,
    next: Duration,
}

impl BackoffState {
    pub fn new(cfg: Backoff) -> Self {
        BackoffState {
            cfg,
            next: cfg.initial,
        }
    }

    /// The delay before the next start, given how long the run that just ended lasted.
    pub fn delay_after(&mut self, ran_for: Duration) -> Duration {
        if ran_for >= self.cfg.reset_after {
            self.next = self.cfg.initial;
        }
        let d = self.next;
        self.next = (self.next * 2).min(self.cfg.max);
        d
    }
}

/// How a supervised container ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Final {
    pub name: String,
    /// The last run's outcome; `None` if it was stopped before any run ended.
    pub last: Option<Outcome>,
    pub restarts: u32,
    /// Stopped by the pod (shutdown) rather than ending for good by its policy.
    pub stopped: bool,
    /// Stopped while running, it ended on its own after its `pre_stop` hook: how.
    pub ended_on_stop: Option<Outcome>,
}

pub use crate::wire::{ContainerStatus as Status, State, Terminated};

impl Status {
    /// How the last run ended, in the flat fields.
    fn record(&mut self, o: &Outcome) {
        self.last = Some(o.to_string());
        self.exit_code = o.exit_code();
        self.reason = Some(o.reason().into());
    }
}

/// The handle a pod keeps on one supervised container: its status and a way to restart it.
#[derive(Debug, Clone)]
pub struct Control {
    status: Arc<Mutex<Status>>,
    restart: Arc<Notify>,
    /// Signalled on every change of the status.
    changed: Arc<Notify>,
    usage: Arc<Usage>,
    /// Keep the supervisor alive after the container ended for good, so a restart request can start
    /// it again (the daemon); without it the supervisor returns (`peapod run`).
    linger: bool,
    /// Where its runs, ends, backoffs and probe results are told, and as what object.
    events: Events,
    object: String,
}

impl Control {
    pub fn new(name: &str, kind: Kind, linger: bool) -> Self {
        Control {
            status: Arc::new(Mutex::new(Status::new(name, kind))),
            restart: Arc::new(Notify::new()),
            changed: Arc::new(Notify::new()),
            usage: Arc::new(Usage::default()),
            linger,
            events: Events::default(),
            object: format!("container/{name}"),
        }
    }

    /// Tells `events` what happens to the container, as `pod/POD/NAME`.
    pub fn with_events(mut self, events: Events, pod: &str) -> Self {
        let name = self.status.lock().expect("status lock").name.clone();
        self.object = format!("pod/{pod}/{name}");
        self.events = events;
        self
    }

    pub fn status(&self) -> Status {
        let mut s = self.status.lock().expect("status lock").clone();
        s.cpu_seconds = self.usage.cpu().as_secs_f64();
        s.memory_bytes = self.usage.memory.load(std::sync::atomic::Ordering::Relaxed);
        s
    }

    /// What the container uses; the executor's limiter keeps its memory figure.
    pub fn usage(&self) -> Arc<Usage> {
        self.usage.clone()
    }

    /// Waits until `cond` holds for the status.
    pub async fn until(&self, cond: impl Fn(&Status) -> bool) {
        loop {
            let changed = self.changed.notified();
            if cond(&self.status.lock().expect("status lock")) {
                return;
            }
            changed.await;
        }
    }

    /// Ends the current run (if any) and starts the container again at once, in place: same pod,
    /// same namespace, same IP. Counts as a restart.
    pub fn restart(&self) {
        self.restart.notify_one();
    }

    fn update(&self, f: impl FnOnce(&mut Status)) {
        f(&mut self.status.lock().expect("status lock"));
        self.changed.notify_waiters();
    }
}

/// What the probes of a run see: the container's control, and its id for the log.
struct Probed<'a> {
    control: &'a Control,
    id: &'a str,
    /// Readiness comes from a probe: its changes are news.
    probed: bool,
}

impl Observer for Probed<'_> {
    fn started(&self) {
        self.control.update(|s| s.started = true);
    }

    fn ready(&self, ready: bool) {
        if self.probed {
            tracing::info!("{}: {}", self.id, if ready { "ready" } else { "not ready" });
            if ready {
                let c = self.control;
                c.events
                    .normal(&c.object, "Ready", "readiness probe passed");
            }
        }
        self.control.update(|s| {
            s.ready = ready;
            if ready {
                s.probe_failure = None;
            }
        });
    }

    /// Said (and told as an `Unhealthy` event, counted) at every failure; logged at the first
    /// of a streak, later ones at debug.
    fn failed(&self, probe: &'static str, why: &str, failures: u32) {
        let message = format!("{probe} failed: {why}");
        if failures == 1 {
            tracing::warn!("{}: {message}", self.id);
        } else {
            tracing::debug!("{}: {message} ({failures} in a row)", self.id);
        }
        let c = self.control;
        c.events.warning(&c.object, "Unhealthy", &message);
        c.update(|s| s.probe_failure = Some(message));
    }
}

/// One run of a container, to its outcome: in the runtime a module run by the executor
/// ([`ModuleRunner`]); in the supervisor's tests a script of outcomes on tokio's paused clock, so
/// policies and backoff are checked to the millisecond without wasm, root or waiting.
pub trait Runner: Send + Sync + 'static {
    fn run<'a>(&'a self, spec: &'a RunSpec) -> Pin<Box<dyn Future<Output = Outcome> + Send + 'a>>;
}

/// A compiled module, run by the executor.
pub struct ModuleRunner {
    pub exec: Executor,
    pub module: Prepared,
}

impl Runner for ModuleRunner {
    fn run<'a>(&'a self, spec: &'a RunSpec) -> Pin<Box<dyn Future<Output = Outcome> + Send + 'a>> {
        Box::pin(self.exec.run(&self.module, spec))
    }
}

/// The restarts of one pod's containers, all together, at most one per `floor` on average, in
/// bursts of at most [`RestartFloor::BURST`] (a generic cell rate: a pod whose containers
/// restart now and then never waits on it). Shared by the pod's supervisors (clones).
#[derive(Debug, Clone)]
pub struct RestartFloor {
    floor: Duration,
    /// The theoretical time of the pod's next restart, were restarts spaced exactly.
    next: Arc<Mutex<Option<tokio::time::Instant>>>,
}

impl RestartFloor {
    /// Restarts that may come at once (then one per floor).
    pub const BURST: u32 = 10;

    pub fn new(floor: Duration) -> Self {
        RestartFloor {
            floor,
            next: Arc::new(Mutex::new(None)),
        }
    }

    /// The wait, from now, for a restart its container wants after `delay`: longer when the
    /// pod's containers together restarted more than the burst at the floor's rate. Counts it.
    fn reserve(&self, delay: Duration) -> Duration {
        let now = tokio::time::Instant::now();
        let want = now + delay;
        let mut next = self.next.lock().unwrap_or_else(|e| e.into_inner());
        let theoretical = next.unwrap_or(want).max(want);
        let burst = self.floor * (Self::BURST - 1);
        let earliest = theoretical.checked_sub(burst).unwrap_or(want).max(want);
        let at = earliest.max(want);
        *next = Some(theoretical.max(at) + self.floor);
        at - now
    }
}

impl Default for RestartFloor {
    fn default() -> Self {
        RestartFloor::new(MIN_BACKOFF)
    }
}

/// Everything one container's supervisor needs.
pub struct Container {
    pub runner: Box<dyn Runner>,
    pub run: RunSpec,
    pub policy: RestartPolicy,
    pub backoff: Backoff,
    pub probes: Probes,
    /// Millicores.
    pub cpu_limit: Option<u32>,
    pub pre_stop: Option<ProbeAction>,
    /// How long a stop waits for a container with a `pre_stop` hook.
    pub grace: Duration,
    /// The pod's restarts, together.
    pub floor: RestartFloor,
    /// The pod's blocking threads' CPU, charged to its containers' runs.
    pub(crate) blocking: crate::wasm::cpu::Blocking,
}

/// Runs a container until its policy says it is done (or, lingering, until stopped), or `stop` is
/// cancelled.
pub async fn supervise(c: Container, stop: CancellationToken, control: Control) -> Final {
    let Container {
        runner,
        run: spec,
        policy,
        backoff,
        probes,
        cpu_limit,
        pre_stop,
        grace,
        floor,
        blocking,
    } = c;
    let mut backoff = BackoffState::new(backoff);
    let mut done = Final {
        name: spec.name.clone(),
        last: None,
        restarts: 0,
        stopped: false,
        ended_on_stop: None,
    };
    let id = spec.log.id();
    let usage = control.usage();
    // When the last run ended: a restart's latency is from then to the next start.
    let mut last_end = None;
    loop {
        let started = Instant::now();
        let started_at = SystemTime::now();
        // Without probes a run is started and ready as it starts, in the same update as its
        // state (not a poll of the probe watcher later: a status read between the two would
        // show a running container that is not ready).
        let unprobed = probes.startup.is_none() && probes.readiness.is_none();
        if done.restarts > 0 {
            // Where this run's output begins, in the container's log (`logs -p` reads the run
            // before the last mark).
            let after = control.status().last.unwrap_or_else(|| "restarted".into());
            spec.log.mark_run(&format!(
                "--- peapod: run {} of {} (the last one: {after}) ---",
                done.restarts + 1,
                spec.name
            ));
        }
        let took = last_end.map(|t: Instant| started.duration_since(t));
        let message = format!("started container {}", spec.name);
        control.events.started(&control.object, message, took);
        control.update(|s| {
            s.state = State::Running;
            s.started_at = Some(started_at);
            if unprobed {
                s.started = true;
                s.ready = true;
            }
        });
        let mut run = Metered::new(runner.run(&spec), &usage, &blocking, cpu_limit);
        let observer = Probed {
            control: &control,
            id,
            probed: probes.readiness.is_some(),
        };
        let outcome = tokio::select! {
            o = &mut run => Some(o),
            why = crate::run::probe::watch(&probes, &observer) => Some(Outcome::Unhealthy(why)),
            _ = control.restart.notified() => None,
            _ = stop.cancelled() => {
                let outcome = match &pre_stop {
                    Some(hook) => graceful(&mut run, hook, grace, id).await,
                    None => None,
                };
                drop(run);
                control.update(|s| {
                    s.state = State::Exited;
                    s.ready = false;
                    s.started = false;
                    if let Some(o) = &outcome {
                        s.record(o);
                    }
                });
                done.ended_on_stop = outcome;
                done.stopped = true;
                return done;
            }
        };
        drop(run);
        last_end = Some(Instant::now());
        usage.memory.store(0, std::sync::atomic::Ordering::Relaxed);
        let ended = |s: &mut Status, reason: &'static str, message: String, code| {
            s.ready = false;
            s.started = false;
            s.last_state = Some(Terminated {
                exit_code: code,
                reason: reason.into(),
                message,
                started_at: Some(started_at),
                finished_at: Some(SystemTime::now()),
            });
        };
        let requested = match outcome {
            Some(outcome) => {
                let reason = outcome.reason();
                let message = format!("container {} {outcome}", spec.name);
                if reason == "Completed" {
                    control.events.normal(&control.object, reason, message);
                } else {
                    control.events.warning(&control.object, reason, message);
                }
                control.update(|s| {
                    s.record(&outcome);
                    ended(
                        s,
                        outcome.reason(),
                        outcome.to_string(),
                        outcome.exit_code(),
                    );
                });
                let restart = should_restart(policy, &outcome);
                done.last = Some(outcome.clone());
                if restart {
                    let ran = started.elapsed();
                    let delay = match backoff.delay_after(ran) {
                        // At the floor, the floor is from start to start: a container starts
                        // at most once per MIN_BACKOFF, and one that ran longer comes back at
                        // once (restart in place stays fast).
                        d if d <= MIN_BACKOFF => MIN_BACKOFF.saturating_sub(ran),
                        d => d,
                    };
                    let delay = floor.reserve(delay);
                    spec.binds.restarting(&spec.name, Some(delay));
                    tracing::warn!(
                        "{id} {outcome}; restarting in {} (restart {})",
                        humantime::format_duration(delay),
                        done.restarts + 1
                    );
                    if !delay.is_zero() {
                        let message = format!("back-off restarting failed container {}", spec.name);
                        control.events.warning(&control.object, "BackOff", message);
                    }
                    control.update(|s| s.state = State::Waiting);
                    if delay.is_zero() {
                        // Not even a zero sleep: tokio's timer rounds a deadline up to its next
                        // millisecond tick, which restart in place would wait for.
                        if stop.is_cancelled() {
                            done.stopped = true;
                            return done;
                        }
                        false
                    } else {
                        tokio::select! {
                            _ = tokio::time::sleep(delay) => false,
                            _ = control.restart.notified() => true,
                            _ = stop.cancelled() => {
                                done.stopped = true;
                                return done;
                            }
                        }
                    }
                } else {
                    tracing::info!("{id} {outcome}; not restarting (restart_policy {policy:?})");
                    spec.binds.restarting(&spec.name, None);
                    control.update(|s| s.state = State::Exited);
                    if !control.linger {
                        return done;
                    }
                    tokio::select! {
                        _ = control.restart.notified() => true,
                        _ = stop.cancelled() => {
                            done.stopped = true;
                            return done;
                        }
                    }
                }
            }
            None => {
                control.update(|s| {
                    ended(s, "Restarted", "restarted on request".into(), None);
                });
                true
            }
        };
        if requested {
            tracing::info!("{id}: restarting in place on request");
            let message = format!("container {} restarted in place on request", spec.name);
            control.events.normal(&control.object, "Restarted", message);
            control.update(|s| {
                s.last = Some("restarted on request".into());
                s.reason = Some("Restarted".into());
            });
        }
        done.restarts += 1;
        control.update(|s| s.restarts = done.restarts);
    }
}

/// A stop of a running container with a `pre_stop` hook: calls the hook while the module keeps
/// running (it serves the call), then waits for the module to end, all within `grace`. Returns
/// how the run ended, or `None` when the grace period ran out (the caller ends it).
async fn graceful<F>(
    run: &mut Metered<'_, F>,
    hook: &ProbeAction,
    grace: Duration,
    id: &str,
) -> Option<Outcome>
where
    F: Future<Output = Outcome>,
{
    let deadline = tokio::time::sleep(grace);
    tokio::pin!(deadline);
    tracing::info!(
        "{id}: stopping: pre_stop {hook}, then up to {} to exit",
        humantime::format_duration(grace)
    );
    tokio::select! {
        o = &mut *run => {
            tracing::info!("{id}: {o} during its pre_stop hook");
            return Some(o);
        }
        r = crate::run::probe::check(hook, grace) => {
            if let Err(why) = r {
                tracing::warn!("{id}: pre_stop hook failed: {why}");
            }
        }
        _ = &mut deadline => {}
    }
    tokio::select! {
        o = &mut *run => {
            tracing::info!("{id}: {o} after its pre_stop hook");
            Some(o)
        }
        _ = &mut deadline => {
            tracing::warn!(
                "{id}: still running after the grace period ({}): ending it",
                humantime::format_duration(grace)
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    /// Each run takes 5 ms (of tokio's clock) and ends with the next scripted outcome; `None`
    /// runs until stopped.
    struct Script(Mutex<VecDeque<Option<Outcome>>>);

    impl Runner for Script {
        fn run<'a>(&'a self, _: &'a RunSpec) -> Pin<Box<dyn Future<Output = Outcome> + Send + 'a>> {
            let next = self.0.lock().unwrap().pop_front().flatten();
            Box::pin(async move {
                match next {
                    Some(o) => {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                        o
                    }
                    None => std::future::pending().await,
                }
            })
        }
    }

    fn container(policy: RestartPolicy, script: Vec<Option<Outcome>>) -> (Container, Control) {
        let control = Control::new("c", Kind::App, false);
        let run = RunSpec {
            name: "c".into(),
            args: Vec::new(),
            env: Vec::new(),
            memory_limit: 1 << 20,
            open_files: 16,
            mounts: Vec::new(),
            env_files: Vec::new(),
            log: crate::logs::ContainerLog::new("p", "c", Some(Arc::new(|_, _, _| {}))),
            usage: control.usage(),
            pod_names: None,
            lookups: Default::default(),
            binds: Default::default(),
            siblings: Default::default(),
        };
        let c = Container {
            runner: Box::new(Script(Mutex::new(script.into()))),
            run,
            policy,
            backoff: Backoff {
                initial: Duration::from_millis(100),
                max: Duration::from_millis(300),
                reset_after: Duration::from_secs(600),
            },
            probes: Probes::default(),
            cpu_limit: None,
            pre_stop: None,
            grace: Duration::from_secs(30),
            floor: RestartFloor::default(),
            blocking: Default::default(),
        };
        (c, control)
    }

    #[tokio::test(start_paused = true)]
    async fn failures_are_restarted_after_a_doubling_capped_backoff() {
        let (c, control) = container(
            RestartPolicy::OnFailure,
            vec![
                Some(Outcome::Exited(1)),
                Some(Outcome::Trapped("unreachable".into())),
                Some(Outcome::Exited(2)),
                Some(Outcome::Exited(3)),
                Some(Outcome::Exited(0)),
            ],
        );
        let t0 = tokio::time::Instant::now();
        let done = supervise(c, CancellationToken::new(), control.clone()).await;
        // Five runs of 5 ms, and the waits between them: 100, 200, 300 (the cap), 300 ms.
        assert_eq!(
            t0.elapsed(),
            Duration::from_millis(5 * 5 + 100 + 200 + 300 + 300)
        );
        assert_eq!((done.restarts, done.last), (4, Some(Outcome::Exited(0))));
        assert!(!done.stopped);
        let s = control.status();
        assert_eq!((s.state, s.restarts), (State::Exited, 4));
        assert_eq!(s.last_state.unwrap().exit_code, Some(0));
    }

    #[tokio::test(start_paused = true)]
    async fn never_leaves_a_failed_container_failed() {
        let (c, control) = container(
            RestartPolicy::Never,
            vec![Some(Outcome::Trapped("unreachable".into()))],
        );
        let done = supervise(c, CancellationToken::new(), control.clone()).await;
        assert_eq!(done.restarts, 0);
        assert_eq!(done.last, Some(Outcome::Trapped("unreachable".into())));
        assert_eq!(control.status().state, State::Exited);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stop_during_the_backoff_ends_at_once() {
        let (mut c, control) = container(RestartPolicy::Always, vec![Some(Outcome::Exited(1))]);
        c.backoff.initial = Duration::from_secs(60);
        let stop = CancellationToken::new();
        let task = tokio::spawn(supervise(c, stop.clone(), control.clone()));
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(control.status().state, State::Waiting);
        let t0 = tokio::time::Instant::now();
        stop.cancel();
        let done = task.await.unwrap();
        assert_eq!(t0.elapsed(), Duration::ZERO, "not after the 60 s backoff");
        assert!(done.stopped);
        assert_eq!((done.restarts, done.last), (0, Some(Outcome::Exited(1))));
    }

    #[tokio::test(start_paused = true)]
    async fn a_restart_request_restarts_a_running_container_in_place() {
        let (c, control) = container(RestartPolicy::Always, vec![None, None]);
        let stop = CancellationToken::new();
        let task = tokio::spawn(supervise(c, stop.clone(), control.clone()));
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(control.status().state, State::Running);
        control.restart.notify_one();
        tokio::time::sleep(Duration::from_millis(1)).await;
        let s = control.status();
        assert_eq!((s.state, s.restarts), (State::Running, 1));
        assert_eq!(s.last_state.unwrap().reason, "Restarted");
        stop.cancel();
        let done = task.await.unwrap();
        assert!(done.stopped && done.last.is_none());
    }

    /// Round 2, finding 3: fifty containers that exit at once restarted at the 10 ms floor each
    /// and took a core. The pod's restarts are spaced by one floor, all containers together.
    #[tokio::test(start_paused = true)]
    async fn a_pods_restarts_share_one_floor() {
        let floor = RestartFloor::new(Duration::from_millis(100));
        let stop = CancellationToken::new();
        let mut tasks = Vec::new();
        let mut controls = Vec::new();
        for _ in 0..50 {
            let (mut c, control) =
                container(RestartPolicy::Always, vec![Some(Outcome::Exited(1)); 1000]);
            c.backoff.initial = Duration::ZERO;
            c.backoff.max = Duration::ZERO;
            c.floor = floor.clone();
            tasks.push(tokio::spawn(supervise(c, stop.clone(), control.clone())));
            controls.push(control);
        }
        tokio::time::sleep(Duration::from_secs(10)).await;
        stop.cancel();
        for t in tasks {
            t.await.unwrap();
        }
        let restarts: u32 = controls.iter().map(|c| c.status().restarts).sum();
        // 10 s at one restart per 100 ms after a burst: about 110 for the pod (50 x 1000 at
        // 10 ms each without the shared floor).
        let most = 100 + RestartFloor::BURST + 1;
        assert!(
            (90..=most).contains(&restarts),
            "{restarts} restarts in 10 s"
        );
    }

    #[test]
    fn policies() {
        let ok = Outcome::Exited(0);
        let bad = Outcome::Exited(3);
        let trap = Outcome::Trapped("unreachable".into());
        use RestartPolicy::*;
        assert!(should_restart(Always, &ok) && should_restart(Always, &bad));
        assert!(!should_restart(OnFailure, &ok));
        assert!(should_restart(OnFailure, &bad) && should_restart(OnFailure, &trap));
        assert!(!should_restart(Never, &bad) && !should_restart(Never, &trap));
    }

    #[test]
    fn backoff_doubles_caps_and_resets() {
        let ms = Duration::from_millis;
        let mut b = BackoffState::new(Backoff {
            initial: ms(10),
            max: ms(50),
            reset_after: ms(1000),
        });
        let short = ms(1);
        let got: Vec<_> = (0..5).map(|_| b.delay_after(short)).collect();
        assert_eq!(got, [ms(10), ms(20), ms(40), ms(50), ms(50)]);
        assert_eq!(b.delay_after(ms(1000)), ms(10), "a long run resets");
        assert_eq!(b.delay_after(short), ms(20));
    }

    #[test]
    fn zero_backoff_stays_zero() {
        let mut b = BackoffState::new(Backoff {
            initial: Duration::ZERO,
            ..Backoff::default()
        });
        assert_eq!(b.delay_after(Duration::ZERO), Duration::ZERO);
        assert_eq!(b.delay_after(Duration::ZERO), Duration::ZERO);
    }
}
