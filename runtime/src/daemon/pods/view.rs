//! What `ps`, `inspect` and systemd's `STATUS=` show of the pods: each pod's status, derived from
//! its containers' (init containers end by design), its age, readiness and restarts.

use std::collections::BTreeSet;

use tokio::time::Instant;

use super::{Origin, Pods};
use crate::run::supervisor::{State, Status};
use crate::spec::Kind;

pub(crate) use crate::wire::PodView;

/// A pod is ready when every container that stays (apps and sidecars; plain init containers
/// end by design) is, and it has one.
pub(super) fn pod_ready(containers: &[Status]) -> bool {
    let mut live = containers
        .iter()
        .filter(|c| c.kind != Kind::Init)
        .peekable();
    live.peek().is_some() && live.all(|c| c.ready)
}

impl Pods {
    pub(crate) fn view(&self, name: &str) -> Option<PodView> {
        let Some(e) = self.entries.get(name) else {
            return self.terminating(name);
        };
        let containers = e.running.as_ref().map(|p| p.statuses()).unwrap_or_default();
        // Plain init containers end by design; the pod's state is that of the others.
        let (init, live): (Vec<&Status>, Vec<&Status>) =
            containers.iter().partition(|c| c.kind == Kind::Init);
        let status = match (&e.running, &e.error) {
            (None, None) if e.delayed.is_some() => "waiting",
            // Registered, waiting for an earlier sandbox of its name to go.
            (None, None) => "starting",
            (None, _) => "failed",
            _ if init
                .iter()
                .any(|c| c.state == State::Exited && c.reason.as_deref() != Some("Completed")) =>
            {
                "failed"
            }
            _ if init.iter().all(|c| c.state == State::Exited)
                && live.iter().all(|c| c.state == State::Running) =>
            {
                "running"
            }
            // Waiting after a run: its backoff; before the first: it is being started.
            _ if containers
                .iter()
                .any(|c| c.state == State::Waiting && c.started_at.is_some()) =>
            {
                "restarting"
            }
            _ if containers.iter().any(|c| c.state == State::Waiting)
                || init.iter().any(|c| c.state != State::Exited) =>
            {
                "starting"
            }
            _ if live.iter().all(|c| c.state == State::Exited) => {
                if live.iter().all(|c| c.exit_code == Some(0)) {
                    "succeeded"
                } else {
                    "failed"
                }
            }
            _ => "running",
        };
        Some(PodView {
            labels: e.spec.labels.clone(),
            ip: e.running.as_ref().map(|p| p.ip()),
            netns: e.running.as_ref().map(|p| p.netns_path().to_path_buf()),
            ready: pod_ready(&containers),
            restarts: containers.iter().map(|c| c.restarts).sum(),
            containers,
            volumes: crate::host::volumes::views(&self.cfg, &e.spec),
            ports: e
                .spec
                .published_ports()
                .iter()
                .map(|p| {
                    let ip = if p.host_ip.is_unspecified() {
                        String::new()
                    } else {
                        format!("{}:", p.host_ip)
                    };
                    format!("{ip}{}->{}/{}", p.host_port, p.container_port, p.protocol)
                })
                .collect(),
            error: e.error.clone().or_else(|| {
                e.delayed.map(|t| {
                    format!(
                        "crash-loop backoff: the daemon stopped {} times in a row soon after \
                         starting this pod; it starts in {}s",
                        self.guard.deaths(name),
                        t.saturating_duration_since(Instant::now()).as_secs()
                    )
                })
            }),
            spec: e.spec.containers.iter().map(spec_view).collect(),
            ..PodView::bare(name, status, source(&e.origin), e.created)
        })
    }

    /// A pod that is only being stopped (deleted, or re-created and not registered again).
    fn terminating(&self, name: &str) -> Option<PodView> {
        let s = self.stop_under_way(name)?;
        Some(PodView {
            ip: s.ip,
            netns: s.netns.clone(),
            ..PodView::bare(name, "terminating", source(&s.origin), s.created)
        })
    }

    /// Every pod, those being stopped too (once, by name).
    pub(crate) fn views(&self) -> Vec<PodView> {
        let names: BTreeSet<&String> = self.entries.keys().chain(self.stopping.keys()).collect();
        names.into_iter().filter_map(|n| self.view(n)).collect()
    }

    /// How many pods there are, and how many of them are ready (every second: from the
    /// containers' statuses alone, not whole views).
    pub(crate) fn readiness(&self) -> (usize, usize) {
        let ready = self
            .entries
            .values()
            .filter(|e| e.running.as_ref().is_some_and(|p| pod_ready(&p.statuses())))
            .count();
        (self.entries.len(), ready)
    }
}

/// What a container's spec asks for, in words.
fn spec_view(c: &crate::spec::ContainerSpec) -> crate::wire::ContainerSpecView {
    let probe = |what: &str, p: &Option<crate::spec::Probe>| {
        p.as_ref().map(|p| {
            format!(
                "{what}: {} every {} (timeout {}, {} failures, first after {})",
                p.action,
                humantime::format_duration(p.period),
                humantime::format_duration(p.timeout),
                p.failure_threshold,
                humantime::format_duration(p.initial_delay),
            )
        })
    };
    let p = &c.probes;
    crate::wire::ContainerSpecView {
        name: c.name.clone(),
        kind: c.kind,
        module: c.module.clone(),
        image: c.image.as_ref().map(|i| format!("oci://{}", i.pinned())),
        args: c.args.clone(),
        restart_policy: format!("{:?}", c.restart_policy),
        memory_limit: c.memory_limit,
        cpu_limit: c.cpu_limit,
        probes: [
            probe("startup", &p.startup),
            probe("liveness", &p.liveness),
            probe("readiness", &p.readiness),
        ]
        .into_iter()
        .flatten()
        .collect(),
        mounts: c
            .volume_mounts
            .iter()
            .map(|m| {
                let ro = if m.read_only { " (ro)" } else { "" };
                format!("{} -> {}{ro}", m.volume, m.mount_path)
            })
            .collect(),
        ports: c
            .ports
            .iter()
            .map(|p| format!("{}/{}", p.container_port, p.protocol))
            .collect(),
    }
}

fn source(origin: &Origin) -> String {
    match origin {
        Origin::File(p) => format!("file:{}", p.display()),
        Origin::Api => "api".into(),
    }
}
