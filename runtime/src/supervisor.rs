//! The supervisor: runs one container again and again per its restart policy, with backoff.
//!
//! A restart is in place: same pod thread, same namespace, same IP, the same compiled module; only
//! the store is new. The delay before a restart starts at the pod's `initial`, doubles on each
//! restart, is capped at `max`, and falls back to `initial` after a run of at least `reset_after`
//! (what Kubernetes does for CrashLoopBackOff).

use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::executor::{Executor, Outcome, Prepared, RunSpec};
use crate::spec::{Backoff, RestartPolicy};

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

/// Runs a container until its policy says it is done, or `stop` is cancelled.
pub async fn supervise(
    exec: Executor,
    module: Prepared,
    spec: RunSpec,
    policy: RestartPolicy,
    backoff: Backoff,
    stop: CancellationToken,
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
        let outcome = tokio::select! {
            o = exec.run(&module, &spec) => o,
            _ = stop.cancelled() => {
                done.stopped = true;
                return done;
            }
        };
        let restart = should_restart(policy, &outcome);
        done.last = Some(outcome.clone());
        if !restart {
            tracing::info!("{id} {outcome}; not restarting (restart_policy {policy:?})");
            return done;
        }
        let delay = backoff.delay_after(started.elapsed());
        tracing::warn!(
            "{id} {outcome}; restarting in {} (restart {})",
            humantime::format_duration(delay),
            done.restarts + 1
        );
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = stop.cancelled() => {
                done.stopped = true;
                return done;
            }
        }
        done.restarts += 1;
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
