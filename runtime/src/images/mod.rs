//! Modules from OCI registries: `module = "oci://REGISTRY/REPO:TAG"` (or `@sha256:DIGEST`).
//!
//! A reference is resolved once per apply ([`resolve`]): its manifest is asked for, its one
//! module layer fetched into the [`ImageStore`] unless the store has it (by content digest),
//! and the pod runs the stored blob, checked against its digest on every load. When the
//! registry cannot be reached, a reference pulled before resolves to what it was then (the
//! board keeps working offline); a digest reference that is stored is not even asked for.
//!
//! Bytes from a registry are never taken as precompiled code (`.cwasm`): they must start with
//! the WebAssembly magic, and are compiled by the board.

mod auth;
mod registry;
mod store;

pub use registry::MODULE_MEDIA_TYPES;
pub use store::{ImageStore, Pulled};

use std::path::PathBuf;

use crate::config::Config;

/// Why a module could not be had from its registry. Each names the reference or registry,
/// and says what to do where it is not obvious.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("unknown registry {registry}: {why}")]
    UnknownRegistry { registry: String, why: String },
    #[error("registry {registry} cannot be reached ({why}), and nothing of it is stored here")]
    Unreachable { registry: String, why: String },
    #[error("{reference}: not found in its registry (no such repository, tag or digest)")]
    NotFound { reference: String },
    #[error("{reference}: registry {registry} refused access (credentials go in images.auth_file)")]
    Denied { registry: String, reference: String },
    #[error(
        "{reference}: not a WASM artifact: {why} (peapod takes one layer of {})",
        MODULE_MEDIA_TYPES.join(", ")
    )]
    NotWasm { reference: String, why: String },
    #[error("{reference}: its module is {size} bytes, over limits.max_module_size ({max})")]
    TooLarge {
        reference: String,
        size: u64,
        max: u64,
    },
    #[error("{reference}: digest mismatch: {message}; nothing was stored")]
    DigestMismatch { reference: String, message: String },
    #[error("{}: {message}", path.display())]
    AuthFile { path: PathBuf, message: String },
    #[error("storing a pulled module: {0}")]
    Store(std::io::Error),
    #[error("{reference}: {message}")]
    Other { reference: String, message: String },
}

/// Pulls `reference` (without `oci://`) now, whatever is stored: `peapod pull`.
pub async fn pull(cfg: &Config, reference: &str) -> Result<Pulled, ImageError> {
    let store = ImageStore::new(&cfg.state_dir);
    registry::pull(&cfg.images, &store, cfg.limits.max_module_size, reference).await
}

/// Pushes a module file to `reference` (without `oci://`) as a WASM artifact
/// (`application/wasm`): `peapod push`. Returns the manifest's digest.
pub async fn push(
    cfg: &Config,
    file: &std::path::Path,
    reference: &str,
) -> Result<String, ImageError> {
    let read = crate::module_file::read(
        file,
        cfg.limits.max_module_size,
        crate::caller::Caller::myself(),
    )
    .map_err(|e| ImageError::Other {
        reference: reference.into(),
        message: e.to_string(),
    })?;
    registry::push(&cfg.images, read.bytes, reference).await
}

/// What `reference` (without `oci://`) runs as now: pulled (see the module's comment for
/// when the store answers instead).
pub async fn resolve_async(cfg: &Config, reference: &str) -> Result<Pulled, ImageError> {
    let store = ImageStore::new(&cfg.state_dir);
    let stored = store
        .lookup(reference)
        .filter(|p| store.has_blob(&p.module, p.size));
    // A digest names its content: what is stored is what the registry would send.
    if reference.contains("@sha256:")
        && let Some(p) = stored
    {
        return Ok(p);
    }
    match pull(cfg, reference).await {
        Err(ImageError::Unreachable { registry, why }) => match stored {
            Some(p) => {
                tracing::warn!(
                    "registry {registry} cannot be reached ({why}): {reference} runs as pulled \
                     before ({})",
                    p.manifest
                );
                Ok(p)
            }
            None => Err(ImageError::Unreachable { registry, why }),
        },
        r => r,
    }
}

/// [`resolve_async`] for a caller that may block (a thread of its own runs the pull, so this
/// works inside or outside an async runtime).
pub fn resolve(cfg: &Config, reference: &str) -> Result<Pulled, ImageError> {
    std::thread::scope(|s| {
        s.spawn(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(ImageError::Store)?
                .block_on(resolve_async(cfg, reference))
        })
        .join()
        .unwrap_or_else(|_| {
            Err(ImageError::Other {
                reference: reference.into(),
                message: "the pull panicked".into(),
            })
        })
    })
}
