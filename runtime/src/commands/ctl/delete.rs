//! `peapod delete`.

use super::*;

/// Delete a pod created with `apply`: its modules stop, its namespace, IP and logs are freed.
#[derive(clap::Args, Debug)]
pub(crate) struct Delete {
    pod: String,
}

impl Delete {
    pub(crate) fn exec(self, config: Config) -> anyhow::Result<ExitCode> {
        let pod = match pod_name(&self.pod) {
            Ok(p) => p,
            Err(code) => return Ok(code),
        };
        let r = runtime()?.block_on(Client::new(&config.socket).delete(pod));
        Ok(done_for(&config, pod, r, |_| outln!("pod/{pod} deleted")))
    }
}
