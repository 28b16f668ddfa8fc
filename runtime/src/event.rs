//! Where what happens is told: an [`Events`] handle that the daemon gives each pod (its
//! recorder, `daemon/events.rs`) and that `peapod run` leaves empty. The supervisor tells its
//! container's runs, ends, backoffs and probe results through it; the reconciler its pods'.

use std::sync::Arc;

use crate::wire::EventType;

/// One thing that happened, before the recorder counts and dates it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub kind: EventType,
    /// `Started`, `BackOff`, `OOMKilled`, ...: one word, CamelCase, as Kubernetes has them.
    pub reason: String,
    /// `pod/NAME`, `pod/NAME/CONTAINER` or `daemon`.
    pub object: String,
    pub message: String,
    /// For a container started again: how long after its last run ended.
    pub took: Option<std::time::Duration>,
}

/// Hands notes to a recorder, or to nobody.
#[derive(Clone, Default)]
pub struct Events(Option<Arc<dyn Fn(Note) + Send + Sync>>);

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Events"
        } else {
            "Events(none)"
        })
    }
}

impl Events {
    /// Notes go to `record`.
    pub fn new(record: impl Fn(Note) + Send + Sync + 'static) -> Self {
        Events(Some(Arc::new(record)))
    }

    pub fn normal(&self, object: &str, reason: &str, message: impl Into<String>) {
        self.tell(EventType::Normal, object, reason, message.into(), None);
    }

    pub fn warning(&self, object: &str, reason: &str, message: impl Into<String>) {
        self.tell(EventType::Warning, object, reason, message.into(), None);
    }

    /// A container of `object` started, `took` after its last run ended (`None`: its first).
    pub fn started(&self, object: &str, message: String, took: Option<std::time::Duration>) {
        self.tell(EventType::Normal, object, "Started", message, took);
    }

    fn tell(
        &self,
        kind: EventType,
        object: &str,
        reason: &str,
        message: String,
        took: Option<std::time::Duration>,
    ) {
        if let Some(record) = &self.0 {
            record(Note {
                kind,
                reason: reason.into(),
                object: object.into(),
                message,
                took,
            });
        }
    }
}
