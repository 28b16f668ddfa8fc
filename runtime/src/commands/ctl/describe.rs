//! `peapod describe pod NAME`.

use std::fmt::Write as _;

use peapod::wire::{ContainerStatus, Event, PodView, State};

use super::*;

/// Show one pod in detail, as kubectl describe does: status and conditions, each container's
/// state, last state, reason, exit code, restarts, probes and their last failure, limits,
/// volumes, ports, and the pod's recent events.
#[derive(clap::Args, Debug)]
pub(crate) struct Describe {
    /// `pod NAME`, or `pod/NAME`
    #[arg(num_args = 1..=2, required = true, value_name = "pod NAME")]
    what: Vec<String>,
}

impl Describe {
    pub(crate) fn exec(self, config: Config) -> anyhow::Result<ExitCode> {
        let name = match self.what.as_slice() {
            [kind, name] if matches!(kind.as_str(), "pod" | "pods" | "po") => name.clone(),
            [one] if one.starts_with("pod/") => one["pod/".len()..].to_string(),
            _ => {
                eprintln!("peapod: describe what? `peapod describe pod NAME` (or pod/NAME)");
                return Ok(ExitCode::from(EXIT_INVALID));
            }
        };
        let pod = match pod_name(&name) {
            Ok(p) => p,
            Err(code) => return Ok(code),
        };
        let client = Client::new(&config.socket);
        let r = runtime()?.block_on(async {
            let view = client.pod(pod).await?;
            let events = client.events(Some(pod)).await?;
            Ok((view, events.events))
        });
        Ok(done_for(&config, pod, r, |(view, events)| {
            outln!("{}", describe(&view, &events).trim_end())
        }))
    }
}

/// The text of `describe`.
fn describe(p: &PodView, events: &[Event]) -> String {
    let mut s = String::new();
    let field = |s: &mut String, k: &str, v: &str| {
        let _ = writeln!(s, "{:<14}{v}", format!("{k}:"));
    };
    field(&mut s, "Name", &p.name);
    let labels: Vec<String> = p.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    field(
        &mut s,
        "Labels",
        &if labels.is_empty() {
            "<none>".into()
        } else {
            labels.join(", ")
        },
    );
    field(&mut s, "Status", &get::display_status(p));
    field(&mut s, "IP", &ip_or_dash(p.ip));
    field(
        &mut s,
        "Namespace",
        &p.netns
            .as_ref()
            .map_or("-".into(), |n| n.display().to_string()),
    );
    field(&mut s, "Source", &p.source);
    field(
        &mut s,
        "Created",
        &format!("{} ({} ago)", p.created, age(p.age_seconds)),
    );
    if !p.ports.is_empty() {
        field(&mut s, "Ports", &p.ports.join(", "));
    }
    if let Some(e) = &p.error {
        field(&mut s, "Error", e);
    }
    s.push_str("Conditions:\n");
    let live = p
        .containers
        .iter()
        .filter(|c| c.kind != peapod::wire::Kind::Init);
    let started = live.clone().all(|c| c.state == State::Running);
    let _ = writeln!(s, "  {:<16}{}", "ContainersReady", title(p.ready));
    let _ = writeln!(s, "  {:<16}{}", "Running", title(started && p.ip.is_some()));
    if !p.volumes.is_empty() {
        s.push_str("Volumes:\n");
        for v in &p.volumes {
            let limit = v
                .size_limit
                .map(|l| format!(", size limit {}", binary_size(l)));
            let _ = writeln!(
                s,
                "  {} ({}{}): {}",
                v.name,
                v.kind,
                limit.unwrap_or_default(),
                v.host_path.display()
            );
        }
    }
    s.push_str("Containers:\n");
    for c in &p.containers {
        container(&mut s, c, p.spec.iter().find(|x| x.name == c.name));
    }
    for spec in p
        .spec
        .iter()
        .filter(|x| !p.containers.iter().any(|c| c.name == x.name))
    {
        let _ = writeln!(s, "  {} ({:?}): not started", spec.name, spec.kind);
    }
    s.push_str("Events:\n");
    if events.is_empty() {
        s.push_str("  <none>\n");
    } else {
        let mut rows = vec![
            ["TYPE", "REASON", "AGE", "OBJECT", "MESSAGE"]
                .map(String::from)
                .to_vec(),
        ];
        // The most recent 20, oldest first.
        for e in &events[events.len().saturating_sub(20)..] {
            rows.push(vec![
                events::kind(e).into(),
                e.reason.clone(),
                events::seen(e),
                e.object.clone(),
                e.message.clone(),
            ]);
        }
        for line in peapod::table::render(&rows).lines() {
            let _ = writeln!(s, "  {line}");
        }
    }
    s
}

fn title(b: bool) -> &'static str {
    if b { "True" } else { "False" }
}

fn time(t: Option<std::time::SystemTime>) -> String {
    t.map_or("-".into(), |t| {
        humantime::format_rfc3339_seconds(t).to_string()
    })
}

fn container(s: &mut String, c: &ContainerStatus, spec: Option<&peapod::wire::ContainerSpecView>) {
    let kind = match c.kind {
        peapod::wire::Kind::Init => "init",
        peapod::wire::Kind::Sidecar => "sidecar",
        peapod::wire::Kind::App => "app",
    };
    let _ = writeln!(s, "  {} ({kind}):", c.name);
    let mut field = |k: &str, v: String| {
        let _ = writeln!(s, "    {:<16}{v}", format!("{k}:"));
    };
    if let Some(spec) = spec {
        match &spec.image {
            Some(image) => field("Image", image.clone()),
            None => field("Module", spec.module.display().to_string()),
        }
        if !spec.args.is_empty() {
            field("Args", spec.args.join(" "));
        }
    }
    let state = match c.state {
        State::Running => format!("Running (started {})", time(c.started_at)),
        State::Waiting if c.last.is_some() => {
            "Waiting (CrashLoopBackOff: back-off before a restart)".into()
        }
        State::Waiting => "Waiting (starting)".into(),
        State::Exited => format!(
            "Terminated: {} (exit code {})",
            c.reason.as_deref().unwrap_or("-"),
            c.exit_code.map_or("-".into(), |e| e.to_string())
        ),
    };
    field("State", state);
    if let Some(t) = &c.last_state {
        field(
            "Last State",
            format!(
                "Terminated: {} (exit code {}): {}; started {}, finished {}",
                t.reason,
                t.exit_code.map_or("-".into(), |e| e.to_string()),
                t.message,
                time(t.started_at),
                time(t.finished_at)
            ),
        );
    }
    field("Ready", title(c.ready).into());
    field("Restarts", c.restarts.to_string());
    if let Some(spec) = spec {
        field("Restart Policy", spec.restart_policy.clone());
        let cpu = spec.cpu_limit.map_or("none".into(), |m| format!("{m}m"));
        field(
            "Limits",
            format!("memory {}, cpu {cpu}", binary_size(spec.memory_limit)),
        );
        for p in &spec.probes {
            field("Probe", p.clone());
        }
        if !spec.mounts.is_empty() {
            field("Mounts", spec.mounts.join(", "));
        }
        if !spec.ports.is_empty() {
            field("Ports", spec.ports.join(", "));
        }
    }
    if let Some(f) = &c.probe_failure {
        field("Probe Failure", f.clone());
    }
    field(
        "Use",
        format!(
            "cpu {:.2}s, memory {}",
            c.cpu_seconds,
            binary_size(c.memory_bytes)
        ),
    );
}
