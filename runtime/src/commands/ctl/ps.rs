//! `peapod ps`.

use super::*;

/// List pods: status, IP, age, restarts.
#[derive(clap::Args, Debug)]
pub(crate) struct Ps {
    /// Only these pods (an error if one does not exist)
    pods: Vec<String>,
    /// Output format: table or json
    #[arg(short = 'o', long, default_value = "table", value_parser = ["table", "json"])]
    output: String,
}

impl Ps {
    pub(crate) fn exec(self, config: Config) -> anyhow::Result<ExitCode> {
        for p in &self.pods {
            if let Err(code) = pod_name(p) {
                return Ok(code);
            }
        }
        let r = runtime()?.block_on(Client::new(&config.socket).get("/v1/pods"));
        let mut missing = Vec::new();
        let code = done(r, |mut v| {
            if !self.pods.is_empty() {
                let all = v["pods"].as_array().cloned().unwrap_or_default();
                missing = self
                    .pods
                    .iter()
                    .filter(|n| !all.iter().any(|p| p["name"] == n.as_str()))
                    .cloned()
                    .collect();
                v["pods"] = all
                    .into_iter()
                    .filter(|p| self.pods.iter().any(|n| p["name"] == n.as_str()))
                    .collect();
            }
            let empty = Vec::new();
            // The pods directory's problems go to stderr in both formats: stdout stays the
            // table, or the array of pods.
            let warn = || {
                for problem in v["problems"].as_array().unwrap_or(&empty) {
                    eprintln!("warning: {}", problem.as_str().unwrap_or_default());
                }
            };
            if self.output == "json" {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&v["pods"]).unwrap_or_default()
                );
                warn();
                return;
            }
            let pods = v["pods"].as_array().unwrap_or(&empty);
            let mut rows = vec![vec![
                "NAME".to_string(),
                "STATUS".into(),
                "IP".into(),
                "READY".into(),
                "RESTARTS".into(),
                "AGE".into(),
                "SOURCE".into(),
            ]];
            for p in pods {
                // Kubernetes' READY: ready containers of those that stay (apps and
                // sidecars; plain init containers end by design).
                let containers: Vec<&serde_json::Value> = p["containers"]
                    .as_array()
                    .unwrap_or(&empty)
                    .iter()
                    .filter(|c| c["kind"] != "init")
                    .collect();
                let ready = containers.iter().filter(|c| c["ready"] == true).count();
                rows.push(vec![
                    p["name"].as_str().unwrap_or("?").into(),
                    p["status"].as_str().unwrap_or("?").into(),
                    p["ip"].as_str().unwrap_or("-").into(),
                    format!("{ready}/{}", containers.len()),
                    p["restarts"].to_string(),
                    age(p["age_seconds"].as_u64().unwrap_or(0)),
                    p["source"].as_str().unwrap_or("?").into(),
                ]);
            }
            print_table(&rows);
            warn();
        });
        if !missing.is_empty() {
            for m in &missing {
                eprintln!("peapod: no pod named {m:?}");
                hint_run(&config, m);
            }
            return Ok(ExitCode::from(EXIT_FAILED));
        }
        Ok(code)
    }
}
