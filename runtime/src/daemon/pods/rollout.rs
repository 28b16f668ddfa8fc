//! Updates that prove themselves or roll back by themselves (`[update]` in the spec).
//!
//! An apply through the API that creates or replaces a pod is a *revision* (kept in the pod's
//! history, [`super::super::store`]). The daemon watches the new revision ([`Pods::watch_rollouts`],
//! every tick): once every container has been ready for `update.min_ready` with no restart, it
//! is proven (`ready`, a version to come back to). If it is not by `update.deadline`, or a
//! container restarts [`CRASH_LOOP_RESTARTS`] times first, or its sandbox cannot start, the
//! daemon rolls back to the last proven revision: the failed one is marked `rolled-back` with
//! why (an event and `rollout history` say it), its logs kept as the previous sandbox's, and the
//! proven one starts again from the modules the history kept.
//!
//! The pods directory's files are not rolled back: the file says what should run.

use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use super::{Logs, Origin, Pods};
use crate::daemon::load::{Stored, compile, parse};
use crate::daemon::store::{Record, Revision};
use crate::run::supervisor::{State, Status};
use crate::spec::{CRASH_LOOP_RESTARTS, PodSpec};
use crate::wire::RevisionState;

/// A revision being watched.
#[derive(Debug, Clone)]
pub(super) struct Rollout {
    pub revision: u64,
    pub deadline: Instant,
    /// The update's deadline as the spec says it (for messages).
    pub limit: Duration,
    /// Since when every container has been ready without a restart.
    pub ready_since: Option<(Instant, u32)>,
    /// A failure with nothing to roll back to was said.
    pub said: bool,
}

impl Rollout {
    pub(super) fn new(revision: u64, spec: &PodSpec) -> Self {
        Rollout {
            revision,
            deadline: Instant::now() + spec.update.deadline,
            limit: spec.update.deadline,
            ready_since: None,
            said: false,
        }
    }
}

fn now_secs() -> u64 {
    crate::wire::epoch_secs(SystemTime::now())
}

/// What each container of `spec` runs, a line each.
pub(super) fn change(spec: &PodSpec) -> Vec<String> {
    spec.containers
        .iter()
        .map(|c| match &c.image {
            Some(i) => format!("{}=oci://{}", c.name, i.pinned()),
            None => format!(
                "{}={}",
                c.name,
                c.module
                    .file_name()
                    .map_or_else(String::new, |f| f.to_string_lossy().into_owned())
            ),
        })
        .collect()
}

/// Why a watched revision failed, if it did (`None`: not yet, or it is fine).
fn failure(r: &Rollout, statuses: &[Status], error: Option<&str>, now: Instant) -> Option<String> {
    if let Some(e) = error {
        return Some(format!("the pod could not start: {e}"));
    }
    if let Some(c) = statuses.iter().find(|c| c.restarts >= CRASH_LOOP_RESTARTS) {
        let last = c
            .last_state
            .as_ref()
            .map_or_else(String::new, |t| match t.exit_code {
                Some(code) => format!("; last: {} (exit code {code})", t.reason),
                None => format!("; last: {}: {}", t.reason, t.message),
            });
        return Some(format!(
            "{} crash-looped: {} restarts{last}",
            c.name, c.restarts
        ));
    }
    if now < r.deadline {
        return None;
    }
    let limit = humantime::format_duration(r.limit);
    let c = statuses
        .iter()
        .find(|c| c.kind != crate::spec::Kind::Init && !c.ready);
    Some(match c {
        Some(c) => match (&c.probe_failure, c.state) {
            (Some(p), _) => format!("{} not ready within {limit}: {p}", c.name),
            (None, State::Running) => format!("{} not ready within {limit}", c.name),
            (None, state) => format!("{} not ready within {limit}: {state:?}", c.name),
        },
        None => format!(
            "not ready for {} without a restart within {limit}",
            "update.min_ready"
        ),
    })
}

impl Pods {
    /// The history entry for an apply of `record` (its revision number set here), the one
    /// before it marked superseded; written before the record (see the store's comment).
    pub(super) fn begin_revision(
        &self,
        name: &str,
        record: &mut Record,
        spec: &PodSpec,
    ) -> std::io::Result<()> {
        let mut history = self.store.history(name);
        if history.is_empty()
            && let Some(current) = self.store.record(name)
        {
            // A pod from before histories were kept: what ran is its first, proven revision.
            let revision = current.revision.max(1);
            history.push(Revision {
                revision,
                record: Record {
                    revision,
                    ..current
                },
                applied_at: now_secs(),
                state: RevisionState::Ready,
                proven: true,
                reason: None,
                change: Vec::new(),
            });
        }
        record.revision = history.last().map_or(1, |r| r.revision + 1);
        for r in &mut history {
            if matches!(r.state, RevisionState::Ready | RevisionState::Progressing) {
                r.state = RevisionState::Superseded;
            }
        }
        history.push(Revision {
            revision: record.revision,
            record: record.clone(),
            applied_at: now_secs(),
            state: RevisionState::Progressing,
            proven: false,
            reason: None,
            change: change(spec),
        });
        self.store.save_history(name, &history)?;
        crate::durable::crash_point("update-history-written");
        Ok(())
    }

    /// Every tenth of a second: when a revision is watched or a stop is under way, the
    /// rollouts are looked at and the pods that waited for their old sandbox are started.
    pub(in crate::daemon) async fn rollout_tick(&mut self) {
        let watched = self.entries.values().any(|e| e.rollout.is_some());
        if watched {
            self.watch_rollouts().await;
        }
        if watched || !self.stopping.is_empty() {
            self.launch_pending(None).await;
        }
    }

    /// Every tick: proves or rolls back the revisions being watched.
    pub(super) async fn watch_rollouts(&mut self) {
        let now = Instant::now();
        let mut proven = Vec::new();
        let mut failed = Vec::new();
        for (name, e) in &mut self.entries {
            let Some(r) = e.rollout.as_mut() else {
                continue;
            };
            let statuses = e.running.as_ref().map(|p| p.statuses()).unwrap_or_default();
            let restarts: u32 = statuses.iter().map(|c| c.restarts).sum();
            let ready = e.running.is_some() && super::view::pod_ready(&statuses);
            match (ready, r.ready_since) {
                (true, Some((since, at))) if at == restarts => {
                    if now.duration_since(since) >= e.spec.update.min_ready {
                        proven.push((name.clone(), r.revision));
                        continue;
                    }
                }
                (true, _) => r.ready_since = Some((now, restarts)),
                (false, _) => r.ready_since = None,
            }
            if let Some(why) = failure(r, &statuses, e.error.as_deref(), now) {
                failed.push((name.clone(), r.revision, why));
            }
        }
        for (name, revision) in proven {
            self.prove(&name, revision);
        }
        for (name, revision, why) in failed {
            self.roll_back(&name, revision, &why).await;
        }
    }

    fn prove(&mut self, name: &str, revision: u64) {
        if let Some(e) = self.entries.get_mut(name) {
            e.rollout = None;
        }
        let mut history = self.store.history(name);
        let Some(r) = history.iter_mut().find(|r| r.revision == revision) else {
            return;
        };
        r.state = RevisionState::Ready;
        r.proven = true;
        let message = format!("revision {revision} is ready: {}", r.change.join(", "));
        if let Err(e) = self.store.save_history(name, &history) {
            tracing::error!("pod {name}: history: {e}");
        }
        tracing::info!("pod {name}: {message}");
        self.events
            .normal(&format!("pod/{name}"), "RolloutComplete", message);
    }

    /// Goes back to the last proven revision of `name`, because revision `revision` failed
    /// (`why`). Without one, says so once and keeps watching.
    async fn roll_back(&mut self, name: &str, revision: u64, why: &str) {
        let mut history = self.store.history(name);
        let target = history
            .iter()
            .rev()
            .find(|r| r.proven && r.revision != revision)
            .cloned();
        let object = format!("pod/{name}");
        let Some(target) = target else {
            if let Some(r) = self.entries.get_mut(name).and_then(|e| e.rollout.as_mut())
                && !r.said
            {
                r.said = true;
                let message = format!(
                    "revision {revision} failed: {why}; no earlier ready revision to roll back to"
                );
                tracing::warn!("pod {name}: {message}");
                self.events.warning(&object, "RolloutFailed", message);
            }
            return;
        };
        // The history first: a stop between the two is finished at the next start.
        if let Some(r) = history.iter_mut().find(|r| r.revision == revision) {
            r.state = RevisionState::RolledBack;
            r.reason = Some(why.to_string());
        }
        if let Some(t) = history.iter_mut().find(|r| r.revision == target.revision) {
            t.state = RevisionState::Ready;
        }
        let saved = self.store.save_history(name, &history).and_then(|()| {
            crate::durable::crash_point("rollback-history-written");
            self.store.save(name, &target.record)
        });
        if let Err(e) = saved {
            tracing::error!("pod {name}: rolling back: {e}");
            return;
        }
        let message = format!("rolled back to revision {}: {why}", target.revision);
        tracing::warn!("pod {name}: {message}");
        self.events.warning(&object, "RolledBack", message);
        let r = &target.record;
        let stored = Stored {
            modules: &r.modules,
            images: &r.images,
        };
        let me = crate::caller::Caller::myself();
        let loaded = parse(&r.source, &r.text, Some(stored), me, &self.cfg)
            .and_then(|p| compile(&self.exec, p));
        let owner = r.owner;
        match loaded {
            Ok(l) => {
                // The failed version's logs stay, as the previous sandbox's.
                self.remove(name, Logs::Keep);
                self.start(Origin::Api, owner, l).await;
            }
            Err(e) => {
                tracing::error!(
                    "pod {name}: revision {} cannot be loaded: {e}",
                    target.revision
                );
                self.events.warning(
                    &object,
                    "RollbackFailed",
                    format!("revision {} cannot be loaded: {e}", target.revision),
                );
            }
        }
    }

    /// `rollout history`: pod `name`'s revisions, oldest first.
    pub(in crate::daemon) fn history(&self, name: &str) -> Vec<crate::wire::RevisionView> {
        let current = self.store.record(name).map(|r| r.revision);
        self.store
            .history(name)
            .into_iter()
            .map(|r| crate::wire::RevisionView {
                current: Some(r.revision) == current,
                revision: r.revision,
                state: r.state,
                applied_at: r.applied_at,
                change: r.change,
                reason: r.reason,
            })
            .collect()
    }

    /// The record of revision `to` of pod `name` (default: the last proven one before the
    /// current), for `rollout undo`.
    pub(in crate::daemon) fn undo_target(
        &self,
        name: &str,
        to: Option<u64>,
    ) -> Result<Record, super::OpError> {
        let current = self.store.record(name).map(|r| r.revision);
        let history = self.store.history(name);
        let found = match to {
            Some(n) => history.iter().find(|r| r.revision == n),
            None => history
                .iter()
                .rev()
                .find(|r| r.proven && Some(r.revision) != current),
        };
        found.map(|r| r.record.clone()).ok_or_else(|| {
            super::OpError::Failed(match to {
                Some(n) => format!(
                    "pod {name:?} has no revision {n} (`peapod rollout history {name}` lists them)"
                ),
                None => format!("pod {name:?} has no earlier ready revision to go back to"),
            })
        })
    }
}
