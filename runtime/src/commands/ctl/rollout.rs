//! `peapod rollout history|undo|status POD`: a pod's revisions, as kubectl's rollout verbs
//! show a deployment's.

use super::*;
use peapod::wire::{Applied, RevisionState, RolloutHistory, UndoRequest};

/// Manage a pod's updates: its revisions, going back to one, waiting for one
#[derive(clap::Args, Debug)]
pub(crate) struct Rollout {
    #[command(subcommand)]
    verb: Verb,
}

#[derive(clap::Subcommand, Debug)]
enum Verb {
    /// The pod's revisions: what each ran, and whether it was proven ready or rolled back
    History { pod: String },
    /// Apply an earlier revision again (default: the last ready one before the current)
    Undo {
        pod: String,
        /// The revision to go back to
        #[arg(long)]
        to_revision: Option<u64>,
    },
    /// Wait until the pod's current revision is proven ready (exit 0) or rolled back (exit 1)
    Status {
        pod: String,
        /// Give up after this long (exit 1)
        #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
        timeout: std::time::Duration,
    },
}

fn history(
    client: &Client,
    rt: &tokio::runtime::Runtime,
    pod: &str,
) -> Result<RolloutHistory, ClientError> {
    rt.block_on(client.get::<RolloutHistory>(&format!("/v1/pods/{pod}/rollout")))
}

impl Rollout {
    pub(crate) fn exec(self, config: Config) -> anyhow::Result<ExitCode> {
        let client = Client::new(&config.socket);
        let rt = runtime()?;
        match self.verb {
            Verb::History { pod } => {
                let pod = match pod_name(&pod) {
                    Ok(p) => p,
                    Err(code) => return Ok(code),
                };
                let now = peapod::wire::epoch_secs(std::time::SystemTime::now());
                Ok(done(history(&client, &rt, pod), |h| {
                    let mut rows = vec![
                        ["REVISION", "STATE", "APPLIED", "CHANGE", "REASON"]
                            .map(String::from)
                            .to_vec(),
                    ];
                    for r in h.revisions {
                        let mark = if r.current { " (current)" } else { "" };
                        rows.push(vec![
                            r.revision.to_string(),
                            format!("{}{mark}", r.state),
                            format!("{} ago", age(now.saturating_sub(r.applied_at))),
                            r.change.join(" "),
                            r.reason.unwrap_or_default(),
                        ]);
                    }
                    print_table(&rows);
                }))
            }
            Verb::Undo { pod, to_revision } => {
                let pod = match pod_name(&pod) {
                    Ok(p) => p,
                    Err(code) => return Ok(code),
                };
                let req = UndoRequest { to_revision };
                let r = rt.block_on(client.json::<Applied>(
                    Method::POST,
                    &format!("/v1/pods/{pod}/rollout/undo"),
                    Some(&req),
                ));
                Ok(done(r, |a| {
                    outln!(
                        "pod/{pod} rolled back ({}, ip {})",
                        a.action,
                        ip_or_dash(a.pod.ip)
                    )
                }))
            }
            Verb::Status { pod, timeout } => {
                let pod = match pod_name(&pod) {
                    Ok(p) => p,
                    Err(code) => return Ok(code),
                };
                let t0 = std::time::Instant::now();
                let mut said = None;
                loop {
                    let h = match history(&client, &rt, pod) {
                        Ok(h) => h,
                        Err(e) => return Ok(fail(e)),
                    };
                    // The newest revision: the current one, or one that was rolled back.
                    let Some(last) = h.revisions.last() else {
                        return Ok(ExitCode::from(EXIT_FAILED));
                    };
                    match last.state {
                        RevisionState::Ready => {
                            outln!("pod/{pod}: revision {} is ready", last.revision);
                            return Ok(ExitCode::from(EXIT_OK));
                        }
                        RevisionState::RolledBack => {
                            let back = h
                                .revisions
                                .iter()
                                .find(|r| r.current)
                                .map_or(0, |r| r.revision);
                            eprintln!(
                                "pod/{pod}: revision {} was rolled back to revision {back}: {}",
                                last.revision,
                                last.reason.as_deref().unwrap_or("")
                            );
                            return Ok(ExitCode::from(EXIT_FAILED));
                        }
                        state => {
                            if said != Some(last.revision) {
                                outln!(
                                    "pod/{pod}: waiting for revision {} ({state})",
                                    last.revision
                                );
                                said = Some(last.revision);
                            }
                        }
                    }
                    if t0.elapsed() > timeout {
                        eprintln!(
                            "pod/{pod}: revision {} not ready within {}",
                            last.revision,
                            humantime::format_duration(timeout)
                        );
                        return Ok(ExitCode::from(EXIT_FAILED));
                    }
                    std::thread::sleep(std::time::Duration::from_millis(250));
                }
            }
        }
    }
}
