//! One-line structured logs, `level=info msg="proxy listening" listen=0.0.0.0:8443`, as logfmt
//! has them: a person reads them in `peapod logs`, a machine splits them at spaces. Info goes
//! to stdout, warnings and errors to stderr (the CRI log keeps which). peapod's log adds the
//! time, so a line has none.
//!
//! ```no_run
//! let (upstream, tries) = ("127.0.0.1:8080", 3);
//! peapod_sdk::info!("forwarding"; upstream = upstream);
//! peapod_sdk::warn!("upstream down, retrying in {}s", 2; tries = tries);
//! ```

use std::fmt::{Display, Write as _};
use std::io::Write as _;

/// How much a line matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Debug,
    Info,
    Warn,
    Error,
}

impl Level {
    fn word(self) -> &'static str {
        match self {
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        }
    }
}

/// Whether `debug` lines are written: `LOG_LEVEL=debug` in the container's `env`.
fn debug_on() -> bool {
    std::env::var("LOG_LEVEL").is_ok_and(|l| l.eq_ignore_ascii_case("debug"))
}

/// The line for `msg` and `fields`, without its newline.
pub fn format(level: Level, msg: &str, fields: &[(&str, &dyn Display)]) -> String {
    let mut line = format!("level={} msg={}", level.word(), quoted(msg));
    for (k, v) in fields {
        let _ = write!(line, " {k}={}", quoted(&v.to_string()));
    }
    line
}

/// Writes one line (the macros call this).
pub fn line(level: Level, msg: &str, fields: &[(&str, &dyn Display)]) {
    if level == Level::Debug && !debug_on() {
        return;
    }
    let mut text = format(level, msg, fields);
    text.push('\n');
    // A failed write to a log has nowhere to be said.
    let _ = match level {
        Level::Debug | Level::Info => std::io::stdout().lock().write_all(text.as_bytes()),
        Level::Warn | Level::Error => std::io::stderr().lock().write_all(text.as_bytes()),
    };
}

/// `value` as logfmt writes it: bare when it has no space, quote, `=` or control character,
/// else in quotes with `"`, `\` and control characters escaped (a line stays one line).
fn quoted(value: &str) -> String {
    let bare = !value.is_empty()
        && !value
            .chars()
            .any(|c| c == ' ' || c == '"' || c == '=' || c == '\\' || c.is_control());
    if bare {
        return value.to_string();
    }
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A log line at `level`: a format string and its arguments, then `; key = value, ...`.
#[macro_export]
macro_rules! log_line {
    ($level:expr, $msg:literal $(, $arg:expr)* $(; $($key:ident = $value:expr),+ $(,)?)?) => {
        $crate::log::line(
            $level,
            &::std::format!($msg $(, $arg)*),
            &[$($((::std::stringify!($key), &$value as &dyn ::std::fmt::Display)),+)?],
        )
    };
}

/// `level=debug` (written when `LOG_LEVEL=debug`).
#[macro_export]
macro_rules! debug {
    ($($t:tt)+) => { $crate::log_line!($crate::log::Level::Debug, $($t)+) };
}

/// `level=info`, on stdout.
#[macro_export]
macro_rules! info {
    ($($t:tt)+) => { $crate::log_line!($crate::log::Level::Info, $($t)+) };
}

/// `level=warn`, on stderr.
#[macro_export]
macro_rules! warn {
    ($($t:tt)+) => { $crate::log_line!($crate::log::Level::Warn, $($t)+) };
}

/// `level=error`, on stderr.
#[macro_export]
macro_rules! error {
    ($($t:tt)+) => { $crate::log_line!($crate::log::Level::Error, $($t)+) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_logfmt() {
        let n = 3;
        assert_eq!(
            format(
                Level::Info,
                "proxy listening",
                &[("listen", &"0.0.0.0:8443"), ("n", &n)]
            ),
            "level=info msg=\"proxy listening\" listen=0.0.0.0:8443 n=3"
        );
        assert_eq!(
            format(Level::Warn, "a \"b\"\nc", &[("empty", &"")]),
            "level=warn msg=\"a \\\"b\\\"\\nc\" empty=\"\""
        );
    }
}
