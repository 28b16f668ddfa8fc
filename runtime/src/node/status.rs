//! A peapod pod's view (`GET /v1/pods`) as a v1 `PodStatus`: phase, the four conditions, the
//! pod's and the node's addresses, and every container's state, last state and restarts.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::SystemTime;

use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
    ContainerStatus, HostIP, PodCondition, PodIP, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::chrono::{DateTime, Utc};

use crate::spec::Kind;
use crate::wire::{self, PodView, State};

fn time(t: SystemTime) -> Time {
    Time(DateTime::<Utc>::from(t))
}

/// `images`: each container's `image` as the manifest wrote it (container name -> image).
pub(super) fn pod_status(
    view: &PodView,
    images: &BTreeMap<String, String>,
    host_ip: IpAddr,
) -> PodStatus {
    let (mut init, mut app) = (Vec::new(), Vec::new());
    for c in &view.containers {
        let s = container_status(&view.name, c, images);
        if c.kind == Kind::App {
            app.push(s);
        } else {
            init.push(s);
        }
    }
    let initialized = view.containers.iter().all(|c| match c.kind {
        Kind::Init => c.state == State::Exited && c.exit_code == Some(0),
        Kind::Sidecar => c.started,
        Kind::App => true,
    });
    let containers_ready = view
        .containers
        .iter()
        .filter(|c| c.kind != Kind::Init)
        .all(|c| c.ready);
    let phase = match view.status.as_str() {
        "succeeded" => "Succeeded",
        "failed" => "Failed",
        "running" | "restarting" | "terminating" if initialized => "Running",
        _ => "Pending",
    };
    let condition = |type_: &str, ok: bool| PodCondition {
        type_: type_.into(),
        status: if ok { "True" } else { "False" }.into(),
        ..PodCondition::default()
    };
    let ip = view.ip.map(|ip| ip.to_string());
    PodStatus {
        phase: Some(phase.into()),
        conditions: Some(vec![
            condition("PodScheduled", true),
            condition("Initialized", initialized),
            condition("ContainersReady", containers_ready),
            condition("Ready", containers_ready && initialized),
        ]),
        pod_ip: ip.clone(),
        pod_ips: ip.map(|ip| vec![PodIP { ip }]),
        host_ip: Some(host_ip.to_string()),
        host_ips: Some(vec![HostIP {
            ip: host_ip.to_string(),
        }]),
        start_time: DateTime::parse_from_rfc3339(&view.created)
            .ok()
            .map(|t| Time(t.with_timezone(&Utc))),
        message: view.error.clone(),
        init_container_statuses: (!init.is_empty()).then_some(init),
        container_statuses: Some(app),
        ..PodStatus::default()
    }
}

fn container_status(
    pod: &str,
    c: &wire::ContainerStatus,
    images: &BTreeMap<String, String>,
) -> ContainerStatus {
    let state = match c.state {
        State::Running => ContainerState {
            running: Some(ContainerStateRunning {
                started_at: c.started_at.map(time),
            }),
            ..ContainerState::default()
        },
        State::Exited => ContainerState {
            terminated: Some(ContainerStateTerminated {
                exit_code: exit_code(c.exit_code, c.reason.as_deref()),
                reason: c.reason.clone(),
                message: c.last.clone(),
                started_at: c.started_at.map(time),
                ..ContainerStateTerminated::default()
            }),
            ..ContainerState::default()
        },
        State::Waiting => ContainerState {
            waiting: Some(ContainerStateWaiting {
                reason: Some(
                    if c.restarts > 0 {
                        "CrashLoopBackOff"
                    } else {
                        "ContainerCreating"
                    }
                    .into(),
                ),
                message: c.last.clone(),
            }),
            ..ContainerState::default()
        },
    };
    let last_state = c.last_state.as_ref().map(|t| ContainerState {
        terminated: Some(ContainerStateTerminated {
            exit_code: exit_code(t.exit_code, Some(&t.reason)),
            reason: Some(t.reason.clone()),
            message: (!t.message.is_empty()).then(|| t.message.clone()),
            started_at: t.started_at.map(time),
            finished_at: t.finished_at.map(time),
            ..ContainerStateTerminated::default()
        }),
        ..ContainerState::default()
    });
    ContainerStatus {
        name: c.name.clone(),
        image: images.get(&c.name).cloned().unwrap_or_default(),
        image_id: String::new(),
        container_id: Some(format!("peapod://{pod}/{}", c.name)),
        ready: c.ready,
        started: Some(c.started),
        restart_count: i32::try_from(c.restarts).unwrap_or(i32::MAX),
        state: Some(state),
        last_state,
        ..ContainerStatus::default()
    }
}

/// A run without an exit code (a trap, a limit) shows as the kernel's would for a killed
/// process: 137 for OOMKilled (SIGKILL), 1 otherwise.
fn exit_code(code: Option<i32>, reason: Option<&str>) -> i32 {
    code.unwrap_or(if reason == Some("OOMKilled") { 137 } else { 1 })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(containers: Vec<wire::ContainerStatus>, status: &str) -> PodView {
        let mut v = PodView::bare("default-web", status, "api".into(), SystemTime::now());
        v.ip = Some("10.66.0.7".parse().unwrap());
        v.containers = containers;
        v
    }

    #[test]
    fn a_restarted_container_says_how_it_ended() {
        let mut app = wire::ContainerStatus::new("app", Kind::App);
        app.state = State::Running;
        app.ready = true;
        app.started = true;
        app.restarts = 1;
        app.last_state = Some(wire::Terminated {
            exit_code: Some(3),
            reason: "Error".into(),
            message: "exited with code 3".into(),
            started_at: None,
            finished_at: None,
        });
        let mut init = wire::ContainerStatus::new("setup", Kind::Init);
        init.state = State::Exited;
        init.exit_code = Some(0);
        let images = BTreeMap::from([("app".to_string(), "file:///a.wasm".to_string())]);
        let s = pod_status(
            &view(vec![init, app], "running"),
            &images,
            "10.0.0.1".parse().unwrap(),
        );
        assert_eq!(s.phase.as_deref(), Some("Running"));
        assert_eq!(s.pod_ip.as_deref(), Some("10.66.0.7"));
        let c = &s.container_statuses.as_ref().unwrap()[0];
        assert_eq!(
            (c.restart_count, c.ready, c.image.as_str()),
            (1, true, "file:///a.wasm")
        );
        let last = c.last_state.as_ref().unwrap().terminated.as_ref().unwrap();
        assert_eq!((last.exit_code, last.reason.as_deref()), (3, Some("Error")));
        let ready = s.conditions.unwrap().iter().all(|c| c.status == "True");
        assert!(ready);
    }

    #[test]
    fn a_pod_whose_init_has_not_finished_is_pending() {
        let init = wire::ContainerStatus::new("setup", Kind::Init);
        let app = wire::ContainerStatus::new("app", Kind::App);
        let s = pod_status(
            &view(vec![init, app], "running"),
            &BTreeMap::new(),
            "10.0.0.1".parse().unwrap(),
        );
        assert_eq!(s.phase.as_deref(), Some("Pending"));
        let waiting = s.container_statuses.unwrap()[0]
            .state
            .clone()
            .unwrap()
            .waiting
            .unwrap();
        assert_eq!(waiting.reason.as_deref(), Some("ContainerCreating"));
    }
}
