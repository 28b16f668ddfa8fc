//! Supervision in the pod spec: probes, `cpu_limit`, `lifecycle.pre_stop` and the pod's
//! `termination_grace_period` (Kubernetes' names and defaults). Validation here is pure; what
//! peapod does with them is in [`crate::run::probe`], [`crate::wasm::cpu`] and [`crate::run::supervisor`].
//!
//! ```toml
//! [pod]
//! termination_grace_period = "5s"           # default 30s: how long a pre_stop may take
//!
//! [[containers]]
//! cpu_limit = "250m"                        # millicores: at most a quarter of one core
//! [containers.liveness_probe]               # also readiness_probe, startup_probe
//! tcp_socket = { port = 8080 }              # or http_get = { path = "/healthz", port = 8080 }
//! initial_delay = "0s"
//! period = "10s"
//! timeout = "1s"
//! failure_threshold = 3
//! success_threshold = 1
//! [containers.lifecycle.pre_stop]
//! http_get = { path = "/shutdown", port = 8080 }
//! ```

use std::time::Duration;

use serde::Deserialize;

use super::Key;

/// What a probe checks, from inside the pod, on the pod's loopback (127.0.0.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeAction {
    /// A TCP connection is accepted.
    Tcp { port: u16 },
    /// An HTTP GET answers 200–399.
    Http { path: String, port: u16 },
}

impl std::fmt::Display for ProbeAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProbeAction::Tcp { port } => write!(f, "tcp 127.0.0.1:{port}"),
            ProbeAction::Http { path, port } => write!(f, "GET http://127.0.0.1:{port}{path}"),
        }
    }
}

/// A validated probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    pub action: ProbeAction,
    pub initial_delay: Duration,
    pub period: Duration,
    pub timeout: Duration,
    pub failure_threshold: u32,
    pub success_threshold: u32,
}

/// A container's probes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Probes {
    /// Failing: the container is restarted in place.
    pub liveness: Option<Probe>,
    /// Decides the container's `ready`.
    pub readiness: Option<Probe>,
    /// Liveness and readiness wait until it passes; failing: restarted like liveness.
    pub startup: Option<Probe>,
}

impl Probes {
    pub fn is_empty(&self) -> bool {
        *self == Probes::default()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawProbe {
    tcp_socket: Option<RawTcp>,
    http_get: Option<RawHttp>,
    initial_delay: Option<RawDuration>,
    period: Option<RawDuration>,
    timeout: Option<RawDuration>,
    failure_threshold: Option<u32>,
    success_threshold: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTcp {
    port: u16,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHttp {
    #[serde(default = "root_path")]
    path: String,
    port: u16,
}

fn root_path() -> String {
    "/".into()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLifecycle {
    pre_stop: Option<RawHandler>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHandler {
    http_get: RawHttp,
}

/// A duration as written: `"10s"`, `"500ms"`, or a whole number of seconds (Kubernetes'
/// `periodSeconds` habit).
pub(super) enum RawDuration {
    Text(String),
    Seconds(u64),
}

impl<'de> Deserialize<'de> for RawDuration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = RawDuration;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a duration such as \"10s\" or \"500ms\", or a number of seconds")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<RawDuration, E> {
                Ok(RawDuration::Text(v.into()))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<RawDuration, E> {
                Ok(RawDuration::Seconds(v))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<RawDuration, E> {
                u64::try_from(v)
                    .map(RawDuration::Seconds)
                    .map_err(|_| E::custom(format!("{v} seconds: a duration is not negative")))
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// The default of `termination_grace_period` (Kubernetes' 30 s).
pub const DEFAULT_GRACE: Duration = Duration::from_secs(30);

use super::Report;

/// The longest probe duration or grace period: a day (timers far in the future overflow the
/// clock's arithmetic, and nothing a probe does needs longer).
pub(super) const MAX_DURATION: Duration = Duration::from_secs(24 * 3600);

/// Parses a duration field, reporting a bad one (or one over [`MAX_DURATION`]) at `keys`.
pub(super) fn duration(
    value: Option<&RawDuration>,
    default: Duration,
    keys: &[Key],
    problem: &mut Report<'_>,
) -> Duration {
    let d = parsed(value, default, keys, problem);
    if d > MAX_DURATION {
        problem(
            keys,
            format!(
                "{} is longer than the most allowed, {}",
                humantime::format_duration(d),
                humantime::format_duration(MAX_DURATION)
            ),
        );
        return default;
    }
    d
}

fn parsed(
    value: Option<&RawDuration>,
    default: Duration,
    keys: &[Key],
    problem: &mut Report<'_>,
) -> Duration {
    match value {
        None => default,
        Some(RawDuration::Seconds(s)) => Duration::from_secs(*s),
        Some(RawDuration::Text(t)) => match humantime::parse_duration(t) {
            Ok(d) => d,
            Err(e) => {
                problem(
                    keys,
                    format!(
                        "{t:?} is not a duration ({e}); write e.g. \"500ms\", \"10s\", \"5m\" (or a number of seconds)"
                    ),
                );
                default
            }
        },
    }
}

fn http(raw: RawHttp, keys: &[Key], problem: &mut Report<'_>) -> ProbeAction {
    let mut at = keys.to_vec();
    at.push(Key::F("http_get"));
    if raw.port == 0 {
        problem(
            &[&at[..], &[Key::F("port")]].concat(),
            "must be 1-65535".into(),
        );
    }
    if !raw.path.starts_with('/') || raw.path.chars().any(|c| c.is_ascii_control() || c == ' ') {
        problem(
            &[&at[..], &[Key::F("path")]].concat(),
            format!(
                "{:?} is not a request path: it starts with '/' and has no spaces or control characters",
                raw.path
            ),
        );
    }
    ProbeAction::Http {
        path: raw.path,
        port: raw.port,
    }
}

/// Validates one probe at `keys` (e.g. `containers[0].liveness_probe`). `kind` is the probe's
/// field name: liveness and startup probes need `success_threshold = 1`, as in Kubernetes.
pub(super) fn probe(
    raw: RawProbe,
    kind: &'static str,
    keys: &[Key],
    problem: &mut Report<'_>,
) -> Probe {
    let at = |f: &'static str| [keys, &[Key::F(f)]].concat();
    let action = match (raw.tcp_socket, raw.http_get) {
        (Some(t), None) => {
            if t.port == 0 {
                problem(
                    &[&at("tcp_socket")[..], &[Key::F("port")]].concat(),
                    "must be 1-65535".into(),
                );
            }
            ProbeAction::Tcp { port: t.port }
        }
        (None, Some(h)) => http(h, keys, problem),
        (tcp, _) => {
            problem(
                keys,
                format!(
                    "{}: a probe has exactly one of tcp_socket or http_get",
                    if tcp.is_some() {
                        "both given"
                    } else {
                        "neither given"
                    }
                ),
            );
            ProbeAction::Tcp { port: 1 }
        }
    };
    let initial_delay = duration(
        raw.initial_delay.as_ref(),
        Duration::ZERO,
        &at("initial_delay"),
        problem,
    );
    let period = duration(
        raw.period.as_ref(),
        Duration::from_secs(10),
        &at("period"),
        problem,
    );
    let timeout = duration(
        raw.timeout.as_ref(),
        Duration::from_secs(1),
        &at("timeout"),
        problem,
    );
    for (field, d) in [("period", period), ("timeout", timeout)] {
        if d.is_zero() {
            problem(&at(field), "must be longer than 0".into());
        }
    }
    let failure_threshold = raw.failure_threshold.unwrap_or(3);
    let success_threshold = raw.success_threshold.unwrap_or(1);
    for (field, n) in [
        ("failure_threshold", failure_threshold),
        ("success_threshold", success_threshold),
    ] {
        if n == 0 {
            problem(&at(field), "must be at least 1".into());
        }
    }
    if kind != "readiness_probe" && success_threshold > 1 {
        problem(
            &at("success_threshold"),
            format!("must be 1 for a {kind} (one success is enough to pass it)"),
        );
    }
    Probe {
        action,
        initial_delay,
        period,
        timeout,
        failure_threshold,
        success_threshold,
    }
}

/// Validates a container's `lifecycle`: its `pre_stop` hook, if any.
pub(super) fn pre_stop(
    raw: Option<RawLifecycle>,
    keys: &[Key],
    problem: &mut Report<'_>,
) -> Option<ProbeAction> {
    let handler = raw?.pre_stop?;
    let at = [keys, &[Key::F("lifecycle"), Key::F("pre_stop")]].concat();
    Some(http(handler.http_get, &at, problem))
}

/// Parses a CPU quantity in Kubernetes' notation: `"250m"` (millicores), or cores (`"1"`,
/// `"0.5"`). Returns millicores.
pub fn parse_millicores(s: &str) -> Result<u32, String> {
    let bad = || {
        format!(
            "{s:?} is not a CPU quantity: write millicores, e.g. \"250m\" (a quarter of a core), or cores, e.g. \"1\""
        )
    };
    let m = if let Some(m) = s.strip_suffix('m') {
        if m.is_empty() || !m.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        m.parse::<u64>().map_err(|_| bad())?
    } else {
        let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
        if whole.is_empty() && frac.is_empty()
            || !whole
                .bytes()
                .chain(frac.bytes())
                .all(|b| b.is_ascii_digit())
            || frac.len() > 3
        {
            return Err(bad());
        }
        let w: u64 = if whole.is_empty() {
            0
        } else {
            whole.parse().map_err(|_| bad())?
        };
        let f: u64 = format!("{frac:0<3}").parse().map_err(|_| bad())?;
        w.saturating_mul(1000).saturating_add(f)
    };
    if m == 0 {
        return Err(format!("{s:?} is no CPU at all: at least \"1m\""));
    }
    u32::try_from(m).map_err(|_| bad())
}

/// Validates `cpu_limit` against the host's cores.
pub(super) fn cpu_limit(raw: Option<&str>, keys: &[Key], problem: &mut Report<'_>) -> Option<u32> {
    let m = match parse_millicores(raw?) {
        Ok(m) => m,
        Err(e) => {
            problem(keys, e);
            return None;
        }
    };
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as u32;
    if m > cores * 1000 {
        problem(
            keys,
            format!(
                "{m}m is more than this host's {cores} cores ({}m)",
                cores * 1000
            ),
        );
        return None;
    }
    Some(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn millicores() {
        assert_eq!(parse_millicores("250m"), Ok(250));
        assert_eq!(parse_millicores("1"), Ok(1000));
        assert_eq!(parse_millicores("0.5"), Ok(500));
        assert_eq!(parse_millicores("1.25"), Ok(1250));
        assert_eq!(parse_millicores(".1"), Ok(100));
        for bad in ["", "m", "x", "2.5m", "-1", "0.0001", "0m", "0", "1e3", " 1"] {
            assert!(parse_millicores(bad).is_err(), "{bad:?}");
        }
    }
}
