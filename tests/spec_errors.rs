//! Bad input: each kind of bad spec gets an error naming the file, line and field, exit status 2,
//! and creates nothing at all (no bridge, no pin, no lease). Refused before anything touches the
//! kernel, so no root is needed: these run in a plain `cargo test`.

mod common;

use common::*;

fn assert_refused(env: &Env, file: &str, text: &str, wants: &[&str]) {
    let spec = env.spec(file, text);
    let stderr = env.refused(&spec);
    for want in wants {
        let want = want.replace("FILE", &spec.display().to_string());
        assert!(
            stderr.contains(&want),
            "{file}: want {want:?} in:\n{stderr}"
        );
    }
}

#[test]
fn every_kind_of_bad_spec_is_refused_with_file_line_and_field() {
    let env = Env::new();
    let garbage = env.spec("garbage.wasm", "this is not wasm");
    let truncated = env.dir.path().join("truncated.wasm");
    let mut bytes = std::fs::read(KV_SERVER).unwrap();
    bytes.truncate(bytes.len() / 2);
    std::fs::write(&truncated, bytes).unwrap();
    let ok = |name: &str| format!("[[containers]]\nname = {name:?}\nmodule = {KV_SERVER:?}\n");

    let cases: Vec<(&str, String, Vec<&str>)> = vec![
        (
            "unknown-field.toml",
            format!("[pod]\nname = \"a\"\n{}modul = \"x\"\n", ok("app")),
            vec!["FILE:6: containers[0].modul: unknown field `modul`"],
        ),
        (
            "bad-pod-name.toml",
            format!("[pod]\nname = \"Demo_1\"\n{}", ok("app")),
            vec!["FILE:2: pod.name: \"Demo_1\" must be a DNS-1123 label"],
        ),
        (
            "bad-container-name.toml",
            format!("[pod]\nname = \"a\"\n{}", ok("App")),
            vec!["FILE:4: containers[0].name: \"App\" must be a DNS-1123 label"],
        ),
        (
            "duplicate.toml",
            format!("[pod]\nname = \"a\"\n{}{}", ok("app"), ok("app")),
            vec!["FILE:7: containers[1].name: \"app\" is used by another container"],
        ),
        (
            "missing-wasm.toml",
            "[pod]\nname = \"a\"\n[[containers]]\nname = \"app\"\nmodule = \"nope.wasm\"\n".into(),
            vec![
                "FILE:5: containers[0].module: cannot read",
                "nope.wasm: No such file",
            ],
        ),
        (
            "not-wasm.toml",
            format!("[pod]\nname = \"a\"\n[[containers]]\nname = \"app\"\nmodule = {garbage:?}\n"),
            vec![
                "FILE:5: containers[0].module:",
                "is not a WebAssembly module or component",
            ],
        ),
        (
            "broken-wasm.toml",
            format!(
                "[pod]\nname = \"a\"\n[[containers]]\nname = \"app\"\nmodule = {truncated:?}\n"
            ),
            vec!["FILE:5: containers[0].module:", "does not compile"],
        ),
        (
            "bad-policy.toml",
            format!(
                "[pod]\nname = \"a\"\n{}restart_policy = \"Sometimes\"\n",
                ok("app")
            ),
            vec![
                "FILE:6: containers[0].restart_policy: unknown variant `Sometimes`, expected one of `Always`, `OnFailure`, `Never`",
            ],
        ),
        (
            "bad-backoff.toml",
            format!(
                "[pod]\nname = \"a\"\n[pod.restart_backoff]\nmax = \"soon\"\n{}",
                ok("app")
            ),
            vec!["FILE:4: pod.restart_backoff.max: \"soon\" is not a duration"],
        ),
        (
            "no-containers.toml",
            "[pod]\nname = \"a\"\n".into(),
            vec!["FILE: containers: a pod needs at least one [[containers]] entry"],
        ),
        (
            "syntax.toml",
            "[pod]\nname = \"a\n".into(),
            vec!["FILE:2: (file): "],
        ),
        (
            "misspelt.toml",
            format!(
                "[pod]\nname = \"a\"\n{}readiness = {{ tcp_socket = {{ port = 80 }} }}\n",
                ok("app")
            ),
            vec![
                "containers[0].readiness: unknown field `readiness`: did you mean `readiness_probe`?",
            ],
        ),
        (
            "yaml.toml",
            "pod:\n  name: web\ncontainers:\n- name: app\n".into(),
            vec!["this looks like YAML: peapod's pod specs are TOML"],
        ),
        (
            // A Kubernetes manifest is read as one (docs/kubernetes.md), named by its fields.
            "manifest.yaml",
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\n".into(),
            vec!["spec.containers: a pod needs at least one"],
        ),
        (
            "wrong-type.toml",
            format!("[pod]\nname = \"a\"\n{}args = \"--port 80\"\n", ok("app")),
            vec![
                "FILE:6: containers[0].args: expected a list ([...]), found the string \"--port 80\" (container \"app\")",
            ],
        ),
        (
            "probe-without-action.toml",
            format!(
                "[pod]\nname = \"a\"\n{}[containers.liveness_probe]\nperiod = \"0s\"\n",
                ok("app")
            ),
            vec![
                "FILE:6: containers[0].liveness_probe: neither given: a probe has exactly one of tcp_socket or http_get",
                "FILE:7: containers[0].liveness_probe.period: must be longer than 0",
            ],
        ),
        (
            "init-with-probe.toml",
            format!(
                "[pod]\nname = \"a\"\n[[init_containers]]\nname = \"init\"\nmodule = {KV_SERVER:?}\n\
                 readiness_probe = {{ tcp_socket = {{ port = 80 }} }}\n{}",
                ok("app")
            ),
            vec![
                "FILE:6: init_containers[0].readiness_probe: an init container runs to completion",
            ],
        ),
        (
            "cpu-limit.toml",
            format!(
                "[pod]\nname = \"a\"\n{}cpu_limit = \"100000m\"\n",
                ok("app")
            ),
            vec!["FILE:6: containers[0].cpu_limit: 100000m is more than this host's"],
        ),
        (
            "container-port-0.toml",
            format!(
                "[pod]\nname = \"a\"\n{}ports = [{{ container_port = 0 }}]\n",
                ok("app")
            ),
            vec!["FILE:6: containers[0].ports[0].container_port: 0 is not a port: use 1-65535"],
        ),
        (
            "host-port-range.toml",
            format!(
                "[pod]\nname = \"a\"\n{}ports = [{{ container_port = 80, host_port = 70000 }}]\n",
                ok("app")
            ),
            vec!["FILE:6: containers[0].ports[0].host_port: 70000 is not a port: use 1-65535"],
        ),
        (
            "host-port-twice.toml",
            format!(
                "[pod]\nname = \"a\"\n{}\n[[containers.ports]]\ncontainer_port = 80\nhost_port = 18080\n\
                 \n[[containers.ports]]\ncontainer_port = 81\nhost_port = 18080\n",
                ok("app")
            ),
            vec![
                "FILE:13: containers[0].ports[1].host_port: 18080/TCP is published twice in this \
                 pod (also containers[0].ports[0])",
            ],
        ),
        (
            "container-port-two-containers.toml",
            format!(
                "[pod]\nname = \"a\"\n{}ports = [{{ container_port = 8080 }}]\n{}\
                 ports = [{{ container_port = 8080 }}]\n",
                ok("a"),
                ok("b")
            ),
            vec![
                "FILE:10: containers[1].ports[0].container_port: 8080/TCP is container \"a\"'s \
                 too: a pod's containers share one network namespace (one localhost)",
            ],
        ),
        (
            "protocol.toml",
            format!(
                "[pod]\nname = \"a\"\n{}ports = [{{ container_port = 80, protocol = \"SCTP\" }}]\n",
                ok("app")
            ),
            vec!["FILE:6: containers[0].ports[0].protocol: \"SCTP\": use \"TCP\" or \"UDP\""],
        ),
    ];
    for (file, text, wants) in &cases {
        assert_refused(&env, file, text, wants);
    }
    // A host port a host process holds (here this test) is refused, naming the process to
    // root only (anyone else learns that it is in use).
    let held = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let port = held.local_addr().unwrap().port();
    let in_use =
        format!("FILE:6: containers[0].ports[0].host_port: {port}/TCP is in use on the host");
    let holder = if nix::unistd::geteuid().is_root() {
        format!("{in_use} by process {}", std::process::id())
    } else {
        format!("{in_use}\n")
    };
    assert_refused(
        &env,
        "host-port-held.toml",
        &format!(
            "[pod]\nname = \"a\"\n{}ports = [{{ container_port = 80, host_port = {port} }}]\n",
            ok("app")
        ),
        &[&holder],
    );
    // Several problems are reported together.
    assert_refused(
        &env,
        "many.toml",
        &format!("[pod]\nname = \"A\"\n{}{}", ok("x"), ok("x")),
        &["FILE:2: pod.name", "FILE:7: containers[1].name"],
    );
}

#[test]
fn a_missing_spec_file_is_named() {
    let env = Env::new();
    let out = env
        .peapod(&["run", "/nonexistent/pod.toml"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr.contains("/nonexistent/pod.toml: cannot read pod spec: No such file"),
        "{stderr}"
    );
}

/// A file with several mistakes of every kind (a misspelt field, a value of the wrong type in
/// a container and in the pod, a bad name, a bad limit) is refused with all of them in one run,
/// in the file's order, each with its line.
#[test]
fn every_mistake_of_a_file_is_said_at_once() {
    let env = Env::new();
    let text = format!(
        "[pod]\nname = \"Web\"\nrestart_policy = 3\n\n[[containers]]\nname = \"app\"\n\
         module = {KV_SERVER:?}\nmemory_limit_mib = \"64\"\nreadines_probe = {{ tcp_socket = {{ port = 8080 }} }}\n\
         cpu_limit = \"lots\"\n"
    );
    let wants = [
        "FILE:2: pod.name: \"Web\" ",
        "FILE:3: pod.restart_policy: ",
        "FILE:8: containers[0].memory_limit_mib: expected a whole number (e.g. 8), found the string \"64\" (container \"app\")",
        "FILE:9: containers[0].readines_probe: unknown field `readines_probe`: did you mean `readiness_probe`?",
        "FILE:10: containers[0].cpu_limit: ",
    ];
    assert_refused(&env, "four.toml", &text, &wants);
    // In the file's order.
    let stderr = env.refused(&env.spec("four-again.toml", &text));
    let at: Vec<usize> = (wants.iter())
        .map(|w| {
            stderr
                .find(&w[w.find(':').unwrap()..])
                .unwrap_or_else(|| panic!("{w}: {stderr}"))
        })
        .collect();
    assert!(at.windows(2).all(|w| w[0] < w[1]), "{stderr}");
}
