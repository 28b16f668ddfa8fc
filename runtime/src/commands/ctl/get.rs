//! `peapod get pods` (and `ps`, the same list with peapod's first columns).

use std::collections::BTreeMap;

use peapod::spec::labels::Selector;
use peapod::wire::{PodList, PodView, State};

use super::*;

/// Which pods, and how to show them (shared by `get pods` and `ps`).
#[derive(clap::Args, Debug)]
pub(crate) struct Listing {
    /// Only these pods (`NAME` or `pod/NAME`; one that does not exist: status 1)
    pods: Vec<String>,
    /// Output: table, wide (more columns), json, yaml, or name (`pod/NAME` lines)
    #[arg(short = 'o', long, default_value = "table",
          value_parser = ["table", "wide", "json", "yaml", "name"])]
    output: String,
    /// Only pods whose labels match: `app=web`, `tier!=db`, `canary`, `!canary`, joined by commas
    #[arg(short = 'l', long = "selector", value_name = "SELECTOR")]
    selector: Option<String>,
    /// After the list, print each pod again when it changes (Ctrl-C ends it)
    #[arg(short = 'w', long)]
    watch: bool,
}

/// List pods as kubectl does: `get pods [NAME...] [-o wide|json|yaml|name] [-l SELECTOR] [-w]`.
#[derive(clap::Args, Debug)]
pub(crate) struct Get {
    /// What to list: `pods` (`pod`, `po`), or `pod/NAME`
    resource: String,
    #[command(flatten)]
    listing: Listing,
}

/// List pods: status, IP, ready containers, restarts, age, source (`get pods` in peapod's first
/// columns).
#[derive(clap::Args, Debug)]
pub(crate) struct Ps {
    #[command(flatten)]
    listing: Listing,
}

impl Get {
    pub(crate) fn exec(mut self, config: Config) -> anyhow::Result<ExitCode> {
        match self.resource.as_str() {
            "pods" | "pod" | "po" => {}
            r if r.starts_with("pod/") => self.listing.pods.insert(0, self.resource.clone()),
            other => {
                eprintln!(
                    "peapod: {other:?}: peapod lists pods (`get pods`); events are `peapod events`"
                );
                return Ok(ExitCode::from(EXIT_INVALID));
            }
        }
        self.listing.exec(config, Columns::Kubectl)
    }
}

impl Ps {
    pub(crate) fn exec(self, config: Config) -> anyhow::Result<ExitCode> {
        self.listing.exec(config, Columns::Peapod)
    }
}

/// The table's columns: kubectl's order (`get`), or peapod's first (`ps`, kept for scripts).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Columns {
    Kubectl,
    Peapod,
}

impl Listing {
    fn exec(mut self, config: Config, columns: Columns) -> anyhow::Result<ExitCode> {
        for p in &mut self.pods {
            let name = p.strip_prefix("pod/").unwrap_or(p).to_string();
            if let Err(code) = pod_name(&name) {
                return Ok(code);
            }
            *p = name;
        }
        let selector = match self.selector.as_deref().map(Selector::parse).transpose() {
            Ok(s) => s,
            Err(e) => {
                eprintln!("peapod: -l: {e}");
                return Ok(ExitCode::from(EXIT_INVALID));
            }
        };
        let client = Client::new(&config.socket);
        let rt = runtime()?;
        let list = match rt.block_on(client.pods()) {
            Ok(l) => l,
            Err(e) => return Ok(fail(e)),
        };
        let mut list = list;
        // `get` lists `peapod run`'s pods too; `ps` keeps to the daemon's (and names a run pod
        // as such when asked for it), as it always has.
        if columns == Columns::Kubectl {
            list.pods.extend(run_pods(&config, &list.pods));
        }
        let missing: Vec<&String> = (self.pods.iter())
            .filter(|n| !list.pods.iter().any(|p| &p.name == *n))
            .collect();
        // The pods directory's problems go to stderr in every format: stdout stays the table,
        // or the pods.
        for problem in &list.problems {
            eprintln!("warning: {problem}");
        }
        let pods = self.pick(list, selector.as_ref());
        let show = Show {
            output: &self.output,
            columns,
        };
        show.all(&pods);
        if !missing.is_empty() {
            for m in &missing {
                eprintln!("peapod: no pod named {m:?}");
                hint_run(&config, m);
            }
            return Ok(ExitCode::from(EXIT_FAILED));
        }
        if !self.watch {
            return Ok(ExitCode::from(EXIT_OK));
        }
        // Watch: poll once a second; a pod is printed again when what it shows changed (its
        // age aside), and a pod that went is printed once more as `deleted`.
        let mut last: BTreeMap<String, PodView> =
            pods.into_iter().map(|p| (p.name.clone(), p)).collect();
        loop {
            std::thread::sleep(std::time::Duration::from_secs(1));
            let mut list = match rt.block_on(client.pods()) {
                Ok(l) => l,
                Err(e) => return Ok(fail(e)),
            };
            if columns == Columns::Kubectl {
                list.pods.extend(run_pods(&config, &list.pods));
            }
            let now: BTreeMap<String, PodView> = (self.pick(list, selector.as_ref()).into_iter())
                .map(|p| (p.name.clone(), p))
                .collect();
            for (name, p) in &now {
                let changed = last.get(name).is_none_or(|old| {
                    let mut old = old.clone();
                    old.age_seconds = p.age_seconds;
                    old != *p
                });
                if changed {
                    show.change(p);
                }
            }
            for (name, p) in &last {
                if !now.contains_key(name) {
                    let mut gone = p.clone();
                    gone.status = "deleted".into();
                    gone.containers.clear();
                    show.change(&gone);
                }
            }
            last = now;
        }
    }

    /// The pods named (all when none is), that the selector picks.
    fn pick(&self, list: PodList, selector: Option<&Selector>) -> Vec<PodView> {
        (list.pods.into_iter())
            .filter(|p| self.pods.is_empty() || self.pods.contains(&p.name))
            .filter(|p| selector.is_none_or(|s| s.matches(&p.labels)))
            .collect()
    }
}

/// The pods `peapod run` runs on this run dir (their locks are held, the daemon does not have
/// them), as far as the files say: name, address (from the leases, when this user may read
/// them), namespace, age; source `run`. Their containers are `run`'s to show.
pub(super) fn run_pods(config: &Config, daemons: &[PodView]) -> Vec<PodView> {
    let held = peapod::host::sandbox::held_pods(config);
    let held: Vec<_> = (held.into_iter())
        .filter(|(n, _)| !daemons.iter().any(|p| &p.name == n))
        .collect();
    if held.is_empty() {
        return Vec::new();
    }
    let leases = peapod::host::ipam::Ipam::new(config)
        .leases()
        .unwrap_or_default();
    (held.into_iter())
        .map(|(name, made)| {
            let netns = config.netns_path(&name);
            PodView {
                ip: leases.get(&name).copied(),
                netns: netns.exists().then_some(netns),
                ..PodView::bare(&name, "running", "run".into(), made)
            }
        })
        .collect()
}

/// How pods are printed.
struct Show<'a> {
    output: &'a str,
    columns: Columns,
}

impl Show<'_> {
    /// The list.
    fn all(&self, pods: &[PodView]) {
        match self.output {
            "json" => outln!(
                "{}",
                serde_json::to_string_pretty(pods).expect("pods serialize")
            ),
            "yaml" => outln!("{}", yaml(&pods).trim_end()),
            "name" => pods.iter().for_each(|p| outln!("pod/{}", p.name)),
            _ => {
                let mut rows = vec![self.header()];
                rows.extend(pods.iter().map(|p| self.row(p)));
                print_table(&rows);
            }
        }
    }

    /// One pod that changed (under `-w`).
    fn change(&self, p: &PodView) {
        match self.output {
            "json" => outln!("{}", serde_json::to_string(p).expect("pod serializes")),
            "yaml" => outln!("---\n{}", yaml(p).trim_end()),
            "name" => outln!("pod/{}", p.name),
            // The rows line up with the header printed first only roughly (widths may grow),
            // as kubectl's do.
            _ => {
                let table = peapod::table::render(&[self.header(), self.row(p)]);
                outln!("{}", table.lines().nth(1).unwrap_or_default());
            }
        }
    }

    fn header(&self) -> Vec<String> {
        let cols: &[&str] = match (self.columns, self.output) {
            (Columns::Peapod, _) => &["NAME", "STATUS", "IP", "READY", "RESTARTS", "AGE", "SOURCE"],
            (Columns::Kubectl, "wide") => &[
                "NAME", "READY", "STATUS", "RESTARTS", "AGE", "IP", "SOURCE", "LABELS",
            ],
            (Columns::Kubectl, _) => &["NAME", "READY", "STATUS", "RESTARTS", "AGE"],
        };
        cols.iter().map(|c| c.to_string()).collect()
    }

    fn row(&self, p: &PodView) -> Vec<String> {
        let (ready, live) = p.ready_count();
        let ready = format!("{ready}/{live}");
        let ip = ip_or_dash(p.ip);
        match (self.columns, self.output) {
            (Columns::Peapod, _) => vec![
                p.name.clone(),
                p.status.clone(),
                ip,
                ready,
                restarts(p),
                age(p.age_seconds),
                p.source.clone(),
            ],
            (Columns::Kubectl, wide) => {
                let mut row = vec![
                    p.name.clone(),
                    ready,
                    display_status(p),
                    restarts(p),
                    age(p.age_seconds),
                ];
                if wide == "wide" {
                    let labels: Vec<String> =
                        p.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
                    let labels = if labels.is_empty() {
                        "<none>".into()
                    } else {
                        labels.join(",")
                    };
                    row.extend([ip, p.source.clone(), labels]);
                }
                row
            }
        }
    }
}

/// `value` as YAML.
pub(super) fn yaml(value: &impl serde::Serialize) -> String {
    serde_yaml_ng::to_string(value).expect("plain data serializes")
}

/// The STATUS kubectl would show: why a container is not running when one is not (its backoff
/// after a crash: `CrashLoopBackOff`; its end: `OOMKilled`, `Error(1)`, ...), else the pod's
/// phase in kubectl's words.
pub(super) fn display_status(p: &PodView) -> String {
    let live = p
        .containers
        .iter()
        .filter(|c| c.kind != peapod::wire::Kind::Init);
    for c in live.clone() {
        // Waiting after a run: its back-off before a restart.
        if c.state == State::Waiting && (c.restarts > 0 || c.last.is_some()) {
            return "CrashLoopBackOff".into();
        }
    }
    let ended = |c: &peapod::wire::ContainerStatus| match (c.reason.as_deref(), c.exit_code) {
        (Some("Error"), Some(code)) => format!("Error({code})"),
        (Some(r), _) => r.to_string(),
        (None, _) => "Error".into(),
    };
    if p.status == "failed" {
        if let Some(c) = (p.containers.iter())
            .find(|c| c.state == State::Exited && c.reason.as_deref() != Some("Completed"))
        {
            return ended(c);
        }
        return if p.error.is_some() {
            "Failed".into()
        } else {
            "Error".into()
        };
    }
    match p.status.as_str() {
        "running" => "Running",
        "starting" => "ContainerCreating",
        "restarting" => "CrashLoopBackOff",
        "succeeded" => "Completed",
        "waiting" => "CrashGuard",
        "terminating" => "Terminating",
        "deleted" => "Deleted",
        other => return other.to_string(),
    }
    .into()
}

/// RESTARTS as kubectl shows it, with the last run's end: `2 (OOMKilled, 30s ago)`.
pub(super) fn restarts(p: &PodView) -> String {
    let last = (p.containers.iter())
        .filter(|c| c.restarts > 0)
        .filter_map(|c| Some((c.last_state.as_ref()?, c)))
        .max_by_key(|(t, _)| t.finished_at);
    match last {
        None => p.restarts.to_string(),
        Some((t, _)) => {
            let ago = t
                .finished_at
                .and_then(|f| std::time::SystemTime::now().duration_since(f).ok())
                .map(|d| age(d.as_secs()))
                .unwrap_or_else(|| "?".into());
            let reason = match (t.reason.as_str(), t.exit_code) {
                ("Error", Some(code)) => format!("Error({code})"),
                (r, _) => r.to_string(),
            };
            format!("{} ({reason}, {ago} ago)", p.restarts)
        }
    }
}
