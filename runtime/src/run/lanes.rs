//! A pod on more than one core: the threads ("lanes") its containers run on.
//!
//! A pod's containers share the pod's thread, unless their `cpu_limit`s add up to more than
//! one core: then the limited containers are packed, largest first, onto lanes of one core each
//! (lane 0 is the pod's thread, where containers without a limit stay), one lane at most per
//! core of the board. Every lane is a thread inside the pod's namespace with its own
//! current-thread runtime ([`netns::spawn`]), so all of a pod's containers still share one
//! loopback; a lane's containers are supervised there and joined from the pod's thread.
//!
//! A module runs on one thread (WebAssembly here has no threads), so a container is never given
//! more than a core: `cpu_limit = "2"` caps nothing a module can reach.

use std::future::Future;
use std::os::fd::OwnedFd;
use std::sync::Arc;

use tokio::runtime::Handle;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::host::netns;

/// One core, in millicores.
const CORE: u32 = 1000;

/// The lane of each container, for their `cpu_limit`s (millicores; `None`: no limit) on a board
/// of `cores` cores: all 0 unless the limits add up to more than a core.
pub fn placement(limits: &[Option<u32>], cores: usize) -> Vec<usize> {
    let mut lane = vec![0; limits.len()];
    let total: u64 = limits.iter().flatten().map(|&m| u64::from(m)).sum();
    if total <= u64::from(CORE) || cores < 2 {
        return lane;
    }
    let mut limited: Vec<(usize, u32)> = (limits.iter().enumerate())
        .filter_map(|(i, l)| l.map(|m| (i, m.min(CORE))))
        .collect();
    // Largest first; equal ones in spec order.
    limited.sort_by_key(|&(i, m)| (std::cmp::Reverse(m), i));
    let mut load: Vec<u32> = vec![0];
    for (i, m) in limited {
        let l = match load.iter().position(|&l| l + m <= CORE) {
            Some(l) => l,
            None if load.len() < cores => {
                load.push(0);
                load.len() - 1
            }
            // Every lane is full and there is no core left: the least loaded one.
            None => (0..load.len()).min_by_key(|&l| load[l]).unwrap_or(0),
        };
        load[l] += m;
        lane[i] = l;
    }
    lane
}

/// The lanes of a pod beyond its own thread, running until [`Lanes::stop`].
#[derive(Default)]
pub struct Lanes {
    handles: Vec<Handle>,
    threads: Vec<std::thread::JoinHandle<()>>,
    stop: CancellationToken,
}

impl Lanes {
    /// Starts `count - 1` lane threads in the namespace `fd` (lane 0 is the pod's own thread),
    /// named `pod1-POD`, `pod2-POD`, ...
    pub async fn start(
        pod: &str,
        count: usize,
        fd: &Arc<OwnedFd>,
        hooks: &netns::ThreadHooks,
    ) -> std::io::Result<Lanes> {
        let mut lanes = Lanes::default();
        for i in 1..count {
            let (tx, rx) = tokio::sync::oneshot::channel();
            let stop = lanes.stop.clone();
            let thread = netns::spawn(
                format!("pod{i}-{pod}"),
                fd.clone(),
                hooks.clone(),
                move || async move {
                    let _ = tx.send(Handle::current());
                    stop.cancelled().await;
                },
                |r| {
                    if let Err(e) = r {
                        tracing::error!("a pod's lane thread: {e}");
                    }
                },
            );
            let thread = match thread {
                Ok(t) => t,
                Err(e) => {
                    lanes.stop_now();
                    return Err(e);
                }
            };
            lanes.threads.push(thread);
            match rx.await {
                Ok(h) => lanes.handles.push(h),
                Err(_) => {
                    lanes.stop_now();
                    return Err(std::io::Error::other("a lane thread ended as it started"));
                }
            }
        }
        Ok(lanes)
    }

    /// Runs `task` on lane `lane` (0: the calling runtime, the pod's thread).
    pub fn spawn<F>(&self, lane: usize, task: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        match lane.checked_sub(1).and_then(|i| self.handles.get(i)) {
            Some(h) => h.spawn(task),
            None => tokio::spawn(task),
        }
    }

    /// How many threads the pod runs on, its own included.
    pub fn count(&self) -> usize {
        self.handles.len() + 1
    }

    /// Stops the lanes (their tasks have ended) and joins their threads.
    pub fn stop_now(&mut self) {
        self.stop.cancel();
        self.handles.clear();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Lanes {
    /// Lane threads never outlive their pod, even one whose start failed.
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_past_one_core_spread_over_lanes() {
        // Nothing limited, or a core in all: one thread, as ever.
        assert_eq!(placement(&[None, None, None], 4), [0, 0, 0]);
        assert_eq!(placement(&[Some(500), Some(500), None], 4), [0, 0, 0]);
        assert_eq!(placement(&[None, Some(1000)], 4), [0, 0]);
        // Two busy containers of a core each: a core each.
        assert_eq!(placement(&[Some(1000), Some(1000)], 4), [0, 1]);
        // 600m + 600m do not fit one core; 400m fits beside either.
        assert_eq!(placement(&[Some(600), Some(600), Some(400)], 4), [0, 1, 0]);
        // Largest first: the 900m one gets lane 0, the 300m ones share lane 1.
        assert_eq!(placement(&[Some(300), Some(900), Some(300)], 4), [1, 0, 1]);
        // An unlimited container stays on lane 0 and counts nothing there.
        assert_eq!(placement(&[None, Some(1000), Some(1000)], 4), [0, 0, 1]);
        // More than a core for one module is one core: it cannot use more.
        assert_eq!(placement(&[Some(2000)], 4), [0]);
        assert_eq!(placement(&[Some(2000), Some(2000)], 4), [0, 1]);
        // No more lanes than cores: the rest go where the load is least.
        assert_eq!(
            placement(&[Some(1000), Some(1000), Some(1000)], 2),
            [0, 1, 0]
        );
        // One core: one thread.
        assert_eq!(placement(&[Some(1000), Some(1000)], 1), [0, 0]);
    }
}
