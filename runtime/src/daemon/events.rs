//! The daemon's record of what happened ([`Event`]s, in Kubernetes' shape), for `peapod events`,
//! `describe` and the API: bounded in memory ([`MEMORY`] events) and kept on disk across daemon
//! restarts in `<state_dir>/events.jsonl` (bounded too: rewritten with the newest [`MEMORY`] once
//! it holds twice that).
//!
//! A note that repeats an event of the last [`MERGE_WINDOW`] (same object, reason and message)
//! counts it again instead of adding one: a crash loop is one `BackOff` event with a count, as in
//! Kubernetes. Each change is appended to the file as a line; at load the later line of an event
//! (same object, reason, message and first time) replaces the earlier. A repeat is written at
//! most once per [`REPEAT_WRITE_EVERY`]: a probe failing every few seconds costs the SD card a
//! line a minute, and a daemon killed meanwhile loses at most that minute of counting.

use std::collections::VecDeque;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use tokio::sync::broadcast;

use crate::event::Note;
use crate::wire::Event;

/// Events kept in memory (and on disk after a compaction).
pub(super) const MEMORY: usize = 1000;

/// The longest message kept (bytes): a message may carry what a guest wrote (a trap's text, a
/// probe's answer), and the record is bounded in bytes as well as in events.
pub(super) const MAX_MESSAGE: usize = 1024;

/// A note within this of the same event's last time counts it again.
pub(super) const MERGE_WINDOW: Duration = Duration::from_secs(3600);

/// A repeat of an event (its count and last time) is written to the file at most this often.
pub(super) const REPEAT_WRITE_EVERY: Duration = Duration::from_secs(60);

/// The recorder. Cheap to share (`Arc`); every method takes `&self`.
pub(crate) struct Recorder {
    state: Mutex<State>,
    path: PathBuf,
    /// New and counted-again events, for watchers (`events -w`).
    tx: broadcast::Sender<Event>,
}

struct State {
    events: VecDeque<Event>,
    /// Lines in the file (it is compacted at twice [`MEMORY`]).
    lines: usize,
    /// When each event (by object, reason and first time) was last written.
    written: std::collections::HashMap<(String, String, SystemTime), SystemTime>,
}

fn same(e: &Event, n: &Note) -> bool {
    e.object == n.object && e.reason == n.reason && e.message == n.message && e.kind == n.kind
}

impl Recorder {
    /// The recorder of `state_dir`, with the events an earlier daemon kept there.
    pub(crate) fn load(state_dir: &Path) -> Recorder {
        let path = state_dir.join("events.jsonl");
        let mut events: VecDeque<Event> = VecDeque::new();
        let mut lines = 0;
        if let Ok(text) = std::fs::read_to_string(&path) {
            for line in text.lines() {
                lines += 1;
                let Ok(e) = serde_json::from_str::<Event>(line) else {
                    continue; // a line cut by a power loss
                };
                let key = |x: &Event| {
                    (x.object == e.object && x.reason == e.reason)
                        && (x.message == e.message && x.first_time == e.first_time)
                };
                if let Some(i) = events.iter().rposition(key) {
                    events.remove(i);
                }
                events.push_back(e);
                if events.len() > MEMORY {
                    events.pop_front();
                }
            }
        }
        let (tx, _) = broadcast::channel(256);
        Recorder {
            state: Mutex::new(State {
                events,
                lines,
                written: Default::default(),
            }),
            path,
            tx,
        }
    }

    /// Records `note` now.
    pub(crate) fn record(&self, note: Note) {
        self.record_at(note, SystemTime::now());
    }

    fn record_at(&self, mut note: Note, now: SystemTime) {
        if note.message.len() > MAX_MESSAGE {
            let mut end = MAX_MESSAGE;
            while !note.message.is_char_boundary(end) {
                end -= 1;
            }
            note.message.truncate(end);
            note.message.push_str("...");
        }
        // As the wire (and the file) keeps it: to the millisecond.
        let now = millis(now);
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let recent = st.events.iter().rposition(|e| {
            same(e, &note)
                && now
                    .duration_since(e.last_time)
                    .is_ok_and(|d| d < MERGE_WINDOW)
        });
        let event = match recent {
            Some(i) => {
                let mut e = st.events.remove(i).expect("found");
                e.count += 1;
                e.last_time = now;
                e
            }
            None => Event {
                kind: note.kind,
                reason: note.reason,
                object: note.object,
                message: note.message,
                count: 1,
                first_time: now,
                last_time: now,
            },
        };
        st.events.push_back(event.clone());
        if st.events.len() > MEMORY {
            st.events.pop_front();
        }
        let key = (event.object.clone(), event.reason.clone(), event.first_time);
        let due = st.written.get(&key).is_none_or(|t| {
            now.duration_since(*t)
                .is_ok_and(|d| d >= REPEAT_WRITE_EVERY)
        });
        if due {
            if st.written.len() >= 2 * MEMORY {
                st.written.clear();
            }
            st.written.insert(key, now);
            self.persist(&mut st, &event);
        }
        let _ = self.tx.send(event);
    }

    /// Appends `event` to the file; at twice [`MEMORY`] lines rewrites it with what is in
    /// memory. Failures are logged: the record in memory stays whole.
    fn persist(&self, st: &mut State, event: &Event) {
        let r = if st.lines + 1 >= 2 * MEMORY {
            let mut all = Vec::new();
            for e in &st.events {
                all.extend(serde_json::to_vec(e).expect("event serializes"));
                all.push(b'\n');
            }
            st.lines = st.events.len();
            crate::durable::write(&self.path, &all)
        } else {
            st.lines += 1;
            let mut line = serde_json::to_vec(event).expect("event serializes");
            line.push(b'\n');
            // 0600 when made here; a compaction's rewrite is 0600 too (durable::write).
            std::os::unix::fs::OpenOptionsExt::mode(
                std::fs::OpenOptions::new().create(true).append(true),
                0o600,
            )
            .open(&self.path)
            .and_then(|mut f| f.write_all(&line))
        };
        if let Err(e) = r {
            crate::once::once! {
                tracing::warn!("events: {}: {e} (kept in memory only)", self.path.display());
            };
        }
    }

    /// The events, oldest first; only pod `pod`'s (and its containers') when given.
    pub(crate) fn list(&self, pod: Option<&str>) -> Vec<Event> {
        let st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        st.events
            .iter()
            .filter(|e| pod.is_none() || e.pod() == pod)
            .cloned()
            .collect()
    }

    /// New events (and events counted again) from now on.
    pub(crate) fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.tx.subscribe()
    }
}

/// `t` to the millisecond.
fn millis(t: SystemTime) -> SystemTime {
    let since = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    SystemTime::UNIX_EPOCH + Duration::from_millis(since.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::EventType;

    fn note(object: &str, reason: &str, message: &str) -> Note {
        Note {
            kind: EventType::Warning,
            reason: reason.into(),
            object: object.into(),
            message: message.into(),
            took: None,
        }
    }

    #[test]
    fn repeats_are_counted_and_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let r = Recorder::load(dir.path());
        let t0 = millis(SystemTime::now());
        let backoff = note(
            "pod/web/app",
            "BackOff",
            "back-off restarting failed container app",
        );
        r.record_at(backoff.clone(), t0);
        r.record_at(note("pod/db/db", "Started", "started container db"), t0);
        r.record_at(backoff.clone(), t0 + Duration::from_secs(70));
        r.record_at(backoff.clone(), t0 + Duration::from_secs(140));
        let all = r.list(None);
        assert_eq!(all.len(), 2, "{all:?}");
        let last = all.last().unwrap();
        assert_eq!((last.reason.as_str(), last.count), ("BackOff", 3));
        assert_eq!(last.first_time, t0);
        assert_eq!(last.last_time, t0 + Duration::from_secs(140));
        assert_eq!(r.list(Some("db")).len(), 1);
        assert!(r.list(Some("we")).is_empty(), "a pod is named whole");

        // The next daemon reads the same record; a repeat long after is a new event.
        let again = Recorder::load(dir.path());
        assert_eq!(again.list(None), all);
        again.record_at(backoff, t0 + MERGE_WINDOW + Duration::from_secs(170));
        assert_eq!(again.list(Some("web")).len(), 2);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("events.jsonl"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    /// A probe failing every 5 s writes a line a minute, not one a failure; the count reaches
    /// the file with the next line.
    #[test]
    fn repeats_are_written_once_a_minute() {
        let dir = tempfile::tempdir().unwrap();
        let r = Recorder::load(dir.path());
        let t0 = millis(SystemTime::now());
        let failing = note(
            "pod/web/app",
            "Unhealthy",
            "readiness probe failed: HTTP 404",
        );
        for i in 0..13 {
            r.record_at(failing.clone(), t0 + Duration::from_secs(5 * i));
        }
        assert_eq!(r.list(None)[0].count, 13);
        let lines = || {
            std::fs::read_to_string(dir.path().join("events.jsonl"))
                .unwrap()
                .lines()
                .count()
        };
        assert_eq!(lines(), 2, "the first at 0 s, a repeat at 60 s");
        let on_disk = Recorder::load(dir.path()).list(None);
        assert_eq!(
            on_disk[0].count, 13,
            "the 13th failure came at 60 s: written"
        );
        r.record_at(failing, t0 + Duration::from_secs(65));
        assert_eq!(lines(), 2);
        assert_eq!(
            Recorder::load(dir.path()).list(None)[0].count,
            13,
            "a minute behind at most"
        );
    }

    /// A guest's text in a message (a trap, a probe's answer) is cut: the record stays bounded
    /// in bytes, on disk too.
    #[test]
    fn a_huge_message_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        let r = Recorder::load(dir.path());
        let huge = "é".repeat(1 << 20);
        r.record(note("pod/web/app", "Trapped", &huge));
        let e = &r.list(None)[0];
        assert!(e.message.len() <= MAX_MESSAGE + 3, "{}", e.message.len());
        assert!(e.message.ends_with("...") && e.message.starts_with("éé"));
        let on_disk = std::fs::metadata(dir.path().join("events.jsonl"))
            .unwrap()
            .len();
        assert!(on_disk < 2 * MAX_MESSAGE as u64, "{on_disk}");
    }

    #[test]
    fn memory_and_disk_stay_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let r = Recorder::load(dir.path());
        let t0 = millis(SystemTime::now());
        for i in 0..(3 * MEMORY) {
            r.record_at(note(&format!("pod/p{i}"), "Started", "x"), t0);
        }
        let all = r.list(None);
        assert_eq!(all.len(), MEMORY);
        assert_eq!(
            all[0].object,
            format!("pod/p{}", 2 * MEMORY),
            "the oldest go first"
        );
        let text = std::fs::read_to_string(dir.path().join("events.jsonl")).unwrap();
        assert!(
            text.lines().count() < 2 * MEMORY,
            "{}",
            text.lines().count()
        );
        assert_eq!(Recorder::load(dir.path()).list(None), all);
        // A line cut short (a power loss) is skipped, not fatal.
        std::fs::write(
            dir.path().join("events.jsonl"),
            format!("{text}{{\"type\":\"No"),
        )
        .unwrap();
        assert_eq!(Recorder::load(dir.path()).list(None), all);
    }
}
