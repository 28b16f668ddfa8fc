//! SHA-256 as hex: module digests, pod digests, veth names.

use sha2::{Digest, Sha256};

/// Lowercase hex of a SHA-256 digest of `bytes`: the content address of modules and cache
/// entries.
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    hex(&sha256(bytes))
}

/// The SHA-256 digest of `bytes`.
pub(crate) fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// Lowercase hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
