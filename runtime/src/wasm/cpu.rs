//! CPU accounting and `cpu_limit`, per container, on the pod's own thread.
//!
//! All containers of a pod run on one thread, each as a task whose every poll runs only that
//! container's wasm (and the WASI calls it makes inline): the thread's CPU clock
//! (`CLOCK_THREAD_CPUTIME_ID`) read around each poll is therefore the container's CPU time —
//! no cgroup needed, and it works the same under `peapod run` and the daemon.
//!
//! The limit is a token bucket refilled at `cpu_limit` (millicores per second of wall time) and
//! holding at most [`BURST`]. A poll's CPU time is taken from it; while it is in debt the
//! container is not polled (a timer wakes it when the debt is paid). A module that never yields
//! is still handed back every epoch tick (10 ms, see [`crate::wasm::executor`]), so a busy loop
//! overshoots by at most one tick, and the debt makes up for it: over any second a container
//! with `250m` gets ~250 ms of CPU, plus at most one burst.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
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
    bucket: Option<Bucket>,
    pause: Option<Pin<Box<Sleep>>>,
}

impl<'a, F: Future> Metered<'a, F> {
    pub(crate) fn new(inner: F, usage: &'a Usage, millicores: Option<u32>) -> Self {
        Metered {
            inner: Box::pin(inner),
            usage,
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
        let used = thread_cpu().saturating_sub(t0);
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
