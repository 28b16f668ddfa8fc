//! The supervisor: runs one container again and again per its restart policy, with backoff.
//!
//! A restart is in place: same pod thread, same namespace, same IP, the same compiled module; only
//! the store is new. The delay before a restart starts at the pod's `initial`, doubles on each
//! restart, is capped at `max`, and falls back to `initial` after a run of at least `reset_after`
//! (what Kubernetes does for CrashLoopBackOff). Whatever the settings, a container starts at most
//! once per [`MIN_BACKOFF`] (10 ms): a module that exits at once cannot spin the pod's thread.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::executor::{Executor, Outcome, Prepared, RunSpec};
use crate::spec::{Backoff, MIN_BACKOFF, RestartPolicy};

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
}

/// Where a container is in its life, as `ps` and `inspect` show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Not started yet, or waiting out its backoff before a restart.
    Waiting,
    Running,
    /// Ended for good by its restart policy (a restart request starts it again).
    Exited,
}

/// A container's live status, shared between its supervisor and whoever asks.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub name: String,
    pub state: State,
    pub restarts: u32,
    /// When the current (or last) run started.
    #[serde(serialize_with = "rfc3339_opt")]
    pub started_at: Option<SystemTime>,
    /// How the last run ended, e.g. "exited with code 0", "trapped: ..." or "memory limit
    /// 16 MiB reached".
    pub last: Option<String>,
    /// The last run's exit code (absent for a trap or a limit).
    pub exit_code: Option<i32>,
    /// Why the last run ended, in Kubernetes' words: Completed, Error, Trapped, OOMKilled,
    /// LimitReached (or Restarted, on request).
    pub reason: Option<&'static str>,
}

fn rfc3339_opt<S: serde::Serializer>(t: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => s.serialize_str(&humantime::format_rfc3339_millis(*t).to_string()),
        None => s.serialize_none(),
    }
}

/// The handle a pod keeps on one supervised container: its status and a way to restart it.
#[derive(Debug, Clone)]
pub struct Control {
    status: Arc<Mutex<Status>>,
    restart: Arc<Notify>,
    /// Keep the supervisor alive after the container ended for good, so a restart request can start
    /// it again (the daemon); without it the supervisor returns (`peapod run`).
    linger: bool,
}

impl Control {
    pub fn new(name: &str, linger: bool) -> Self {
        Control {
            status: Arc::new(Mutex::new(Status {
                name: name.into(),
                state: State::Waiting,
                restarts: 0,
                started_at: None,
                last: None,
                exit_code: None,
                reason: None,
            })),
            restart: Arc::new(Notify::new()),
            linger,
        }
    }

    pub fn status(&self) -> Status {
        self.status.lock().expect("status lock").clone()
    }

    /// Ends the current run (if any) and starts the container again at once, in place: same pod,
    /// same namespace, same IP. Counts as a restart.
    pub fn restart(&self) {
        self.restart.notify_one();
    }

    fn update(&self, f: impl FnOnce(&mut Status)) {
        f(&mut self.status.lock().expect("status lock"));
    }
}

/// Runs a container until its policy says it is done (or, lingering, until stopped), or `stop` is
/// cancelled.
pub async fn supervise(
    exec: Executor,
    module: Prepared,
    spec: RunSpec,
    policy: RestartPolicy,
    backoff: Backoff,
    stop: CancellationToken,
    control: Control,
) -> Final {
    let mut backoff = BackoffState::new(backoff);
    let mut done = Final {
        name: spec.name.clone(),
        last: None,
        restarts: 0,
        stopped: false,
    };
    let id = spec.log.id();
    loop {
        let started = Instant::now();
        control.update(|s| {
            s.state = State::Running;
            s.started_at = Some(SystemTime::now());
        });
        let outcome = tokio::select! {
            o = exec.run(&module, &spec) => Some(o),
            _ = control.restart.notified() => None,
            _ = stop.cancelled() => {
                done.stopped = true;
                return done;
            }
        };
        let requested = match outcome {
            Some(outcome) => {
                control.update(|s| {
                    s.last = Some(outcome.to_string());
                    s.exit_code = outcome.exit_code();
                    s.reason = Some(outcome.reason());
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
                    tracing::warn!(
                        "{id} {outcome}; restarting in {} (restart {})",
                        humantime::format_duration(delay),
                        done.restarts + 1
                    );
                    control.update(|s| s.state = State::Waiting);
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => false,
                        _ = control.restart.notified() => true,
                        _ = stop.cancelled() => {
                            done.stopped = true;
                            return done;
                        }
                    }
                } else {
                    tracing::info!("{id} {outcome}; not restarting (restart_policy {policy:?})");
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
            None => true,
        };
        if requested {
            tracing::info!("{id}: restarting in place on request");
            control.update(|s| {
                s.last = Some("restarted on request".into());
                s.reason = Some("Restarted");
            });
        }
        done.restarts += 1;
        control.update(|s| s.restarts = done.restarts);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
