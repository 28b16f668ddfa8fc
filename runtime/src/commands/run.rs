//! `peapod run POD.toml`: one pod in the foreground, removed again when it ends.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use peapod::caller::Caller;
use peapod::config::Config;
use peapod::loader;
use peapod::logs::{LogSink, Stream};
use peapod::run::pod::{Options, RunningPod};
use peapod::spec::PodSpec;
use peapod::wasm::executor::Executor;
use tokio::signal::unix::{SignalKind, signal};

use super::{EXIT_FAILED, EXIT_INVALID, EXIT_OK, EXIT_RUNTIME};

/// A line on stderr that never panics: with stderr a closed pipe (`peapod run x | head -1`,
/// 2>&1) a failed write must not skip the pod's cleanup.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

/// Run a pod in the foreground until its containers end for good or SIGINT/SIGTERM arrives;
/// then remove its namespace, veth and lease.
///
/// Exit status: 0 when every container's last run exited 0 (or on SIGINT/SIGTERM), 1 when one
/// failed, 2 when the spec is invalid (nothing is created), 3 when the runtime failed.
#[derive(clap::Args, Debug)]
pub(super) struct Run {
    /// The pod spec (TOML)
    spec: PathBuf,
    /// Start each line of the guests' output with `POD/CONTAINER: ` (as `kubectl logs --prefix`)
    #[arg(long)]
    prefix: bool,
}

/// Guests' output as `peapod run`'s own, so `$(peapod run job.toml)` is the job's output: a
/// guest's stdout on stdout, its stderr on stderr, a whole line at a time. Write errors are
/// ignored (a closed pipe must not stop the pod or skip its cleanup).
fn print_lines(prefix: bool) -> LogSink {
    Arc::new(move |id: &str, stream: Stream, line: &str| {
        use std::io::Write as _;
        let text = if prefix {
            format!("{id}: {line}\n")
        } else {
            format!("{line}\n")
        };
        let _ = match stream {
            Stream::Stdout => std::io::stdout().lock().write_all(text.as_bytes()),
            Stream::Stderr => std::io::stderr().lock().write_all(text.as_bytes()),
        };
    })
}

impl Run {
    pub(super) fn exec(self, config: Config) -> anyhow::Result<ExitCode> {
        let spec = match PodSpec::load(&self.spec) {
            Ok(s) => s,
            Err(e) => {
                say!("{e}");
                return Ok(ExitCode::from(EXIT_INVALID));
            }
        };
        for w in spec.warning_lines() {
            say!("warning: {w}");
        }
        let exec = Executor::new()
            .map_err(|e| anyhow::anyhow!("{e:#}"))
            .context("create wasm engine")?
            .with_cache(&config.state_dir);
        let t0 = std::time::Instant::now();
        // The user who runs `peapod run` is the caller: root may run a .cwasm of any owner.
        let modules = match loader::load(&exec, &spec, &config, Caller::myself()) {
            Ok(m) => {
                tracing::info!(
                    "pod {}: compiled {} modules in {:.1?}",
                    spec.name,
                    m.len(),
                    t0.elapsed()
                );
                m
            }
            Err(e) => {
                say!("{e}");
                return Ok(ExitCode::from(EXIT_INVALID));
            }
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("create runtime")?;
        rt.block_on(async move {
            let mut term = signal(SignalKind::terminate()).context("SIGTERM handler")?;
            let mut int = signal(SignalKind::interrupt()).context("SIGINT handler")?;
            // The output goes to the terminal and to the pod's CRI log files, where `peapod
            // logs` reads it from another terminal.
            let opts = Options {
                sink: Some(print_lines(self.prefix)),
                logs: Some(config.logs.clone()),
                ..Options::default()
            };
            let mut pod = match RunningPod::start_with(&config, &exec, &spec, modules, opts).await {
                Ok(p) => p,
                Err(e) => {
                    say!("peapod: {e}");
                    return Ok(ExitCode::from(EXIT_RUNTIME));
                }
            };
            let signalled = tokio::select! {
                _ = pod.wait() => false,
                _ = term.recv() => true,
                _ = int.recv() => true,
            };
            if signalled {
                tracing::info!("pod {}: stopping on signal", spec.name);
            }
            let report = pod.stop().await?;
            // Its logs are kept as a re-created pod's are (`<pod>.previous`), until the next
            // `run` of the name or the daemon's start collects them.
            if let Err(e) = config.logs.retire_pod(&spec.name) {
                say!("peapod: logs of pod {}: {e}", spec.name);
            }
            for c in &report.containers {
                let how = match (&c.last, c.stopped) {
                    (_, true) => match &c.ended_on_stop {
                        Some(o) => format!("stopped: {o} after its pre_stop hook"),
                        None => "stopped".to_string(),
                    },
                    (Some(o), false) => o.to_string(),
                    (None, false) => "never ran".to_string(),
                };
                say!(
                    "{}/{}: {how} (restarts: {})",
                    report.name,
                    c.name,
                    c.restarts
                );
            }
            Ok(ExitCode::from(if report.teardown.is_some() {
                EXIT_RUNTIME
            } else if signalled || report.success() {
                EXIT_OK
            } else {
                EXIT_FAILED
            }))
        })
    }
}
