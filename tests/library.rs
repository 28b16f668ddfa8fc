//! The library API directly: the threading invariant. Every thread of a pod lives in the pod's
//! namespace, the caller's threads never enter it, and none is left after the pod stops.

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use common::*;
use peapod::executor::Executor;
use peapod::pod::RunningPod;
use peapod::spec::PodSpec;

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

#[tokio::test(flavor = "current_thread")]
#[ignore = "needs root: scripts/test runs it"]
async fn pod_threads_live_in_the_pod_namespace_and_end_with_it() {
    let env = Env::new();
    let name = unique("t");
    let file = env.dir.path().join("p.toml");
    let spec = PodSpec::parse(
        &file,
        &format!(
            "[pod]\nname = {name:?}\n[[containers]]\nname = \"l\"\nmodule = {TOOLBOX:?}\nargs = [\"listen\", \"127.0.0.1:7000\", \"inside\"]\n"
        ),
    )
    .unwrap();
    let exec = Executor::new().unwrap();
    let modules = peapod::loader::load(
        &exec,
        &spec,
        &env.config(),
        peapod::module_file::Caller::myself(),
    )
    .unwrap();
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
