//! Nothing left behind: a churn of pods created and deleted through the daemon leaves every
//! count where it started (the daemon's fds and threads, pins, veths, leases, lock files, logs,
//! volumes, stored modules and records).

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;

/// Entries of a directory (0 if it does not exist).
fn entries(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}

fn threads(pid: u32) -> usize {
    entries(std::path::Path::new(&format!("/proc/{pid}/task")))
}

/// Everything a pod could leave behind, counted.
fn counts(env: &Env, pid: u32) -> BTreeMap<&'static str, usize> {
    let state = env.state_dir();
    let run = env.run_dir();
    BTreeMap::from([
        ("daemon fds", fd_count(pid)),
        ("daemon threads", threads(pid)),
        ("pins", entries(&run.join("netns"))),
        ("lock files", entries(&run.join("pods"))),
        ("secret dirs", entries(&run.join("secrets"))),
        ("veths", env.bridge_ports().len()),
        ("leases", env.leases().len()),
        ("log dirs", entries(&state.join("logs"))),
        ("volume dirs", entries(&state.join("volumes"))),
        ("stored modules", entries(&state.join("modules"))),
        ("stored records", entries(&state.join("pods"))),
        ("mounts", env.all_mounts().len()),
    ])
}

#[test]
fn a_churn_of_pods_leaves_nothing_behind() {
    if !root_or_skip("a_churn_of_pods_leaves_nothing_behind") {
        return;
    }
    // Under an emulator each cycle takes ten times as long; 10 still shows a leak per cycle.
    let cycles: usize = if emulated() { 10 } else { 40 };
    let env = Env::new();
    env.pod_file("keep.toml", &env.kv_spec("keep", ""));
    let mut d = env.daemon();
    let keep = env.wait_running("keep");
    let token = env.dir.path().join("token");
    std::fs::write(&token, "t").unwrap();
    // Each churned pod has what a pod can have: an app serving, logs, an empty_dir with a size
    // limit (a tmpfs), a files volume, a file secret (a bind mount).
    let spec = |name: &str| {
        format!(
            "{}volume_mounts = [{{ name = \"data\", mount_path = \"/data\" }}, \
             {{ name = \"cfg\", mount_path = \"/etc/app\" }}, \
             {{ name = \"token\", mount_path = \"/run/secrets\" }}]\n\
             [[volumes]]\nname = \"data\"\nempty_dir = {{ size_limit = \"1MiB\" }}\n\
             [[volumes]]\nname = \"cfg\"\nfiles = {{ \"a.conf\" = \"{name}\" }}\n\
             [[volumes]]\nname = \"token\"\nsecret = {{ path = {token:?} }}\n",
            env.kv_spec(name, "")
        )
    };
    let cycle = |i: usize| {
        let name = format!("churn{i}");
        let file = env.spec(&format!("{name}.toml"), &spec(&name));
        env.ctl_ok(&["apply", "-f", file.to_str().unwrap()]);
        let ip = env.wait_running(&name);
        wait_healthy(std::net::SocketAddr::from((ip, 8080)));
        env.ctl_ok(&["delete", &name]);
    };
    // One cycle first: whatever the daemon makes once (the cache, thread pools) is made.
    cycle(0);
    let before = counts(&env, d.pid());
    let t0 = std::time::Instant::now();
    for i in 1..=cycles {
        cycle(i);
    }
    let took = t0.elapsed();
    // Threads of the blocking pool linger for a while after their last task: let them go.
    let after = eventually(
        Duration::from_secs(30),
        "counts back where they were",
        || {
            let now = counts(&env, d.pid());
            (now == before).then_some(now)
        },
    );
    eprintln!(
        "figure: {cycles} apply/serve/delete cycles in {took:.1?} ({:.0?} a cycle); leaks: 0 ({after:?})",
        took / cycles as u32
    );
    // The pod that stayed was never disturbed: same IP, still serving.
    assert_eq!(env.wait_running("keep"), keep);
    wait_healthy(std::net::SocketAddr::from((keep, 8080)));
    assert!(d.terminate().success());
}
