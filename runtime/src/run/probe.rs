//! Probes and the `pre_stop` hook: TCP connects and HTTP GETs to a container's port on the
//! pod's loopback, run on the pod's own thread — inside the pod's namespace, so a port a module
//! bound to 127.0.0.1 is reached, and nothing leaves the pod.
//!
//! One [`watch`] runs beside each run of a container (it starts again with every restart, as
//! Kubernetes' probes do): the startup probe first, then liveness and readiness together. It
//! returns only when the container should be restarted (startup or liveness failed
//! `failure_threshold` times in a row); readiness only sets the container's `ready`.

use std::net::Ipv4Addr;
use std::time::Duration;

use http_body_util::Empty;
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;

use crate::spec::{Probe, ProbeAction, Probes};

/// One check: `Ok` when it passed, else why not.
pub(crate) async fn check(action: &ProbeAction, timeout: Duration) -> Result<(), String> {
    match tokio::time::timeout(timeout, attempt(action)).await {
        Ok(r) => r,
        Err(_) => Err(format!(
            "{action}: no answer within {}",
            humantime::format_duration(timeout)
        )),
    }
}

async fn attempt(action: &ProbeAction) -> Result<(), String> {
    let port = match action {
        ProbeAction::Tcp { port } | ProbeAction::Http { port, .. } => *port,
    };
    let stream = tokio::net::TcpStream::connect((Ipv4Addr::LOCALHOST, port))
        .await
        .map_err(|e| format!("{action}: {e}"))?;
    let ProbeAction::Http { path, .. } = action else {
        return Ok(());
    };
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("{action}: {e}"))?;
    // The connection is driven here, not spawned: it ends with this check (a timeout drops it).
    let req = hyper::Request::get(path.as_str())
        .header("host", format!("127.0.0.1:{port}"))
        .header("user-agent", "peapod-probe")
        .header("connection", "close")
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("{action}: {e}"))?;
    let response = async {
        let r = sender.send_request(req).await;
        drop(sender);
        r
    };
    let (r, _) = tokio::join!(response, conn);
    let status = r.map_err(|e| format!("{action}: {e}"))?.status();
    if (200..400).contains(&status.as_u16()) {
        Ok(())
    } else {
        Err(format!("{action}: HTTP {status}"))
    }
}

/// What a probe loop reports as it goes.
pub(crate) trait Observer {
    /// The startup probe passed (or there is none): liveness and readiness begin.
    fn started(&self);
    /// Readiness changed.
    fn ready(&self, ready: bool);
    /// A check failed (logged by the caller, rate as it likes).
    fn failed(&self, probe: &'static str, why: &str, failures: u32);
}

/// Runs `probes` for one run of a container. Returns why the container must be restarted; never
/// returns while it is healthy.
pub(crate) async fn watch(probes: &Probes, obs: &impl Observer) -> String {
    if let Some(p) = &probes.startup
        && let Err(why) = until_passes(p, "startup probe", obs).await
    {
        return why;
    }
    obs.started();
    if probes.readiness.is_none() {
        obs.ready(true);
    }
    let liveness = async {
        match &probes.liveness {
            Some(p) => fails(p, "liveness probe", obs).await,
            None => std::future::pending().await,
        }
    };
    let readiness = async {
        match &probes.readiness {
            Some(p) => readiness(p, obs).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        why = liveness => why,
        never = readiness => match never {},
    }
}

/// The startup probe: checks every `period` until one passes, or fails `failure_threshold`
/// times in a row.
async fn until_passes(p: &Probe, name: &'static str, obs: &impl Observer) -> Result<(), String> {
    tokio::time::sleep(p.initial_delay).await;
    let mut failures = 0;
    loop {
        match check(&p.action, p.timeout).await {
            Ok(()) => return Ok(()),
            Err(why) => {
                failures += 1;
                obs.failed(name, &why, failures);
                if failures >= p.failure_threshold {
                    return Err(format!("{name} failed {failures} times: {why}"));
                }
            }
        }
        tokio::time::sleep(p.period).await;
    }
}

/// The liveness probe: returns once it failed `failure_threshold` times in a row.
async fn fails(p: &Probe, name: &'static str, obs: &impl Observer) -> String {
    tokio::time::sleep(p.initial_delay).await;
    let mut failures = 0;
    let mut tick = interval(p.period);
    loop {
        tick.tick().await;
        match check(&p.action, p.timeout).await {
            Ok(()) => failures = 0,
            Err(why) => {
                failures += 1;
                obs.failed(name, &why, failures);
                if failures >= p.failure_threshold {
                    return format!("{name} failed {failures} times: {why}");
                }
            }
        }
    }
}

/// The readiness probe: ready after `success_threshold` passes in a row, not ready after
/// `failure_threshold` failures in a row. Runs as long as the container does.
async fn readiness(p: &Probe, obs: &impl Observer) -> std::convert::Infallible {
    tokio::time::sleep(p.initial_delay).await;
    let (mut passes, mut failures, mut ready) = (0, 0, false);
    let mut tick = interval(p.period);
    loop {
        tick.tick().await;
        match check(&p.action, p.timeout).await {
            Ok(()) => {
                failures = 0;
                passes += 1;
                if !ready && passes >= p.success_threshold {
                    ready = true;
                    obs.ready(true);
                }
            }
            Err(why) => {
                passes = 0;
                failures += 1;
                obs.failed("readiness probe", &why, failures);
                if ready && failures >= p.failure_threshold {
                    ready = false;
                    obs.ready(false);
                }
            }
        }
    }
}

/// A period timer whose first tick is now; a check that outlasts a period delays the next one
/// instead of bunching them up.
fn interval(period: Duration) -> tokio::time::Interval {
    let mut t = tokio::time::interval(period);
    t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    #[derive(Default)]
    struct Seen(RefCell<Vec<String>>);

    impl Observer for Seen {
        fn started(&self) {
            self.0.borrow_mut().push("started".into());
        }
        fn ready(&self, ready: bool) {
            self.0.borrow_mut().push(format!("ready={ready}"));
        }
        fn failed(&self, probe: &'static str, _why: &str, failures: u32) {
            self.0.borrow_mut().push(format!("{probe} {failures}"));
        }
    }

    fn probe(port: u16, failure_threshold: u32) -> Probe {
        Probe {
            action: ProbeAction::Tcp { port },
            initial_delay: Duration::ZERO,
            period: Duration::from_millis(10),
            timeout: Duration::from_secs(1),
            failure_threshold,
            success_threshold: 1,
        }
    }

    /// A port on 127.0.0.1 that nothing listens on (bound, then closed).
    fn closed_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    #[tokio::test]
    async fn liveness_fails_after_its_threshold_and_readiness_follows_the_port() {
        let port = closed_port();
        let seen = Seen::default();
        let probes = Probes {
            liveness: Some(probe(port, 3)),
            ..Probes::default()
        };
        let why = watch(&probes, &seen).await;
        assert!(why.starts_with("liveness probe failed 3 times"), "{why}");
        assert!(why.contains(&format!("127.0.0.1:{port}")), "{why}");
        assert_eq!(
            *seen.0.borrow(),
            [
                "started",
                "ready=true",
                "liveness probe 1",
                "liveness probe 2",
                "liveness probe 3"
            ]
        );

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let open = listener.local_addr().unwrap().port();
        let seen = Seen::default();
        let probes = Probes {
            readiness: Some(probe(open, 1)),
            startup: Some(probe(open, 1)),
            ..Probes::default()
        };
        let r = tokio::time::timeout(Duration::from_millis(300), watch(&probes, &seen)).await;
        assert!(r.is_err(), "a healthy container is never restarted");
        assert_eq!(*seen.0.borrow(), ["started", "ready=true"]);
    }

    #[tokio::test]
    async fn a_failing_startup_probe_holds_liveness_back() {
        let seen = Seen::default();
        let probes = Probes {
            startup: Some(probe(closed_port(), 2)),
            liveness: Some(probe(closed_port(), 1)),
            ..Probes::default()
        };
        let why = watch(&probes, &seen).await;
        assert!(why.starts_with("startup probe failed 2 times"), "{why}");
        assert_eq!(*seen.0.borrow(), ["startup probe 1", "startup probe 2"]);
    }
}
