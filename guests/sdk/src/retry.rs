//! Capped exponential backoff with jitter: how a sidecar retries an app that is restarting or a
//! remote that is down, without hammering either.

use std::time::Duration;

/// Delays that double from `initial` up to `max`, each with up to a quarter taken off at random
/// (so a fleet of boards does not retry in step).
#[derive(Debug, Clone)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
    next: Duration,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Self {
        Backoff {
            initial,
            max: max.max(initial),
            next: initial,
        }
    }

    /// The next delay (and doubles the one after, up to `max`).
    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        jitter(d)
    }

    /// After a success: the next delay is `initial` again.
    pub fn reset(&mut self) {
        self.next = self.initial;
    }
}

impl Default for Backoff {
    /// 200 ms doubling up to 30 s.
    fn default() -> Self {
        Backoff::new(Duration::from_millis(200), Duration::from_secs(30))
    }
}

/// `d` less up to a quarter of it, at random.
fn jitter(d: Duration) -> Duration {
    let mut b = [0u8; 2];
    wstd::rand::get_insecure_random_bytes(&mut b);
    let r = u16::from_le_bytes(b) as u32; // 0..65536
    d - d / 4 * r / 65536
}

/// Calls `attempt` until it succeeds, at most `tries` times, sleeping `backoff`'s delays between
/// (and giving up early when a stop is asked for). The last error when every try failed.
pub async fn retry<T, E, F, Fut>(tries: u32, backoff: &mut Backoff, mut attempt: F) -> Result<T, E>
where
    F: FnMut(u32) -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut n = 1;
    loop {
        match attempt(n).await {
            Ok(v) => {
                backoff.reset();
                return Ok(v);
            }
            Err(e) if n >= tries.max(1) => return Err(e),
            Err(e) => {
                if !crate::stop::sleep(backoff.next_delay()).await {
                    return Err(e);
                }
            }
        }
        n += 1;
    }
}
