//! Figures: named samples, summarized as min / median / max.

use std::time::Duration;

use serde::Serialize;

/// A duration in milliseconds, the unit of every timed figure.
pub(crate) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Resident set of process `pid` ("self" for this one), KiB; 0 if it is gone.
pub(crate) fn rss_kib(pid: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct Summary {
    pub n: usize,
    pub min: f64,
    pub median: f64,
    pub max: f64,
}

impl Summary {
    pub(crate) fn of(samples: &[f64]) -> Option<Summary> {
        if samples.is_empty() {
            return None;
        }
        let mut s = samples.to_vec();
        s.sort_by(|a, b| a.total_cmp(b));
        let mid = s.len() / 2;
        let median = if s.len() % 2 == 1 {
            s[mid]
        } else {
            (s[mid - 1] + s[mid]) / 2.0
        };
        Some(Summary {
            n: s.len(),
            min: s[0],
            median,
            max: s[s.len() - 1],
        })
    }
}

/// One measured quantity, for peapod and (when measured) its peer.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Figure {
    pub group: &'static str,
    pub name: String,
    pub unit: &'static str,
    pub peapod: Option<Summary>,
    /// What it is compared against: the kernel floor, iperf3, or podman.
    pub peer_name: Option<&'static str>,
    pub peer: Option<Summary>,
    /// `why` a figure is missing, when it is.
    pub note: Option<String>,
}

impl Figure {
    pub(crate) fn new(
        group: &'static str,
        name: impl Into<String>,
        unit: &'static str,
        samples: &[f64],
    ) -> Self {
        Figure {
            group,
            name: name.into(),
            unit,
            peapod: Summary::of(samples),
            peer_name: None,
            peer: None,
            note: None,
        }
    }

    pub(crate) fn against(mut self, peer: &'static str, samples: &[f64]) -> Self {
        self.peer_name = Some(peer);
        self.peer = Summary::of(samples);
        self
    }

    pub(crate) fn noted(mut self, note: impl Into<String>) -> Self {
        self.note = Some(note.into());
        self
    }

    /// peapod's median over the peer's median.
    pub(crate) fn ratio(&self) -> Option<f64> {
        match (&self.peapod, &self.peer) {
            (Some(a), Some(b)) if b.median != 0.0 => Some(a.median / b.median),
            _ => None,
        }
    }
}

/// CPU time (user + system) of a `/proc/.../stat` file, in ms.
fn stat_cpu_ms(path: &std::path::Path) -> Option<f64> {
    let text = std::fs::read_to_string(path).ok()?;
    let fields: Vec<&str> = text.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    // SAFETY: sysconf reads a constant of the system.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Some(ticks * 1000.0 / hz)
}

/// CPU time of this whole process so far, in ms.
pub(crate) fn process_cpu_ms() -> f64 {
    stat_cpu_ms(std::path::Path::new("/proc/self/stat")).unwrap_or(0.0)
}

/// CPU time so far of this process's threads named `name`, in ms (their schedstat: ns).
pub(crate) fn thread_cpu_ms(name: &str) -> f64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0.0;
    };
    tasks
        .flatten()
        .filter(|t| std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim() == name))
        .filter_map(|t| {
            let stat = std::fs::read_to_string(t.path().join("schedstat")).ok()?;
            stat.split_whitespace().next()?.parse::<f64>().ok()
        })
        .sum::<f64>()
        / 1e6
}

/// Threads of this process.
pub(crate) fn threads() -> f64 {
    std::fs::read_dir("/proc/self/task").map_or(0, |d| d.count()) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary() {
        let s = Summary::of(&[3.0, 1.0, 2.0]).unwrap();
        assert_eq!((s.n, s.min, s.median, s.max), (3, 1.0, 2.0, 3.0));
        assert_eq!(Summary::of(&[4.0, 1.0, 2.0, 3.0]).unwrap().median, 2.5);
        assert!(Summary::of(&[]).is_none());
        let f = Figure::new("g", "x", "ms", &[2.0]).against("peer", &[4.0]);
        assert_eq!(f.ratio(), Some(0.5));
    }
}
