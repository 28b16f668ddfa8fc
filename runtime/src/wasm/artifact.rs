//! Precompiled modules: peapod's `.cwasm` envelope and the on-disk compile cache.
//!
//! A `.cwasm` written by `peapod compile` is wasmtime's native artifact followed by a trailer:
//! the artifact's SHA-256 and the tag `PEAPODC1`. Loading checks the trailer
//! first, so a file changed after it was written is refused before wasmtime maps any of it as
//! code; wasmtime then refuses artifacts of another target, another wasmtime version or other
//! engine settings.
//!
//! A checksum is integrity, not authenticity: anyone can write a `.cwasm` with a right checksum.
//! So a `.cwasm` named by a pod is loaded only when root vouches for the file
//! ([`crate::module_file`]); otherwise it is refused before wasmtime sees it.
//!
//! The cache lives in `<state_dir>/cache/` (mode 0700), one artifact per module, keyed by the
//! SHA-256 of the wasm bytes and wasmtime's engine compatibility hash: a board compiles each
//! module once across restarts of the process, and a wasmtime upgrade simply misses. Its entries
//! are *authenticated*: the trailer is an HMAC-SHA256 under a key kept in
//! `<state_dir>/cache.key` (0600, made on first use), tagged `PEAPODM1`. An entry that was
//! modified, or written by anyone without the key, fails the check and is compiled again from
//! the wasm; it is never loaded.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

const TAG: &[u8; 8] = b"PEAPODC1";
/// The cache's trailer tag: the 32 bytes before it are an HMAC, not a checksum.
const MAC_TAG: &[u8; 8] = b"PEAPODM1";
const TRAILER: usize = 32 + TAG.len();
const KEY_LEN: usize = 32;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum ArtifactError {
    #[error(
        "not a peapod precompiled module (no PEAPODC1 trailer); make one with `peapod compile`"
    )]
    NotSealed,
    #[error("the precompiled module was modified after it was written (checksum mismatch)")]
    Tampered,
}

/// Appends the integrity trailer to a wasmtime artifact.
pub(crate) fn seal(mut artifact: Vec<u8>) -> Vec<u8> {
    let sum = Sha256::digest(&artifact);
    artifact.extend_from_slice(&sum);
    artifact.extend_from_slice(TAG);
    artifact
}

/// Does `bytes` end with peapod's trailer tag?
pub(crate) fn is_sealed(bytes: &[u8]) -> bool {
    bytes.len() >= TRAILER && bytes.ends_with(TAG)
}

/// Checks the trailer; returns the wasmtime artifact inside.
pub(crate) fn unseal(bytes: &[u8]) -> Result<&[u8], ArtifactError> {
    if !is_sealed(bytes) {
        return Err(ArtifactError::NotSealed);
    }
    let (artifact, trailer) = bytes.split_at(bytes.len() - TRAILER);
    if Sha256::digest(artifact)[..] != trailer[..32] {
        return Err(ArtifactError::Tampered);
    }
    Ok(artifact)
}

fn mac(key: &[u8], artifact: &[u8]) -> Hmac<Sha256> {
    let mut m = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    m.update(artifact);
    m
}

/// Appends the cache's authentication trailer.
fn seal_with_key(key: &[u8], mut artifact: Vec<u8>) -> Vec<u8> {
    let tag = mac(key, &artifact).finalize().into_bytes();
    artifact.extend_from_slice(&tag);
    artifact.extend_from_slice(MAC_TAG);
    artifact
}

/// Checks the cache's trailer (in constant time); returns the artifact inside.
fn unseal_with_key<'a>(key: &[u8], bytes: &'a [u8]) -> Result<&'a [u8], ArtifactError> {
    if bytes.len() < TRAILER || !bytes.ends_with(MAC_TAG) {
        return Err(ArtifactError::NotSealed);
    }
    let (artifact, trailer) = bytes.split_at(bytes.len() - TRAILER);
    mac(key, artifact)
        .verify_slice(&trailer[..32])
        .map_err(|_| ArtifactError::Tampered)?;
    Ok(artifact)
}

/// The compile cache of one engine configuration.
#[derive(Clone)]
pub(crate) struct Cache {
    dir: PathBuf,
    engine: u64,
    /// The HMAC key; `None` when it could not be read or made (then nothing is cached).
    key: Option<[u8; KEY_LEN]>,
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache").field("dir", &self.dir).finish()
    }
}

impl Cache {
    /// The cache in `dir`, authenticated with the key at `key_file` (made if missing).
    pub(crate) fn new(dir: PathBuf, key_file: &Path, engine: &wasmtime::Engine) -> Self {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut h);
        let key = match load_or_make_key(key_file) {
            Ok(k) => Some(k),
            Err(e) => {
                tracing::warn!(
                    "compile cache off: key {}: {e}; modules are compiled at every start",
                    key_file.display()
                );
                None
            }
        };
        crate::durable::sweep(&dir);
        Cache {
            dir,
            engine: h.finish(),
            key,
        }
    }

    /// Where the artifact for the module whose SHA-256 is `sha256` lives.
    pub(crate) fn entry(&self, sha256: &[u8; 32]) -> PathBuf {
        self.dir.join(format!(
            "{}-{:016x}.cwasm",
            crate::hash::hex(sha256),
            self.engine
        ))
    }

    /// The authenticated artifact at `entry`, if cached. An entry that fails the check is
    /// reported and removed (it is recompiled and written again).
    pub(crate) fn get(&self, entry: &Path) -> Option<Vec<u8>> {
        let key = self.key.as_ref()?;
        let sealed = std::fs::read(entry).ok()?;
        match unseal_with_key(key, &sealed) {
            Ok(artifact) => Some(artifact.to_vec()),
            Err(e) => {
                tracing::warn!("{}: {e}; compiling again", entry.display());
                let _ = std::fs::remove_file(entry);
                None
            }
        }
    }

    /// Stores an artifact (atomically: temp file, then rename). A failed write leaves no
    /// temp file.
    pub(crate) fn put(&self, entry: &Path, artifact: Vec<u8>) -> std::io::Result<()> {
        let Some(key) = &self.key else {
            return Ok(());
        };
        make_private_dir(&self.dir)?;
        crate::durable::write(entry, &seal_with_key(key, artifact))
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }
}

/// A directory only its owner can enter (made if missing; tightened if it exists).
fn make_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

fn load_or_make_key(path: &Path) -> std::io::Result<[u8; KEY_LEN]> {
    use std::io::{Read, Write};
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let mut key = [0u8; KEY_LEN];
    match std::fs::File::open(path) {
        Ok(mut f) => {
            let mode = f.metadata()?.permissions().mode();
            if mode & 0o077 != 0 {
                return Err(std::io::Error::other(format!(
                    "mode {:o}: others may read it; remove it (a new key is made) or chmod 600",
                    mode & 0o777
                )));
            }
            f.read_exact(&mut key)?;
            return Ok(key);
        }
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        Err(_) => {}
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::File::open("/dev/urandom")?.read_exact(&mut key)?;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let r = (|| {
        let mut f = std::fs::File::options()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        f.write_all(&key)?;
        f.sync_all()?;
        // Two processes making the key at once: the first one's key wins, the other reads it.
        std::fs::hard_link(&tmp, path)
    })();
    let _ = std::fs::remove_file(&tmp);
    match r {
        Ok(()) => Ok(key),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => load_or_make_key(path),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_unseal_and_tamper() {
        let sealed = seal(b"\x7fELF artifact".to_vec());
        assert!(is_sealed(&sealed));
        assert_eq!(unseal(&sealed).unwrap(), b"\x7fELF artifact");
        for i in [0, 5, sealed.len() - TRAILER - 1, sealed.len() - TRAILER + 3] {
            let mut bad = sealed.clone();
            bad[i] ^= 1;
            assert_eq!(unseal(&bad), Err(ArtifactError::Tampered), "byte {i}");
        }
        assert_eq!(unseal(b"\x7fELF raw"), Err(ArtifactError::NotSealed));
        assert_eq!(
            unseal(&sealed[..sealed.len() - 1]),
            Err(ArtifactError::NotSealed)
        );
    }

    #[test]
    fn temp_files_of_dead_writers_are_swept() {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("cache");
        std::fs::create_dir(&cache).unwrap();
        // No process has pid 999999999 (the kernel's limit is 4194304); ours runs.
        let dead = cache.join(".a.cwasm.999999999.tmp");
        let live = cache.join(format!(".b.cwasm.{}.tmp", std::process::id()));
        let entry = cache.join("c.cwasm");
        for f in [&dead, &live, &entry] {
            std::fs::write(f, b"").unwrap();
        }
        Cache::new(cache, &dir.path().join("k"), &wasmtime::Engine::default());
        assert!(!dead.exists());
        assert!(live.exists() && entry.exists());
    }

    #[test]
    fn cache_entries_are_authenticated() {
        let dir = tempfile::tempdir().unwrap();
        let engine = wasmtime::Engine::default();
        let key = dir.path().join("cache.key");
        let cache = Cache::new(dir.path().join("cache"), &key, &engine);
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&key), 0o600);
        let entry = cache.entry(&crate::hash::sha256(b"wasm"));
        cache.put(&entry, b"native code".to_vec()).unwrap();
        assert_eq!(mode(&dir.path().join("cache")), 0o700);
        assert_eq!(cache.get(&entry).unwrap(), b"native code");
        // The same key is read back by the next process.
        let again = Cache::new(dir.path().join("cache"), &key, &engine);
        assert_eq!(again.get(&entry).unwrap(), b"native code");
        // Forged: a valid public checksum is not a MAC; a flipped byte fails; both are dropped.
        std::fs::write(&entry, seal(b"evil code".to_vec())).unwrap();
        assert_eq!(cache.get(&entry), None);
        assert!(!entry.exists());
        let mut sealed = seal_with_key(&[7; KEY_LEN], b"evil code".to_vec());
        std::fs::write(&entry, &sealed).unwrap();
        assert_eq!(cache.get(&entry), None, "another key");
        cache.put(&entry, b"native code".to_vec()).unwrap();
        sealed = std::fs::read(&entry).unwrap();
        sealed[3] ^= 1;
        std::fs::write(&entry, &sealed).unwrap();
        assert_eq!(cache.get(&entry), None, "modified");
    }
}
