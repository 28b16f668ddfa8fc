//! The modules pulled from registries, kept by content under `<state_dir>/images/`:
//!
//! - `blobs/sha256/<hex>`: a module's bytes, written whole (temp file, fsync, rename) only once
//!   they hash to the digest the manifest gave; checked again on every load
//!   ([`ImageStore::read`]).
//! - `refs/<sha256 of the reference>.json`: what a reference resolved to when it was last
//!   pulled ([`Pulled`]): the board runs it offline after that.
//!
//! Both are written atomically, so a power cut leaves the old state or the new one; a blob
//! without a reference, or a temp file, is what [`ImageStore::prune`] removes.

use std::collections::BTreeSet;
use std::io;
use std::path::{Path, PathBuf};

use crate::durable;

/// What a reference resolved to when it was pulled (the API shows the same record).
pub use crate::wire::Pulled;

/// The store under a state dir.
#[derive(Debug, Clone)]
pub struct ImageStore {
    dir: PathBuf,
}

/// `sha256:<64 hex>`, the only digests taken (a path is built from it).
pub(crate) fn hex_of(digest: &str) -> Option<&str> {
    let hex = digest.strip_prefix("sha256:")?;
    (hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))).then_some(hex)
}

impl ImageStore {
    pub fn new(state_dir: &Path) -> Self {
        ImageStore {
            dir: state_dir.join("images"),
        }
    }

    fn blobs(&self) -> PathBuf {
        self.dir.join("blobs/sha256")
    }

    fn refs(&self) -> PathBuf {
        self.dir.join("refs")
    }

    /// Where the blob of `digest` is (or would be) kept.
    pub fn blob_path(&self, digest: &str) -> io::Result<PathBuf> {
        let hex = hex_of(digest).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{digest:?} is not a sha256 digest"),
            )
        })?;
        Ok(self.blobs().join(hex))
    }

    /// A new temp file beside the blobs (so the rename into place is atomic).
    pub(crate) fn temp_blob(&self) -> io::Result<tempfile::NamedTempFile> {
        durable::private_dir(&self.dir)?;
        std::fs::create_dir_all(self.blobs())?;
        tempfile::Builder::new()
            .prefix(".pull-")
            .tempfile_in(self.blobs())
    }

    /// Puts a written, verified temp file in place as the blob of `digest`.
    pub(crate) fn commit_blob(
        &self,
        temp: tempfile::NamedTempFile,
        digest: &str,
    ) -> io::Result<PathBuf> {
        let path = self.blob_path(digest)?;
        temp.as_file().sync_all()?;
        temp.persist(&path).map_err(|e| e.error)?;
        if let Ok(d) = std::fs::File::open(self.blobs()) {
            let _ = d.sync_all();
        }
        Ok(path)
    }

    /// Whether the blob of `digest` is here with `size` bytes (its content is checked when it
    /// is read).
    pub fn has_blob(&self, digest: &str, size: u64) -> bool {
        self.blob_path(digest)
            .ok()
            .and_then(|p| std::fs::metadata(p).ok())
            .is_some_and(|m| m.is_file() && m.len() == size)
    }

    /// Reads the blob of `digest` (at most `max` bytes) and checks that its bytes hash to it;
    /// a damaged blob is removed (the next pull fetches it again).
    pub fn read(&self, digest: &str, max: u64) -> Result<crate::module_file::Read, String> {
        let path = self.blob_path(digest).map_err(|e| e.to_string())?;
        let mut read = crate::module_file::read(&path, max, crate::caller::Caller::myself())
            .map_err(|e| e.to_string())?;
        let actual = format!("sha256:{}", crate::hash::hex(&read.sha256));
        if actual != digest {
            let _ = std::fs::remove_file(&path);
            return Err(format!(
                "the stored module {digest} is damaged (its bytes hash to {actual}): removed; \
                 apply again to pull it"
            ));
        }
        // Bytes from a registry never hold native code the daemon would run.
        read.trusted = false;
        Ok(read)
    }

    fn ref_path(&self, reference: &str) -> PathBuf {
        self.refs().join(format!(
            "{}.json",
            crate::hash::sha256_hex(reference.as_bytes())
        ))
    }

    /// Records what `p.reference` resolved to.
    pub fn record(&self, p: &Pulled) -> io::Result<()> {
        durable::private_dir(&self.dir)?;
        std::fs::create_dir_all(self.refs())?;
        let mut bytes = serde_json::to_vec_pretty(p).expect("a record serializes");
        bytes.push(b'\n');
        durable::write(&self.ref_path(&p.reference), &bytes)
    }

    /// What `reference` resolved to when it was last pulled.
    pub fn lookup(&self, reference: &str) -> Option<Pulled> {
        let bytes = std::fs::read(self.ref_path(reference)).ok()?;
        serde_json::from_slice::<Pulled>(&bytes)
            .ok()
            .filter(|p| p.reference == reference)
    }

    /// Every recorded reference, by name.
    pub fn list(&self) -> Vec<Pulled> {
        let mut out: Vec<Pulled> = std::fs::read_dir(self.refs())
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
            .filter_map(|e| serde_json::from_slice(&std::fs::read(e.path()).ok()?).ok())
            .collect();
        out.sort_by(|a: &Pulled, b| a.reference.cmp(&b.reference));
        out
    }

    /// Removes the references whose module is not in `in_use` (module digests), then every
    /// blob no remaining reference names and the temp files of interrupted pulls. Returns the
    /// references removed and the bytes freed.
    pub fn prune(&self, in_use: &BTreeSet<String>) -> (Vec<Pulled>, u64) {
        let mut removed = Vec::new();
        for p in self.list() {
            if !in_use.contains(&p.module)
                && std::fs::remove_file(self.ref_path(&p.reference)).is_ok()
            {
                removed.push(p);
            }
        }
        let kept: BTreeSet<String> = self
            .list()
            .into_iter()
            .map(|p| p.module)
            .chain(in_use.iter().cloned())
            .filter_map(|d| hex_of(&d).map(str::to_owned))
            .collect();
        let mut freed = 0;
        for e in std::fs::read_dir(self.blobs())
            .into_iter()
            .flatten()
            .flatten()
        {
            let name = e.file_name().to_string_lossy().into_owned();
            if !kept.contains(&name) {
                let size = e.metadata().map(|m| m.len()).unwrap_or(0);
                if std::fs::remove_file(e.path()).is_ok() {
                    freed += size;
                }
            }
        }
        (removed, freed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pulled(reference: &str, module: &str) -> Pulled {
        Pulled {
            reference: reference.into(),
            manifest: format!("sha256:{}", "0".repeat(64)),
            module: module.into(),
            media_type: "application/wasm".into(),
            size: 3,
            pulled_at: 0,
        }
    }

    #[test]
    fn blobs_are_checked_on_read_and_prune_keeps_what_is_used() {
        let dir = tempfile::tempdir().unwrap();
        let s = ImageStore::new(dir.path());
        let put = |bytes: &[u8]| {
            let digest = format!("sha256:{}", crate::hash::sha256_hex(bytes));
            let mut t = s.temp_blob().unwrap();
            io::Write::write_all(&mut t, bytes).unwrap();
            s.commit_blob(t, &digest).unwrap();
            digest
        };
        let one = put(b"one");
        let two = put(b"two");
        assert!(s.has_blob(&one, 3) && !s.has_blob(&one, 4));
        assert_eq!(s.read(&one, 100).unwrap().bytes, b"one");
        assert!(
            !s.read(&one, 100).unwrap().trusted,
            "registry bytes are never trusted"
        );
        s.record(&pulled("r.example/a:1", &one)).unwrap();
        s.record(&pulled("r.example/b:1", &two)).unwrap();
        assert_eq!(s.lookup("r.example/a:1").unwrap().module, one);
        assert!(s.lookup("r.example/c:1").is_none());
        // A blob changed on disk is refused and removed.
        std::fs::write(s.blob_path(&two).unwrap(), b"tw0").unwrap();
        let e = s.read(&two, 100).unwrap_err();
        assert!(e.contains("damaged"), "{e}");
        assert!(!s.blob_path(&two).unwrap().exists());
        let orphan = put(b"orphan");
        let (removed, freed) = s.prune(&BTreeSet::from([one.clone()]));
        assert_eq!(
            removed
                .iter()
                .map(|p| p.reference.as_str())
                .collect::<Vec<_>>(),
            ["r.example/b:1"]
        );
        assert_eq!(freed, 6, "the orphan blob");
        assert!(s.has_blob(&one, 3) && !s.blob_path(&orphan).unwrap().exists());
        assert_eq!(s.list().len(), 1);
        assert!(s.blob_path("sha256:../../etc").is_err());
    }
}
