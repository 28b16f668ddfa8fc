//! The process log, on stderr: plain (with ANSI colours on a terminal), or, under systemd
//! (`JOURNAL_STREAM` set), one line per event with its syslog priority as a `<N>` prefix, which
//! journald turns into the entry's level (so `journalctl -p warning` works).

use std::fmt;
use std::io::IsTerminal;

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// `PEAPOD_LOG` (a tracing filter) wins over `level` (from the config file).
pub(crate) fn init(level: &str) {
    let filter = EnvFilter::try_from_env("PEAPOD_LOG")
        .unwrap_or_else(|_| EnvFilter::try_new(level).unwrap_or_else(|_| EnvFilter::new("info")));
    // A failed write (stderr a closed pipe, a full disk) is dropped: the subscriber's own report
    // of it would `eprintln!`, which panics on EPIPE, mid-way through a pod's cleanup.
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .log_internal_errors(false)
        .with_env_filter(filter);
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        builder.event_format(Journald).init();
    } else {
        builder
            .with_target(false)
            .with_ansi(std::io::stderr().is_terminal())
            .init();
    }
}

/// `<3>message field=value`: sd-daemon(3) priority prefixes.
struct Journald;

/// The syslog priority journald reads from a `<N>` prefix.
fn priority(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        _ => 7,
    }
}

impl<S, N> FormatEvent<S, N> for Journald
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        write!(writer, "<{}>", priority(event.metadata().level()))?;
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_map_to_syslog_priorities() {
        assert_eq!(priority(&Level::ERROR), 3);
        assert_eq!(priority(&Level::WARN), 4);
        assert_eq!(priority(&Level::INFO), 6);
        assert_eq!(priority(&Level::DEBUG), 7);
    }
}
