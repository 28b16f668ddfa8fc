//! `peapod events`.

use peapod::wire::{Event, EventType};

use super::*;

/// What happened to the pods, oldest first: starts, exits with their reason, back-offs, probe
/// failures, deletes (kept across daemon restarts).
#[derive(clap::Args, Debug)]
pub(crate) struct Events {
    /// Only this pod's (and its containers') events
    pod: Option<String>,
    /// After the list, print each new event as it comes (Ctrl-C ends it)
    #[arg(short = 'w', long)]
    watch: bool,
    /// Output: table, json or yaml
    #[arg(short = 'o', long, default_value = "table", value_parser = ["table", "json", "yaml"])]
    output: String,
}

impl Events {
    pub(crate) fn exec(self, config: Config) -> anyhow::Result<ExitCode> {
        let pod = match self
            .pod
            .as_deref()
            .map(|p| p.strip_prefix("pod/").unwrap_or(p))
        {
            Some(p) => match pod_name(p) {
                Ok(p) => Some(p.to_string()),
                Err(code) => return Ok(code),
            },
            None => None,
        };
        let client = Client::new(&config.socket);
        let rt = runtime()?;
        if !self.watch {
            let r = rt.block_on(client.events(pod.as_deref()));
            return Ok(done(r, |list| match self.output.as_str() {
                "json" => outln!(
                    "{}",
                    serde_json::to_string_pretty(&list.events).expect("events")
                ),
                "yaml" => outln!("{}", get::yaml(&list.events).trim_end()),
                _ => {
                    let mut rows = vec![header()];
                    rows.extend(list.events.iter().map(row));
                    print_table(&rows);
                }
            }));
        }
        if self.output == "table" {
            print_table(&[header()]);
        }
        let output = self.output.clone();
        let r = rt.block_on(async {
            tokio::select! {
                r = client.watch_events(pod.as_deref(), |e| match output.as_str() {
                    "json" => outln!("{}", serde_json::to_string(&e).expect("event")),
                    "yaml" => outln!("---\n{}", get::yaml(&e).trim_end()),
                    _ => {
                        let table = peapod::table::render(&[header(), row(&e)]);
                        outln!("{}", table.lines().nth(1).unwrap_or_default());
                    }
                }) => r,
                _ = tokio::signal::ctrl_c() => Ok(()),
            }
        });
        Ok(done(r, |()| {}))
    }
}

fn header() -> Vec<String> {
    ["LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"]
        .map(String::from)
        .to_vec()
}

/// `5s`, or `5s (x3 over 2m)` for an event seen more than once, as kubectl shows them.
pub(super) fn seen(e: &Event) -> String {
    let ago = |t: std::time::SystemTime| {
        let d = std::time::SystemTime::now()
            .duration_since(t)
            .unwrap_or_default();
        age(d.as_secs())
    };
    if e.count > 1 {
        let over = e.last_time.duration_since(e.first_time).unwrap_or_default();
        format!(
            "{} (x{} over {})",
            ago(e.last_time),
            e.count,
            age(over.as_secs())
        )
    } else {
        ago(e.last_time)
    }
}

pub(super) fn kind(e: &Event) -> &'static str {
    match e.kind {
        EventType::Normal => "Normal",
        EventType::Warning => "Warning",
    }
}

fn row(e: &Event) -> Vec<String> {
    vec![
        seen(e),
        kind(e).into(),
        e.reason.clone(),
        e.object.clone(),
        e.message.clone(),
    ]
}
