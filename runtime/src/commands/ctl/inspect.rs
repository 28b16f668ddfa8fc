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
        // A pod of `peapod run`: what its files say (as `get` lists it).
        if is_run_pod(&config, pod, &r)
            && let Some(v) = get::run_pods(&config, &[])
                .into_iter()
                .find(|v| v.name == pod)
        {
            outln!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
            return Ok(ExitCode::from(EXIT_OK));
        }
        Ok(done_for(&config, pod, r, |v| {
            outln!("{}", serde_json::to_string_pretty(&v).unwrap_or_default())
        }))
    }
}
