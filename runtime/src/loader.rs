//! A pod's modules, read ([`crate::module_file`]) and compiled ([`crate::wasm::executor`]): the one
//! loader of `peapod run` and the daemon. Every problem is reported as a problem of the spec's
//! `module` field, all at once.

use crate::caller::Caller;
use crate::config::Config;
use crate::host::{ports, volumes};
use crate::images;
use crate::module_file::{self, Read};
use crate::spec::{ContainerSpec, PodSpec, ResolvedImage, SpecError};
use crate::wasm::executor::{Executor, Prepared};

/// Resolves the `oci://` modules of `spec` that are not resolved yet ([`crate::images::resolve`]:
/// pulled, or found in the store): each then names its stored blob and the digests it runs.
/// Every failure is a problem of that container's `module` field, all at once.
pub fn resolve_images(spec: &mut PodSpec, cfg: &Config) -> Result<(), SpecError> {
    let store = images::ImageStore::new(&cfg.state_dir);
    let mut failed = Vec::new();
    for (i, c) in spec.containers.iter_mut().enumerate() {
        let Some(image) = c.image.as_mut().filter(|i| i.resolved.is_none()) else {
            continue;
        };
        let pulled = images::resolve(cfg, &image.reference).map_err(|e| e.to_string());
        match pulled.and_then(|p| Ok((store.blob_path(&p.module).map_err(|e| e.to_string())?, p))) {
            Ok((path, p)) => {
                image.resolved = Some(ResolvedImage {
                    manifest: p.manifest,
                    module: p.module,
                });
                c.module = path;
            }
            Err(e) => failed.push((i, e)),
        }
    }
    if failed.is_empty() {
        return Ok(());
    }
    let problems = failed
        .into_iter()
        .map(|(i, e)| spec.problem(&spec.containers[i], "module", e))
        .collect();
    Err(SpecError::invalid(&spec.source, problems))
}

/// Reads every module of `spec` (at most `limits.max_module_size` bytes each) with the rights
/// of `caller`, and checks it against the settings' per-pod bounds (`admission::check`) and what
/// its volumes and published ports need from the host ([`volumes::check`], [`ports::check`]);
/// all problems at once.
pub fn read_modules(spec: &PodSpec, cfg: &Config, caller: Caller) -> Result<Vec<Read>, SpecError> {
    let max = cfg.limits.max_module_size;
    let mut volume_problems = crate::admission::check(spec, cfg, caller);
    volume_problems.extend(volumes::check(spec, cfg, caller));
    volume_problems.extend(ports::check(spec, cfg, caller));
    let store = images::ImageStore::new(&cfg.state_dir);
    let read = each_module(spec, spec.containers.iter().map(|_| ()), |c, ()| {
        match &c.image {
            // The daemon's own store, read with its rights, checked against the digest.
            Some(image) => match &image.resolved {
                Some(r) => store.read(&r.module, max),
                None => Err(format!("{} was not resolved", image.reference)),
            },
            None => module_file::read(&c.module, max, caller).map_err(|e| e.to_string()),
        }
    });
    match (read, volume_problems.is_empty()) {
        (Ok(read), true) => Ok(read),
        (Ok(_), false) => Err(SpecError::invalid(&spec.source, volume_problems)),
        (Err(SpecError::Invalid { path, mut problems }), _) => {
            problems.extend(volume_problems);
            Err(SpecError::Invalid { path, problems })
        }
        (Err(e), _) => Err(e),
    }
}

/// Compiles (or loads from the cache) what [`read_modules`] read. A `.cwasm` is loaded only
/// when its file is root's ([`Read::trusted`]) or `root_asks` (the caller is root).
pub fn compile(
    exec: &Executor,
    spec: &PodSpec,
    modules: &[Read],
    root_asks: bool,
) -> Result<Vec<Prepared>, SpecError> {
    each_module(spec, modules.iter(), |c, m| {
        let (p, source) = exec
            // A registry's bytes are never precompiled code, whoever asks.
            .prepare(&c.module, m, m.trusted || (root_asks && c.image.is_none()))
            .map_err(|e| e.to_string())?;
        tracing::debug!("{}/{}: module {source:?}", spec.name, c.name);
        Ok(p)
    })
}

/// `f` for each container of `spec` with its item, in order; every failure becomes a problem of
/// that container's `module` field, all reported at once.
fn each_module<I, T>(
    spec: &PodSpec,
    items: impl Iterator<Item = I>,
    mut f: impl FnMut(&ContainerSpec, I) -> Result<T, String>,
) -> Result<Vec<T>, SpecError> {
    let mut out = Vec::new();
    let mut problems = Vec::new();
    for (c, item) in spec.containers.iter().zip(items) {
        match f(c, item) {
            Ok(v) => out.push(v),
            Err(e) => problems.push(spec.problem(c, "module", e)),
        }
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(SpecError::invalid(&spec.source, problems))
    }
}

/// [`read_modules`] then [`compile`], for a caller loading its own pod (`peapod run`, the
/// bench): root may load a `.cwasm` of any owner.
pub fn load(
    exec: &Executor,
    spec: &PodSpec,
    cfg: &Config,
    caller: Caller,
) -> Result<Vec<Prepared>, SpecError> {
    let mut spec = spec.clone();
    resolve_images(&mut spec, cfg)?;
    let modules = read_modules(&spec, cfg, caller)?;
    compile(exec, &spec, &modules, caller.is_root())
}
