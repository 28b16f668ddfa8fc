//! The library API directly. The threading invariant: every thread of a pod lives in the pod's
//! namespace, the caller's threads never enter it, and none is left after the pod stops. And what
//! a start's return promises: the pod is reachable, no first packet lost.

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use common::*;
use peapod::run::pod::RunningPod;
use peapod::spec::PodSpec;
use peapod::wasm::executor::{Executor, Prepared};

fn netns_inode(path: impl AsRef<Path>) -> Option<u64> {
    std::fs::metadata(path).ok().map(|m| m.ino())
}

/// (tid, name, netns inode) of every thread of this process.
fn threads() -> Vec<(String, String, Option<u64>)> {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .flatten()
        .map(|t| {
            let p = t.path();
            let comm = std::fs::read_to_string(p.join("comm")).unwrap_or_default();
            (
                t.file_name().to_string_lossy().into_owned(),
                comm.trim().to_string(),
                netns_inode(p.join("ns/net")),
            )
        })
        .collect()
}

/// A pod of one toolbox module answering `text` on `listen`, loaded: (name, spec, executor,
/// modules).
fn listener_pod(env: &Env, listen: &str, text: &str) -> (String, PodSpec, Executor, Vec<Prepared>) {
    let name = unique("t");
    let file = env.dir.path().join("p.toml");
    let spec = PodSpec::parse(
        &file,
        &format!(
            "[pod]\nname = {name:?}\n[[containers]]\nname = \"l\"\nmodule = {TOOLBOX:?}\nargs = [\"listen\", {listen:?}, {text:?}]\n"
        ),
    )
    .unwrap();
    let exec = Executor::new().unwrap();
    let modules = peapod::loader::load(
        &exec,
        &spec,
        &env.config(),
        peapod::caller::Caller::myself(),
    )
    .unwrap();
    (name, spec, exec, modules)
}

#[tokio::test(flavor = "current_thread")]
#[ignore = "needs root: scripts/test runs it"]
async fn pod_threads_live_in_the_pod_namespace_and_end_with_it() {
    let env = Env::new();
    let (name, spec, exec, modules) = listener_pod(&env, "127.0.0.1:7000", "inside");
    let host = netns_inode("/proc/thread-self/ns/net").unwrap();

    let pod = RunningPod::start(&env.config(), &exec, &spec, modules)
        .await
        .unwrap();
    let pod_ns = pod.netns_inode().unwrap();
    assert_ne!(pod_ns, host);
    assert_eq!(
        netns_inode(&pod.netns_path),
        Some(pod_ns),
        "the pin is the namespace"
    );
    let answer = eventually(std::time::Duration::from_secs(30), "listener up", || {
        connect_in_netns(&pod.netns_path, "127.0.0.1:7000".parse().unwrap(), "").ok()
    });
    assert_eq!(answer, "inside");

    let all = threads();
    let in_pod: Vec<_> = all.iter().filter(|t| t.2 == Some(pod_ns)).collect();
    assert!(
        in_pod.iter().any(|t| t.1 == format!("pod-{name}")),
        "the pod thread is in the pod namespace: {all:?}"
    );
    assert!(
        all.iter()
            .filter(|t| t.1 == format!("pod-{name}"))
            .all(|t| t.2 == Some(pod_ns))
    );
    assert_eq!(
        netns_inode("/proc/thread-self/ns/net"),
        Some(host),
        "the caller never enters the pod namespace"
    );

    let report = pod.stop().await.unwrap();
    assert!(report.teardown.is_none(), "{:?}", report.teardown);
    assert_eq!(report.containers.len(), 1);
    assert!(report.containers[0].stopped);
    let left: Vec<_> = threads()
        .into_iter()
        .filter(|t| t.2 == Some(pod_ns) || t.1 == format!("pod-{name}"))
        .collect();
    assert!(left.is_empty(), "threads left in the pod: {left:?}");
    assert!(!env.pin(&name).exists());
    assert!(env.leases().is_empty());
}

/// A pod alone on its bridge, re-created: every time its start returns, the first SYN the host
/// sends it arrives. When the last port leaves a bridge, the kernel turns the bridge's carrier
/// and queueing off; the next pod's port turns the carrier on at once, but the queueing only
/// when linkwatch gets to it: a SYN sent in between was dropped and resent a second later (the
/// one-second outliers of issue 14). A connect that refuses (the listener not up yet) is tried
/// again; one that hears nothing within 900 ms lost its SYN (TCP resends it after a second).
/// The race is narrow (traced in the bench: about one start in 80, the SYN dropped at the
/// bridge's own queue); this test cannot force it, it checks the promise at every start.
#[tokio::test(flavor = "current_thread")]
#[ignore = "needs root: scripts/test runs it"]
async fn the_first_syn_to_a_pod_alone_on_its_bridge_arrives() {
    use std::net::{SocketAddr, TcpStream};
    use std::time::{Duration, Instant};
    let env = Env::new();
    let (_, spec, exec, modules) = listener_pod(&env, "0.0.0.0:7000", "hi");
    let cfg = env.config();
    for round in 0..20 {
        let pod = RunningPod::start(&cfg, &exec, &spec, modules.clone())
            .await
            .unwrap();
        let operstate = std::fs::read_to_string(format!("/sys/class/net/{}/operstate", env.bridge));
        assert_eq!(
            operstate.unwrap().trim(),
            "up",
            "round {round}: the bridge passes traffic when the start returns"
        );
        let addr = SocketAddr::from((pod.ip, 7000));
        let t0 = Instant::now();
        loop {
            match TcpStream::connect_timeout(&addr, Duration::from_millis(900)) {
                Ok(_) => break,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                    assert!(
                        t0.elapsed() < Duration::from_secs(30),
                        "round {round}: {addr} never listened"
                    );
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(e) => {
                    panic!("round {round}: a connect to {addr} heard nothing: {e} (a SYN lost)")
                }
            }
        }
        let report = pod.stop().await.unwrap();
        assert!(report.teardown.is_none(), "{:?}", report.teardown);
        assert!(
            env.bridge_ports().is_empty(),
            "round {round}: the bridge keeps no port"
        );
    }
}
