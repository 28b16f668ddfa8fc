//! The seam between the daemon's reconciler ([`super::pods::Pods`]) and the machine, in the
//! spirit of youki's `Syscall` trait and runwasi's `Engine`: everything the reconciler asks of
//! the kernel and the engine goes through [`Host`] — start a pod (taking over the sandbox an
//! earlier daemon left), remove what is left of one, collect orphans — and every pod it starts
//! is a [`Running`]. [`Kernel`] is the real one (namespaces, netlink, wasmtime); the
//! reconciler's tests give it a recording fake, and run without root, in milliseconds.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::path::Path;
use std::time::{Instant, SystemTime};

use futures::future::BoxFuture;

use crate::config::Config;
use crate::host::sandbox::{self, Sandbox, SandboxError};
use crate::run::pod::{Options, PodError, RunningPod};
use crate::run::supervisor::Status;
use crate::spec::PodSpec;
use crate::wasm::executor::{Executor, Prepared};

/// Why the host could not do what the reconciler asked: the cause kept whole (its `source()`
/// chain), made a message only where the reconciler shows it.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HostError {
    #[error(transparent)]
    Pod(#[from] PodError),
    #[error("pod {pod}: {source}")]
    Sandbox {
        pod: String,
        #[source]
        source: SandboxError,
    },
    #[error("collecting orphans: {0}")]
    Orphans(#[source] SandboxError),
    /// The tests' fake host failing as told.
    #[cfg(test)]
    #[error("{0}")]
    Fake(String),
}

/// A pod the host runs.
pub(crate) trait Running: Send + Sync {
    fn ip(&self) -> Ipv4Addr;
    fn netns_path(&self) -> &Path;
    /// When its sandbox was made (kept by a recovered sandbox).
    fn created(&self) -> SystemTime;
    /// Every container's status, in spec order.
    fn statuses(&self) -> Vec<Status>;
    /// Restarts one container in place; false if there is no such container.
    fn restart_container(&self, name: &str) -> bool;
    /// Stops the containers (their `pre_stop` hooks within the grace period); removes the
    /// sandbox unless `keep_sandbox` (a daemon stop: the next start takes it over).
    fn stop(self: Box<Self>, keep_sandbox: bool) -> BoxFuture<'static, Result<(), HostError>>;
}

/// A pod started: the pod, and whether its sandbox was taken over from an earlier daemon.
pub(crate) struct Started {
    pub pod: Box<dyn Running>,
    pub recovered: bool,
}

/// What the reconciler asks of the machine.
pub(crate) trait Host: Send + Sync {
    /// Starts `spec`'s containers in its sandbox: the one an earlier daemon left for it (same
    /// namespace, same IP) or a new one. On failure nothing of a new sandbox is left.
    fn start<'a>(
        &'a self,
        spec: &'a PodSpec,
        modules: Vec<Prepared>,
        opts: &'a Options,
    ) -> BoxFuture<'a, Result<Started, HostError>>;
    /// Removes whatever is left of pod `name`'s sandbox (a pod that does not run here).
    fn remove<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<(), HostError>>;
    /// Removes the sandbox parts (pins, veths, leases, volumes) of every pod not in `keep`;
    /// returns their names.
    fn collect_orphans<'a>(
        &'a self,
        keep: &'a BTreeSet<String>,
    ) -> BoxFuture<'a, Result<Vec<String>, HostError>>;
}

/// The real host: sandboxes in the kernel, modules in wasmtime.
pub(crate) struct Kernel {
    pub cfg: Config,
    pub exec: Executor,
}

impl Host for Kernel {
    fn start<'a>(
        &'a self,
        spec: &'a PodSpec,
        modules: Vec<Prepared>,
        opts: &'a Options,
    ) -> BoxFuture<'a, Result<Started, HostError>> {
        Box::pin(async move {
            let t0 = Instant::now();
            let name = &spec.name;
            let (sandbox, recovered) = Sandbox::recover(&self.cfg, name, &spec.published_ports())
                .await
                .map_err(|source| HostError::Sandbox {
                    pod: name.clone(),
                    source,
                })?;
            let pod =
                RunningPod::launch(sandbox, t0.elapsed(), &self.exec, spec, modules, opts).await?;
            Ok(Started {
                pod: Box::new(pod),
                recovered,
            })
        })
    }

    fn remove<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<(), HostError>> {
        Box::pin(async move {
            Sandbox::remove(&self.cfg, name)
                .await
                .map_err(|source| HostError::Sandbox {
                    pod: name.into(),
                    source,
                })
        })
    }

    fn collect_orphans<'a>(
        &'a self,
        keep: &'a BTreeSet<String>,
    ) -> BoxFuture<'a, Result<Vec<String>, HostError>> {
        Box::pin(async move {
            sandbox::collect_orphans(&self.cfg, keep)
                .await
                .map_err(HostError::Orphans)
        })
    }
}

impl Running for RunningPod {
    fn ip(&self) -> Ipv4Addr {
        self.ip
    }

    fn netns_path(&self) -> &Path {
        &self.netns_path
    }

    fn created(&self) -> SystemTime {
        RunningPod::created(self)
    }

    fn statuses(&self) -> Vec<Status> {
        RunningPod::statuses(self)
    }

    fn restart_container(&self, name: &str) -> bool {
        RunningPod::restart_container(self, name)
    }

    fn stop(self: Box<Self>, keep_sandbox: bool) -> BoxFuture<'static, Result<(), HostError>> {
        Box::pin(async move {
            let r = if keep_sandbox {
                self.stop_keep_sandbox().await
            } else {
                RunningPod::stop(*self).await
            };
            Ok(r.map(drop)?)
        })
    }
}

/// A host of the tests' own: pods "run" in memory, every call is recorded, and a start can be
/// made to fail.
#[cfg(test)]
pub(crate) mod fake {
    use std::path::PathBuf;
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::run::supervisor::{Control, State};

    /// What the fake host was asked, in order: `start web`, `stop web`, `keep web` (stopped,
    /// sandbox kept), `remove web`, `orphans a,b` (the names kept).
    #[derive(Clone, Default)]
    pub(crate) struct Fake {
        pub calls: Arc<Mutex<Vec<String>>>,
        /// Pods whose start fails, with the message.
        pub failing: Arc<Mutex<std::collections::BTreeMap<String, String>>>,
        /// Pods whose sandbox an earlier daemon left (their start is a recovery).
        pub left: Arc<Mutex<BTreeSet<String>>>,
        next_ip: Arc<Mutex<u8>>,
    }

    impl Fake {
        pub(crate) fn take_calls(&self) -> Vec<String> {
            std::mem::take(&mut *self.calls.lock().unwrap())
        }

        fn record(&self, call: String) {
            self.calls.lock().unwrap().push(call);
        }
    }

    struct FakePod {
        name: String,
        ip: Ipv4Addr,
        netns: PathBuf,
        created: SystemTime,
        statuses: Vec<Status>,
        calls: Arc<Mutex<Vec<String>>>,
    }

    impl Running for FakePod {
        fn ip(&self) -> Ipv4Addr {
            self.ip
        }
        fn netns_path(&self) -> &Path {
            &self.netns
        }
        fn created(&self) -> SystemTime {
            self.created
        }
        fn statuses(&self) -> Vec<Status> {
            self.statuses.clone()
        }
        fn restart_container(&self, name: &str) -> bool {
            let found = self.statuses.iter().any(|s| s.name == name);
            if found {
                let call = format!("restart {}/{name}", self.name);
                self.calls.lock().unwrap().push(call);
            }
            found
        }
        fn stop(self: Box<Self>, keep_sandbox: bool) -> BoxFuture<'static, Result<(), HostError>> {
            let verb = if keep_sandbox { "keep" } else { "stop" };
            self.calls
                .lock()
                .unwrap()
                .push(format!("{verb} {}", self.name));
            Box::pin(async { Ok(()) })
        }
    }

    impl Host for Fake {
        fn start<'a>(
            &'a self,
            spec: &'a PodSpec,
            _: Vec<Prepared>,
            _: &'a Options,
        ) -> BoxFuture<'a, Result<Started, HostError>> {
            Box::pin(async move {
                self.record(format!("start {}", spec.name));
                if let Some(e) = self.failing.lock().unwrap().get(&spec.name) {
                    return Err(HostError::Fake(e.clone()));
                }
                let recovered = self.left.lock().unwrap().remove(&spec.name);
                let ip = {
                    let mut n = self.next_ip.lock().unwrap();
                    *n += 1;
                    Ipv4Addr::new(10, 66, 0, *n)
                };
                let statuses = spec
                    .containers
                    .iter()
                    .map(|c| {
                        let mut s = Control::new(&c.name, c.kind, true).status();
                        s.state = State::Running;
                        (s.started, s.ready) = (true, true);
                        s
                    })
                    .collect();
                Ok(Started {
                    pod: Box::new(FakePod {
                        name: spec.name.clone(),
                        ip,
                        netns: PathBuf::from("/run/fake/netns").join(&spec.name),
                        created: SystemTime::now(),
                        statuses,
                        calls: self.calls.clone(),
                    }),
                    recovered,
                })
            })
        }

        fn remove<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<(), HostError>> {
            Box::pin(async move {
                self.record(format!("remove {name}"));
                Ok(())
            })
        }

        fn collect_orphans<'a>(
            &'a self,
            keep: &'a BTreeSet<String>,
        ) -> BoxFuture<'a, Result<Vec<String>, HostError>> {
            Box::pin(async move {
                let kept: Vec<&str> = keep.iter().map(String::as_str).collect();
                self.record(format!("orphans {}", kept.join(",")));
                let mut left = self.left.lock().unwrap();
                let gone: Vec<String> = left
                    .iter()
                    .filter(|n| !keep.contains(*n))
                    .cloned()
                    .collect();
                left.retain(|n| keep.contains(n));
                Ok(gone)
            })
        }
    }
}
