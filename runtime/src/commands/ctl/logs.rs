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
            let resp = match client.send(Method::GET, &path, None::<&()>).await {
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
                    print_record(&mut out, &line, timestamps, since)
                        .unwrap_or_else(|e| write_failed(&e));
                }
                out.flush().unwrap_or_else(|e| write_failed(&e));
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
