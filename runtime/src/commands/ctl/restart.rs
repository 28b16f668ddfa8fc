//! `peapod restart`.

use super::*;

/// Re-create a pod (new namespace, new IP), or restart one container in place (same IP).
#[derive(clap::Args, Debug)]
pub(crate) struct Restart {
    /// POD (re-create) or POD/CONTAINER (restart in place)
    target: String,
}

impl Restart {
    pub(crate) fn exec(self, config: Config) -> anyhow::Result<ExitCode> {
        let client = Client::new(&config.socket);
        let rt = runtime()?;
        let target = match split(&self.target) {
            Ok(t) => t,
            Err(code) => return Ok(code),
        };
        Ok(match target {
            (pod, Some(c)) => done(rt.block_on(client.restart_container(pod, c)), |_| {
                outln!("{pod}/{c} restarted in place")
            }),
            (pod, None) => done_for(&config, pod, rt.block_on(client.recreate(pod)), |v| {
                outln!("pod/{pod} re-created (ip {})", ip_or_dash(v.ip))
            }),
        })
    }
}
