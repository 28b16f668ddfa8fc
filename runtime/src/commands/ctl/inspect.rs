//! `peapod inspect`.

use super::*;

/// Show one pod as JSON.
#[derive(clap::Args, Debug)]
pub(crate) struct Inspect {
    pod: String,
}

impl Inspect {
    pub(crate) fn exec(self, config: Config) -> anyhow::Result<ExitCode> {
        let pod = match pod_name(&self.pod) {
            Ok(p) => p,
            Err(code) => return Ok(code),
        };
        let r = runtime()?.block_on(Client::new(&config.socket).pod(pod));
        Ok(done_for(&config, pod, r, |v| {
            outln!("{}", serde_json::to_string_pretty(&v).unwrap_or_default())
        }))
    }
}
