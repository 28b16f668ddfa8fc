//! `peapod top`.

use super::*;

/// Show what each container uses: CPU (in cores, as `cpu_limit` counts them, measured over
/// the interval) and linear memory; each pod's total (a `*` row) when it has more than one
/// container; and the daemon's own RSS and CPU.
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
            let v = rt.block_on(client.pods())?;
            let t = std::time::Instant::now();
            let mut cpu = std::collections::BTreeMap::new();
            for p in &v.pods {
                for c in &p.containers {
                    cpu.insert((p.name.clone(), c.name.clone()), c.cpu_seconds);
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
        let cores = |used: f64| format!("{}m", (used.max(0.0) / wall * 1000.0).round() as u64);
        for p in &v.pods {
            if !self.pods.is_empty() && !self.pods.contains(&p.name) {
                continue;
            }
            let (mut pod_used, mut pod_memory, mut pod_time) = (0.0, 0, 0.0);
            for c in &p.containers {
                let key = (p.name.clone(), c.name.clone());
                let used = after.get(&key).copied().unwrap_or(0.0)
                    - before.get(&key).copied().unwrap_or(0.0);
                (pod_used, pod_memory, pod_time) = (
                    pod_used + used,
                    pod_memory + c.memory_bytes,
                    pod_time + c.cpu_seconds,
                );
                rows.push(vec![
                    p.name.clone(),
                    c.name.clone(),
                    c.state.word().into(),
                    cores(used),
                    binary_size(c.memory_bytes),
                    format!("{:.2}s", c.cpu_seconds),
                ]);
            }
            if p.containers.len() > 1 {
                rows.push(vec![
                    p.name.clone(),
                    "*".into(),
                    p.status.clone(),
                    cores(pod_used),
                    binary_size(pod_memory),
                    format!("{pod_time:.2}s"),
                ]);
            }
        }
        print_table(&rows);
        if let Ok(d) = rt.block_on(client.daemon()) {
            outln!(
                "daemon (pid {}): RSS {}, CPU {:.2}s, {} threads, {} open files, up {}",
                d.pid,
                binary_size(d.rss_bytes),
                d.cpu_seconds,
                d.threads,
                d.open_fds,
                age(d.uptime_seconds)
            );
        }
        Ok(ExitCode::from(EXIT_OK))
    }
}
