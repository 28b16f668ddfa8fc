//! `peapod logs`.

use super::*;

/// Print a container's log (kept in CRI format, so exited containers have one too).
#[derive(clap::Args, Debug)]
pub(crate) struct Logs {
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
    /// The container's previous run (before its last restart in place), as kubectl's; when it
    /// has not restarted since the pod's last re-create, its output in the previous sandbox
    #[arg(short, long)]
    previous: bool,
    /// The output in the pod's previous sandbox (before its last re-create: `restart POD`, an
    /// edited file, a re-apply), all its runs
    #[arg(long, conflicts_with = "previous")]
    previous_sandbox: bool,
    /// The container (as POD/CONTAINER does)
    #[arg(short, long)]
    container: Option<String>,
    /// Only records newer than this, e.g. 10s, 5m, 2h
    #[arg(long, value_parser = humantime::parse_duration)]
    since: Option<std::time::Duration>,
    /// Every container of the pod, one after the other (with -f: side by side, line by line)
    #[arg(long, conflicts_with = "container")]
    all_containers: bool,
    /// Begin each line with its source, `[pod/POD/CONTAINER] `
    #[arg(long)]
    prefix: bool,
}

impl Logs {
    pub(crate) fn exec(self, config: Config) -> anyhow::Result<ExitCode> {
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
        let out = Out {
            timestamps: self.timestamps,
            since,
        };
        // A pod of `peapod run`: its files, read here.
        if peapod::host::sandbox::held(&config, pod) {
            let r = runtime()?.block_on(Client::new(&config.socket).pod(pod));
            if is_run_pod(&config, pod, &r) {
                return Ok(self.local(&config, pod, container, out));
            }
        }
        let mut query = format!("follow={}", self.follow);
        if let Some(n) = self.tail {
            query.push_str(&format!("&tail={n}"));
        }
        if self.previous {
            query.push_str("&previous=true");
        }
        if self.previous_sandbox {
            query.push_str("&previous_sandbox=true");
        }
        let client = Client::new(&config.socket);
        runtime()?.block_on(async move {
            // Which containers: the one named, every one (`--all-containers`, in the pod's
            // order), or the daemon picks the only one.
            let containers: Vec<Option<String>> = match (container, self.all_containers) {
                (Some(c), _) => vec![Some(c.to_string())],
                (None, false) => vec![None],
                (None, true) => match client.pod(pod).await {
                    Ok(v) => v.containers.into_iter().map(|c| Some(c.name)).collect(),
                    Err(e) => return Ok(fail(e)),
                },
            };
            let follow = self.follow;
            let streams = containers.into_iter().map(|c| {
                let mut path = format!("/v1/pods/{pod}/logs?{query}");
                if let Some(c) = &c {
                    path.push_str(&format!("&container={c}"));
                }
                let prefix = self.prefix.then(|| match &c {
                    Some(c) => format!("[pod/{pod}/{c}] "),
                    None => format!("[pod/{pod}] "),
                });
                out.stream(&client, path, prefix)
            });
            // Followed side by side; else one after the other, as kubectl prints them.
            let all = async {
                if follow {
                    futures::future::join_all(streams).await
                } else {
                    let mut codes = Vec::new();
                    for s in streams {
                        codes.push(s.await);
                    }
                    codes
                }
            };
            let codes = tokio::select! {
                codes = all => codes,
                _ = tokio::signal::ctrl_c() => return Ok(ExitCode::from(EXIT_OK)),
            };
            // The first failure decides (each was said as it came).
            Ok(codes
                .into_iter()
                .find(|c| *c != ExitCode::from(EXIT_OK))
                .unwrap_or(ExitCode::from(EXIT_OK)))
        })
    }
}

impl Logs {
    /// The logs of pod `pod`, which `peapod run` runs: its CRI files, read here as the daemon
    /// reads its own pods' (`-f` until the pod ends).
    fn local(&self, config: &Config, pod: &str, container: Option<&str>, out: Out) -> ExitCode {
        let settings = &config.logs;
        let dir = match self.previous_sandbox {
            true => settings.previous_dir(pod),
            false => settings.pod_dir(pod),
        };
        let names = match run_containers(&dir, pod, container, self.all_containers) {
            Ok(n) => n,
            Err(code) => return code,
        };
        let mut followers = Vec::new();
        for c in &names {
            let path = dir.join(format!("{c}.log"));
            let prefix = self.prefix.then(|| format!("[pod/{pod}/{c}] "));
            let follower = self.follow.then(|| cri::Follower::from_end(&path));
            let lines = match self.previous {
                true => match cri::previous_run(&path, settings.max_files) {
                    Ok(Some(lines)) => Ok(lines),
                    Ok(None) => {
                        eprintln!(
                            "peapod: container {c:?} of pod {pod:?} has no previous run: it has \
                             not restarted in place"
                        );
                        return ExitCode::from(EXIT_FAILED);
                    }
                    Err(e) => Err(e),
                },
                false => cri::tail(&path, self.tail),
            };
            let mut lines = match lines {
                Ok(lines) => lines,
                Err(e) => {
                    eprintln!("peapod: {}: {e}", path.display());
                    return ExitCode::from(EXIT_RUNTIME);
                }
            };
            if let Some(n) = self.tail {
                lines.drain(..lines.len().saturating_sub(n));
            }
            let mut mid = false;
            out.print(&lines, prefix.as_deref(), &mut mid);
            followers.extend(follower.map(|f| (f, prefix, mid)));
        }
        // Followed until the pod ends (its lock is let go).
        while !followers.is_empty() {
            std::thread::sleep(std::time::Duration::from_millis(200));
            let running = peapod::host::sandbox::held(config, pod);
            for (f, prefix, mid) in &mut followers {
                match f.poll() {
                    Ok(lines) => out.print(&lines, prefix.as_deref(), mid),
                    Err(e) => {
                        eprintln!("peapod: reading the log: {e}");
                        return ExitCode::from(EXIT_RUNTIME);
                    }
                }
            }
            if !running {
                break;
            }
        }
        ExitCode::from(EXIT_OK)
    }
}

/// How records are printed.
#[derive(Clone, Copy)]
struct Out {
    timestamps: bool,
    since: Option<std::time::SystemTime>,
}

impl Out {
    /// Prints the log stream of `path` (an API path) to its end, each line after `prefix`.
    async fn stream(self, client: &Client, path: String, prefix: Option<String>) -> ExitCode {
        let resp = match client.send(Method::GET, &path, None::<&()>).await {
            Ok(r) => r,
            Err(e) => return fail(e),
        };
        let mut body = resp.into_body();
        let mut pending = Vec::new();
        // Inside a line that a partial record began: no prefix before its rest.
        let mut mid = false;
        loop {
            let Some(frame) = body.frame().await else {
                break;
            };
            let frame = match frame {
                Ok(f) => f,
                Err(e) => {
                    eprintln!("peapod: reading the log stream: {e}");
                    return ExitCode::from(EXIT_RUNTIME);
                }
            };
            let Some(data) = frame.data_ref() else {
                continue;
            };
            pending.extend_from_slice(data);
            let mut lines = Vec::new();
            while let Some(nl) = pending.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = pending.drain(..=nl).collect();
                lines.push(String::from_utf8_lossy(&line[..nl]).into_owned());
            }
            self.print(&lines, prefix.as_deref(), &mut mid);
        }
        ExitCode::from(EXIT_OK)
    }

    /// Prints whole records, each line after `prefix` unless it goes on a partial record
    /// (`mid`: the last line printed was one). Written at once: streams of several containers
    /// interleave by line.
    fn print(self, lines: &[String], prefix: Option<&str>, mid: &mut bool) {
        let mut chunk = Vec::new();
        for line in lines {
            if let Some(p) = prefix
                && !*mid
            {
                chunk.extend_from_slice(p.as_bytes());
            }
            *mid = cri::parse(line).is_some_and(|r| r.partial);
            print_record(&mut chunk, line, self.timestamps, self.since).expect("writing to memory");
        }
        if !chunk.is_empty() {
            let mut stdout = std::io::stdout().lock();
            stdout
                .write_all(&chunk)
                .and_then(|()| stdout.flush())
                .unwrap_or_else(|e| write_failed(&e));
        }
    }
}

/// The containers of pod `pod` that `peapod run` runs, by their log files: the one named, or
/// every one (`all`), or the only one. Said here when none fits.
fn run_containers(
    dir: &std::path::Path,
    pod: &str,
    container: Option<&str>,
    all: bool,
) -> Result<Vec<String>, ExitCode> {
    let have = cri::LogSettings::containers_in(dir).unwrap_or_default();
    match (container, all) {
        (Some(c), _) if have.iter().any(|h| h == c) => Ok(vec![c.to_string()]),
        (None, true) if !have.is_empty() => Ok(have),
        (None, false) if have.len() == 1 => Ok(have),
        (c, _) => {
            let what = match c {
                Some(c) => format!("no container {c:?}"),
                None if have.is_empty() => "no container".to_string(),
                None => format!("{} containers: name one, as {pod}/CONTAINER", have.len()),
            };
            eprintln!(
                "peapod: pod {pod:?} (of `peapod run`) has {what}; its logs in {} are of: {}",
                dir.display(),
                if have.is_empty() {
                    "none".into()
                } else {
                    have.join(", ")
                }
            );
            Err(ExitCode::from(EXIT_FAILED))
        }
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
