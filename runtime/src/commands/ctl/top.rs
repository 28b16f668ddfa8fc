//! `peapod top`.

use super::*;

/// Show what each container uses: CPU (in cores, as `cpu_limit` counts them, measured over
/// the interval) and linear memory.
#[derive(clap::Args, Debug)]
pub(crate) struct Top {
    /// Only these pods
    pods: Vec<String>,
    /// How long CPU use is measured over
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    interval: std::time::Duration,
}

impl Top {
    pub(crate) fn exec(self, config: Config) -> anyhow::Result<ExitCode> {
        for p in &self.pods {
            if let Err(code) = pod_name(p) {
                return Ok(code);
            }
        }
        let client = Client::new(&config.socket);
        let rt = runtime()?;
        let sample = || {
            let v = rt.block_on(client.get("/v1/pods"))?;
            let t = std::time::Instant::now();
            let mut cpu = std::collections::BTreeMap::new();
            for p in v["pods"].as_array().into_iter().flatten() {
                for c in p["containers"].as_array().into_iter().flatten() {
                    let key = (p["name"].to_string(), c["name"].to_string());
                    cpu.insert(key, c["cpu_seconds"].as_f64().unwrap_or(0.0));
                }
            }
            Ok::<_, ClientError>((v, t, cpu))
        };
        let (_, t0, before) = match sample() {
            Ok(s) => s,
            Err(e) => return Ok(fail(e)),
        };
        std::thread::sleep(self.interval);
        let (v, t1, after) = match sample() {
            Ok(s) => s,
            Err(e) => return Ok(fail(e)),
        };
        let wall = t1.duration_since(t0).as_secs_f64();
        let mut rows = vec![vec![
            "POD".to_string(),
            "CONTAINER".into(),
            "STATE".into(),
            "CPU(cores)".into(),
            "MEMORY(bytes)".into(),
            "CPU-TIME".into(),
        ]];
        for p in v["pods"].as_array().into_iter().flatten() {
            if !self.pods.is_empty() && !self.pods.iter().any(|n| p["name"] == n.as_str()) {
                continue;
            }
            for c in p["containers"].as_array().into_iter().flatten() {
                let key = (p["name"].to_string(), c["name"].to_string());
                let used = after.get(&key).copied().unwrap_or(0.0)
                    - before.get(&key).copied().unwrap_or(0.0);
                rows.push(vec![
                    p["name"].as_str().unwrap_or("?").into(),
                    c["name"].as_str().unwrap_or("?").into(),
                    c["state"].as_str().unwrap_or("?").into(),
                    format!("{}m", (used.max(0.0) / wall * 1000.0).round() as u64),
                    binary_size(c["memory_bytes"].as_u64().unwrap_or(0)),
                    format!("{:.2}s", c["cpu_seconds"].as_f64().unwrap_or(0.0)),
                ]);
            }
        }
        print_table(&rows);
        Ok(ExitCode::from(EXIT_OK))
    }
}
