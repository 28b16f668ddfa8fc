//! Talking to an OCI registry (the distribution API, through `oci-client`): a reference's
//! manifest resolved, its one module layer checked and fetched into the [`ImageStore`].
//!
//! What is taken: an image manifest (OCI or Docker schema 2; from an image index, the entry
//! whose platform architecture is `wasm`) with exactly one layer of a media type in
//! [`MODULE_MEDIA_TYPES`] whose bytes start with the WebAssembly magic. Nothing is written in
//! place before its bytes hash to the layer's digest; the size is checked against
//! `limits.max_module_size` before the fetch and during it.

use std::io::Write as _;
use std::time::Duration;

use futures::TryStreamExt as _;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::manifest::ImageIndexEntry;
use oci_client::{Client, Reference};
use sha2::Digest as _;

use super::store::{ImageStore, Pulled};
use super::{ImageError, auth};
use crate::config::ImageSettings;

/// The layer media types taken as a module: the CNCF TAG Runtime's WASM artifact layout
/// (`application/wasm`, what `wkg` and wasmCloud push), the older `wasm-to-oci` one that
/// `oci-client`, Krustlet and Spin's components use, runwasi's component layer, and WasmEdge's.
pub const MODULE_MEDIA_TYPES: [&str; 4] = [
    "application/wasm",
    "application/vnd.wasm.content.layer.v1+wasm",
    "application/vnd.bytecodealliance.wasm.component.layer.v0+wasm",
    "application/vnd.module.wasm.content.layer.v1+wasm",
];

/// What every WebAssembly module and component starts with (a `.cwasm` is an ELF file).
const WASM_MAGIC: &[u8; 4] = b"\0asm";

/// How long a registry may take to accept a connection, and to send the next bytes.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const READ_TIMEOUT: Duration = Duration::from_secs(60);

/// From an image index: the entry built for WebAssembly.
fn wasm_platform(entries: &[ImageIndexEntry]) -> Option<String> {
    entries
        .iter()
        .find(|e| {
            e.platform
                .as_ref()
                .is_some_and(|p| p.architecture.to_string() == "wasm")
        })
        .map(|e| e.digest.clone())
}

/// The client for `settings`, made once per process while the settings and the credentials
/// file stay the same: making one loads the system's CAs (tens of milliseconds on a board), and
/// it keeps its connections and tokens (and the first credentials it was given per registry:
/// a changed file makes a new client).
fn client(settings: &ImageSettings) -> Client {
    type Key = (Vec<String>, Option<(i64, i64, u64, u64)>);
    static MADE: std::sync::Mutex<Option<(Key, Client)>> = std::sync::Mutex::new(None);
    use std::os::unix::fs::MetadataExt;
    let auth = std::fs::metadata(&settings.auth_file)
        .ok()
        .map(|m| (m.mtime(), m.mtime_nsec(), m.ino(), m.len()));
    let key = (settings.insecure.clone(), auth);
    let mut made = MADE.lock().unwrap_or_else(|e| e.into_inner());
    match &*made {
        Some((k, c)) if *k == key => c.clone(),
        _ => {
            let c = new_client(settings);
            *made = Some((key, c.clone()));
            c
        }
    }
}

fn new_client(settings: &ImageSettings) -> Client {
    // TLS on ring (see Cargo.toml); installed once per process, a second install is a no-op.
    let _ = rustls::crypto::ring::default_provider().install_default();
    Client::new(ClientConfig {
        protocol: ClientProtocol::HttpsExcept(settings.insecure.clone()),
        platform_resolver: Some(Box::new(wasm_platform)),
        connect_timeout: Some(CONNECT_TIMEOUT),
        read_timeout: Some(READ_TIMEOUT),
        user_agent: concat!("peapod/", env!("CARGO_PKG_VERSION")),
        ..Default::default()
    })
}

/// Pulls `reference` (without `oci://`) into `store`: resolves it to a manifest, checks and
/// fetches its module layer unless the store has it, and records what it resolved to.
pub(crate) async fn pull(
    settings: &ImageSettings,
    store: &ImageStore,
    max: u64,
    reference: &str,
) -> Result<Pulled, ImageError> {
    let r: Reference = reference.parse().map_err(|e| ImageError::Other {
        reference: reference.into(),
        message: format!("not an OCI reference: {e}"),
    })?;
    let registry = r.registry().to_string();
    if !settings.registries.is_empty() && !settings.registries.contains(&registry) {
        return Err(ImageError::UnknownRegistry {
            registry,
            why: "not one of images.registries".into(),
        });
    }
    let t0 = std::time::Instant::now();
    let auth = auth::for_registry(&settings.auth_file, &registry)?;
    let client = client(settings);
    let t_client = t0.elapsed();
    let fail = |e| classify(e, &registry, reference);
    let (manifest, digest) = client.pull_image_manifest(&r, &auth).await.map_err(fail)?;
    let t_manifest = t0.elapsed();
    let modules: Vec<_> = manifest
        .layers
        .iter()
        .filter(|l| MODULE_MEDIA_TYPES.contains(&l.media_type.as_str()))
        .collect();
    let layer = match modules[..] {
        [one] => one,
        [] => {
            return Err(ImageError::NotWasm {
                reference: reference.into(),
                why: format!(
                    "its layers are [{}] (config {})",
                    manifest
                        .layers
                        .iter()
                        .map(|l| l.media_type.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                    manifest.config.media_type
                ),
            });
        }
        _ => {
            return Err(ImageError::NotWasm {
                reference: reference.into(),
                why: format!(
                    "it has {} module layers; a container runs one module",
                    modules.len()
                ),
            });
        }
    };
    let size = u64::try_from(layer.size).unwrap_or(u64::MAX);
    if size > max {
        return Err(ImageError::TooLarge {
            reference: reference.into(),
            size,
            max,
        });
    }
    super::store::hex_of(&layer.digest).ok_or_else(|| ImageError::Other {
        reference: reference.into(),
        message: format!("its layer digest {:?} is not sha256", layer.digest),
    })?;
    if !store.has_blob(&layer.digest, size) {
        let temp = store.temp_blob().map_err(ImageError::Store)?;
        let mut stream = client.pull_blob_stream(&r, layer).await.map_err(fail)?;
        let mut hasher = sha2::Sha256::new();
        let mut got: u64 = 0;
        let mut head: Vec<u8> = Vec::with_capacity(4);
        let mut file = temp.as_file();
        while let Some(chunk) = stream.try_next().await.map_err(|e| {
            // The stream checks the digest as it ends: a mismatch comes as an I/O error.
            let text = e.to_string();
            if text.contains("igest") {
                ImageError::DigestMismatch {
                    reference: reference.into(),
                    message: text,
                }
            } else {
                ImageError::Unreachable {
                    registry: registry.clone(),
                    why: format!("reading the module layer: {text}"),
                }
            }
        })? {
            got += chunk.len() as u64;
            if got > max || got > size {
                return Err(if got > max {
                    ImageError::TooLarge {
                        reference: reference.into(),
                        size: got,
                        max,
                    }
                } else {
                    ImageError::DigestMismatch {
                        reference: reference.into(),
                        message: format!(
                            "the layer is longer than the {size} bytes its manifest says"
                        ),
                    }
                });
            }
            if head.len() < 4 {
                head.extend(chunk.iter().take(4 - head.len()));
            }
            hasher.update(&chunk);
            file.write_all(&chunk).map_err(ImageError::Store)?;
        }
        let actual = format!("sha256:{}", crate::hash::hex(&hasher.finalize()));
        if actual != layer.digest {
            return Err(ImageError::DigestMismatch {
                reference: reference.into(),
                message: format!(
                    "the layer's bytes hash to {actual}, its manifest says {}",
                    layer.digest
                ),
            });
        }
        if head != WASM_MAGIC {
            return Err(ImageError::NotWasm {
                reference: reference.into(),
                why: format!(
                    "its {} layer is not WebAssembly (no \\0asm magic)",
                    layer.media_type
                ),
            });
        }
        store
            .commit_blob(temp, &layer.digest)
            .map_err(ImageError::Store)?;
    }
    let pulled = Pulled {
        reference: reference.into(),
        manifest: digest,
        module: layer.digest.clone(),
        media_type: layer.media_type.clone(),
        size,
        pulled_at: crate::wire::epoch_secs(std::time::SystemTime::now()),
    };
    store.record(&pulled).map_err(ImageError::Store)?;
    tracing::info!(
        "pulled {reference} ({}, {size} bytes) in {:?} (client {t_client:?}, manifest {:?})",
        pulled.manifest,
        t0.elapsed(),
        t_manifest - t_client
    );
    Ok(pulled)
}

/// The media types `peapod push` writes: the CNCF TAG Runtime's WASM artifact layout.
pub(crate) const PUSH_LAYER_TYPE: &str = "application/wasm";
pub(crate) const PUSH_CONFIG_TYPE: &str = "application/vnd.wasm.config.v0+json";

/// Pushes `module` (bytes of a `.wasm`) as `reference`; returns the manifest's digest.
pub(crate) async fn push(
    settings: &ImageSettings,
    module: Vec<u8>,
    reference: &str,
) -> Result<String, ImageError> {
    let r: Reference = reference.parse().map_err(|e| ImageError::Other {
        reference: reference.into(),
        message: format!("not an OCI reference: {e}"),
    })?;
    if !module.starts_with(WASM_MAGIC) {
        return Err(ImageError::NotWasm {
            reference: reference.into(),
            why: "the file is not WebAssembly (no \\0asm magic; a .cwasm is native code and never pushed)".into(),
        });
    }
    let registry = r.registry().to_string();
    let auth = auth::for_registry(&settings.auth_file, &registry)?;
    let client = client(settings);
    let fail = |e| classify(e, &registry, reference);
    let layers = [oci_client::client::ImageLayer::new(
        module,
        PUSH_LAYER_TYPE.to_string(),
        None,
    )];
    let config =
        oci_client::client::Config::new(b"{}".to_vec(), PUSH_CONFIG_TYPE.to_string(), None);
    client
        .push(&r, &layers, config, &auth, None)
        .await
        .map_err(fail)?;
    client.fetch_manifest_digest(&r, &auth).await.map_err(fail)
}

/// What a failed registry call means for the user.
fn classify(e: OciDistributionError, registry: &str, reference: &str) -> ImageError {
    let not_found = || ImageError::NotFound {
        reference: reference.into(),
    };
    let denied = || ImageError::Denied {
        registry: registry.into(),
        reference: reference.into(),
    };
    match e {
        OciDistributionError::RequestError(err) => {
            // The innermost cause says it best ("Connection refused", "invalid peer
            // certificate: UnknownIssuer"); the whole chain is for the debug log.
            let mut chain = err.to_string();
            let mut innermost = chain.clone();
            let mut source = std::error::Error::source(&err);
            while let Some(s) = source {
                innermost = s.to_string();
                chain.push_str(": ");
                chain.push_str(&innermost);
                source = s.source();
            }
            tracing::debug!("{reference}: {chain}");
            if chain.contains("dns error") || chain.contains("failed to lookup address") {
                ImageError::UnknownRegistry {
                    registry: registry.into(),
                    why: "its name does not resolve".into(),
                }
            } else {
                ImageError::Unreachable {
                    registry: registry.into(),
                    why: innermost,
                }
            }
        }
        OciDistributionError::ImageManifestNotFoundError(_) => not_found(),
        OciDistributionError::RegistryError { envelope, .. } => {
            let codes: Vec<&OciErrorCode> = envelope.errors.iter().map(|e| &e.code).collect();
            if codes.iter().any(|c| {
                matches!(
                    c,
                    OciErrorCode::ManifestUnknown
                        | OciErrorCode::NameUnknown
                        | OciErrorCode::NotFound
                )
            }) {
                not_found()
            } else if codes
                .iter()
                .any(|c| matches!(c, OciErrorCode::Unauthorized | OciErrorCode::Denied))
            {
                denied()
            } else {
                ImageError::Other {
                    reference: reference.into(),
                    message: format!("the registry said: {envelope}"),
                }
            }
        }
        OciDistributionError::ServerError { code: 404, .. } => not_found(),
        OciDistributionError::UnauthorizedError { .. }
        | OciDistributionError::AuthenticationFailure(_)
        | OciDistributionError::ServerError {
            code: 401 | 403, ..
        } => denied(),
        OciDistributionError::DigestError(d) => ImageError::DigestMismatch {
            reference: reference.into(),
            message: d.to_string(),
        },
        OciDistributionError::UnsupportedMediaTypeError(m) => ImageError::NotWasm {
            reference: reference.into(),
            why: format!("its manifest is {m}"),
        },
        OciDistributionError::ServerError { code, message, .. } if code >= 500 => {
            ImageError::Unreachable {
                registry: registry.into(),
                why: format!("it answered {code}: {}", message.trim()),
            }
        }
        other => ImageError::Other {
            reference: reference.into(),
            message: other.to_string(),
        },
    }
}
