//! CPU accounting and `cpu_limit`, per container, on the pod's own thread.
//!
//! All containers of a pod run on one thread, each as a task whose every poll runs only that
//! container's wasm (and the WASI calls it makes inline): the thread's CPU clock
//! (`CLOCK_THREAD_CPUTIME_ID`) read around each poll is therefore the container's CPU time —
//! no cgroup needed, and it works the same under `peapod run` and the daemon.
//!
//! A guest's file I/O is the exception: wasmtime-wasi runs it on the pod runtime's blocking
//! threads, outside the poll. Those threads' CPU clocks are read too ([`Blocking`]), and what
//! they used since the last poll is charged to the container polled next (the one whose I/O
//! finished is the one woken): approximate when several containers of a pod do file I/O at
//! once, exact for one.
//!
//! The limit is a token bucket refilled at `cpu_limit` (millicores per second of wall time) and
//! holding at most [`BURST`]. A poll's CPU time is taken from it; while it is in debt the
//! container is not polled (a timer wakes it when the debt is paid). A module that never yields
//! is still handed back every epoch tick (see [`crate::wasm::ticker`]), so a busy loop
//! overshoots by at most one tick, and the debt makes up for it: over any second a container
//! with `250m` gets ~250 ms of CPU, plus at most one burst.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::{Instant, Sleep};

/// What the bucket holds at most: CPU a limited container may use at once after idling.
pub(crate) const BURST: Duration = Duration::from_millis(20);

/// What a container uses, read by `inspect` while it runs.
#[derive(Debug, Default)]
pub struct Usage {
    /// CPU time of every run so far, in nanoseconds.
    pub cpu_ns: AtomicU64,
    /// Bytes of linear memory and tables the current run holds (0 between runs).
    pub memory: AtomicU64,
}

impl Usage {
    pub fn cpu(&self) -> Duration {
        Duration::from_nanos(self.cpu_ns.load(Ordering::Relaxed))
    }
}

/// CPU time of the calling thread.
pub(crate) fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec to write to; the clock id is a constant.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// The CPU clocks of one pod's blocking threads (its runtime's: where wasmtime-wasi runs file
/// I/O), and how much of their time was charged already. Cheap to clone; one per pod.
#[derive(Debug, Default, Clone)]
pub(crate) struct Blocking(Arc<BlockingClocks>);

#[derive(Debug, Default)]
struct BlockingClocks {
    /// The live threads' CPU clocks.
    clocks: Mutex<Vec<libc::clockid_t>>,
    live: AtomicUsize,
    /// CPU of the threads that ended, in nanoseconds.
    retired: AtomicU64,
    /// The total charged so far, in nanoseconds.
    seen: AtomicU64,
}

impl Blocking {
    /// Called on each blocking thread as it starts.
    pub(crate) fn thread_started(&self) {
        let mut clock: libc::clockid_t = 0;
        // SAFETY: pthread_self is this thread; `clock` is a valid place to write.
        if unsafe { libc::pthread_getcpuclockid(libc::pthread_self(), &mut clock) } == 0 {
            self.0
                .clocks
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(clock);
            self.0.live.fetch_add(1, Ordering::Release);
        }
    }

    /// Called on each blocking thread as it ends: its time moves to the retired sum.
    pub(crate) fn thread_stopped(&self) {
        let mut clock: libc::clockid_t = 0;
        // SAFETY: as in `thread_started`.
        if unsafe { libc::pthread_getcpuclockid(libc::pthread_self(), &mut clock) } != 0 {
            return;
        }
        let mut clocks = self.0.clocks.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(i) = clocks.iter().position(|c| *c == clock) {
            clocks.swap_remove(i);
            self.0.live.fetch_sub(1, Ordering::Release);
            self.0
                .retired
                .fetch_add(thread_cpu().as_nanos() as u64, Ordering::AcqRel);
        }
    }

    /// CPU the pod's blocking threads used since the last call (of any container of the pod).
    fn take(&self) -> Duration {
        let b = &self.0;
        if b.live.load(Ordering::Acquire) == 0
            && b.retired.load(Ordering::Acquire) == b.seen.load(Ordering::Acquire)
        {
            return Duration::ZERO;
        }
        let mut total = b.retired.load(Ordering::Acquire);
        for clock in b.clocks.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            total += clock_ns(*clock);
        }
        let before = b.seen.fetch_max(total, Ordering::AcqRel);
        Duration::from_nanos(total.saturating_sub(before))
    }
}

/// CPU time of `clock`, in nanoseconds (0 when it cannot be read).
fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec to write to.
    if unsafe { libc::clock_gettime(clock, &mut ts) } != 0 {
        return 0;
    }
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The token bucket of a `cpu_limit`, in nanoseconds of CPU.
#[derive(Debug)]
struct Bucket {
    millicores: u64,
    /// Positive: CPU the container may still use; negative: its debt.
    tokens: i128,
    refilled: Instant,
}

impl Bucket {
    fn new(millicores: u32) -> Self {
        Bucket {
            millicores: millicores.into(),
            tokens: BURST.as_nanos() as i128,
            refilled: Instant::now(),
        }
    }

    /// Takes `used`, refills for the time since the last call; returns how long to wait before
    /// the container may run again (zero if not in debt).
    fn charge(&mut self, used: Duration, now: Instant) -> Duration {
        let wall = now.saturating_duration_since(self.refilled).as_nanos() as i128;
        self.refilled = now;
        self.tokens = (self.tokens + wall * self.millicores as i128 / 1000)
            .min(BURST.as_nanos() as i128)
            - used.as_nanos() as i128;
        if self.tokens >= 0 {
            Duration::ZERO
        } else {
            Duration::from_nanos(
                ((-self.tokens) * 1000 / self.millicores as i128).min(u64::MAX as i128) as u64,
            )
        }
    }
}

/// Meters (and with a limit, throttles) one future: a run of a container.
pub(crate) struct Metered<'a, F> {
    inner: Pin<Box<F>>,
    usage: &'a Usage,
    blocking: &'a Blocking,
    bucket: Option<Bucket>,
    pause: Option<Pin<Box<Sleep>>>,
}

impl<'a, F: Future> Metered<'a, F> {
    pub(crate) fn new(
        inner: F,
        usage: &'a Usage,
        blocking: &'a Blocking,
        millicores: Option<u32>,
    ) -> Self {
        Metered {
            inner: Box::pin(inner),
            usage,
            blocking,
            bucket: millicores.map(Bucket::new),
            pause: None,
        }
    }
}

impl<F: Future> Future for Metered<'_, F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = &mut *self;
        if let Some(pause) = &mut this.pause {
            if pause.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            this.pause = None;
        }
        let t0 = thread_cpu();
        let r = this.inner.as_mut().poll(cx);
        // This poll's time on the pod thread, and what the pod's blocking threads did since the
        // last poll (this container's file I/O, most likely: it is the one woken).
        let used = thread_cpu().saturating_sub(t0) + this.blocking.take();
        this.usage
            .cpu_ns
            .fetch_add(used.as_nanos() as u64, Ordering::Relaxed);
        if r.is_pending()
            && let Some(bucket) = &mut this.bucket
        {
            let now = Instant::now();
            let wait = bucket.charge(used, now);
            if !wait.is_zero() {
                let mut pause = Box::pin(tokio::time::sleep_until(now + wait));
                // Registers the waker; the inner future's own wake-ups find the pause first.
                if pause.as_mut().poll(cx).is_pending() {
                    this.pause = Some(pause);
                }
            }
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_pays_debt_at_the_limit() {
        let t0 = Instant::now();
        let mut b = Bucket::new(250);
        // 10 ms of CPU at once: 20 ms of burst, nothing to wait.
        assert_eq!(b.charge(Duration::from_millis(10), t0), Duration::ZERO);
        // another 30 ms at the same instant: 20 ms in debt, paid at 250m in 80 ms.
        assert_eq!(
            b.charge(Duration::from_millis(30), t0),
            Duration::from_millis(80)
        );
        // 80 ms later the debt is paid: zero tokens, a 1 ms poll waits 4 ms.
        assert_eq!(
            b.charge(Duration::from_millis(1), t0 + Duration::from_millis(80)),
            Duration::from_millis(4)
        );
        // a long idle refills to the burst only.
        assert_eq!(
            b.charge(Duration::ZERO, t0 + Duration::from_secs(60)),
            Duration::ZERO
        );
        assert_eq!(b.tokens, BURST.as_nanos() as i128);
    }

    #[test]
    fn thread_cpu_advances_with_work() {
        let t0 = thread_cpu();
        let mut x = 0u64;
        while thread_cpu() - t0 < Duration::from_millis(5) {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        assert!(thread_cpu() > t0);
    }
}
