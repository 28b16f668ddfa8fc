//! `peapod daemon`: see the library's `daemon` module.

use std::process::ExitCode;

use anyhow::Context;
use peapod::config::Config;
use peapod::wasm::executor::Executor;

use super::EXIT_OK;

/// Run pods as a service: the pods directory and the pods applied through the API, kept running;
/// the control API on a unix socket; systemd notification and watchdog.
///
/// SIGHUP (or any change in the pods directory) reloads the pods directory. SIGTERM stops the
/// modules but keeps every pod's namespace and IP for the next start.
#[derive(clap::Args, Debug)]
pub(super) struct Daemon {}

impl Daemon {
    pub(super) fn exec(self, config: Config) -> anyhow::Result<ExitCode> {
        let exec = Executor::new()
            .map_err(|e| anyhow::anyhow!("{e:#}"))
            .context("create wasm engine")?
            .with_cache(&config.state_dir);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .context("create runtime")?;
        let r = rt.block_on(peapod::daemon::run(config, exec));
        // A pod left stopping past limits.stop_timeout has its thread's join on a blocking
        // task: the exit does not wait for it (its sandbox is kept, as a kill would keep it).
        rt.shutdown_timeout(std::time::Duration::from_millis(500));
        r?;
        Ok(ExitCode::from(EXIT_OK))
    }
}
