//! What the daemon should run, read and compiled without touching what runs: a pod's spec from a
//! file or an API body, parsed, checked against the host and compiled ([`plan`]), and the whole
//! pods directory ([`plan_reload`]). [`super::pods::Pods`] commits these plans under its lock.
//!
//! A pod's *digest* covers its spec, as parsed, and its modules' bytes: when either changes, the
//! pod is re-created (new sandbox, new IP). A comment, whitespace or the order of keys in the file
//! are not the spec: an edit of only those re-creates nothing.

use std::path::{Path, PathBuf};

use crate::caller::Caller;
use crate::config::Config;
use crate::loader;
use crate::module_file::{self, Read};
use crate::spec::{PodSpec, Problem, ResolvedImage, SpecError};
use crate::wasm::executor::{Executor, Prepared};

/// Where a pod's spec comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Origin {
    /// A file of the pods directory.
    File(PathBuf),
    /// `peapod apply` (kept in the state dir).
    Api,
}

/// A validated spec with its compiled modules.
pub(super) struct Loaded {
    pub spec: PodSpec,
    pub modules: Vec<Prepared>,
    pub digest: String,
    /// The modules as read, in spec order (stored for API pods).
    pub read: Vec<Read>,
}

/// The digest of spec `text` with modules of these SHA-256s.
fn digest(text: &str, modules: &[[u8; 32]]) -> String {
    let mut parts = vec![crate::hash::sha256(canonical(text).as_bytes())];
    parts.extend_from_slice(modules);
    crate::hash::sha256_hex(&parts.concat())
}

/// The spec text as its TOML value, written back out: comments, whitespace, quoting and key
/// order gone (tables are sorted maps), the inline and the `[[...]]` spellings of an array of
/// tables alike. Called on text that [`PodSpec::parse`] accepted; anything else is kept as is.
fn canonical(text: &str) -> String {
    match text.parse::<toml::Table>() {
        Ok(table) => toml::to_string(&table).unwrap_or_else(|_| text.to_owned()),
        Err(_) => text.to_owned(),
    }
}

/// A validated spec with its module bytes and digest, not compiled yet.
pub(super) struct Parsed {
    pub spec: PodSpec,
    pub modules: Vec<Read>,
    pub digest: String,
    /// The caller is root: precompiled modules of any owner may be loaded.
    pub root_asks: bool,
}

/// What a stored pod ran: its modules' stored copies, and what its `oci://` modules resolved
/// to (not resolved again: a stored pod starts offline, as it was applied).
pub(super) struct Stored<'a> {
    pub modules: &'a [PathBuf],
    pub images: &'a [Option<ResolvedImage>],
}

/// Validates spec text from `source`; `stored` replaces the module paths (stored copies) and
/// resolutions, else `oci://` modules are resolved now ([`loader::resolve_images`]).
/// Module files are read with the rights of `caller` (see [`crate::module_file`]); a stored
/// copy must still hash to the name it was stored under.
pub(super) fn parse(
    source: &Path,
    text: &str,
    stored: Option<Stored<'_>>,
    caller: Caller,
    cfg: &Config,
) -> Result<Parsed, SpecError> {
    let mut spec = PodSpec::parse(source, text)?;
    let from_store = stored.is_some();
    if let Some(Stored {
        modules: paths,
        images,
    }) = stored
    {
        if paths.len() != spec.containers.len() {
            return Err(SpecError::invalid(
                source,
                vec![Problem {
                    line: None,
                    field: "containers".into(),
                    message: "stored record does not match its spec".into(),
                }],
            ));
        }
        for (i, (c, p)) in spec.containers.iter_mut().zip(paths).enumerate() {
            c.module = p.clone();
            if let (Some(image), Some(Some(r))) = (c.image.as_mut(), images.get(i)) {
                image.resolved = Some(r.clone());
            }
        }
    } else {
        loader::resolve_images(&mut spec, cfg)?;
    }
    let read = loader::read_modules(&spec, cfg, caller)?;
    if from_store {
        check_copies(&spec, &read)?;
    }
    let sums: Vec<[u8; 32]> = read.iter().map(|r| r.sha256).collect();
    let digest = digest(text, &sums);
    Ok(Parsed {
        spec,
        modules: read,
        digest,
        root_asks: caller.is_root() && !from_store,
    })
}

/// A stored copy is named by its SHA-256 (`<sha256>.wasm`): bytes that no longer hash to it were
/// changed on disk, and are not run. (Registry blobs are checked as they are read.)
fn check_copies(spec: &PodSpec, read: &[Read]) -> Result<(), SpecError> {
    let problems: Vec<Problem> = spec
        .containers
        .iter()
        .zip(read)
        .filter(|(c, _)| c.image.is_none())
        .filter_map(|(c, r)| {
            let stem = c.module.file_stem()?.to_str()?;
            let actual = crate::hash::hex(&r.sha256);
            (stem.len() == 64 && stem != actual).then(|| {
                spec.problem(
                    c,
                    "module",
                    format!(
                        "the stored copy {} is damaged (its bytes hash to {actual}): apply the pod again",
                        c.module.display()
                    ),
                )
            })
        })
        .collect();
    if problems.is_empty() {
        Ok(())
    } else {
        Err(SpecError::invalid(&spec.source, problems))
    }
}

/// Compiles what [`parse`] returned.
pub(super) fn compile(exec: &Executor, p: Parsed) -> Result<Loaded, SpecError> {
    let modules = loader::compile(exec, &p.spec, &p.modules, p.root_asks)?;
    Ok(Loaded {
        spec: p.spec,
        modules,
        digest: p.digest,
        read: p.modules,
    })
}

/// The first half of an apply, done without the daemon's pods at hand (no lock): read and
/// compile what `text` names. [`super::pods::Pods::commit`] does the rest.
pub(super) fn plan(
    cfg: &Config,
    exec: &Executor,
    source: &Path,
    text: &str,
    caller: Caller,
) -> Result<Loaded, SpecError> {
    compile(exec, parse(source, text, None, caller, cfg)?)
}

/// [`plan`] for a stored record (`rollout undo`): its modules and resolutions as stored.
pub(super) fn plan_stored(
    cfg: &Config,
    exec: &Executor,
    r: &super::store::Record,
) -> Result<Loaded, SpecError> {
    let stored = Stored {
        modules: &r.modules,
        images: &r.images,
    };
    compile(
        exec,
        parse(&r.source, &r.text, Some(stored), Caller::myself(), cfg)?,
    )
}

/// The spec files of the pods directory (`*.toml`, `*.yaml`), sorted, each with its text or why it cannot be read.
pub(super) fn pod_files(cfg: &Config) -> Vec<(PathBuf, Result<String, String>)> {
    let dir = &cfg.pods_dir;
    let paths = match crate::spec::spec_files(dir) {
        Ok(paths) => paths,
        Err(e) => {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::error!("{}: {e}", dir.display());
            }
            Vec::new()
        }
    };
    paths
        .into_iter()
        .map(|p| {
            // Not blocking on a FIFO, not reading a device: a reload waits on this.
            let t = module_file::read_text(&p, Caller::myself()).map_err(|e| e.to_string());
            (p, t)
        })
        .collect()
}

/// What a reload found in the pods directory: each file's pod, read and compiled, or what is
/// wrong with the file.
pub(super) struct ReloadPlan(pub(super) Vec<(PathBuf, Result<Loaded, String>)>);

/// The first half of a reload, done without the daemon's pods at hand (no lock): read and
/// compile every pod file. Modules that running pods use are already loaded and cost a lookup.
/// [`super::pods::Pods::commit_reload`] does the rest.
pub(super) fn plan_reload(cfg: &Config, exec: &Executor) -> ReloadPlan {
    let me = Caller::myself();
    ReloadPlan(
        pod_files(cfg)
            .into_iter()
            .map(|(path, text)| {
                let loaded = text.and_then(|t| {
                    let mut p = parse(&path, &t, None, me, cfg).map_err(|e| e.to_string())?;
                    // Files of the pods directory: their .cwasm modules must be root's own files.
                    p.root_asks = false;
                    compile(exec, p).map_err(|e| e.to_string())
                });
                (path, loaded)
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::digest;

    const SPEC: &str = "[pod]\nname = \"a\"\n\n[[containers]]\nname = \"app\"\nmodule = \"a.wasm\"\n\
                        ports = [{ container_port = 80 }]\n";

    #[test]
    fn only_what_the_spec_says_changes_the_digest() {
        let d = digest(SPEC, &[crate::hash::sha256(b"module")]);
        let cosmetic = "# the app\n[pod]\nname='a'   # its name\n\n\n[[containers]]\n\
                        module = \"a.wasm\"\nname = \"app\"\n\n[[containers.ports]]\n\
                        container_port = 80\n";
        assert_eq!(digest(cosmetic, &[crate::hash::sha256(b"module")]), d);
        let changed = SPEC.replace("app", "app2");
        assert_ne!(digest(&changed, &[crate::hash::sha256(b"module")]), d);
        assert_ne!(digest(SPEC, &[crate::hash::sha256(b"module2")]), d);
        let reordered = format!("{SPEC}\n[[containers]]\nname = \"b\"\nmodule = \"b.wasm\"\n");
        let swapped = "[pod]\nname = \"a\"\n[[containers]]\nname = \"b\"\nmodule = \"b.wasm\"\n\
                       [[containers]]\nname = \"app\"\nmodule = \"a.wasm\"\n\
                       ports = [{ container_port = 80 }]\n";
        assert_ne!(
            digest(&reordered, &[crate::hash::sha256(b"m")]),
            digest(swapped, &[crate::hash::sha256(b"m")]),
            "the order of containers is the spec's"
        );
    }
}
