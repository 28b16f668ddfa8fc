//! The last line of defence against a daemon crash loop caused by one pod.
//!
//! The daemon must not die for a guest: every bound a guest can push is enforced per container
//! ([`crate::wasm::limits`]). If it dies anyway (a bug, the kernel's OOM killer), the pod that did it
//! comes back at the next start — a stored pod, a file of the pods directory — and could take
//! the daemon down again before anyone can delete it. So each pod start is *marked* in
//! `<state_dir>/starts.json`, and the mark is cleared once the daemon has lived
//! [`STABLE_AFTER`] with the pod running. A mark found at start means the daemon died within that
//! window of the pod's start: after [`TOLERATED`] such deaths in a row the pod waits out a
//! backoff (10 s, doubling, at most 5 minutes) before it is started, while the API already
//! answers, so `peapod delete` and `peapod ps` work.
//!
//! A process crash does not lose written data (the page cache survives it), so the marks are
//! written with a rename but without fsync ([`crate::durable::replace`]): they cost no disk
//! flush on a pod start.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use tokio::time::Instant;

/// How long a pod must run, with the daemon alive, before its start counts as safe.
pub(super) const STABLE_AFTER: Duration = Duration::from_secs(30);
/// Daemon deaths in a row, within [`STABLE_AFTER`] of a pod's start, that are tolerated without
/// delay (one `kill -9` or power cut must not delay recovery).
pub(super) const TOLERATED: u32 = 1;
const FIRST_DELAY: Duration = Duration::from_secs(10);
const MAX_DELAY: Duration = Duration::from_secs(300);

pub(super) struct CrashGuard {
    path: PathBuf,
    /// Pod -> daemon starts in a row that died within the window of this pod's start.
    marks: BTreeMap<String, u32>,
    /// Pods started by this daemon whose window is still open.
    open: BTreeMap<String, Instant>,
}

impl CrashGuard {
    /// Reads the marks the last run left (a missing or unreadable file: none).
    pub(super) fn load(state_dir: &std::path::Path) -> Self {
        let path = state_dir.join("starts.json");
        let marks = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        CrashGuard {
            path,
            marks,
            open: BTreeMap::new(),
        }
    }

    /// Deaths in a row within the window of `pod`'s start, as found at this daemon's start.
    pub(super) fn deaths(&self, pod: &str) -> u32 {
        if self.open.contains_key(pod) {
            0
        } else {
            self.marks.get(pod).copied().unwrap_or(0)
        }
    }

    /// How long `pod` must wait before it starts (zero for a pod that never hurt the daemon).
    pub(super) fn delay(&self, pod: &str) -> Duration {
        match self.deaths(pod) {
            n if n <= TOLERATED => Duration::ZERO,
            n => FIRST_DELAY
                .saturating_mul(1 << (n - TOLERATED - 1).min(16))
                .min(MAX_DELAY),
        }
    }

    /// Marks `pod` as starting now.
    pub(super) fn starting(&mut self, pod: &str) {
        if !self.open.contains_key(pod) {
            *self.marks.entry(pod.to_string()).or_insert(0) += 1;
        }
        self.open.insert(pod.to_string(), Instant::now());
        self.save();
    }

    /// Forgets a pod (deleted, or its start failed without harm).
    pub(super) fn forget(&mut self, pod: &str) {
        self.open.remove(pod);
        if self.marks.remove(pod).is_some() {
            self.save();
        }
    }

    /// Clears the marks of pods that have run [`STABLE_AFTER`]; call it now and then.
    pub(super) fn tick(&mut self) {
        let stable: Vec<String> = self
            .open
            .iter()
            .filter(|(_, t)| t.elapsed() >= STABLE_AFTER)
            .map(|(p, _)| p.clone())
            .collect();
        for p in &stable {
            self.open.remove(p);
            self.marks.remove(p);
        }
        if !stable.is_empty() {
            self.save();
        }
    }

    /// A clean stop: nothing crashed.
    pub(super) fn clear(&mut self) {
        self.open.clear();
        self.marks.clear();
        let _ = std::fs::remove_file(&self.path);
    }

    fn save(&self) {
        let r = self
            .path
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| {
                let marks = serde_json::to_vec(&self.marks).expect("serializes");
                crate::durable::replace(&self.path, &marks)
            });
        if let Err(e) = r {
            tracing::warn!("{}: {e}", self.path.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deaths_in_a_row_delay_the_pod_and_a_stable_run_clears_them() {
        let dir = tempfile::tempdir().unwrap();
        let run = |n: usize| {
            // n daemon starts that each die right after starting the pod.
            for _ in 0..n {
                let mut g = CrashGuard::load(dir.path());
                g.starting("bad");
            }
            CrashGuard::load(dir.path())
        };
        let g = run(1);
        assert_eq!((g.deaths("bad"), g.delay("bad")), (1, Duration::ZERO));
        assert_eq!(g.delay("good"), Duration::ZERO);
        let g = run(1);
        assert_eq!(g.delay("bad"), Duration::from_secs(10));
        let g = run(2);
        assert_eq!(g.delay("bad"), Duration::from_secs(40));
        let mut g = run(20);
        assert_eq!(g.delay("bad"), MAX_DELAY);
        g.starting("bad");
        assert_eq!(g.deaths("bad"), 0, "running now");
        g.open.insert("bad".into(), Instant::now() - STABLE_AFTER);
        g.tick();
        assert_eq!(CrashGuard::load(dir.path()).deaths("bad"), 0);
        run(3);
        let mut g = CrashGuard::load(dir.path());
        g.clear();
        assert_eq!(CrashGuard::load(dir.path()).deaths("bad"), 0);
    }
}
