//! `/metrics`: the daemon's figures in Prometheus' text format (0.0.4), on the API socket and,
//! when `[metrics] listen` says so, on a TCP address.
//!
//! Two kinds of figure:
//! - what is observed as it happens and kept for the daemon's life ([`Metrics`]): start and
//!   restart latencies (histograms), events by type and reason, container terminations by
//!   reason, probe failures by probe, and the process' own figures (`process_*`: CPU, RSS, fds,
//!   threads, start time);
//! - what the pods are now, read at each scrape from their views ([`Metrics::render`]): pods by
//!   status, containers by state, each container's restarts, CPU seconds, memory and readiness,
//!   published ports, and the subnet's addresses leased and free.
//!
//! Names and labels follow Prometheus' conventions: a `peapod_` prefix, base units (seconds,
//! bytes), `_total` for counters.

use std::time::Duration;

use prometheus::{
    CounterVec, Encoder, Histogram, HistogramOpts, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

use crate::event::Note;
use crate::wire::{EventType, PodView, State};

/// Latency buckets, in seconds: a sandbox on a board takes milliseconds, a compile seconds.
const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// What the daemon observes as it happens (see the module's comment).
pub(crate) struct Metrics {
    registry: Registry,
    pod_start: Histogram,
    container_restart: Histogram,
    events: IntCounterVec,
    terminations: IntCounterVec,
    probe_failures: IntCounterVec,
}

/// The reasons a run ends with (Kubernetes' words).
const TERMINATIONS: [&str; 7] = [
    "Completed",
    "Error",
    "Trapped",
    "OOMKilled",
    "LimitReached",
    "Unhealthy",
    "Restarted",
];

fn must<T>(r: prometheus::Result<T>) -> T {
    r.expect("a metric's name, labels and buckets are constants")
}

impl Metrics {
    pub(crate) fn new() -> Metrics {
        let registry = Registry::new();
        let histogram = |name: &str, help: &str| {
            let opts = HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec());
            let h = must(Histogram::with_opts(opts));
            must(registry.register(Box::new(h.clone())));
            h
        };
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = must(IntCounterVec::new(Opts::new(name, help), labels));
            must(registry.register(Box::new(c.clone())));
            c
        };
        let m = Metrics {
            pod_start: histogram(
                "peapod_pod_start_seconds",
                "From a pod's start to its containers running: sandbox (namespace, veth, lease, \
                 routes) and launch.",
            ),
            container_restart: histogram(
                "peapod_container_restart_seconds",
                "From the end of a container's run to the start of its next one (backoff \
                 included).",
            ),
            events: counter(
                "peapod_events_total",
                "Events recorded, by type and reason (see `peapod events`).",
                &["type", "reason"],
            ),
            terminations: counter(
                "peapod_container_terminations_total",
                "Runs of containers that ended, by reason (OOMKilled and LimitReached are limit \
                 kills).",
                &["reason"],
            ),
            probe_failures: counter(
                "peapod_probe_failures_total",
                "Failed checks of probes, by probe (startup, liveness, readiness).",
                &["probe"],
            ),
            registry,
        };
        // Every reason is there from the start, at 0: a rate is defined before the first one.
        for r in TERMINATIONS {
            m.terminations.with_label_values(&[r]);
        }
        for p in ["startup", "liveness", "readiness"] {
            m.probe_failures.with_label_values(&[p]);
        }
        #[cfg(target_os = "linux")]
        must(m.registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        )));
        m
    }

    /// A pod's start took `took`.
    pub(crate) fn pod_started(&self, took: Duration) {
        self.pod_start.observe(took.as_secs_f64());
    }

    /// Counts what `note` says happened.
    pub(crate) fn note(&self, note: &Note) {
        let kind = match note.kind {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        };
        self.events
            .with_label_values(&[kind, note.reason.as_str()])
            .inc();
        if TERMINATIONS.contains(&note.reason.as_str()) {
            self.terminations
                .with_label_values(&[note.reason.as_str()])
                .inc();
        }
        if note.reason == "Unhealthy"
            && let Some(probe) = ["startup", "liveness", "readiness"]
                .into_iter()
                .find(|p| note.message.starts_with(p))
        {
            self.probe_failures.with_label_values(&[probe]).inc();
        }
        if let Some(took) = note.took {
            self.container_restart.observe(took.as_secs_f64());
        }
    }

    /// The exposition: what was observed, and what `pods` are now; `addresses` is (leased,
    /// usable) of the bridge's subnet.
    pub(crate) fn render(&self, pods: &[PodView], addresses: (usize, usize)) -> String {
        let now = Registry::new();
        let gauge = |name: &str, help: &str, labels: &[&str]| {
            let g = must(IntGaugeVec::new(Opts::new(name, help), labels));
            must(now.register(Box::new(g.clone())));
            g
        };
        let counter = |name: &str, help: &str| {
            let c = must(CounterVec::new(
                Opts::new(name, help),
                &["pod", "container"],
            ));
            must(now.register(Box::new(c.clone())));
            c
        };
        let by_status = gauge("peapod_pods", "Pods, by status.", &["status"]);
        for s in [
            "starting",
            "running",
            "restarting",
            "succeeded",
            "failed",
            "waiting",
            "terminating",
        ] {
            by_status.with_label_values(&[s]);
        }
        let by_state = gauge("peapod_containers", "Containers, by state.", &["state"]);
        for s in [State::Waiting, State::Running, State::Exited] {
            by_state.with_label_values(&[s.word()]);
        }
        let ready = gauge(
            "peapod_container_ready",
            "1 if the container is ready (its readiness probe passes), else 0.",
            &["pod", "container"],
        );
        let memory = gauge(
            "peapod_container_memory_bytes",
            "Linear memories and tables of the container's current run.",
            &["pod", "container"],
        );
        let restarts = counter(
            "peapod_container_restarts_total",
            "Restarts of the container in place.",
        );
        let cpu = counter(
            "peapod_container_cpu_seconds_total",
            "CPU time of all the container's runs (as `cpu_limit` meters it).",
        );
        let published = must(IntGauge::new(
            "peapod_published_ports",
            "Host ports the pods publish (each a DNAT rule of the firewall).",
        ));
        must(now.register(Box::new(published.clone())));
        let ipam = gauge(
            "peapod_ipam_addresses",
            "Addresses of the bridge's subnet: leased to pods, and usable in all.",
            &["state"],
        );
        ipam.with_label_values(&["leased"]).set(addresses.0 as i64);
        ipam.with_label_values(&["usable"]).set(addresses.1 as i64);
        let info = gauge("peapod_build_info", "peapod's version.", &["version"]);
        info.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        for p in pods {
            by_status.with_label_values(&[p.status.as_str()]).inc();
            published.add(p.ports.len() as i64);
            for c in &p.containers {
                let l = [p.name.as_str(), c.name.as_str()];
                by_state.with_label_values(&[c.state.word()]).inc();
                ready.with_label_values(&l).set(i64::from(c.ready));
                memory.with_label_values(&l).set(c.memory_bytes as i64);
                restarts.with_label_values(&l).inc_by(f64::from(c.restarts));
                cpu.with_label_values(&l).inc_by(c.cpu_seconds);
            }
        }
        let mut families = self.registry.gather();
        families.extend(now.gather());
        families.sort_by(|a, b| a.name().cmp(b.name()));
        let mut out = Vec::new();
        must(TextEncoder::new().encode(&families, &mut out));
        String::from_utf8(out).expect("the text format is UTF-8")
    }
}

/// The daemon process' own figures (what `top` shows of it), from `/proc/self`.
pub(crate) fn daemon_status() -> procfs::ProcResult<crate::wire::DaemonStatus> {
    use procfs::{Current, WithCurrentSystemInfo};
    let me = procfs::process::Process::myself()?;
    let stat = me.stat()?;
    let ticks = procfs::ticks_per_second() as f64;
    let uptime = procfs::Uptime::current().map_or(0.0, |u| u.uptime);
    Ok(crate::wire::DaemonStatus {
        version: env!("CARGO_PKG_VERSION").into(),
        pid: std::process::id(),
        rss_bytes: stat.rss_bytes().get(),
        cpu_seconds: (stat.utime + stat.stime) as f64 / ticks,
        threads: u64::try_from(stat.num_threads).unwrap_or(0),
        open_fds: me.fd_count().map_or(0, |n| n as u64),
        uptime_seconds: (uptime - stat.starttime as f64 / ticks).max(0.0) as u64,
    })
}

/// The content type of the text format.
pub(crate) const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{ContainerStatus, Kind};

    fn container(name: &str, state: State, restarts: u32) -> ContainerStatus {
        ContainerStatus {
            state,
            ready: state == State::Running,
            started: state == State::Running,
            restarts,
            cpu_seconds: 1.5,
            memory_bytes: 65536,
            ..ContainerStatus::new(name, Kind::App)
        }
    }

    fn pod(name: &str, status: &str, containers: Vec<ContainerStatus>) -> PodView {
        PodView {
            ready: true,
            containers,
            ports: vec!["8080->80/TCP".into()],
            ..PodView::bare(name, status, "api".into(), std::time::SystemTime::now())
        }
    }

    /// One sample line of the exposition, by its name and labels as written.
    fn sample<'a>(text: &'a str, series: &str) -> Option<&'a str> {
        text.lines()
            .find(|l| l.starts_with(series) && l.as_bytes().get(series.len()) == Some(&b' '))
            .map(|l| &l[series.len() + 1..])
    }

    #[test]
    fn the_exposition_says_what_the_pods_are_and_what_happened() {
        let m = Metrics::new();
        m.pod_started(Duration::from_millis(4));
        let note = |kind, reason: &str, message: &str, took| Note {
            kind,
            reason: reason.into(),
            object: "pod/web/app".into(),
            message: message.into(),
            took,
        };
        m.note(&note(
            EventType::Warning,
            "OOMKilled",
            "container app memory limit",
            None,
        ));
        m.note(&note(
            EventType::Warning,
            "Unhealthy",
            "readiness probe failed: 404",
            None,
        ));
        let restart = Some(Duration::from_millis(120));
        m.note(&note(
            EventType::Normal,
            "Started",
            "started container app",
            restart,
        ));
        let pods = [
            pod("web", "running", vec![container("app", State::Running, 2)]),
            pod("job", "failed", vec![container("run", State::Exited, 0)]),
        ];
        let text = m.render(&pods, (2, 1021));
        let s = |series: &str| sample(&text, series).unwrap_or_else(|| panic!("{series}:\n{text}"));
        assert_eq!(s(r#"peapod_pods{status="running"}"#), "1");
        assert_eq!(s(r#"peapod_pods{status="failed"}"#), "1");
        assert_eq!(s(r#"peapod_pods{status="waiting"}"#), "0");
        assert_eq!(s(r#"peapod_containers{state="exited"}"#), "1");
        assert_eq!(
            s(r#"peapod_container_restarts_total{container="app",pod="web"}"#),
            "2"
        );
        assert_eq!(
            s(r#"peapod_container_cpu_seconds_total{container="app",pod="web"}"#),
            "1.5"
        );
        assert_eq!(
            s(r#"peapod_container_ready{container="run",pod="job"}"#),
            "0"
        );
        assert_eq!(
            s(r#"peapod_container_terminations_total{reason="OOMKilled"}"#),
            "1"
        );
        assert_eq!(
            s(r#"peapod_container_terminations_total{reason="Error"}"#),
            "0"
        );
        assert_eq!(s(r#"peapod_probe_failures_total{probe="readiness"}"#), "1");
        assert_eq!(
            s(r#"peapod_events_total{reason="Started",type="Normal"}"#),
            "1"
        );
        assert_eq!(s("peapod_pod_start_seconds_count"), "1");
        assert_eq!(
            s(r#"peapod_container_restart_seconds_bucket{le="0.25"}"#),
            "1"
        );
        assert_eq!(
            s(r#"peapod_container_restart_seconds_bucket{le="0.1"}"#),
            "0"
        );
        assert_eq!(s("peapod_published_ports"), "2");
        assert_eq!(s(r#"peapod_ipam_addresses{state="leased"}"#), "2");
        assert!(
            sample(&text, "process_resident_memory_bytes").is_some(),
            "{text}"
        );
        assert!(text.contains("# TYPE peapod_container_restart_seconds histogram"));
    }
}
