//! The engine's epoch ticker: what preempts a module that never yields.
//!
//! Every store's epoch deadline is one tick. A module that does not run long never sees it
//! (it yields at each I/O wait on its own); one that runs across a tick reaches it, and then
//! [`Preemption::at_deadline`] decides whether it yields to its pod's runtime (so its siblings,
//! probes and logs get the thread) or goes on. The tick is what a sibling waits per I/O step of
//! its own while a module spins beside it.
//!
//! So the ticker has two speeds, and a module two ways to be handed back:
//! - A module with no sibling running beside it ([`Siblings`]: its pod's runs in progress)
//!   yields about every [`COARSE`] (10 ms): only its pod's probes and logs wait for it, and a
//!   busy module alone pays no more than that.
//! - A module with a sibling beside it yields at each deadline it reaches; if it *spins* —
//!   reaches its deadline at two ticks in a row, so it ran through the tick between — the
//!   ticker ticks every [`FINE`] until no module has spun for [`BUSY_FOR`]. A module that
//!   only now and then runs across a tick does not make it fine.
//!
//! Idle, or with busy modules alone in their pods, the ticker wakes 100 times a second for the
//! whole process, however many pods there are (`bench/run` gives its CPU both ways).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use wasmtime::{Engine, UpdateDeadline};

/// The tick while no module spins.
pub(crate) const COARSE: Duration = Duration::from_millis(10);
/// The tick while some module spins beside a sibling.
pub(crate) const FINE: Duration = Duration::from_micros(500);
/// How long after a module last spun beside a sibling the ticker stays fine.
pub(crate) const BUSY_FOR: Duration = Duration::from_millis(50);

/// Shared by the ticker's thread and every store's deadline callback.
#[derive(Debug)]
pub(crate) struct Ticker {
    start: Instant,
    /// When a module last spun beside a sibling, in nanoseconds since `start` (0: never).
    last_busy: AtomicU64,
    /// Ticks so far.
    ticks: AtomicU64,
}

impl Ticker {
    /// Starts the ticker's thread for `engine`; it ends when the engine is dropped.
    pub(crate) fn start(engine: &Engine) -> std::io::Result<Arc<Ticker>> {
        let ticker = Ticker::new();
        let weak = engine.weak();
        let t = ticker.clone();
        std::thread::Builder::new()
            .name("peapod-epoch".into())
            .spawn(move || {
                while let Some(engine) = weak.upgrade() {
                    engine.increment_epoch();
                    drop(engine);
                    t.ticks.fetch_add(1, Ordering::Relaxed);
                    std::thread::sleep(t.period());
                }
            })?;
        Ok(ticker)
    }

    fn new() -> Arc<Ticker> {
        Arc::new(Ticker {
            start: Instant::now(),
            last_busy: AtomicU64::new(0),
            ticks: AtomicU64::new(0),
        })
    }

    /// The tick to sleep now.
    fn period(&self) -> Duration {
        let since = self
            .now()
            .saturating_sub(self.last_busy.load(Ordering::Relaxed));
        if self.last_busy.load(Ordering::Relaxed) != 0 && since < BUSY_FOR.as_nanos() as u64 {
            FINE
        } else {
            COARSE
        }
    }

    fn now(&self) -> u64 {
        // At least 1: 0 means "never".
        (self.start.elapsed().as_nanos() as u64).max(1)
    }
}

/// How one store is preempted: its deadline callback.
pub(crate) struct Preemption {
    ticker: Arc<Ticker>,
    siblings: Siblings,
    last_yield: Instant,
    /// The tick at which it last reached its deadline.
    last_deadline: Option<u64>,
}

impl Preemption {
    pub(crate) fn new(ticker: Arc<Ticker>, siblings: Siblings) -> Preemption {
        Preemption {
            ticker,
            siblings,
            last_yield: Instant::now(),
            last_deadline: None,
        }
    }

    /// At the store's deadline: beside a sibling, yield (and, if it spins, make the ticker
    /// fine); alone, yield if it last did about a coarse tick ago, else go on to the next tick.
    pub(crate) fn at_deadline(&mut self) -> UpdateDeadline {
        let tick = self.ticker.ticks.load(Ordering::Relaxed);
        let spins = self.last_deadline.is_some_and(|t| tick <= t + 1);
        self.last_deadline = Some(tick);
        if self.siblings.contended() {
            if spins {
                (self.ticker.last_busy).store(self.ticker.now(), Ordering::Relaxed);
            }
        } else if self.last_yield.elapsed() < COARSE * 3 / 4 {
            return UpdateDeadline::Continue(1);
        }
        self.last_yield = Instant::now();
        UpdateDeadline::Yield(1)
    }
}

/// The runs in progress of the containers that share one thread of a pod (one for all of
/// them): a module that spins while another runs beside it is handed back at the fine tick.
#[derive(Debug, Clone, Default)]
pub struct Siblings {
    running: Arc<AtomicUsize>,
    /// The thread is this one container's alone (known when the pod is laid out).
    sole: bool,
}

impl Siblings {
    /// The siblings of a thread that `members` containers share.
    pub fn of(members: usize) -> Self {
        Siblings {
            running: Arc::default(),
            sole: members == 1,
        }
    }

    /// Whether the thread is one container's alone: blocking it blocks no one else.
    pub fn sole(&self) -> bool {
        self.sole
    }

    /// Counts a run until the guard is dropped.
    pub(crate) fn enter(&self) -> SiblingRun {
        self.running.fetch_add(1, Ordering::Relaxed);
        SiblingRun(self.clone())
    }

    fn contended(&self) -> bool {
        self.running.load(Ordering::Relaxed) > 1
    }
}

/// One run of a container, counted in its pod's [`Siblings`].
pub(crate) struct SiblingRun(Siblings);

impl Drop for SiblingRun {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tick_is_fine_only_while_a_module_spins_beside_a_sibling() {
        // No thread: the test sets the ticks.
        let ticker = Ticker::new();
        let is = |u: UpdateDeadline, yields: bool| {
            matches!(
                (u, yields),
                (UpdateDeadline::Yield(1), true) | (UpdateDeadline::Continue(1), false)
            )
        };
        let at = |tick: u64| ticker.ticks.store(tick, Ordering::Relaxed);
        let pod = Siblings::default();
        let _alone = pod.enter();
        let mut p = Preemption::new(ticker.clone(), pod.clone());
        at(1000);
        assert!(is(p.at_deadline(), false), "alone, it goes on");
        at(1001);
        assert!(is(p.at_deadline(), false));
        assert_eq!(ticker.period(), COARSE, "a module alone spins");
        std::thread::sleep(COARSE);
        at(1002);
        assert!(
            is(p.at_deadline(), true),
            "alone, it yields every coarse tick"
        );
        assert_eq!(ticker.period(), COARSE);

        let sibling = pod.enter();
        at(1010);
        assert!(is(p.at_deadline(), true), "beside a sibling it yields");
        assert_eq!(
            ticker.period(),
            COARSE,
            "now and then across a tick: not spinning"
        );
        at(1011);
        assert!(is(p.at_deadline(), true));
        assert_eq!(ticker.period(), FINE, "at two ticks in a row: it spins");
        drop(sibling);
        std::thread::sleep(BUSY_FOR + Duration::from_millis(10));
        assert_eq!(ticker.period(), COARSE, "none has spun for a while");
    }
}
