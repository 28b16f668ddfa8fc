//! The commands that talk to the daemon: `apply`, `ps`, `top`, `inspect`, `logs`, `restart`,
//! `delete`.
//!
//! Exit status: 0 done; 1 the daemon refused (no such pod, conflict, failure); 2 invalid input
//! (a spec that does not validate, bad arguments); 3 the daemon cannot be reached.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use http_body_util::BodyExt;
use hyper::{Method, StatusCode};
use peapod::client::{Client, ClientError};
use peapod::config::Config;
use peapod::logs::cri;
use serde_json::json;

use super::{EXIT_FAILED, EXIT_INVALID, EXIT_OK, EXIT_RUNTIME};

/// Create or update pods from spec files (each re-created when its spec or modules changed).
#[derive(clap::Args, Debug)]
pub(super) struct Apply {
    /// A pod spec (TOML); a directory: every *.toml in it; `-` reads one spec from standard
    /// input (its module paths are relative to the current directory). May be repeated.
    #[arg(short = 'f', long = "filename", required = true)]
    files: Vec<PathBuf>,
}

/// List pods: status, IP, age, restarts.
#[derive(clap::Args, Debug)]
pub(super) struct Ps {
    /// Only these pods (an error if one does not exist)
    pods: Vec<String>,
    /// Output format: table or json
    #[arg(short = 'o', long, default_value = "table", value_parser = ["table", "json"])]
    output: String,
}

/// Show what each container uses: CPU (in cores, as `cpu_limit` counts them, measured over
/// the interval) and linear memory.
#[derive(clap::Args, Debug)]
pub(super) struct Top {
    /// Only these pods
    pods: Vec<String>,
    /// How long CPU use is measured over
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    interval: std::time::Duration,
}

/// Show one pod as JSON.
#[derive(clap::Args, Debug)]
pub(super) struct Inspect {
    pod: String,
}

/// Print a container's log (kept in CRI format, so exited containers have one too).
#[derive(clap::Args, Debug)]
pub(super) struct Logs {
    /// POD or POD/CONTAINER (the container may be left out when the pod has one)
    target: String,
    /// Keep printing new lines until interrupted (or the pod is deleted)
    #[arg(short, long)]
    follow: bool,
    /// Only the last N lines
    #[arg(long)]
    tail: Option<usize>,
    /// Prefix each line with its time (RFC 3339)
    #[arg(long)]
    timestamps: bool,
    /// The logs of the pod's previous sandbox (before its last re-create: `restart POD`, an
    /// edited file, a re-apply)
    #[arg(short, long)]
    previous: bool,
    /// The container (as POD/CONTAINER does)
    #[arg(short, long)]
    container: Option<String>,
    /// Only records newer than this, e.g. 10s, 5m, 2h
    #[arg(long, value_parser = humantime::parse_duration)]
    since: Option<std::time::Duration>,
}

/// Re-create a pod (new namespace, new IP), or restart one container in place (same IP).
#[derive(clap::Args, Debug)]
pub(super) struct Restart {
    /// POD (re-create) or POD/CONTAINER (restart in place)
    target: String,
}

/// Delete a pod created with `apply`: its modules stop, its namespace, IP and logs are freed.
#[derive(clap::Args, Debug)]
pub(super) struct Delete {
    pod: String,
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("create runtime")
}

/// [`done`], and when the daemon said it has no pod `pod`, [`hint_run`].
fn done_for<T>(
    config: &Config,
    pod: &str,
    r: Result<T, ClientError>,
    then: impl FnOnce(T),
) -> ExitCode {
    let missing = matches!(
        r,
        Err(ClientError::Api {
            status: StatusCode::NOT_FOUND,
            ..
        })
    );
    let code = done(r, then);
    if missing {
        hint_run(config, pod);
    }
    code
}

/// If `peapod run` runs a pod named `pod`, says so: it is not the daemon's, and the commands
/// that talk to the daemon cannot reach it.
fn hint_run(config: &Config, pod: &str) {
    if peapod::host::sandbox::held(config, pod) {
        eprintln!(
            "peapod: pod {pod:?} runs under `peapod run`, not the daemon: ps, inspect, logs, \
             restart and delete act on the daemon's pods only (stop it where it runs: Ctrl-C or SIGTERM)"
        );
    }
}

/// Prints a client error and picks the exit status.
fn fail(e: ClientError) -> ExitCode {
    ExitCode::from(report(e))
}

/// Prints why the daemon refused (or could not be asked); returns the exit status for it.
fn report(e: ClientError) -> u8 {
    match &e {
        // An invalid spec: its `file:line: field: ...` lines, as `peapod run` prints them.
        ClientError::Api { problems, .. } if !problems.is_empty() => {
            for p in problems {
                eprintln!("{p}");
            }
        }
        _ => eprintln!("peapod: {e}"),
    }
    match e {
        ClientError::Api {
            status: StatusCode::UNPROCESSABLE_ENTITY | StatusCode::BAD_REQUEST,
            ..
        } => EXIT_INVALID,
        ClientError::Api { .. } => EXIT_FAILED,
        _ => EXIT_RUNTIME,
    }
}

fn done<T>(r: Result<T, ClientError>, then: impl FnOnce(T)) -> ExitCode {
    match r {
        Ok(v) => {
            then(v);
            ExitCode::from(EXIT_OK)
        }
        Err(e) => fail(e),
    }
}

/// Splits `pod/container` and checks both are names (DNS-1123 labels) before they go into a
/// URL: a bad name is invalid input (exit 2), not an unreachable daemon.
fn split(target: &str) -> Result<(&str, Option<&str>), ExitCode> {
    let (pod, container) = match target.split_once('/') {
        Some((p, c)) => (p, Some(c)),
        None => (target, None),
    };
    for (what, name) in [("pod", Some(pod)), ("container", container)] {
        if let Some(n) = name
            && !peapod::spec::is_dns1123_label(n)
        {
            eprintln!(
                "peapod: {n:?} is not a {what} name: names are DNS-1123 labels (1-63 characters \
                 of a-z, 0-9 and '-', starting and ending with a letter or digit)"
            );
            return Err(ExitCode::from(EXIT_INVALID));
        }
    }
    Ok((pod, container))
}

/// A bare pod name, checked as [`split`] checks it.
fn pod_name(name: &str) -> Result<&str, ExitCode> {
    match split(name)? {
        (pod, None) => Ok(pod),
        (_, Some(_)) => {
            eprintln!("peapod: {name:?} is not a pod name: name a pod, not POD/CONTAINER");
            Err(ExitCode::from(EXIT_INVALID))
        }
    }
}

impl Apply {
    pub(super) fn exec(self, config: Config) -> anyhow::Result<ExitCode> {
        // Every spec named, in order: a directory's *.toml sorted; `-` is standard input.
        let mut specs: Vec<(PathBuf, std::io::Result<String>)> = Vec::new();
        for f in &self.files {
            if f.as_os_str() == "-" {
                let mut text = String::new();
                let r = std::io::Read::read_to_string(&mut std::io::stdin(), &mut text);
                let source = std::env::current_dir()
                    .context("current directory")?
                    .join("(stdin)");
                specs.push((source, r.map(|_| text)));
            } else if f.is_dir() {
                let mut paths: Vec<PathBuf> = match std::fs::read_dir(f) {
                    Ok(d) => d
                        .flatten()
                        .map(|e| e.path())
                        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
                        .collect(),
                    Err(e) => {
                        eprintln!("{}: {e}", f.display());
                        return Ok(ExitCode::from(EXIT_INVALID));
                    }
                };
                paths.sort();
                if paths.is_empty() {
                    eprintln!("{}: no *.toml pod specs in this directory", f.display());
                    return Ok(ExitCode::from(EXIT_INVALID));
                }
                for p in paths {
                    let text = std::fs::read_to_string(&p);
                    specs.push((p, text));
                }
            } else {
                specs.push((f.clone(), std::fs::read_to_string(f)));
            }
        }
        let client = Client::new(&config.socket);
        let rt = runtime()?;
        // The worst outcome decides the exit status (invalid input over a refusal over none).
        let mut worst = EXIT_OK;
        for (path, text) in specs {
            let code = match text {
                Err(e) => {
                    eprintln!("{}: cannot read pod spec: {e}", path.display());
                    EXIT_INVALID
                }
                Ok(text) => {
                    let source = std::path::absolute(&path).context("absolute path")?;
                    let body = json!({"source": source, "spec": text});
                    match rt.block_on(client.json(Method::POST, "/v1/pods", Some(&body))) {
                        Ok(v) => {
                            let ip = v["pod"]["ip"].as_str().unwrap_or("-");
                            let name = v["pod"]["name"].as_str().unwrap_or("?");
                            let action = v["action"].as_str().unwrap_or("applied");
                            println!("pod/{name} {action} (ip {ip})");
                            EXIT_OK
                        }
                        Err(e) => match report(e) {
                            // No daemon: the other specs would fail the same way.
                            EXIT_RUNTIME => return Ok(ExitCode::from(EXIT_RUNTIME)),
                            code => code,
                        },
                    }
                }
            };
            worst = worst.max(code);
        }
        Ok(ExitCode::from(worst))
    }
}

/// `5s`, `3m`, `2h`, `4d`, as kubectl prints ages.
fn age(secs: u64) -> String {
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 2 * 3600 => format!("{}m", s / 60),
        s if s < 2 * 86400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

/// Prints rows as columns (the first row is the header).
fn print_table(rows: &[Vec<String>]) {
    print!("{}", peapod::table::render(rows));
}

/// `64Mi`, `512Ki`: bytes as kubectl top prints them.
fn binary_size(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 30 => format!("{:.1}Gi", b as f64 / (1u64 << 30) as f64),
        b if b >= 1 << 20 => format!("{}Mi", b >> 20),
        b => format!("{}Ki", b.div_ceil(1024)),
    }
}

impl Top {
    pub(super) fn exec(self, config: Config) -> anyhow::Result<ExitCode> {
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

impl Ps {
    pub(super) fn exec(self, config: Config) -> anyhow::Result<ExitCode> {
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

impl Inspect {
    pub(super) fn exec(self, config: Config) -> anyhow::Result<ExitCode> {
        let pod = match pod_name(&self.pod) {
            Ok(p) => p,
            Err(code) => return Ok(code),
        };
        let r = runtime()?.block_on(Client::new(&config.socket).get(&format!("/v1/pods/{pod}")));
        Ok(done_for(&config, pod, r, |v| {
            println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default())
        }))
    }
}

impl Restart {
    pub(super) fn exec(self, config: Config) -> anyhow::Result<ExitCode> {
        let client = Client::new(&config.socket);
        let rt = runtime()?;
        let target = match split(&self.target) {
            Ok(t) => t,
            Err(code) => return Ok(code),
        };
        Ok(match target {
            (pod, Some(c)) => done(
                rt.block_on(client.json(
                    Method::POST,
                    &format!("/v1/pods/{pod}/containers/{c}/restart"),
                    None,
                )),
                |_| println!("{pod}/{c} restarted in place"),
            ),
            (pod, None) => done_for(
                &config,
                pod,
                rt.block_on(client.json(Method::POST, &format!("/v1/pods/{pod}/restart"), None)),
                |v| {
                    println!(
                        "pod/{pod} re-created (ip {})",
                        v["ip"].as_str().unwrap_or("-")
                    )
                },
            ),
        })
    }
}

impl Delete {
    pub(super) fn exec(self, config: Config) -> anyhow::Result<ExitCode> {
        let pod = match pod_name(&self.pod) {
            Ok(p) => p,
            Err(code) => return Ok(code),
        };
        let r = runtime()?.block_on(Client::new(&config.socket).json(
            Method::DELETE,
            &format!("/v1/pods/{pod}"),
            None,
        ));
        Ok(done_for(&config, pod, r, |_| println!("pod/{pod} deleted")))
    }
}

impl Logs {
    pub(super) fn exec(self, config: Config) -> anyhow::Result<ExitCode> {
        let (pod, container) = match split(&self.target) {
            Ok(t) => t,
            Err(code) => return Ok(code),
        };
        let container = match (container, self.container.as_deref()) {
            (Some(a), Some(b)) if a != b => {
                eprintln!(
                    "peapod: two containers named: {a:?} (in {}) and {b:?} (-c)",
                    self.target
                );
                return Ok(ExitCode::from(EXIT_INVALID));
            }
            (Some(c), _) => Some(c),
            (None, Some(c)) => match split(c) {
                Ok((c, None)) => Some(c),
                Ok(_) => {
                    eprintln!("peapod: {c:?} is not a container name");
                    return Ok(ExitCode::from(EXIT_INVALID));
                }
                Err(code) => return Ok(code),
            },
            (None, None) => None,
        };
        let since = self.since.map(|d| std::time::SystemTime::now() - d);
        let mut path = format!("/v1/pods/{pod}/logs?follow={}", self.follow);
        if let Some(c) = container {
            path.push_str(&format!("&container={c}"));
        }
        if let Some(n) = self.tail {
            path.push_str(&format!("&tail={n}"));
        }
        if self.previous {
            path.push_str("&previous=true");
        }
        let client = Client::new(&config.socket);
        let timestamps = self.timestamps;
        runtime()?.block_on(async move {
            let resp = match client.send(Method::GET, &path, None).await {
                Ok(r) => r,
                Err(e) => return Ok(fail(e)),
            };
            let mut body = resp.into_body();
            let mut pending = Vec::new();
            let mut out = std::io::stdout().lock();
            loop {
                let frame = tokio::select! {
                    f = body.frame() => f,
                    _ = tokio::signal::ctrl_c() => break,
                };
                let Some(frame) = frame else { break };
                let frame = frame.context("reading the log stream")?;
                let Some(data) = frame.data_ref() else {
                    continue;
                };
                pending.extend_from_slice(data);
                while let Some(nl) = pending.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = pending.drain(..=nl).collect();
                    let line = String::from_utf8_lossy(&line[..nl]);
                    print_record(&mut out, &line, timestamps, since)?;
                }
                out.flush()?;
            }
            Ok(ExitCode::from(EXIT_OK))
        })
    }
}

/// Prints one CRI record as the container wrote it: a partial record without its newline.
fn print_record(
    out: &mut impl Write,
    line: &str,
    timestamps: bool,
    since: Option<std::time::SystemTime>,
) -> std::io::Result<()> {
    let Some(r) = cri::parse(line) else {
        return writeln!(out, "{line}");
    };
    if let Some(since) = since
        && humantime::parse_rfc3339(r.time).is_ok_and(|t| t < since)
    {
        return Ok(());
    }
    if timestamps {
        write!(out, "{} ", r.time)?;
    }
    if r.partial {
        write!(out, "{}", r.text)
    } else {
        writeln!(out, "{}", r.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_drops_older_records() {
        let since = humantime::parse_rfc3339("2026-11-25T10:00:00Z").unwrap();
        let mut out = Vec::new();
        for line in [
            "2026-11-25T09:59:59.999999999Z stdout F old",
            "2026-11-25T10:00:00.000000001Z stdout F new",
            "not a record",
        ] {
            print_record(&mut out, line, false, Some(since)).unwrap();
        }
        assert_eq!(String::from_utf8(out).unwrap(), "new\nnot a record\n");
    }

    #[test]
    fn ages_like_kubectl() {
        assert_eq!(age(5), "5s");
        assert_eq!(age(600), "10m");
        assert_eq!(age(3 * 3600), "3h");
        assert_eq!(age(3 * 86400), "3d");
    }

    #[test]
    fn records_print_as_written() {
        let mut out = Vec::new();
        for l in [
            "2026-11-25T10:00:00.000000001Z stdout P hel",
            "2026-11-25T10:00:00.000000002Z stdout F lo",
            "2026-11-25T10:00:00.000000003Z stderr F oops",
        ] {
            print_record(&mut out, l, false, None).unwrap();
        }
        assert_eq!(String::from_utf8(out).unwrap(), "hello\noops\n");
    }
}
