//! Names from inside a pod (issue 11): the pods of the bridge by name, at their current address;
//! `localhost`; other names as the host resolves them, through a stub resolver on the host's
//! loopback (which a pod's namespace cannot reach: peapod asks it from the host's).

mod common;

use std::net::Ipv4Addr;
use std::path::Path;
use std::time::Duration;

use common::*;

fn job(env: &Env, name: &str, commands: &[&[&str]]) -> std::path::PathBuf {
    let mut toml = format!("[pod]\nname = \"{name}\"\n");
    for (i, args) in commands.iter().enumerate() {
        toml += &format!(
            "\n[[containers]]\nname = \"c{i}\"\nmodule = {TOOLBOX:?}\nargs = {args:?}\n\
             restart_policy = \"Never\"\n"
        );
    }
    env.spec(&format!("{name}.toml"), &toml)
}

fn lease(env: &Env, pod: &str) -> Ipv4Addr {
    env.leases()
        .into_iter()
        .find_map(|(p, ip)| (p == pod).then_some(ip))
        .unwrap_or_else(|| panic!("no lease for {pod}: {:?}", env.leases()))
}

/// Runs `spec` with the test's resolver to its end: (exit code, output).
fn run_looking_up(env: &Env, dns: &FakeDns, spec: &Path) -> (Option<i32>, String) {
    let mut p = env.start_with(spec, |c| dns.use_in(c));
    let status = p.wait_exit(Duration::from_secs(120));
    (status.code(), p.output())
}

#[test]
#[ignore = "needs root: scripts/test runs it"]
fn pods_find_each_other_and_the_host_by_name() {
    let env = Env::new();
    let dns = FakeDns::start(&[("outside.test", Ipv4Addr::new(192, 0, 2, 7))]);
    let server = job(&env, "a", &[&["listen", "0.0.0.0:9000", "hello from a"]]);
    let mut a = env.start(&server);
    a.wait_for("listening on", Duration::from_secs(60));
    let a_ip = lease(&env, "a");

    let looker = job(
        &env,
        "b",
        &[
            &["resolve", "a", "localhost", "outside.test", "OUTSIDE.test."],
            &["resolve", "no-such-pod"],
            &["connect", "a:9000", "50"],
        ],
    );
    let (code, out) = run_looking_up(&env, &dns, &looker);
    for line in [
        format!("b/c0: a: {a_ip}\n"),
        "b/c0: localhost: 127.0.0.1 ::1\n".into(),
        "b/c0: outside.test: 192.0.2.7\n".into(),
        "b/c0: OUTSIDE.test.: 192.0.2.7\n".into(),
        "b/c1: no-such-pod: error:".into(),
        "b/c2: connected to a:9000: hello from a\n".into(),
    ] {
        assert!(out.contains(&line), "{line:?} in:\n{out}");
    }
    assert_eq!(code, Some(1), "the failed lookup fails the job: {out}");

    // Re-created (a new `peapod run`): a new address, found under the same name.
    assert!(a.terminate().success());
    let mut a2 = env.start(&server);
    a2.wait_for("listening on", Duration::from_secs(60));
    let a2_ip = lease(&env, "a");
    assert_ne!(a_ip, a2_ip);
    let again = job(
        &env,
        "b",
        &[&["resolve", "a"], &["connect", "a:9000", "50"]],
    );
    let (code, out) = run_looking_up(&env, &dns, &again);
    assert!(out.contains(&format!("b/c0: a: {a2_ip}\n")), "{out}");
    assert!(
        out.contains("b/c1: connected to a:9000: hello from a\n"),
        "{out}"
    );
    assert_eq!(code, Some(0), "{out}");
    assert!(a2.terminate().success());
}

/// Round 2, finding 4: a pod named like a name of the host's `/etc/hosts` (`vm`) hid it from
/// every other pod. The host's names win for bare names; `NAME.pod` is always the pod.
#[test]
#[ignore = "needs root: scripts/test runs it"]
fn a_pod_cannot_hide_the_hosts_names() {
    let env = Env::new();
    let vm_host = Ipv4Addr::new(192, 0, 2, 50);
    let dns = FakeDns::with_hosts(&[], &[("vm", vm_host)]);
    let server = job(
        &env,
        "vm",
        &[&["listen", "0.0.0.0:9000", "hello from pod vm"]],
    );
    let mut vm = env.start(&server);
    vm.wait_for("listening on", Duration::from_secs(60));
    let pod_ip = lease(&env, "vm");
    let looker = job(
        &env,
        "b",
        &[
            &["resolve", "vm", "vm.pod"],
            &["connect", "vm.pod:9000", "50"],
        ],
    );
    let (code, out) = run_looking_up(&env, &dns, &looker);
    assert!(out.contains(&format!("b/c0: vm: {vm_host}\n")), "{out}");
    assert!(out.contains(&format!("b/c0: vm.pod: {pod_ip}\n")), "{out}");
    assert!(
        out.contains("b/c1: connected to vm.pod:9000: hello from pod vm\n"),
        "{out}"
    );
    assert_eq!(code, Some(0), "{out}");
    assert!(vm.terminate().success());
}
