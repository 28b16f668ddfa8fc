//! The control API: HTTP/1.1 + JSON on the daemon's unix socket. Routes (all under `/v1`):
//!
//! | method and path                               | does                                      |
//! |-----------------------------------------------|-------------------------------------------|
//! | `GET /v1/healthz`                             | `{"status":"ok"}` once start-up is done (503 before) |
//! | `GET /v1/pods`                                | every pod, with its containers            |
//! | `POST /v1/pods` `{"source":PATH,"spec":TOML}` | apply: create, re-create or leave a pod   |
//! | `GET /v1/pods/{pod}`                          | one pod                                   |
//! | `DELETE /v1/pods/{pod}`                       | delete a pod created through the API      |
//! | `POST /v1/pods/{pod}/restart`                 | re-create the pod (new sandbox, new IP)   |
//! | `POST /v1/pods/{pod}/containers/{c}/restart`  | restart one container in place (same IP)  |
//! | `GET /v1/pods/{pod}/logs?container=C&tail=N&follow=true` | CRI log lines, text/plain      |
//! | `POST /v1/reload`                             | re-read the pods directory (as SIGHUP)    |
//! | `GET /v1/pods/{pod}/rollout`                  | its revisions (`rollout history`)         |
//! | `POST /v1/pods/{pod}/rollout/undo` `{"to_revision":N}` | apply an earlier revision again  |
//! | `GET /v1/images`, `POST /v1/images/pull`, `POST /v1/images/prune` | modules from registries ([`super::images`]) |
//!
//! Errors are JSON, `{"error": message, "problems": [...]}` (problems for an invalid spec), with
//! 400 (bad request), 403 (a pod of another user), 404 (no such pod or container), 408 (the
//! body did not arrive in time),
//! 409 (conflict: e.g. the pod belongs to a file), 413 (body too large), 422 (invalid spec, or
//! a pod that does not fit the board's allocatable memory or the caller's quotas), 429 (a user's
//! `follow=true` streams are at `quotas.follow_streams`) or 500.
//!
//! The module files an apply names are read with the client's rights (its `SO_PEERCRED`, see
//! [`super::server`]); logs are streamed from disk in chunks, never loaded whole.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::{Extension, Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;

use tokio::sync::Mutex;

use super::pods::{OpError, Pods};
use crate::caller::Caller;
use crate::logs::cri;
use crate::spec::SpecError;
use crate::wire;

/// The body of an apply (spec text and paths) must arrive within this...
pub(super) const BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// ...and be at most this large.
pub(super) const MAX_BODY: usize = 4 << 20;

pub(super) type Shared = Arc<Mutex<Pods>>;

/// The API. `ready` turns true once start-up (recovery, the pods directory) is done: until
/// then `/v1/healthz` answers 503 `{"status":"starting"}` and other requests wait for it.
pub(super) fn router(
    pods: Shared,
    ready: Arc<std::sync::atomic::AtomicBool>,
    follows_per_user: usize,
) -> Router {
    Router::new()
        .route(
            "/v1/healthz",
            get(move || async move {
                let (code, status) = if ready.load(std::sync::atomic::Ordering::Acquire) {
                    (StatusCode::OK, "ok")
                } else {
                    (StatusCode::SERVICE_UNAVAILABLE, "starting")
                };
                let status = status.into();
                (code, Json(wire::Health { status }))
            }),
        )
        .route(
            "/v1/version",
            get(|| async {
                let version = env!("CARGO_PKG_VERSION").into();
                Json(wire::Version { version })
            }),
        )
        .route("/v1/pods", get(list).post(apply))
        .route("/v1/pods/{pod}", get(inspect).delete(delete))
        .route("/v1/pods/{pod}/restart", post(restart))
        .route(
            "/v1/pods/{pod}/containers/{container}/restart",
            post(restart_container),
        )
        .route("/v1/pods/{pod}/logs", get(logs))
        .route("/v1/pods/{pod}/rollout", get(rollout_history))
        .route("/v1/pods/{pod}/rollout/undo", post(rollout_undo))
        .route("/v1/reload", post(reload))
        .route("/v1/images", get(super::images::list))
        .route("/v1/images/pull", post(super::images::pull))
        .route("/v1/images/prune", post(super::images::prune))
        .route("/v1/events", get(events))
        .route("/v1/daemon", get(daemon_status))
        .route("/metrics", get(metrics))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such route (see GET /v1/pods)") })
        .method_not_allowed_fallback(|req: axum::extract::Request| async move {
            error(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("{} is not allowed on {}", req.method(), req.uri().path()),
            )
        })
        .layer(axum::middleware::from_fn(super::server::mark_started))
        .layer(Extension(Arc::new(Follows::new(follows_per_user))))
        .with_state(pods)
}

/// The `logs?follow=true` streams open per user: a caller other than root holds at most
/// `quotas.follow_streams` (each is a connection held for as long as the client likes).
struct Follows {
    per_user: usize,
    open: std::sync::Mutex<std::collections::HashMap<u32, usize>>,
}

/// One open follow stream, counted until dropped (with its stream).
struct Following {
    follows: Arc<Follows>,
    uid: u32,
}

impl Follows {
    fn new(per_user: usize) -> Self {
        Follows {
            per_user,
            open: Default::default(),
        }
    }

    /// Counts a new stream of `caller`, or `None` when they hold their share already.
    fn take(self: &Arc<Self>, caller: Caller) -> Option<Following> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let n = open.entry(caller.uid).or_default();
        if !caller.is_root() && *n >= self.per_user {
            return None;
        }
        *n += 1;
        Some(Following {
            follows: self.clone(),
            uid: caller.uid,
        })
    }
}

impl Drop for Following {
    fn drop(&mut self) {
        let mut open = self.follows.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = open.get_mut(&self.uid) {
            *n = n.saturating_sub(1);
        }
    }
}

pub(super) fn error(status: StatusCode, message: impl Into<String>) -> Response {
    let body = wire::ApiError {
        error: message.into(),
        problems: Vec::new(),
    };
    (status, Json(body)).into_response()
}

impl IntoResponse for OpError {
    fn into_response(self) -> Response {
        let status = match &self {
            OpError::NotFound(_) | OpError::NoContainer { .. } => StatusCode::NOT_FOUND,
            OpError::Conflict(_) => StatusCode::CONFLICT,
            OpError::Forbidden(_) => StatusCode::FORBIDDEN,
            OpError::Invalid(_) | OpError::Unfit(_) => StatusCode::UNPROCESSABLE_ENTITY,
            OpError::Failed(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let (error, problems): (String, Vec<String>) = match &self {
            OpError::Invalid(e @ SpecError::Invalid { path, .. }) => (
                format!("invalid pod spec {}", path.display()),
                e.to_string().lines().map(str::to_string).collect(),
            ),
            _ => (self.to_string(), Vec::new()),
        };
        (status, Json(wire::ApiError { error, problems })).into_response()
    }
}

async fn list(State(pods): State<Shared>) -> Response {
    let pods = pods.lock().await;
    let list = wire::PodList {
        pods: pods.views(),
        problems: pods.problems(),
    };
    Json(list).into_response()
}

async fn inspect(State(pods): State<Shared>, Path(pod): Path<String>) -> Response {
    match pods.lock().await.view(&pod) {
        Some(v) => Json(v).into_response(),
        None => OpError::NotFound(pod).into_response(),
    }
}

/// A request body of JSON `T` (whatever its content type says, so `curl -d` works), within
/// [`BODY_TIMEOUT`] and [`MAX_BODY`]; else the answer to give (naming the `form` expected).
pub(super) async fn read_json<T: serde::de::DeserializeOwned>(
    body: Body,
    form: &str,
) -> Result<T, Response> {
    let body = match tokio::time::timeout(BODY_TIMEOUT, axum::body::to_bytes(body, MAX_BODY)).await
    {
        Err(_) => {
            return Err(error(
                StatusCode::REQUEST_TIMEOUT,
                format!("the request body did not arrive within {BODY_TIMEOUT:?}"),
            ));
        }
        Ok(Err(e)) => {
            return Err(error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("reading the body (at most {MAX_BODY} bytes): {e}"),
            ));
        }
        Ok(Ok(b)) => b,
    };
    serde_json::from_slice(&body).map_err(|e| {
        error(
            StatusCode::BAD_REQUEST,
            format!("body must be JSON {form}: {e}"),
        )
    })
}

/// [`read_json`], an empty body being `T::default()`.
async fn read_json_or_default<T: serde::de::DeserializeOwned + Default>(
    body: Body,
    form: &str,
) -> Result<T, Response> {
    let value: serde_json::Value = match read_json::<Option<serde_json::Value>>(body, form).await {
        Ok(Some(v)) => v,
        Ok(None) => return Ok(T::default()),
        Err(resp) => return Err(resp),
    };
    serde_json::from_value(value).map_err(|e| {
        error(
            StatusCode::BAD_REQUEST,
            format!("body must be JSON {form}: {e}"),
        )
    })
}

async fn apply(
    State(pods): State<Shared>,
    Extension(caller): Extension<Caller>,
    body: Body,
) -> Response {
    // `source` is the spec file's path on the client's machine: relative module paths are
    // resolved against it, and messages name it.
    let body: wire::ApplyRequest = match read_json(
        body,
        "{\"source\": \"/abs/pod.toml\", \"spec\": \"<toml text>\"}",
    )
    .await
    {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    if !body.source.is_absolute() {
        return error(StatusCode::BAD_REQUEST, "source: must be an absolute path");
    }
    // Read and compile without the lock (a compile may take seconds on a board): `ps` and the
    // other requests go on meanwhile.
    let (cfg, exec) = pods.lock().await.planner();
    let (source, text) = (body.source.clone(), body.spec.clone());
    let planned =
        tokio::task::spawn_blocking(move || super::pods::plan(&cfg, &exec, &source, &text, caller))
            .await;
    let loaded = match planned {
        Ok(Ok(l)) => l,
        Ok(Err(e)) => return OpError::from(e).into_response(),
        Err(e) => {
            return error(StatusCode::INTERNAL_SERVER_ERROR, format!("compiling: {e}"));
        }
    };
    commit(&pods, &body.source, &body.spec, loaded, caller).await
}

/// An apply's second half (also `rollout undo`'s): what was planned becomes the pod, and the
/// answer says what came of it once it settled.
async fn commit(
    pods: &Shared,
    source: &std::path::Path,
    text: &str,
    loaded: super::pods::Loaded,
    caller: Caller,
) -> Response {
    let name = loaded.spec.name.clone();
    let action = match pods.lock().await.commit(source, text, loaded, caller).await {
        Ok(a) => a,
        Err(e) => return e.into_response(),
    };
    // A re-created pod waits for its old sandbox to stop (pre_stop hooks, grace period): not
    // under the lock, so `ps` and the others go on.
    super::pods::settle(pods, Some(&name)).await;
    let (outcome, cleanup) = pods.lock().await.committed(&name, action);
    if let Some(stop) = cleanup {
        stop.wait().await;
    }
    match outcome {
        Ok((action, view)) => {
            let status = if action == super::pods::Action::Created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            (status, Json(wire::Applied { action, pod: view })).into_response()
        }
        Err(e) => e.into_response(),
    }
}

/// `rollout history`: 404 for a pod with neither a record nor a history.
async fn rollout_history(State(pods): State<Shared>, Path(pod): Path<String>) -> Response {
    let revisions = pods.lock().await.history(&pod);
    if revisions.is_empty() {
        return OpError::NotFound(pod).into_response();
    }
    Json(wire::RolloutHistory { pod, revisions }).into_response()
}

/// `rollout undo`: the revision asked for (or the last ready one before the current) applied
/// again, as a new revision (watched like any update).
async fn rollout_undo(
    State(pods): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path(pod): Path<String>,
    body: Body,
) -> Response {
    let req: wire::UndoRequest = match read_json_or_default(body, "{\"to_revision\": N}").await {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    let (record, cfg, exec) = {
        let p = pods.lock().await;
        if let Err(e) = p.owned_by(&pod, caller) {
            return e.into_response();
        }
        let (cfg, exec) = p.planner();
        match p.undo_target(&pod, req.to_revision) {
            Ok(r) => (r, cfg, exec),
            Err(e) => return e.into_response(),
        }
    };
    let r = record.clone();
    let planned =
        tokio::task::spawn_blocking(move || super::pods::plan_stored(&cfg, &exec, &r)).await;
    match planned {
        Ok(Ok(loaded)) => commit(&pods, &record.source, &record.text, loaded, caller).await,
        Ok(Err(e)) => OpError::from(e).into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, format!("loading: {e}")),
    }
}

/// Answers once the pod is gone: its stop (pre_stop hooks, grace period) is waited for without
/// the lock.
async fn delete(
    State(pods): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path(pod): Path<String>,
) -> Response {
    let stop = {
        let mut pods = pods.lock().await;
        match pods.owned_by(&pod, caller) {
            Ok(()) => pods.delete(&pod),
            Err(e) => Err(e),
        }
    };
    match stop {
        Ok(stop) => {
            stop.wait().await;
            Json(wire::Deleted { deleted: pod }).into_response()
        }
        Err(e) => e.into_response(),
    }
}

async fn restart(
    State(pods): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path(pod): Path<String>,
) -> Response {
    {
        let mut pods = pods.lock().await;
        let r = match pods.owned_by(&pod, caller) {
            Ok(()) => pods.restart(&pod).await,
            Err(e) => Err(e),
        };
        if let Err(e) = r {
            return e.into_response();
        }
    }
    super::pods::settle(&pods, Some(&pod)).await;
    match pods.lock().await.outcome(&pod) {
        Ok(v) => Json(v).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn restart_container(
    State(pods): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path((pod, container)): Path<(String, String)>,
) -> Response {
    let pods = pods.lock().await;
    let r = pods
        .owned_by(&pod, caller)
        .and_then(|()| pods.restart_container(&pod, &container));
    match r {
        Ok(()) => {
            let restarted = format!("{pod}/{container}");
            Json(wire::Restarted { restarted }).into_response()
        }
        Err(e) => e.into_response(),
    }
}

async fn reload(State(pods): State<Shared>) -> Response {
    let problems = super::pods::reload_beside(&pods).await;
    Json(wire::Reloaded { problems }).into_response()
}

/// `/metrics` alone, for `[metrics] listen`'s TCP address (nothing else of the API is there).
pub(super) fn metrics_router(pods: Shared) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "only /metrics is served here") })
        .with_state(pods)
}

/// `GET /metrics`: Prometheus' text format (see [`super::metrics`]).
pub(super) async fn metrics(State(pods): State<Shared>) -> Response {
    let (views, metrics, cfg) = {
        let pods = pods.lock().await;
        (pods.views(), pods.metrics().clone(), pods.planner().0)
    };
    // The lease file is read under its lock (another process may hold it): not on a worker.
    let leased = tokio::task::spawn_blocking(move || {
        let usable = cfg.subnet.hosts().count().saturating_sub(1);
        let leased = crate::host::ipam::Ipam::new(&cfg)
            .leases()
            .map_or(0, |l| l.len());
        (leased, usable)
    })
    .await
    .unwrap_or_default();
    let text = metrics.render(&views, leased);
    ([(header::CONTENT_TYPE, super::metrics::CONTENT_TYPE)], text).into_response()
}

/// `GET /v1/daemon`: the daemon's own figures, from `/proc/self`.
async fn daemon_status() -> Response {
    match super::metrics::daemon_status() {
        Ok(s) => Json(s).into_response(),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("/proc/self: {e}"),
        ),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EventQuery {
    pod: Option<String>,
    #[serde(default)]
    watch: bool,
}

/// `GET /v1/events[?pod=NAME][&watch=true]`: the recorded events, oldest first, as a
/// [`wire::EventList`]; with `watch`, one JSON event a line (`application/x-ndjson`): those
/// recorded, then each new (or counted again) one as it comes, until the client goes. A watch
/// is a follow stream: bounded per user as `logs -f` is.
async fn events(
    State(pods): State<Shared>,
    Extension(caller): Extension<Caller>,
    Extension(follows): Extension<Arc<Follows>>,
    query: Result<Query<EventQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Query(q) = match query {
        Ok(q) => q,
        Err(e) => {
            let message = format!("query: {e} (expected pod=NAME, watch=true|false)");
            return error(StatusCode::BAD_REQUEST, message);
        }
    };
    let recorder = pods.lock().await.recorder().clone();
    if !q.watch {
        let events = recorder.list(q.pod.as_deref());
        return Json(wire::EventList { events }).into_response();
    }
    let Some(following) = follows.take(caller) else {
        return error(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "user {} follows {} streams already, the most allowed (quotas.follow_streams): \
                 end one first",
                caller.uid, follows.per_user
            ),
        );
    };
    // Subscribed before the list is read: nothing between them is lost.
    let rx = recorder.subscribe();
    let line = |e: &wire::Event| {
        let mut l = serde_json::to_vec(e).expect("event serializes");
        l.push(b'\n');
        Ok::<_, std::io::Error>(axum::body::Bytes::from(l))
    };
    let head: Vec<_> = recorder.list(q.pod.as_deref()).iter().map(line).collect();
    let pod = q.pod;
    let rest = futures::stream::unfold((rx, following), move |(mut rx, following)| {
        let pod = pod.clone();
        async move {
            loop {
                match rx.recv().await {
                    Ok(e) if pod.is_none() || e.pod() == pod.as_deref() => {
                        return Some((line(&e), (rx, following)));
                    }
                    Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
                }
            }
        }
    });
    let body = Body::from_stream(futures::StreamExt::chain(futures::stream::iter(head), rest));
    ([(header::CONTENT_TYPE, "application/x-ndjson")], body).into_response()
}

#[derive(Deserialize)]
struct LogQuery {
    container: Option<String>,
    tail: Option<usize>,
    #[serde(default)]
    follow: bool,
    /// The container's previous run (before its last restart in place); when it has not
    /// restarted in this sandbox, its last run in the previous sandbox (as kubectl's
    /// `--previous`).
    #[serde(default)]
    previous: bool,
    /// The logs of the pod's previous sandbox (before its last re-create).
    #[serde(default)]
    previous_sandbox: bool,
    /// The container's current run only (what the kubelet's `containerLogs` shows), not the
    /// runs before its restarts in place.
    #[serde(default)]
    current: bool,
}

async fn logs(
    State(pods): State<Shared>,
    Extension(caller): Extension<Caller>,
    Extension(follows): Extension<Arc<Follows>>,
    Path(pod): Path<String>,
    q: Result<Query<LogQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let q = match q {
        Ok(Query(q)) => q,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!(
                    "query: {e} (expected container=NAME, tail=N, follow=true|false, \
                     previous=true|false, previous_sandbox=true|false, current=true|false)"
                ),
            );
        }
    };
    let pods_lock = pods;
    let max_files = pods_lock.lock().await.log_settings().max_files;
    let (path, previous_dir) = {
        let pods = pods_lock.lock().await;
        let containers = match pods.containers(&pod) {
            Ok(c) => c,
            Err(e) => return e.into_response(),
        };
        let container = match (q.container, containers.len()) {
            (Some(c), _) if containers.contains(&c) => c,
            (Some(c), _) => {
                return OpError::NoContainer {
                    pod,
                    container: c,
                    have: containers.join(", "),
                }
                .into_response();
            }
            (None, 1) => containers[0].clone(),
            (None, _) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!(
                        "pod {pod:?} has {} containers ({}): name one, as {pod}/CONTAINER",
                        containers.len(),
                        containers.join(", ")
                    ),
                );
            }
        };
        let previous_dir = pods.log_settings().previous_dir(&pod);
        let current = pods.log_settings().path(&pod, &container);
        if (q.previous || q.previous_sandbox) && q.follow {
            return error(
                StatusCode::BAD_REQUEST,
                "previous logs are complete: follow=true does not go with previous=true",
            );
        }
        if q.previous && !q.previous_sandbox {
            // The run before the last restart in place, read whole (at most max_files files
            // of max_size) on a blocking thread.
            let (cur, max_files) = (current.clone(), pods.log_settings().max_files);
            drop(pods);
            match tokio::task::spawn_blocking(move || cri::previous_run(&cur, max_files)).await {
                Ok(Ok(Some(mut lines))) => {
                    if let Some(n) = q.tail {
                        lines.drain(..lines.len().saturating_sub(n));
                    }
                    let mut body = lines.join("\n");
                    if !body.is_empty() {
                        body.push('\n');
                    }
                    return body.into_response();
                }
                Ok(Ok(None)) => {}
                Ok(Err(e)) => {
                    let message = format!("{}: {e}", current.display());
                    return error(StatusCode::INTERNAL_SERVER_ERROR, message);
                }
                Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
            }
            // No restart in this sandbox: the previous sandbox's last run, if there was one.
            let pods = pods_lock.lock().await;
            let p = pods.log_settings().previous_path(&pod, &container);
            if !p.exists() {
                return error(
                    StatusCode::NOT_FOUND,
                    format!(
                        "container {container:?} of pod {pod:?} has no previous run: it has not \
                         restarted in place, and there are no logs of a previous sandbox (the pod \
                         has not been re-created since it was made)"
                    ),
                );
            }
            (p, previous_dir)
        } else if !q.previous_sandbox {
            (current, previous_dir)
        } else {
            let p = pods.log_settings().previous_path(&pod, &container);
            if !p.exists() {
                return error(
                    StatusCode::NOT_FOUND,
                    format!(
                        "pod {pod:?} has no logs of a previous sandbox for container {container:?} \
                         (it has not been re-created since it was made)"
                    ),
                );
            }
            (p, previous_dir)
        }
    };
    let following = match q.follow {
        false => None,
        true => match follows.take(caller) {
            Some(f) => Some(f),
            None => {
                return error(
                    StatusCode::TOO_MANY_REQUESTS,
                    format!(
                        "user {} follows {} log streams already, the most allowed \
                         (quotas.follow_streams): end one first",
                        caller.uid, follows.per_user
                    ),
                );
            }
        },
    };
    // The follower starts at the end now, so nothing between the tail and it is lost or doubled.
    let follower = q.follow.then(|| cri::Follower::from_end(&path));
    let head = if q.current && !q.previous && !q.previous_sandbox {
        // The current run, read whole (as a previous run is) on a blocking thread.
        let p = path.clone();
        let lines = match tokio::task::spawn_blocking(move || cri::current_run(&p, max_files)).await
        {
            Ok(Ok(mut lines)) => {
                if let Some(n) = q.tail {
                    lines.drain(..lines.len().saturating_sub(n));
                }
                lines
            }
            Ok(Err(e)) => {
                let message = format!("{}: {e}", path.display());
                return error(StatusCode::INTERNAL_SERVER_ERROR, message);
            }
            Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        };
        let mut text = lines.join("\n");
        if !text.is_empty() {
            text.push('\n');
        }
        futures::StreamExt::boxed(futures::stream::once(async move {
            Ok(axum::body::Bytes::from(text))
        }))
    } else {
        let spans = match cri::tail_spans(&path, q.tail) {
            Ok(spans) => spans,
            Err(e) => {
                return error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("{}: {e}", path.display()),
                );
            }
        };
        futures::StreamExt::boxed(futures::StreamExt::flatten(futures::stream::iter(
            spans.into_iter().map(span),
        )))
    };
    let body = match follower {
        None => Body::from_stream(head),
        Some(f) => {
            let first = head;
            // A re-create moves the pod's logs to the previous sandbox's directory in one
            // rename (the follower reads what the old file got last, then the new sandbox's
            // file); a delete removes both directories, and ends the stream.
            let dirs = [path.parent().unwrap_or(&path).to_path_buf(), previous_dir];
            // The stream holds its count (`following`) until it is dropped.
            let state = (f, dirs, following);
            let rest = futures::stream::unfold(state, |(mut f, dirs, following)| async move {
                loop {
                    if !dirs.iter().any(|d| d.exists()) {
                        return None;
                    }
                    match f.poll() {
                        Ok(lines) if !lines.is_empty() => {
                            let mut chunk = lines.join("\n");
                            chunk.push('\n');
                            let next = (f, dirs, following);
                            return Some((Ok(axum::body::Bytes::from(chunk)), next));
                        }
                        Ok(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                        Err(e) => return Some((Err(e), (f, dirs, following))),
                    }
                }
            });
            Body::from_stream(futures::StreamExt::chain(first, rest))
        }
    };
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response()
}

/// One span of a log file as a stream of chunks read as they are sent.
fn span(s: cri::Span) -> impl futures::Stream<Item = std::io::Result<axum::body::Bytes>> + Send {
    use tokio::io::{AsyncReadExt, AsyncSeekExt};
    futures::StreamExt::flatten(futures::stream::once(async move {
        let mut f = tokio::fs::File::from_std(s.file);
        let reader = match f.seek(std::io::SeekFrom::Start(s.start)).await {
            Ok(_) => Ok(f.take(s.end - s.start)),
            Err(e) => Err(e),
        };
        match reader {
            Ok(r) => futures::future::Either::Left(tokio_util::io::ReaderStream::with_capacity(
                r,
                cri::CHUNK,
            )),
            Err(e) => futures::future::Either::Right(futures::stream::once(async { Err(e) })),
        }
    }))
}

/// The API's answers to whatever a client sends, in process (no root, no socket): every request
/// that cannot be carried out gets a JSON error with a 4xx status, never a panic or a 500.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::wasm::executor::Executor;
    use proptest::prelude::*;
    use tower::ServiceExt;

    fn api(dir: &std::path::Path) -> Router {
        let mut cfg = Config {
            run_dir: dir.join("run"),
            state_dir: dir.join("state"),
            pods_dir: dir.join("pods"),
            egress: false,
            ..Config::default()
        };
        cfg.logs.dir = dir.join("logs");
        let pods = Pods::new(cfg, Executor::new().unwrap());
        let ready = Arc::new(std::sync::atomic::AtomicBool::new(true));
        router(Arc::new(Mutex::new(pods)), ready, 4).layer(Extension(Caller::myself()))
    }

    /// (status, JSON body) of one request.
    fn ask(
        app: &Router,
        method: &str,
        uri: &str,
        body: Vec<u8>,
    ) -> (StatusCode, serde_json::Value) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let req = axum::http::Request::builder()
                .method(method)
                .uri(uri)
                .body(Body::from(body))
                .unwrap();
            let res = app.clone().oneshot(req).await.unwrap();
            let status = res.status();
            let bytes = axum::body::to_bytes(res.into_body(), MAX_BODY)
                .await
                .unwrap();
            let v = serde_json::from_slice(&bytes)
                .unwrap_or_else(|e| panic!("{method} {uri}: {status}: not JSON ({e}): {bytes:?}"));
            (status, v)
        })
    }

    fn refused(status: StatusCode, v: &serde_json::Value) -> Result<(), TestCaseError> {
        prop_assert!(status.is_client_error(), "{status}: {v}");
        prop_assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()), "{v}");
        Ok(())
    }

    /// A pod spec whose module cannot be read, so no apply of it (or of an edit of it) reaches
    /// the kernel.
    const SPEC: &str = "[pod]\nname = \"fuzz\"\nrestart_policy = \"Always\"\n\n\
        [[containers]]\nname = \"app\"\nmodule = \"/nonexistent/app.wasm\"\n\
        args = [\"--listen\", \"0.0.0.0:8080\"]\nmemory_limit_mib = 16\n\n\
        [containers.liveness_probe]\nhttp_get = { path = \"/healthz\", port = 8080 }\n";

    proptest! {
        // Fewer under an emulator (the board suites set PEAPOD_TEST_RUNNER).
        #![proptest_config(ProptestConfig {
            cases: if std::env::var_os("PEAPOD_TEST_RUNNER").is_some() { 32 } else { 128 },
            ..ProptestConfig::default()
        })]

        #[test]
        fn any_apply_body_is_answered(body in proptest::collection::vec(any::<u8>(), 0..300)) {
            let d = tempfile::tempdir().unwrap();
            let (status, v) = ask(&api(d.path()), "POST", "/v1/pods", body);
            refused(status, &v)?;
        }

        #[test]
        fn edited_apply_bodies_are_answered(
            line in 0usize..20,
            cut in 0usize..400,
            source in prop_oneof![Just("/srv/pod.toml".to_string()), "[ -~]{0,20}"],
            extra in prop_oneof![Just(String::new()), Just(", \"x\": 1".to_string()),
                Just(", \"spec\": 1".to_string()), Just(", \"source\": null".to_string())],
        ) {
            let d = tempfile::tempdir().unwrap();
            let app = api(d.path());
            let lines: Vec<&str> = SPEC.lines().collect();
            let dropped: Vec<&str> = lines.iter().enumerate()
                .filter(|(i, _)| *i != line % lines.len()).map(|(_, l)| *l).collect();
            let short: String = SPEC.chars().take(cut).collect();
            for spec in [SPEC.to_string(), dropped.join("\n"), short] {
                let body = format!(
                    "{{\"source\": {}, \"spec\": {}{extra}}}",
                    serde_json::to_string(&source).unwrap(),
                    serde_json::to_string(&spec).unwrap()
                );
                let (status, v) = ask(&app, "POST", "/v1/pods", body.into_bytes());
                refused(status, &v)?;
            }
        }

        #[test]
        fn any_path_and_query_is_answered(
            name in "[ -~]{0,30}",
            query in "[ -~]{0,30}",
            method in prop_oneof![Just("GET"), Just("POST"), Just("DELETE"), Just("PUT")],
        ) {
            // The routes that answer 200 without a pod.
            prop_assume!(!["healthz", "version", "reload", "pods"].contains(&name.as_str()));
            let d = tempfile::tempdir().unwrap();
            let app = api(d.path());
            let enc = |s: &str| s.bytes().map(|b| format!("%{b:02X}")).collect::<String>();
            for uri in [
                format!("/v1/pods/{}", enc(&name)),
                format!("/v1/pods/{}/logs?{}", enc(&name), enc(&query)),
                format!("/v1/pods/{}/logs?container={}&tail={}", enc(&name), enc(&query), enc(&query)),
                format!("/v1/pods/{}/containers/{}/restart", enc(&name), enc(&query)),
                format!("/v1/{}", enc(&name)),
            ] {
                let (status, v) = ask(&app, method, &uri, Vec::new());
                refused(status, &v)?;
            }
        }
    }
}
