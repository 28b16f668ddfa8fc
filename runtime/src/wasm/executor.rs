//! The executor: one wasmtime [`Engine`] per process, modules compiled once, and one fresh store
//! per run of a container.
//!
//! A module is compiled and linked ahead of time into a [`Prepared`] (a `CommandPre` for a wasip2
//! component, an `InstancePre` for a wasip1 core module), so a restart only instantiates: it never
//! recompiles. Each run gets a new [`Store`] holding the container's WASI context; dropping the
//! store closes every socket and file the run opened, so the next run can bind the same port.
//!
//! What a container is granted (see [`RunSpec`]): its declared args and env, TCP and UDP on any
//! address and name lookup (the pod's network namespace is its boundary), stdout and stderr into
//! the log, and the directories of its volume mounts (see [`crate::host::volumes`]). Nothing else: no
//! other files, no host environment, no stdin. What it may grow (memory,
//! tables, instances, open handles) is bounded per run: see [`crate::wasm::limits`].
//!
//! Precompiled code is native code: [`Executor::prepare`] loads a `.cwasm` only when the caller
//! says root vouches for the file (`trusted`), and the compile cache only entries that carry its
//! key's MAC.
//!
//! Fairness: the engine's epoch is ticked by a background thread ([`crate::wasm::ticker`]: every
//! 10 ms, every 500 µs while a module spins beside a sibling) and a store that runs through a
//! tick yields to the async runtime, so a module in a busy loop cannot starve its siblings on
//! the pod's thread.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};

use wasmtime::component::{Component, Linker, ResourceTable, ResourceTableError};
use wasmtime::{Config, Engine, InstancePre, Module, Store};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p2::bindings::CommandPre;
use wasmtime_wasi::{FsPerms, I32Exit, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use crate::logs::{ContainerLog, Stream};
use crate::wasm::artifact::{self, Cache};
use crate::wasm::limits::{LimitReached, Limiter};
use crate::wasm::memory;
use crate::wasm::names::{HostResolver, Names};
use crate::wasm::ticker::{Preemption, Ticker};

/// Address space reserved for a linear memory, and again each time it outgrows that.
pub const MEMORY_RESERVATION: u64 = 16 << 20;
/// Unmapped guard after (and before) each linear memory.
pub const MEMORY_GUARD: u64 = 64 << 10;

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is not a WebAssembly module or component (no \\0asm header)", path.display())]
    NotWasm { path: PathBuf },
    #[error("{} does not compile: {message}", path.display())]
    Compile { path: PathBuf, message: String },
    #[error("{} cannot run here: {message}", path.display())]
    Link { path: PathBuf, message: String },
    #[error("{} is a precompiled module that cannot be loaded: {message}", path.display())]
    Precompiled { path: PathBuf, message: String },
}

/// Where a loaded module's machine code came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Compiled from wasm just now.
    Compiled,
    /// Read from the on-disk compile cache.
    Cache,
    /// A `.cwasm` made by `peapod compile`.
    Precompiled,
    /// Already loaded in this process for another pod: the same code, shared.
    Shared,
}

/// How a run of a container ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Returned from its entry point or called `exit`: the exit code.
    Exited(i32),
    /// Trapped (or failed to instantiate): the message.
    Trapped(String),
    /// Ended because it hit one of its limits (memory, tables, open files).
    Limit(LimitReached),
    /// Could not be started: what it is given is missing (a volume, an `env_from_files` file).
    NotStarted(String),
    /// Ended by its supervisor: a liveness or startup probe failed (the message says which).
    Unhealthy(String),
}

impl Outcome {
    pub fn success(&self) -> bool {
        *self == Outcome::Exited(0)
    }

    /// Kubernetes' word for how the run ended: Completed, Error, Trapped, OOMKilled or
    /// LimitReached.
    pub fn reason(&self) -> &'static str {
        match self {
            Outcome::Exited(0) => "Completed",
            Outcome::Exited(_) => "Error",
            Outcome::Trapped(_) => "Trapped",
            Outcome::Limit(l) => l.reason(),
            Outcome::NotStarted(_) => "CreateContainerConfigError",
            Outcome::Unhealthy(_) => "Unhealthy",
        }
    }

    pub fn exit_code(&self) -> Option<i32> {
        match self {
            Outcome::Exited(c) => Some(*c),
            _ => None,
        }
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::Exited(c) => write!(f, "exited with code {c}"),
            Outcome::Trapped(m) => write!(f, "trapped: {m}"),
            Outcome::Limit(l) => write!(f, "{l}"),
            Outcome::NotStarted(m) => write!(f, "not started: {m}"),
            Outcome::Unhealthy(m) => write!(f, "unhealthy: {m}"),
        }
    }
}

/// What one run of a container gets.
#[derive(Debug, Clone)]
pub struct RunSpec {
    /// `argv[0]`
    pub name: String,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    /// Bytes of linear memory and tables, all together.
    pub memory_limit: u64,
    /// Open WASI handles (sockets, files, streams).
    pub open_files: usize,
    /// Host directories shown to the guest (its only file system).
    pub mounts: Vec<Mount>,
    /// Variables read from files of the mounts when the run starts.
    pub env_files: Vec<EnvFile>,
    pub log: ContainerLog,
    /// Where the run's memory figure is kept for `inspect`.
    pub usage: Arc<crate::wasm::cpu::Usage>,
    /// The leases of the pod's bridge: the pods whose names the guest can look up.
    pub pod_names: Option<Arc<dyn crate::wasm::names::PodAddresses>>,
    /// The pod's share of the host's resolver (one for all its containers).
    pub lookups: crate::wasm::names::Lookups,
    /// Who of the pod's containers bound which port (one for all its containers).
    pub binds: crate::wasm::binds::Binds,
    /// The pod's runs in progress (one for all its containers), for fair preemption.
    pub siblings: crate::wasm::ticker::Siblings,
}

/// A host directory preopened for the guest at `guest` (a volume mount).
#[derive(Debug, Clone)]
pub struct Mount {
    /// The directory (a `/proc/self/fd/N` path of `hold`, when held).
    pub host: PathBuf,
    /// Keeps `host` open for as long as the container may start (see
    /// [`crate::host::host_files`]).
    pub hold: Option<Arc<std::os::fd::OwnedFd>>,
    pub guest: String,
    pub read_only: bool,
}

/// Variable `var` takes the content of file `rel` beneath host directory `dir` (read with
/// [`read_env_file`], never leaving `dir`). Its value is never logged.
#[derive(Debug, Clone)]
pub struct EnvFile {
    pub var: String,
    /// The guest path, for messages.
    pub path: String,
    pub dir: PathBuf,
    /// Keeps `dir` open (as [`Mount::hold`]).
    pub hold: Option<Arc<std::os::fd::OwnedFd>>,
    pub rel: String,
}

/// A compiled, linked module, ready to instantiate any number of times. Cheap to clone: every
/// pod of the process that uses the same module bytes holds the same one (see
/// [`Executor::prepare`]).
#[derive(Clone)]
pub struct Prepared(Arc<Linked>);

enum Linked {
    /// A wasip2 component exporting `wasi:cli/run`.
    Component(CommandPre<P2State>),
    /// A wasip1 core module exporting `_start`.
    Core(InstancePre<P1State>),
}

impl Prepared {
    pub fn kind(&self) -> &'static str {
        match &*self.0 {
            Linked::Component(_) => "wasip2 component",
            Linked::Core(_) => "wasip1 module",
        }
    }
}

pub struct P2State {
    ctx: WasiCtx,
    pub(crate) table: ResourceTable,
    limits: Limiter,
    /// What the guest's name lookups mean ([`crate::wasm::name_lookup`]).
    pub(crate) names: Names,
}

impl WasiView for P2State {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.ctx,
            table: &mut self.table,
        }
    }
}

pub struct P1State {
    ctx: WasiP1Ctx,
    limits: Limiter,
}

/// The engine and the linkers, shared by every pod of the process.
#[derive(Clone)]
pub struct Executor {
    engine: Engine,
    p2: Arc<Linker<P2State>>,
    p1: Arc<wasmtime::Linker<P1State>>,
    cache: Option<Cache>,
    /// Every module loaded in this process, by the SHA-256 of its file's bytes, while some pod
    /// holds it: pods of the same module share one copy of its machine code and linking.
    loaded: Arc<Mutex<HashMap<[u8; 32], Weak<Linked>>>>,
    /// Guests' lookups of the host's names, made from the thread that built the executor (in the
    /// host's network namespace).
    resolver: HostResolver,
    ticker: Arc<Ticker>,
}

/// The engine settings every peapod engine uses. Precompiled artifacts must be made with the same
/// settings to load, so `peapod compile` uses this too (with a target).
///
/// Linear memories are laid out as [`memory`] decides for this process: guarded (wasmtime's
/// 64-bit default, 4 GiB reserved per memory, no bounds checks) where the address space holds
/// thousands of them, bounded on a board (a Raspberry Pi OS kernel gives a process 512 GiB,
/// about 125 guarded memories): [`MEMORY_RESERVATION`] per memory, grown in steps of the same
/// size (moved when it outgrows its reservation), 64 KiB guards (the defaults of wasmtime's
/// 32-bit hosts), so a memory costs its size plus about 16 MiB of address space and a 512 GiB
/// process holds tens of thousands. The price is explicit bounds checks (see the README's
/// Performance section for the throughput figure). Code for another `target` is compiled for a
/// board's layout, bounded, unless `PEAPOD_MEMORIES` says otherwise.
pub fn engine_config(target: Option<&str>) -> wasmtime::Result<Config> {
    let mut config = Config::new();
    config.epoch_interruption(true);
    let layout = match target {
        None => memory::chosen().map(|(l, _)| l),
        Some(_) => memory::for_target(),
    }
    .map_err(wasmtime::Error::msg)?;
    // 32-bit hosts (armv7) have wasmtime's own small defaults already (10 MiB, 64 KiB guards);
    // a guarded layout is wasmtime's 64-bit default.
    if layout == memory::Layout::Bounded && (cfg!(target_pointer_width = "64") || target.is_some())
    {
        config
            .memory_reservation(MEMORY_RESERVATION)
            .memory_reservation_for_growth(MEMORY_RESERVATION)
            .memory_guard_size(MEMORY_GUARD)
            .memory_may_move(true);
    }
    if let Some(t) = target {
        config.target(t)?;
    }
    Ok(config)
}

/// The architectures `peapod compile --target` builds for: Cranelift's backends in this build
/// (see `cranelift-codegen` in the workspace Cargo.toml).
pub const COMPILE_TARGETS: &[&str] = &["x86_64", "aarch64"];

/// Compiles wasm bytes ahead of time for `target` (the host when `None`) into a sealed `.cwasm`.
pub fn precompile(bytes: &[u8], target: Option<&str>) -> wasmtime::Result<Vec<u8>> {
    use wasmtime::wasmparser::Parser;
    let engine = engine_config(target)
        .and_then(|c| Engine::new(&c))
        .map_err(|e| match target {
            Some(t) => wasmtime::Error::msg(format!(
                "--target {t}: {e}; this peapod compiles for {}",
                COMPILE_TARGETS.join(" and ")
            )),
            None => e,
        })?;
    let artifact = if Parser::is_component(bytes) {
        engine.precompile_component(bytes)?
    } else if Parser::is_core_wasm(bytes) {
        engine.precompile_module(bytes)?
    } else {
        wasmtime::bail!("not a WebAssembly module or component (no \\0asm header)");
    };
    Ok(artifact::seal(artifact))
}

impl Executor {
    /// Builds the engine and starts its epoch ticker (which stops when the engine is dropped) and
    /// its name resolver: call it on a thread in the host's network namespace.
    pub fn new() -> wasmtime::Result<Executor> {
        let engine = Engine::new(&engine_config(None)?)?;
        if let Ok((layout, why)) = memory::chosen() {
            tracing::info!("linear memories: {} ({why})", layout.name());
        }
        let mut p2 = Linker::new(&engine);
        // Includes `exit-with-code` (WASI 0.2.12) for components that report an exact code;
        // plain `exit` only says ok (0) or err (reported as 1).
        wasmtime_wasi::p2::add_to_linker_async(&mut p2)?;
        crate::wasm::name_lookup::add_to_linker(&mut p2)?;
        let mut p1 = wasmtime::Linker::new(&engine);
        wasmtime_wasi::p1::add_to_linker_async(&mut p1, |s: &mut P1State| &mut s.ctx)?;

        let ticker = Ticker::start(&engine)?;
        Ok(Executor {
            ticker,
            engine,
            p2: Arc::new(p2),
            p1: Arc::new(p1),
            cache: None,
            loaded: Arc::default(),
            resolver: HostResolver::new()?,
        })
    }

    /// Keeps compiled modules in `<state_dir>/cache` across runs of the process, authenticated
    /// with the key in `<state_dir>/cache.key`.
    pub fn with_cache(mut self, state_dir: &Path) -> Self {
        self.cache = Some(Cache::new(
            state_dir.join("cache"),
            &state_dir.join("cache.key"),
            &self.engine,
        ));
        self
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Compiles and links module bytes, or loads a `.cwasm` (`path` is for messages) when
    /// `trusted` (root vouches for the file: see [`crate::module_file`]). Bytes this process
    /// already loaded for a pod that still holds them are not loaded again: the pods share one
    /// copy ([`Source::Shared`]), dropped when the last of them goes.
    pub fn prepare(
        &self,
        path: &Path,
        module: &crate::module_file::Read,
        trusted: bool,
    ) -> Result<(Prepared, Source), LoadError> {
        let bytes = &module.bytes[..];
        if artifact::is_sealed(bytes) && !trusted {
            return Err(LoadError::Precompiled {
                path: path.into(),
                message: "refused: precompiled code runs as native code in the daemon, so it is \
                          loaded only from a file that root owns in a directory that root owns, \
                          neither writable by others (or when root applies the pod); give the \
                          .wasm instead"
                    .into(),
            });
        }
        let key = module.sha256;
        if let Some(linked) = self
            .loaded
            .lock()
            .expect("loaded lock")
            .get(&key)
            .and_then(Weak::upgrade)
        {
            return Ok((Prepared(linked), Source::Shared));
        }
        let (linked, source) = self.load(path, bytes, &key)?;
        let mut loaded = self.loaded.lock().expect("loaded lock");
        loaded.retain(|_, l| l.strong_count() > 0);
        // Two loads of the same bytes at once: the first one in is kept, and shared.
        let linked = match loaded.get(&key).and_then(Weak::upgrade) {
            Some(first) => first,
            None => {
                let linked = Arc::new(linked);
                loaded.insert(key, Arc::downgrade(&linked));
                linked
            }
        };
        Ok((Prepared(linked), source))
    }

    /// How many distinct modules this process holds now (for tests and figures).
    pub fn loaded_modules(&self) -> usize {
        let loaded = self.loaded.lock().expect("loaded lock");
        loaded.values().filter(|l| l.strong_count() > 0).count()
    }

    /// Loads `bytes` (whose SHA-256 is `sha256`).
    fn load(
        &self,
        path: &Path,
        bytes: &[u8],
        sha256: &[u8; 32],
    ) -> Result<(Linked, Source), LoadError> {
        use wasmtime::wasmparser::Parser;
        let precompiled = |message: String| LoadError::Precompiled {
            path: path.into(),
            message,
        };
        if artifact::is_sealed(bytes) {
            let code = artifact::unseal(bytes).map_err(|e| precompiled(e.to_string()))?;
            let p = self.deserialize(path, code).map_err(|e| {
                precompiled(format!(
                    "made for another target, wasmtime version or engine settings (this \
                     process lays memories out {}, see PEAPOD_MEMORIES): {}",
                    memory::chosen().map_or("?", |(l, _)| l.name()),
                    first_line(&e)
                ))
            })?;
            return Ok((p, Source::Precompiled));
        }
        if Engine::detect_precompiled(bytes).is_some() {
            return Err(precompiled(artifact::ArtifactError::NotSealed.to_string()));
        }
        let component = Parser::is_component(bytes);
        if !component && !Parser::is_core_wasm(bytes) {
            return Err(LoadError::NotWasm { path: path.into() });
        }
        let entry = self.cache.as_ref().map(|c| c.entry(sha256));
        if let (Some(cache), Some(entry)) = (&self.cache, &entry)
            && let Some(code) = cache.get(entry)
        {
            match self.deserialize(path, &code) {
                Ok(p) => return Ok((p, Source::Cache)),
                Err(e) => tracing::warn!("{}: ignoring compile cache entry: {e}", entry.display()),
            }
        }
        let compile = |e: wasmtime::Error| LoadError::Compile {
            path: path.into(),
            message: first_line(&e),
        };
        let prepared = if component {
            let c = Component::new(&self.engine, bytes).map_err(compile)?;
            self.store_in_cache(entry.as_deref(), c.serialize());
            self.link_component(path, &c)?
        } else {
            let m = Module::new(&self.engine, bytes).map_err(compile)?;
            self.store_in_cache(entry.as_deref(), m.serialize());
            self.link_module(path, &m)?
        };
        Ok((prepared, Source::Compiled))
    }

    fn store_in_cache(&self, entry: Option<&Path>, artifact: wasmtime::Result<Vec<u8>>) {
        if let (Some(cache), Some(entry)) = (&self.cache, entry) {
            let stored = artifact
                .map_err(|e| std::io::Error::other(e.to_string()))
                .and_then(|a| cache.put(entry, a));
            if let Err(e) = stored {
                tracing::warn!("compile cache {}: {e}", cache.dir().display());
            }
        }
    }

    fn deserialize(&self, path: &Path, code: &[u8]) -> wasmtime::Result<Linked> {
        let link = |e: LoadError| wasmtime::Error::msg(e.to_string());
        // Both deserializations below are sound for the same reason: `code` is what wasmtime
        // wrote: either a cache entry whose MAC (under a key only root can read) checked out, or
        // a `.cwasm` whose checksum checked out and whose file root vouches for (`prepare`
        // refuses it otherwise). wasmtime itself refuses artifacts of another target, version or
        // engine configuration.
        match Engine::detect_precompiled(code) {
            Some(wasmtime::Precompiled::Component) => {
                // SAFETY: see above: a trusted artifact of this engine.
                let c = unsafe { Component::deserialize(&self.engine, code)? };
                self.link_component(path, &c).map_err(link)
            }
            Some(wasmtime::Precompiled::Module) => {
                // SAFETY: see above: a trusted artifact of this engine.
                let m = unsafe { Module::deserialize(&self.engine, code)? };
                self.link_module(path, &m).map_err(link)
            }
            None => wasmtime::bail!("not a wasmtime artifact"),
        }
    }

    fn link_component(&self, path: &Path, c: &Component) -> Result<Linked, LoadError> {
        let link = |e: wasmtime::Error| LoadError::Link {
            path: path.into(),
            message: format!("{e:#}"),
        };
        let pre = self.p2.instantiate_pre(c).map_err(link)?;
        Ok(Linked::Component(CommandPre::new(pre).map_err(link)?))
    }

    fn link_module(&self, path: &Path, m: &Module) -> Result<Linked, LoadError> {
        if m.get_export("_start").is_none() {
            return Err(LoadError::Link {
                path: path.into(),
                message: "a core module must export `_start` (a wasip1 command)".into(),
            });
        }
        let pre = self.p1.instantiate_pre(m).map_err(|e| LoadError::Link {
            path: path.into(),
            message: format!("{e:#}"),
        })?;
        Ok(Linked::Core(pre))
    }

    /// Runs one instance of `module` to its end.
    pub async fn run(&self, module: &Prepared, spec: &RunSpec) -> Outcome {
        let mut wasi = WasiCtxBuilder::new();
        wasi.arg(&spec.name)
            .args(&spec.args)
            .envs(&spec.env)
            .stdout(spec.log.stream(Stream::Stdout))
            .stderr(spec.log.stream(Stream::Stderr))
            .allow_tcp(true)
            .allow_udp(true)
            .allow_ip_name_lookup(true)
            // A container alone on its thread does its file I/O on it (no hop to a blocking
            // thread per write): it can only hold itself up. Sharing one, it must not.
            .allow_blocking_current_thread(spec.siblings.sole())
            .inherit_network();
        {
            use crate::wasm::binds::Transport;
            use wasmtime_wasi::sockets::SocketAddrUse;
            let (binds, name) = (spec.binds.clone(), spec.name.clone());
            wasi.socket_addr_check(move |addr, used| {
                let transport = match used {
                    SocketAddrUse::TcpBind => Some(Transport::Tcp),
                    SocketAddrUse::UdpBind => Some(Transport::Udp),
                    _ => None,
                };
                if let Some(t) = transport {
                    binds.bind(&name, addr, t);
                }
                Box::pin(std::future::ready(true))
            });
        }
        for m in &spec.mounts {
            let perms = if m.read_only {
                FsPerms::ReadOnly
            } else {
                FsPerms::ReadWrite
            };
            if let Err(e) = wasi.preopened_dir(&m.host, &m.guest, perms) {
                return Outcome::NotStarted(format!("volume mount {}: {e:#}", m.guest));
            }
        }
        for e in &spec.env_files {
            match read_env_file(&e.dir, &e.rel) {
                Ok(value) => {
                    wasi.env(&e.var, value);
                }
                Err(why) => {
                    return Outcome::NotStarted(format!(
                        "env_from_files {}: {}: {why}",
                        e.var, e.path
                    ));
                }
            }
        }
        let limits = Limiter::new(spec.memory_limit).with_gauge(spec.usage.clone());
        let _run = spec.siblings.enter();
        let result = match &*module.0 {
            Linked::Component(pre) => {
                let mut table = ResourceTable::new();
                table.set_max_capacity(spec.open_files);
                let state = P2State {
                    ctx: wasi.build(),
                    table,
                    limits,
                    names: Names {
                        pods: spec.pod_names.clone(),
                        host: self.resolver.clone(),
                        share: spec.lookups.clone(),
                        hosts_file: crate::wasm::names::HOSTS_FILE.into(),
                    },
                };
                let mut store = self.store(state, |s| &mut s.limits, &spec.siblings);
                // Dropped before the store: the run's listeners are kept for its next run.
                let _keep = spec.binds.keep_on_drop(&spec.name);
                match pre.instantiate_async(&mut store).await {
                    Ok(cmd) => cmd
                        .wasi_cli_run()
                        .call_run(&mut store)
                        .await
                        .map(|r| if r.is_ok() { 0 } else { 1 }),
                    Err(e) => Err(e),
                }
            }
            Linked::Core(pre) => {
                let mut ctx = wasi.build_p1();
                ctx.ctx().table.set_max_capacity(spec.open_files);
                let state = P1State { ctx, limits };
                let mut store = self.store(state, |s| &mut s.limits, &spec.siblings);
                match pre.instantiate_async(&mut store).await {
                    Ok(instance) => match instance.get_typed_func::<(), ()>(&mut store, "_start") {
                        Ok(start) => start.call_async(&mut store, ()).await.map(|()| 0),
                        Err(e) => Err(e),
                    },
                    Err(e) => Err(e),
                }
            }
        };
        match result {
            Ok(code) => Outcome::Exited(code),
            Err(e) => classify(&e, spec),
        }
    }

    fn store<T: 'static>(
        &self,
        state: T,
        limits: fn(&mut T) -> &mut Limiter,
        siblings: &crate::wasm::ticker::Siblings,
    ) -> Store<T> {
        let mut store = Store::new(&self.engine, state);
        store.limiter(move |s| limits(s) as &mut dyn wasmtime::ResourceLimiter);
        store.set_epoch_deadline(1);
        let mut preemption = Preemption::new(self.ticker.clone(), siblings.clone());
        store.epoch_deadline_callback(move |_| Ok(preemption.at_deadline()));
        store
    }
}

/// How a run that returned an error ended: an exit, a limit, or a trap with its reason.
fn classify(e: &wasmtime::Error, spec: &RunSpec) -> Outcome {
    if let Some(exit) = e.downcast_ref::<I32Exit>() {
        return Outcome::Exited(exit.0);
    }
    if let Some(limit) = e.downcast_ref::<LimitReached>() {
        return Outcome::Limit(limit.clone());
    }
    if matches!(e.downcast_ref(), Some(ResourceTableError::Full)) {
        return Outcome::Limit(LimitReached::OpenFiles(spec.open_files));
    }
    Outcome::Trapped(first_line(e))
}

/// The error's message without wasmtime's backtrace: the trap itself when there is one, else
/// every cause in the chain (WASI's own errors, such as "unpermitted: argument exceeds
/// permitted size", are causes behind a backtrace context).
fn first_line(e: &wasmtime::Error) -> String {
    if let Some(trap) = e.downcast_ref::<wasmtime::Trap>() {
        return trap.to_string();
    }
    let parts: Vec<String> = e
        .chain()
        .filter_map(|c| {
            let s = c.to_string();
            let line = s
                .lines()
                .map(str::trim)
                .find(|l| !l.is_empty())?
                .to_string();
            (!line.starts_with("error while executing at wasm backtrace")).then_some(line)
        })
        .collect();
    if parts.is_empty() {
        "error without a message".into()
    } else {
        parts.join(": ")
    }
}

impl crate::wasm::name_lookup::LookupView for P2State {
    fn parts(&mut self) -> (&Names, &mut ResourceTable) {
        (&self.names, &mut self.table)
    }
}

/// The largest value `env_from_files` reads from a file.
pub const MAX_ENV_FILE: u64 = 64 << 10;

/// The value of an `env_from_files` variable: file `rel` beneath `dir`, read without leaving it
/// (cap-std), at most [`MAX_ENV_FILE`] bytes of UTF-8. Only a regular file is opened, and
/// without blocking: a FIFO or a device put in a shared host directory must not hang the pod's
/// thread (every container of the pod runs on it).
fn read_env_file(dir: &Path, rel: &str) -> Result<String, String> {
    use cap_std::fs::OpenOptionsExt;
    let d = cap_std::fs::Dir::open_ambient_dir(dir, cap_std::ambient_authority())
        .map_err(|e| e.to_string())?;
    if !d.metadata(rel).map_err(|e| e.to_string())?.is_file() {
        return Err("not a regular file".into());
    }
    let mut options = cap_std::fs::OpenOptions::new();
    options
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY);
    let f = d.open_with(rel, &options).map_err(|e| e.to_string())?;
    // Checked again on what was opened: the name may have been swapped in between.
    if !f.metadata().map_err(|e| e.to_string())?.is_file() {
        return Err("not a regular file".into());
    }
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut std::io::Read::take(f, MAX_ENV_FILE + 1), &mut bytes)
        .map_err(|e| e.to_string())?;
    if bytes.len() as u64 > MAX_ENV_FILE {
        return Err(format!("larger than {} KiB", MAX_ENV_FILE >> 10));
    }
    String::from_utf8(bytes).map_err(|_| "not UTF-8 text".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trap_reasons_keep_the_cause_behind_the_backtrace() {
        // What wasmtime-wasi's UDP `send` raises, behind wasmtime's backtrace context.
        let e = wasmtime::Error::msg("unpermitted: argument exceeds permitted size")
            .context("error while executing at wasm backtrace:\n    0:  0x1c2 - <unknown>!main");
        assert_eq!(
            first_line(&e),
            "unpermitted: argument exceeds permitted size"
        );
        let e = wasmtime::Error::msg("inner").context("outer");
        assert_eq!(first_line(&e), "outer: inner");
        let e = wasmtime::Error::msg("\n");
        assert_eq!(first_line(&e), "error without a message");
    }

    #[test]
    fn pods_of_the_same_module_share_one_copy() {
        let exec = Executor::new().unwrap();
        let wasm = wat::parse_str(r#"(module (func (export "_start")))"#).unwrap();
        let other = wat::parse_str(r#"(module (func (export "_start") nop))"#).unwrap();
        let p = Path::new("m.wasm");
        use crate::module_file::Read;
        let (wasm, other) = (Read::new(wasm, false), Read::new(other, false));
        let (a, source) = exec.prepare(p, &wasm, false).unwrap();
        assert_eq!(source, Source::Compiled);
        let (b, source) = exec.prepare(p, &wasm, false).unwrap();
        assert_eq!(source, Source::Shared);
        assert!(Arc::ptr_eq(&a.0, &b.0));
        let (_c, source) = exec.prepare(p, &other, false).unwrap();
        assert_eq!(source, Source::Compiled, "other bytes, other code");
        assert_eq!(exec.loaded_modules(), 2);
        drop((a, b));
        assert_eq!(
            exec.loaded_modules(),
            1,
            "dropped with the last pod using it"
        );
        assert_eq!(exec.prepare(p, &wasm, false).unwrap().1, Source::Compiled);
    }

    #[test]
    fn limits_and_exits_are_classified() {
        let spec = RunSpec {
            name: "c".into(),
            args: vec![],
            env: vec![],
            memory_limit: 16 << 20,
            open_files: 7,
            mounts: vec![],
            env_files: vec![],
            log: ContainerLog::new("p", "c", None),
            usage: Default::default(),
            pod_names: None,
            lookups: Default::default(),
            binds: Default::default(),
            siblings: Default::default(),
        };
        let e = wasmtime::Error::from(LimitReached::Memory(16 << 20)).context("backtrace");
        let o = classify(&e, &spec);
        assert_eq!(
            (o.reason(), o.to_string().as_str()),
            ("OOMKilled", "memory limit 16 MiB reached")
        );
        let e = wasmtime::Error::from(ResourceTableError::Full).context("backtrace");
        let o = classify(&e, &spec);
        assert_eq!(o.reason(), "LimitReached");
        assert!(
            o.to_string().starts_with("open files limit 7 reached"),
            "{o}"
        );
        let o = classify(&wasmtime::Error::from(I32Exit(3)), &spec);
        assert_eq!((o.reason(), o.exit_code()), ("Error", Some(3)));
        assert_eq!(Outcome::Exited(0).reason(), "Completed");
    }
}
