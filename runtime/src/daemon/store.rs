//! Pods created through the API, kept under the state dir so they survive a restart of the daemon:
//! `<state_dir>/pods/<pod>.json` holds the spec text as applied (and the file it came from, for
//! messages and relative paths), and each module is copied to `<state_dir>/modules/<sha256>.wasm`
//! at apply time, so the pod does not depend on the client's files staying put.
//!
//! `<state_dir>/history/<pod>.json` keeps its last [`HISTORY_LIMIT`] revisions ([`Revision`]):
//! each one's record, and whether it was proven ready, superseded or rolled back. The modules a
//! revision names are kept while it is in the history (a rollback, or `rollout undo`, needs
//! them). An update writes the history first, then the record: a power cut between the two
//! leaves the record of the version that ran, and the history entry after it is dropped at
//! the next start ([`Store::reconcile`]).

use std::collections::BTreeSet;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::durable;

/// One persisted pod.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(super) struct Record {
    /// The spec file the client applied (paths in the spec were relative to it).
    pub source: PathBuf,
    /// The spec text.
    pub text: String,
    /// The stored copy of each container's module, in spec order.
    pub modules: Vec<PathBuf>,
    /// The uid of the client that applied it (its pods count against its quotas). Records from
    /// before owners were kept read as root's.
    #[serde(default)]
    pub owner: u32,
    /// For each container, what its `oci://` module resolved to when applied (its module is
    /// then the image store's blob, not a copy); `None` for a file module. Older records have
    /// none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<Option<crate::spec::ResolvedImage>>,
    /// Its revision in the pod's history (0: a record from before histories were kept).
    #[serde(default)]
    pub revision: u64,
}

/// Revisions kept per pod (the current one included).
pub(super) const HISTORY_LIMIT: usize = 6;

/// One version of a pod, as applied.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(super) struct Revision {
    pub revision: u64,
    pub record: Record,
    /// Seconds since the epoch.
    pub applied_at: u64,
    pub state: crate::wire::RevisionState,
    /// It was ready for `update.min_ready`: a version to roll back to.
    #[serde(default)]
    pub proven: bool,
    /// Why it was rolled back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// What it runs, a line a container: `app=oci://REG/REPO:TAG@sha256:…` or
    /// `app=kv-server.wasm sha256:…`.
    #[serde(default)]
    pub change: Vec<String>,
}

#[derive(Debug, Clone)]
pub(super) struct Store {
    pods: PathBuf,
    modules: PathBuf,
    history: PathBuf,
}

impl Store {
    pub(super) fn new(state_dir: &Path) -> Self {
        Store {
            pods: state_dir.join("pods"),
            modules: state_dir.join("modules"),
            history: state_dir.join("history"),
        }
    }

    fn history_path(&self, pod: &str) -> PathBuf {
        self.history.join(format!("{pod}.json"))
    }

    /// Pod `pod`'s revisions, oldest first (none when it has no history yet, or it cannot be
    /// read: logged).
    pub(super) fn history(&self, pod: &str) -> Vec<Revision> {
        match std::fs::read(self.history_path(pod)) {
            Ok(b) => serde_json::from_slice(&b).unwrap_or_else(|e| {
                tracing::error!("{}: {e}", self.history_path(pod).display());
                Vec::new()
            }),
            Err(_) => Vec::new(),
        }
    }

    /// Writes pod `pod`'s revisions (the newest [`HISTORY_LIMIT`]) durably.
    pub(super) fn save_history(&self, pod: &str, revisions: &[Revision]) -> io::Result<()> {
        std::fs::create_dir_all(&self.history)?;
        let keep = &revisions[revisions.len().saturating_sub(HISTORY_LIMIT)..];
        let mut bytes = serde_json::to_vec_pretty(keep).expect("history serializes");
        bytes.push(b'\n');
        durable::write(&self.history_path(pod), &bytes)
    }

    /// At start, after a power cut: the history of a stored pod made to agree with its record
    /// (which says what ran). A revision written after the record's (the update's record was
    /// never written) is dropped; a record whose revision was marked rolled back (the rollback's
    /// record was never written) is replaced by the revision it rolls back to. Returns the
    /// record to run.
    pub(super) fn reconcile(&self, pod: &str, record: Record) -> io::Result<Record> {
        let mut history = self.history(pod);
        if record.revision == 0 || history.is_empty() {
            return Ok(record);
        }
        let before = history.len();
        history.retain(|r| r.revision <= record.revision);
        let mut changed = history.len() != before;
        // The one an interrupted update had marked superseded runs on.
        if let Some(r) = history.iter_mut().find(|r| r.revision == record.revision)
            && r.state == crate::wire::RevisionState::Superseded
        {
            r.state = if r.proven {
                crate::wire::RevisionState::Ready
            } else {
                crate::wire::RevisionState::Progressing
            };
            changed = true;
        }
        let current = history.iter().find(|r| r.revision == record.revision);
        let record = match current {
            Some(r) if r.state == crate::wire::RevisionState::RolledBack => {
                match history
                    .iter()
                    .rev()
                    .find(|r| r.proven && r.revision != record.revision)
                {
                    Some(target) => {
                        let target = target.record.clone();
                        tracing::warn!(
                            "pod {pod}: finishing the rollback to revision {} a stop interrupted",
                            target.revision
                        );
                        self.save(pod, &target)?;
                        target
                    }
                    None => record,
                }
            }
            _ => record,
        };
        if changed {
            self.save_history(pod, &history)?;
        }
        Ok(record)
    }

    fn record_path(&self, pod: &str) -> PathBuf {
        self.pods.join(format!("{pod}.json"))
    }

    /// Pod `pod`'s record, if it is stored (and readable).
    pub(super) fn record(&self, pod: &str) -> Option<Record> {
        let bytes = std::fs::read(self.record_path(pod)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Every stored pod: (name, record), and the files that could not be read (with why).
    pub(super) fn load_all(&self) -> (Vec<(String, Record)>, Vec<String>) {
        let mut ok = Vec::new();
        let mut bad = Vec::new();
        let entries = match std::fs::read_dir(&self.pods) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return (ok, bad),
            Err(e) => return (ok, vec![format!("{}: {e}", self.pods.display())]),
        };
        let mut paths: Vec<_> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .collect();
        paths.sort();
        for p in paths {
            let name = p
                .file_stem()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            match std::fs::read(&p)
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice::<Record>(&b).map_err(|e| e.to_string()))
            {
                Ok(r) => ok.push((name, r)),
                Err(e) => bad.push(format!("{}: {e}", p.display())),
            }
        }
        (ok, bad)
    }

    /// Copies a module into the store (once per content) and returns the stored path.
    pub(super) fn put_module(&self, module: &crate::module_file::Read) -> io::Result<PathBuf> {
        let bytes = &module.bytes;
        std::fs::create_dir_all(&self.modules)?;
        let sha = crate::hash::hex(&module.sha256);
        let path = self.modules.join(format!("{sha}.wasm"));
        if std::fs::metadata(&path).map(|m| m.len()).ok() != Some(bytes.len() as u64) {
            durable::write(&path, bytes)?;
        }
        Ok(path)
    }

    pub(super) fn save(&self, pod: &str, record: &Record) -> io::Result<()> {
        std::fs::create_dir_all(&self.pods)?;
        let mut bytes = serde_json::to_vec_pretty(record).expect("record serializes");
        bytes.push(b'\n');
        durable::write(&self.record_path(pod), &bytes)?;
        // A re-apply with new module bytes leaves the old copy unused.
        self.collect_modules();
        Ok(())
    }

    /// Forgets a pod and its history, then drops module copies no stored pod uses any more.
    pub(super) fn remove(&self, pod: &str) -> io::Result<()> {
        for path in [self.record_path(pod), self.history_path(pod)] {
            match std::fs::remove_file(path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        self.collect_modules();
        Ok(())
    }

    /// Every record a stored pod may run again: the current ones, and their histories'.
    pub(super) fn all_records(&self) -> Vec<(String, Record)> {
        let (records, _) = self.load_all();
        let mut all = Vec::new();
        for (name, r) in records {
            all.extend(
                self.history(&name)
                    .into_iter()
                    .map(|h| (name.clone(), h.record)),
            );
            all.push((name, r));
        }
        all
    }

    /// Removes the stored modules no record (nor history) uses (and temp files of interrupted
    /// writes).
    fn collect_modules(&self) {
        let used: BTreeSet<PathBuf> = (self.all_records().into_iter())
            .flat_map(|(_, r)| r.modules)
            .collect();
        if let Ok(entries) = std::fs::read_dir(&self.modules) {
            for e in entries.flatten() {
                if !used.contains(&e.path()) {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_unused_modules_go() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::new(dir.path());
        let m1 = s
            .put_module(&crate::module_file::Read::new(b"one".to_vec(), false))
            .unwrap();
        assert_eq!(
            s.put_module(&crate::module_file::Read::new(b"one".to_vec(), false))
                .unwrap(),
            m1,
            "same bytes, same copy"
        );
        let r = |m: &PathBuf| Record {
            source: "/x/pod.toml".into(),
            text: "[pod]\n".into(),
            modules: vec![m.clone()],
            owner: 1000,
            images: Vec::new(),
            revision: 0,
        };
        s.save("a", &r(&m1)).unwrap();
        let m2 = s
            .put_module(&crate::module_file::Read::new(b"two".to_vec(), false))
            .unwrap();
        s.save("b", &r(&m2)).unwrap();
        std::fs::write(dir.path().join("pods/broken.json"), "{").unwrap();
        let (ok, bad) = s.load_all();
        assert_eq!(ok, vec![("a".into(), r(&m1)), ("b".into(), r(&m2))]);
        assert!(bad.len() == 1 && bad[0].contains("broken.json"), "{bad:?}");
        s.remove("b").unwrap();
        assert!(m1.exists() && !m2.exists());
        // A re-apply of "a" with other bytes: the old copy goes.
        let m3 = s
            .put_module(&crate::module_file::Read::new(b"three".to_vec(), false))
            .unwrap();
        s.save("a", &r(&m3)).unwrap();
        assert!(!m1.exists() && m3.exists());
    }
}
