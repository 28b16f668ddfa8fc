//! Precompiled modules: peapod's `.cwasm` envelope and the on-disk compile cache.
//!
//! A `.cwasm` written by `peapod compile` (and every cache entry) is wasmtime's native artifact
//! followed by a trailer: the artifact's SHA-256 and the tag `PEAPODC1`. Loading checks the trailer
//! first, so a file changed after it was written is refused before wasmtime maps any of it as
//! code; wasmtime then refuses artifacts of another target, another wasmtime version or other
//! engine settings.
//!
//! The cache lives in `<state_dir>/cache/`, one sealed artifact per module, keyed by the SHA-256 of
//! the wasm bytes and wasmtime's engine compatibility hash: a board compiles each module once
//! across restarts of the process, and a wasmtime upgrade simply misses.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

const TAG: &[u8; 8] = b"PEAPODC1";
const TRAILER: usize = 32 + TAG.len();

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ArtifactError {
    #[error(
        "not a peapod precompiled module (no PEAPODC1 trailer); make one with `peapod compile`"
    )]
    NotSealed,
    #[error("the precompiled module was modified after it was written (checksum mismatch)")]
    Tampered,
}

/// Appends the integrity trailer to a wasmtime artifact.
pub fn seal(mut artifact: Vec<u8>) -> Vec<u8> {
    let sum = Sha256::digest(&artifact);
    artifact.extend_from_slice(&sum);
    artifact.extend_from_slice(TAG);
    artifact
}

/// Does `bytes` end with peapod's trailer tag?
pub fn is_sealed(bytes: &[u8]) -> bool {
    bytes.len() >= TRAILER && bytes.ends_with(TAG)
}

/// Checks the trailer; returns the wasmtime artifact inside.
pub fn unseal(bytes: &[u8]) -> Result<&[u8], ArtifactError> {
    if !is_sealed(bytes) {
        return Err(ArtifactError::NotSealed);
    }
    let (artifact, trailer) = bytes.split_at(bytes.len() - TRAILER);
    if Sha256::digest(artifact)[..] != trailer[..32] {
        return Err(ArtifactError::Tampered);
    }
    Ok(artifact)
}

/// The compile cache of one engine configuration.
#[derive(Debug, Clone)]
pub struct Cache {
    dir: PathBuf,
    engine: u64,
}

impl Cache {
    pub fn new(dir: PathBuf, engine: &wasmtime::Engine) -> Self {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut h);
        Cache {
            dir,
            engine: h.finish(),
        }
    }

    /// Where the artifact for `wasm` lives (hashes the module: compute it once per load).
    pub fn entry(&self, wasm: &[u8]) -> PathBuf {
        let sum = Sha256::digest(wasm);
        let hex: String = sum.iter().map(|b| format!("{b:02x}")).collect();
        self.dir.join(format!("{hex}-{:016x}.cwasm", self.engine))
    }

    /// The sealed artifact at `entry`, if cached.
    pub fn get(&self, entry: &Path) -> Option<Vec<u8>> {
        std::fs::read(entry).ok()
    }

    /// Stores an artifact (atomically: temp file, then rename).
    pub fn put(&self, entry: &Path, artifact: Vec<u8>) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        let tmp = entry.with_extension(format!("tmp{}", std::process::id()));
        std::fs::write(&tmp, seal(artifact))?;
        std::fs::rename(&tmp, entry)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
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
}
