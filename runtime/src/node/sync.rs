//! The pods bound to this node, kept in step with the daemon's both ways.
//!
//! Cluster to board: a watch of `spec.nodeName=<node>`. Each pod is translated (its config maps
//! and secrets fetched) and applied to the daemon when its translation differs from what was
//! last applied; the daemon leaves an unchanged pod alone, so a re-list after a reconnect
//! restarts nothing. A pod being deleted is stopped, then released (deleted with no grace, as
//! the kubelet does). When a watch (re)starts with a full list, the daemon's pods of this node
//! that the list no longer has are removed: deleted while the board was offline.
//!
//! Board to cluster: every [`STATUS_PERIOD`] the daemon's view of each pod, as a `PodStatus`,
//! patched when it changed; events for starts, restarts and probe failures.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use kube::Resource;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::WatchStreamExt;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::watcher::{self, watcher};
use tokio::sync::Mutex;

use super::{Blocked, NAME_LABEL, NAMESPACE_LABEL, UID_LABEL, names, projected, status};
use crate::client::{Client, ClientError};
use crate::config::{Config, NodeSettings};
use crate::spec::{PodSpec, SpecError, manifest};
use crate::wire;

/// How often the pods' status is compared with what the cluster was told.
const STATUS_PERIOD: Duration = Duration::from_secs(1);

/// How long a pod waiting for something of the cluster's waits before it is tried again.
const RETRY_PERIOD: Duration = Duration::from_secs(5);

/// What the agent knows of one cluster pod (by uid).
struct Known {
    pod: Pod,
    /// The pod's `spec` (as JSON) when it was last applied to the daemon.
    applied: Option<serde_json::Value>,
    /// The status last patched (as JSON), to patch only changes.
    reported: Option<serde_json::Value>,
    /// The daemon's view at the last status round, for events.
    seen: Option<wire::PodView>,
    /// What the pod waits for ([`Blocked::Waiting`]), and when it is tried again.
    waiting: Option<(String, Instant)>,
}

type Pods = Arc<Mutex<HashMap<String, Known>>>;

struct Agent {
    client: kube::Client,
    daemon: Client,
    node: NodeSettings,
    ip: IpAddr,
    state_dir: PathBuf,
    pods: Pods,
    recorder: Recorder,
}

pub(super) async fn run(client: kube::Client, node: NodeSettings, ip: IpAddr, cfg: Config) {
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "peapod".into(),
            instance: Some(node.node_name.clone()),
        },
    );
    let agent = Arc::new(Agent {
        daemon: Client::new(&cfg.socket),
        client,
        node,
        ip,
        state_dir: cfg.state_dir.clone(),
        pods: Arc::default(),
        recorder,
    });
    let reporter = tokio::spawn(agent.clone().report());
    agent.watch().await;
    reporter.abort();
}

impl Agent {
    /// The watch of this node's pods, re-listed after every break (with kube's backoff).
    async fn watch(&self) {
        let api: Api<Pod> = Api::all(self.client.clone());
        let config =
            watcher::Config::default().fields(&format!("spec.nodeName={}", self.node.node_name));
        let mut events = watcher(api, config).default_backoff().boxed();
        let mut listed: Option<HashSet<String>> = None;
        while let Some(event) = events.next().await {
            match event {
                Ok(watcher::Event::Init) => listed = Some(HashSet::new()),
                Ok(watcher::Event::InitApply(pod)) => {
                    if let (Some(l), Some(uid)) = (listed.as_mut(), pod.metadata.uid.clone()) {
                        l.insert(uid);
                    }
                    self.handle(pod).await;
                }
                Ok(watcher::Event::InitDone) => {
                    if let Some(l) = listed.take() {
                        self.remove_others(&l).await;
                    }
                }
                Ok(watcher::Event::Apply(pod)) => self.handle(pod).await,
                Ok(watcher::Event::Delete(pod)) => self.gone(&pod).await,
                Err(e) => tracing::warn!("kubernetes: watching pods: {e}"),
            }
        }
    }

    /// A pod added or changed.
    async fn handle(&self, pod: Pod) {
        let Some(uid) = pod.metadata.uid.clone() else {
            return;
        };
        let (ns, name) = key(&pod);
        let local = names::pod_name(&ns, &name);
        if pod.metadata.deletion_timestamp.is_some() {
            self.event(
                &pod,
                EventType::Normal,
                "Killing",
                "Stopping the pod's containers",
            )
            .await;
            self.gone(&pod).await;
            // Released: the API server removes it now its containers are stopped.
            let api: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
            let dp = DeleteParams {
                grace_period_seconds: Some(0),
                preconditions: Some(Preconditions {
                    uid: Some(uid),
                    resource_version: None,
                }),
                ..DeleteParams::default()
            };
            if let Err(e) = api.delete(&name, &dp).await {
                tracing::warn!("kubernetes: releasing pod {ns}/{name}: {e}");
            }
            return;
        }
        let spec = serde_json::to_value(&pod.spec).unwrap_or_default();
        let applied = {
            let mut pods = self.pods.lock().await;
            let known = pods.entry(uid.clone()).or_insert_with(|| Known {
                pod: pod.clone(),
                applied: None,
                reported: None,
                seen: None,
                waiting: None,
            });
            known.pod = pod.clone();
            known.applied.clone()
        };
        // Its spec as applied: left alone (config maps and secrets are read when a pod is
        // placed or its spec changes, not at each of its status changes: a changed volume
        // would re-create it, with a new IP).
        if applied.as_ref() == Some(&spec) {
            return;
        }
        let done = matches!(
            pod.status.as_ref().and_then(|s| s.phase.as_deref()),
            Some("Failed" | "Succeeded")
        );
        // The name is this pod's, or free: never another pod of the board's (one applied
        // by hand, or from the pods directory), which a cluster user must not replace.
        let existing = self.daemon.pod(&local).await.ok();
        if let Some(other) = &existing
            && other.labels.get(UID_LABEL) != Some(&uid)
        {
            if !done {
                let message = format!(
                    "the board has a pod named {local:?} already, not this one: rename this pod"
                );
                self.fail(&pod, "CreatePodError", &message).await;
            }
            return;
        }
        // A pod that ended is not started again (a daemon restart lost nothing it needs).
        if done && applied.is_none() && existing.is_none() {
            return;
        }
        let toml = match self.translate(&pod, &uid).await {
            Ok(t) => t,
            Err(Blocked::Unsupported(problem)) => {
                if !done {
                    self.fail(&pod, "Unsupported", &problem).await;
                }
                return;
            }
            Err(Blocked::Waiting(what)) => {
                self.wait(&pod, &uid, what).await;
                return;
            }
        };
        let req = wire::ApplyRequest {
            source: self
                .state_dir
                .join("kubernetes")
                .join(format!("{local}.yaml")),
            spec: toml,
        };
        match self.daemon.apply(&req).await {
            Ok(a) => {
                if let Some(k) = self.pods.lock().await.get_mut(&uid) {
                    k.applied = Some(spec);
                    k.waiting = None;
                }
                if a.action != wire::Action::Unchanged {
                    tracing::info!("kubernetes: pod {ns}/{name} {} as {local}", a.action);
                }
            }
            Err(ClientError::Api {
                message, problems, ..
            }) => {
                let message = if problems.is_empty() {
                    message
                } else {
                    problems.join("; ")
                };
                self.fail(&pod, "CreatePodError", &message).await;
            }
            Err(e) => tracing::warn!("kubernetes: applying pod {ns}/{name}: {e}"),
        }
    }

    /// A pod that waits for something of the cluster's: tried again in [`RETRY_PERIOD`], with a
    /// `FailedMount` event when what it waits for changes (as the kubelet says it).
    async fn wait(&self, pod: &Pod, uid: &str, what: String) {
        let retry = Instant::now() + RETRY_PERIOD;
        let new = {
            let mut pods = self.pods.lock().await;
            let Some(k) = pods.get_mut(uid) else { return };
            let new = k.waiting.as_ref().map(|(w, _)| w) != Some(&what);
            k.waiting = Some((what.clone(), retry));
            new
        };
        if new {
            let (ns, name) = key(pod);
            tracing::info!("kubernetes: pod {ns}/{name} waits: {what}");
            self.event(pod, EventType::Warning, "FailedMount", &what)
                .await;
        }
    }

    /// The pods whose wait is over, tried again.
    async fn retry_waiting(&self) {
        let now = Instant::now();
        let due: Vec<Pod> = (self.pods.lock().await.values())
            .filter(|k| k.waiting.as_ref().is_some_and(|(_, at)| *at <= now))
            .map(|k| k.pod.clone())
            .collect();
        for pod in due {
            self.handle(pod).await;
        }
    }

    /// The pod's spec, with what it needs from the cluster fetched; or why it is not on the
    /// board (yet).
    async fn translate(&self, pod: &Pod, uid: &str) -> Result<String, Blocked> {
        let (ns, name) = key(pod);
        let value = serde_json::to_value(pod).map_err(|e| Blocked::Unsupported(e.to_string()))?;
        let mut labels = BTreeMap::from([(UID_LABEL.to_string(), uid.to_string())]);
        for (label, value) in [(NAMESPACE_LABEL, &ns), (NAME_LABEL, &name)] {
            if crate::spec::labels::value_problem(label, value).is_none() {
                labels.insert(label.to_string(), value.clone());
            }
        }
        let (config_maps, secrets) = self.volumes_of(pod, &ns).await?;
        let projected = projected::files(&self.client, pod, &self.state_dir).await?;
        let ctx = manifest::Context {
            projected: Some(projected),
            name: Some(names::pod_name(&ns, &name)),
            labels,
            config_maps: Some(config_maps),
            secrets: Some(secrets),
            host_paths: Some(self.node.host_paths.clone()),
            relative_modules: false,
        };
        let path = self
            .state_dir
            .join("kubernetes")
            .join(format!("{ns}/{name}"));
        match PodSpec::from_pod(&path, &value, &ctx) {
            Ok((_, toml)) => Ok(toml),
            Err(SpecError::Invalid { problems, .. }) => Err(Blocked::Unsupported(
                problems
                    .iter()
                    .map(|p| format!("{}: {}", p.field, p.message))
                    .collect::<Vec<_>>()
                    .join("; "),
            )),
            Err(e) => Err(Blocked::Unsupported(e.to_string())),
        }
    }

    /// The config maps and secrets the pod's volumes name (an `optional` one that is missing
    /// is empty; the pod waits for one that is not optional).
    #[allow(clippy::type_complexity)]
    async fn volumes_of(
        &self,
        pod: &Pod,
        ns: &str,
    ) -> Result<
        (
            BTreeMap<String, BTreeMap<String, String>>,
            BTreeMap<String, BTreeMap<String, String>>,
        ),
        Blocked,
    > {
        let (mut maps, mut secrets) = (BTreeMap::new(), BTreeMap::new());
        let volumes = pod
            .spec
            .as_ref()
            .and_then(|s| s.volumes.clone())
            .unwrap_or_default();
        let cm_api: Api<ConfigMap> = Api::namespaced(self.client.clone(), ns);
        let secret_api: Api<Secret> = Api::namespaced(self.client.clone(), ns);
        let at = |i: usize, e: String| Blocked::Waiting(format!("spec.volumes[{i}]: {e}"));
        for (i, v) in volumes.into_iter().enumerate() {
            if let Some(cm) = v.config_map {
                let found = (cm_api.get_opt(&cm.name).await).map_err(|e| at(i, e.to_string()))?;
                match found {
                    Some(c) => {
                        maps.insert(cm.name.clone(), c.data.unwrap_or_default());
                    }
                    None if cm.optional == Some(true) => {
                        maps.insert(cm.name.clone(), BTreeMap::new());
                    }
                    None => {
                        return Err(at(i, format!("config map {:?} not found", cm.name)));
                    }
                }
            }
            if let Some(s) = v.secret {
                let name = s.secret_name.clone().unwrap_or_default();
                let found = (secret_api.get_opt(&name).await).map_err(|e| at(i, e.to_string()))?;
                match found {
                    Some(secret) => {
                        let string_data = secret.string_data.clone().unwrap_or_default();
                        let mut data = projected::secret_text(secret).map_err(|k| {
                            format!(
                                "spec.volumes[{i}].secret: key {k:?} of secret {name:?} \
                                 is not UTF-8 text"
                            )
                        })?;
                        data.extend(string_data);
                        secrets.insert(name, data);
                    }
                    None if s.optional == Some(true) => {
                        secrets.insert(name, BTreeMap::new());
                    }
                    None => return Err(at(i, format!("secret {name:?} not found"))),
                }
            }
        }
        Ok((maps, secrets))
    }

    /// The pod cannot run here: Failed, with why (naming the field).
    async fn fail(&self, pod: &Pod, reason: &str, message: &str) {
        let (ns, name) = key(pod);
        tracing::warn!("kubernetes: pod {ns}/{name} cannot run here: {message}");
        let patch = serde_json::json!({ "status": {
            "phase": "Failed",
            "reason": reason,
            "message": message,
            "conditions": [{ "type": "PodScheduled", "status": "True" },
                           { "type": "Ready", "status": "False", "reason": reason }],
        }});
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
        if let Err(e) = api
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            tracing::warn!("kubernetes: pod {ns}/{name} status: {e}");
        }
        self.event(pod, EventType::Warning, reason, message).await;
    }

    /// A pod gone from the cluster (or being deleted): stopped and removed from the board, if
    /// the board's pod of that name is this one (never one of the board's own).
    async fn gone(&self, pod: &Pod) {
        let (ns, name) = key(pod);
        let Some(uid) = &pod.metadata.uid else {
            return;
        };
        self.pods.lock().await.remove(uid);
        projected::forget(&self.state_dir, uid);
        let local = names::pod_name(&ns, &name);
        let ours =
            (self.daemon.pod(&local).await).is_ok_and(|p| p.labels.get(UID_LABEL) == Some(uid));
        if ours {
            self.remove(&local).await;
        }
    }

    async fn remove(&self, local: &str) {
        match self.daemon.delete(local).await {
            Ok(_) => tracing::info!("kubernetes: pod {local} removed"),
            Err(ClientError::Api { status, .. }) if status == 404 => {}
            Err(e) => tracing::warn!("kubernetes: removing pod {local}: {e}"),
        }
    }

    /// The daemon's pods of this node that the cluster's full list does not have.
    async fn remove_others(&self, listed: &HashSet<String>) {
        let Ok(list) = self.daemon.pods().await else {
            return;
        };
        for p in list.pods {
            if p.labels
                .get(UID_LABEL)
                .is_some_and(|uid| !listed.contains(uid))
            {
                tracing::info!("kubernetes: pod {} was deleted from the cluster", p.name);
                self.remove(&p.name).await;
            }
        }
        let mut pods = self.pods.lock().await;
        pods.retain(|uid, _| listed.contains(uid));
        // Tokens of pods the cluster no longer has.
        if let Ok(entries) = std::fs::read_dir(projected::tokens_dir(&self.state_dir)) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let uid = name.split('.').next().unwrap_or_default();
                if !listed.contains(uid) {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
    }

    /// Every [`STATUS_PERIOD`]: the status of each pod of the node, patched when it changed.
    async fn report(self: Arc<Self>) {
        let mut tick = tokio::time::interval(STATUS_PERIOD);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.retry_waiting().await;
            let Ok(list) = self.daemon.pods().await else {
                continue;
            };
            for view in list.pods {
                let Some(uid) = view.labels.get(UID_LABEL) else {
                    continue;
                };
                let (pod, reported, seen) = {
                    let pods = self.pods.lock().await;
                    let Some(k) = pods.get(uid) else { continue };
                    (k.pod.clone(), k.reported.clone(), k.seen.clone())
                };
                self.events(&pod, seen.as_ref(), &view).await;
                let images = images(&pod);
                let status = status::pod_status(&view, &images, self.ip);
                let json = serde_json::to_value(&status).unwrap_or_default();
                let patched = if reported.as_ref() == Some(&json) {
                    true
                } else {
                    let (ns, name) = key(&pod);
                    let api: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
                    let patch = serde_json::json!({ "status": status });
                    api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
                        .await
                        .map_err(|e| tracing::debug!("kubernetes: pod {ns}/{name} status: {e}"))
                        .is_ok()
                };
                let mut pods = self.pods.lock().await;
                if let Some(k) = pods.get_mut(uid) {
                    if patched {
                        k.reported = Some(json);
                    }
                    k.seen = Some(view);
                }
            }
        }
    }

    /// Events for what changed since the last round: a container started (again), a probe
    /// failing.
    async fn events(&self, pod: &Pod, before: Option<&wire::PodView>, now: &wire::PodView) {
        for c in &now.containers {
            let was = before.and_then(|b| b.containers.iter().find(|x| x.name == c.name));
            if c.started_at.is_some() && was.map(|w| w.started_at) != Some(c.started_at) {
                let restarted = was.is_some_and(|w| c.restarts > w.restarts);
                if restarted {
                    let how = c
                        .last_state
                        .as_ref()
                        .map(|t| t.message.clone())
                        .unwrap_or_default();
                    let note = format!("Restarted container {} in place ({how})", c.name);
                    self.event(pod, EventType::Warning, "BackOff", &note).await;
                }
                let note = format!("Started container {}", c.name);
                self.event(pod, EventType::Normal, "Started", &note).await;
            }
            let before = was.and_then(|w| w.probe_failure.as_ref());
            if let Some(failing) = c.probe_failure.as_ref().filter(|f| Some(*f) != before) {
                let note = format!("{}: {failing}", c.name);
                self.event(pod, EventType::Warning, "Unhealthy", &note)
                    .await;
            }
        }
    }

    async fn event(&self, pod: &Pod, type_: EventType, reason: &str, note: &str) {
        let ev = Event {
            type_,
            reason: reason.into(),
            note: Some(note.chars().take(1000).collect()),
            action: reason.into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&ev, &pod.object_ref(&())).await {
            tracing::debug!("kubernetes: event: {e}");
        }
    }
}

/// `(namespace, name)` of a pod.
fn key(pod: &Pod) -> (String, String) {
    (
        pod.metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into()),
        pod.metadata.name.clone().unwrap_or_default(),
    )
}

/// Each container's `image`, for its status.
fn images(pod: &Pod) -> BTreeMap<String, String> {
    let spec = pod.spec.as_ref();
    spec.map(|s| {
        (s.init_containers.iter().flatten())
            .chain(s.containers.iter())
            .map(|c| (c.name.clone(), c.image.clone().unwrap_or_default()))
            .collect()
    })
    .unwrap_or_default()
}
