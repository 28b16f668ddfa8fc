//! The commands that talk to the daemon: `apply`, `ps`, `top`, `inspect`, `logs`, `restart`,
//! `delete`, `pull`, `images`, `image`, `rollout`.
//!
//! Exit status: 0 done; 1 the daemon refused (no such pod, conflict, failure); 2 invalid input
//! (a spec that does not validate, bad arguments); 3 the daemon cannot be reached. One file a
//! subcommand; what they share (exit statuses, reporting, names, tables) is here.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use http_body_util::BodyExt;
use hyper::{Method, StatusCode};
use peapod::client::{Client, ClientError};
use peapod::config::Config;
use peapod::logs::cri;

use super::{EXIT_FAILED, EXIT_INVALID, EXIT_OK, EXIT_RUNTIME, outln, write_failed};

mod apply;
mod delete;
mod describe;
mod events;
mod get;
mod images;
mod inspect;
mod logs;
mod restart;
mod rollout;
mod top;

pub(super) use apply::Apply;
pub(super) use delete::Delete;
pub(super) use describe::Describe;
pub(super) use events::Events;
pub(super) use get::{Get, Ps};
pub(super) use images::{Image, Images, Pull, Push};
pub(super) use inspect::Inspect;
pub(super) use logs::Logs;
pub(super) use restart::Restart;
pub(super) use rollout::Rollout;
pub(super) use top::Top;

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
/// that act on pods cannot reach it.
fn hint_run(config: &Config, pod: &str) {
    if peapod::host::sandbox::held(config, pod) {
        eprintln!(
            "peapod: pod {pod:?} runs under `peapod run`, not the daemon: get, inspect and logs \
             read it; restart and delete act on the daemon's pods only (stop it where it runs: \
             Ctrl-C or SIGTERM)"
        );
    }
}

/// True when the daemon has no pod `pod` (or there is no daemon) and `peapod run` runs one of
/// that name: its lock is held by a process that is not the daemon. `r` is the daemon's answer
/// about the pod.
fn is_run_pod<T>(config: &Config, pod: &str, r: &Result<T, ClientError>) -> bool {
    let daemon_lacks = matches!(
        r,
        Err(ClientError::Api {
            status: StatusCode::NOT_FOUND,
            ..
        }) | Err(ClientError::Unreachable { .. })
    );
    daemon_lacks && peapod::host::sandbox::held(config, pod)
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

/// Every spec that `-f` arguments name, in order, each with its text or why it cannot be read:
/// a directory's `*.toml` (and its subdirectories'), sorted; `-` is standard input (named
/// `(stdin)` in the current directory, so module paths are relative to it). `Err`: a directory
/// that cannot be listed or holds no spec, said here (invalid input).
type SpecTexts = Vec<(PathBuf, std::io::Result<String>)>;
fn spec_texts(files: &[PathBuf]) -> anyhow::Result<Result<SpecTexts, ExitCode>> {
    let mut specs = Vec::new();
    for f in files {
        if f.as_os_str() == "-" {
            let mut text = String::new();
            let r = std::io::Read::read_to_string(&mut std::io::stdin(), &mut text);
            let source = std::env::current_dir()
                .context("current directory")?
                .join("(stdin)");
            specs.push((source, r.map(|_| text)));
        } else if f.is_dir() {
            let paths = match peapod::spec::spec_files_recursive(f) {
                Ok(paths) => paths,
                Err(e) => {
                    eprintln!("{}: {e}", f.display());
                    return Ok(Err(ExitCode::from(EXIT_INVALID)));
                }
            };
            if paths.is_empty() {
                eprintln!(
                    "{}: no pod specs (*.toml, *.yaml) in this directory",
                    f.display()
                );
                return Ok(Err(ExitCode::from(EXIT_INVALID)));
            }
            for p in paths {
                let text = std::fs::read_to_string(&p);
                specs.push((p, text));
            }
        } else {
            specs.push((f.clone(), std::fs::read_to_string(f)));
        }
    }
    Ok(Ok(specs))
}

/// A pod's address, or `-` while it has none.
fn ip_or_dash(ip: Option<std::net::Ipv4Addr>) -> String {
    ip.map_or_else(|| "-".into(), |ip| ip.to_string())
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
    super::write_out(format_args!("{}", peapod::table::render(rows)));
}

/// `64Mi`, `512Ki`: bytes as kubectl top prints them.
fn binary_size(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 30 => format!("{:.1}Gi", b as f64 / (1u64 << 30) as f64),
        b if b >= 1 << 20 => format!("{}Mi", b >> 20),
        b => format!("{}Ki", b.div_ceil(1024)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_like_kubectl() {
        assert_eq!(age(5), "5s");
        assert_eq!(age(600), "10m");
        assert_eq!(age(3 * 3600), "3h");
        assert_eq!(age(3 * 86400), "3d");
    }
}
