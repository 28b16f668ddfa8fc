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
        let r = runtime()?.block_on(Client::new(&config.socket).pods());
        let mut missing = Vec::new();
        let code = done(r, |mut list| {
            if !self.pods.is_empty() {
                missing = (self.pods.iter())
                    .filter(|n| !list.pods.iter().any(|p| &p.name == *n))
                    .cloned()
                    .collect();
                list.pods.retain(|p| self.pods.contains(&p.name));
            }
            // The pods directory's problems go to stderr in both formats: stdout stays the
            // table, or the array of pods.
            let warn = || {
                for problem in &list.problems {
                    eprintln!("warning: {problem}");
                }
            };
            if self.output == "json" {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&list.pods).unwrap_or_default()
                );
                warn();
                return;
            }
            let mut rows = vec![vec![
                "NAME".to_string(),
                "STATUS".into(),
                "IP".into(),
                "READY".into(),
                "RESTARTS".into(),
                "AGE".into(),
                "SOURCE".into(),
            ]];
            for p in &list.pods {
                let (ready, live) = p.ready_count();
                rows.push(vec![
                    p.name.clone(),
                    p.status.clone(),
                    ip_or_dash(p.ip),
                    format!("{ready}/{live}"),
                    p.restarts.to_string(),
                    age(p.age_seconds),
                    p.source.clone(),
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
