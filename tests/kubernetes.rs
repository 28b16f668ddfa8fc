//! The board as a node of a real Kubernetes cluster (issue 26): etcd, kube-apiserver and
//! kube-controller-manager built from the Go module proxy (scripts/k8s-build), started on
//! 127.0.0.1 with certificates made here, driven with the real kubectl; peapod's daemon joins
//! with a node certificate (`system:node:NAME`), under the Node authorizer and NodeRestriction.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;

/// The daemon of `env` as node `node` of `cluster`, its kubelet port on 127.0.0.1.
fn node_daemon(env: &Env, cluster: &Cluster, node: &str, kubelet_port: u16) -> Peapod {
    let kubeconfig = cluster.node_kubeconfig(node);
    let (cert, key) = cluster.kubelet_serving(node);
    let config = env.spec(
        "peapod.toml",
        &format!(
            "[kubernetes]\nkubeconfig = {:?}\nnode_name = {node:?}\nnode_ip = \"127.0.0.1\"\n\
             kubelet_port = {kubelet_port}\nlabels = {{ \"site\" = \"test\" }}\n\
             kubelet_cert = {:?}\nkubelet_key = {:?}\n",
            kubeconfig.display().to_string(),
            cert.display().to_string(),
            key.display().to_string(),
        ),
    );
    env.daemon_with(|c| {
        c.env("PEAPOD_CONFIG", &config);
    })
}

fn node_ready(cluster: &Cluster, node: &str) -> Option<String> {
    cluster.jsonpath(
        &["node", node],
        "{.status.conditions[?(@.type==\"Ready\")].status}",
    )
}

/// The pod of the test: a plain init container (wasip1, exits 0), a native sidecar (a second
/// kv-server on :9090), the app (kv-server on :8080, published on `host_port`), probes, a
/// config map volume, a secret volume, limits.
fn web_pod(name: &str, node: &str, host_port: u16) -> String {
    format!(
        r#"apiVersion: v1
kind: ConfigMap
metadata: {{ name: {name}-config }}
data: {{ app.conf: "mode=edge\n" }}
---
apiVersion: v1
kind: Secret
metadata: {{ name: {name}-token }}
stringData: {{ token: s3cret }}
---
apiVersion: v1
kind: Pod
metadata:
  name: {name}
  labels: {{ app: web }}
spec:
  nodeName: {node}
  automountServiceAccountToken: false
  tolerations: [{{ key: peapod.dev/wasm, operator: Exists, effect: NoSchedule }}]
  initContainers:
  - name: setup
    image: file://{hello}
    args: ["--exit", "0"]
  - name: cache
    image: file://{kv}
    args: ["--listen", "0.0.0.0:9090"]
    restartPolicy: Always
    readinessProbe: {{ tcpSocket: {{ port: 9090 }}, periodSeconds: 1 }}
  containers:
  - name: app
    image: file://{kv}
    args: ["--listen", "0.0.0.0:8080"]
    ports: [{{ name: http, containerPort: 8080, hostPort: {host_port} }}]
    resources: {{ limits: {{ memory: 64Mi, cpu: 500m }} }}
    readinessProbe: {{ httpGet: {{ path: /healthz, port: http }}, periodSeconds: 1 }}
    livenessProbe: {{ httpGet: {{ path: /healthz, port: 8080 }}, periodSeconds: 2, failureThreshold: 3 }}
    volumeMounts: [{{ name: cfg, mountPath: /etc/app }}, {{ name: token, mountPath: /run/secrets }}]
  volumes:
  - {{ name: cfg, configMap: {{ name: {name}-config }} }}
  - {{ name: token, secret: {{ secretName: {name}-token }} }}
"#,
        hello = HELLO_P1,
        kv = KV_SERVER,
    )
}

fn pod_field(cluster: &Cluster, pod: &str, path: &str) -> Option<String> {
    cluster
        .jsonpath(&["pod", pod], path)
        .filter(|s| !s.is_empty())
}

fn serves(addr: SocketAddr) -> bool {
    http(addr, "GET", "/healthz", "").is_ok_and(|r| r.status == 200)
}

#[test]
#[ignore = "needs root, network namespaces and the test cluster (scripts/setup --k8s)"]
fn a_board_joins_a_cluster_and_runs_its_pods() {
    // Dropped last: the machine's ip_forward back as it was once the daemon is gone.
    let _forwarding = SysctlRestored::new("net/ipv4/ip_forward");
    let mut cluster = Cluster::start();
    let env = Env::new();
    let node = unique("pp-node-");
    let kubelet_port = free_port();
    let mut daemon = node_daemon(&env, &cluster, &node, kubelet_port);

    // The node: Ready, with its capacity, labels and taint.
    eventually(Duration::from_secs(60), "node Ready", || {
        (node_ready(&cluster, &node)? == "True").then_some(())
    });
    let labels = cluster
        .jsonpath(&["node", &node], "{.metadata.labels}")
        .unwrap();
    for l in [
        "\"peapod.dev/runtime\":\"wasm\"",
        "\"site\":\"test\"",
        "\"kubernetes.io/arch\":",
    ] {
        assert!(labels.contains(l), "{l} not in {labels}");
    }
    let pods_capacity = cluster
        .jsonpath(&["node", &node], "{.status.capacity.pods}")
        .unwrap();
    assert!(pods_capacity.parse::<u32>().unwrap() > 0, "{pods_capacity}");
    let taint = cluster
        .jsonpath(&["node", &node], "{.spec.taints[0].key}")
        .unwrap();
    assert_eq!(taint, "peapod.dev/wasm");
    let wide = cluster.kubectl_ok(&["get", "nodes", "-o", "wide"]);
    assert!(wide.contains(&node) && wide.contains("Ready"), "{wide}");

    // A pod bound to it: Running, with its own IP, which serves; its hostPort too.
    let host_port = free_port();
    let t0 = std::time::Instant::now();
    cluster.apply(&web_pod("web", &node, host_port));
    // (Figures for bench/kubernetes; nothing is judged by them.)
    let published: SocketAddr = format!("127.0.0.1:{host_port}").parse().unwrap();
    eventually(Duration::from_secs(90), "the hostPort serving", || {
        serves(published).then_some(())
    });
    eprintln!(
        "figure: kubectl apply to serving: {} ms",
        t0.elapsed().as_millis()
    );
    let ip = eventually(Duration::from_secs(90), "pod web Running and ready", || {
        let ready = pod_field(
            &cluster,
            "web",
            "{.status.conditions[?(@.type==\"Ready\")].status}",
        )?;
        let phase = pod_field(&cluster, "web", "{.status.phase}")?;
        (phase == "Running" && ready == "True")
            .then(|| pod_field(&cluster, "web", "{.status.podIP}"))
            .flatten()
    });
    let wide = cluster.kubectl_ok(&["get", "pod", "web", "-o", "wide"]);
    assert!(
        wide.contains("Running") && wide.contains(&ip) && wide.contains(&node),
        "{wide}"
    );
    let app: SocketAddr = format!("{ip}:8080").parse().unwrap();
    assert!(serves(app), "the pod's IP serves");
    assert!(
        serves(format!("{ip}:9090").parse().unwrap()),
        "the sidecar serves"
    );
    assert!(serves(published), "the hostPort serves");
    let local = "default-web".to_string();
    let cfg = std::fs::read_to_string(
        env.state_dir()
            .join(format!("volumes/{local}/cfg/app.conf")),
    )
    .unwrap();
    assert_eq!(
        cfg, "mode=edge\n",
        "the config map's data is the volume's file"
    );
    let token =
        std::fs::read_to_string(env.state_dir().join(format!("volumes/{local}/token/token")))
            .unwrap();
    assert_eq!(token, "s3cret", "the secret's data is the volume's file");
    let (rss, _) = rss_kib(daemon.pid());
    eprintln!("figure: daemon RSS with the node agent and one pod of 3 containers: {rss} KiB");
    let init = pod_field(
        &cluster,
        "web",
        "{.status.initContainerStatuses[0].state.terminated.reason}",
    );
    assert_eq!(init.as_deref(), Some("Completed"));

    // The app crashes: restarted in place, restartCount 1, the same IP; logs of both runs.
    http(app, "PUT", "/kv/marker", "before").unwrap();
    http(app, "POST", "/crash", "").unwrap();
    eventually(Duration::from_secs(30), "restartCount 1", || {
        let n = pod_field(
            &cluster,
            "web",
            "{.status.containerStatuses[0].restartCount}",
        )?;
        let ready = pod_field(&cluster, "web", "{.status.containerStatuses[0].ready}")?;
        (n == "1" && ready == "true").then_some(())
    });
    assert_eq!(
        pod_field(&cluster, "web", "{.status.podIP}").as_deref(),
        Some(ip.as_str())
    );
    let last = pod_field(
        &cluster,
        "web",
        "{.status.containerStatuses[0].lastState.terminated.reason}",
    );
    assert!(last.is_some(), "lastState says how the run ended");
    assert!(serves(app));
    let logs = cluster.kubectl_ok(&["logs", "web", "-c", "app"]);
    let previous = cluster.kubectl_ok(&["logs", "web", "-c", "app", "--previous"]);
    assert!(
        previous.contains("crash"),
        "the previous run's logs: {previous}"
    );
    assert!(
        !logs.contains("crash requested"),
        "the current run's logs only: {logs}"
    );
    // `kubectl logs -f`: the current run, then what comes (another crash, and the next run).
    let mut follow = cluster.kubectl_command(&["logs", "-f", "web", "-c", "app"]);
    let lines = {
        let out = follow.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        rx
    };
    let mut seen = Vec::new();
    let mut until = |needle: &str| {
        while !seen.iter().any(|l: &String| l.contains(needle)) {
            match lines.recv_timeout(Duration::from_secs(30)) {
                Ok(l) => seen.push(l),
                Err(_) => panic!("logs -f: no {needle:?} in {seen:?}"),
            }
        }
    };
    until("listening");
    http(app, "POST", "/crash", "").unwrap();
    until("crash requested");
    let _ = follow.kill();
    let _ = follow.wait();
    eventually(
        Duration::from_secs(30),
        "serving after the second crash",
        || serves(app).then_some(()),
    );
    let tail = cluster.kubectl_ok(&["logs", "web", "-c", "setup", "--tail", "1"]);
    assert!(tail.contains("hello from a wasip1 module"), "{tail}");
    let events = cluster.kubectl_ok(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=web",
    ]);
    assert!(events.contains("Started"), "{events}");

    // The kubelet port itself: another node's certificate may not read these logs (the API
    // server says so), and a client without a certificate of the cluster gets no handshake.
    cluster.node_kubeconfig("other");
    let url = format!("https://127.0.0.1:{kubelet_port}/containerLogs/default/web/app");
    let dir = cluster.dir.path();
    let other = std::process::Command::new("curl")
        .args(["-sk", "-o", "/dev/null", "-w", "%{http_code}", "--cert"])
        .arg(dir.join("node-other.crt"))
        .arg("--key")
        .arg(dir.join("node-other.key"))
        .arg(&url)
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&other.stdout),
        "403",
        "another node is refused"
    );
    let anyone = std::process::Command::new("curl")
        .args(["-sk", "-o", "/dev/null", &url])
        .status()
        .unwrap();
    assert!(!anyone.success(), "no certificate, no logs");

    // A field peapod cannot honour: Failed, with a reason naming it.
    cluster.apply(&format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{ name: bad }}\nspec:\n  nodeName: {node}\n  \
         automountServiceAccountToken: false\n  containers:\n  - name: app\n    image: file://{KV_SERVER}\n    \
         stdin: true\n"
    ));
    let message = eventually(Duration::from_secs(30), "pod bad Failed", || {
        (pod_field(&cluster, "bad", "{.status.phase}")? == "Failed")
            .then(|| pod_field(&cluster, "bad", "{.status.message}"))
            .flatten()
    });
    assert!(message.contains("spec.containers[0].stdin"), "{message}");
    cluster.kubectl_ok(&["delete", "pod", "bad", "--wait=true", "--timeout=30s"]);

    // A config map that is not there yet: the pod waits (Pending, a FailedMount event naming
    // it), and runs once it is created, as the kubelet does; never Failed for it.
    cluster.apply(&format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{ name: late }}\nspec:\n  nodeName: {node}\n  \
         automountServiceAccountToken: false\n  containers:\n  - name: app\n    image: file://{KV_SERVER}\n    \
         volumeMounts: [{{ name: cfg, mountPath: /etc/app }}]\n  volumes:\n  \
         - {{ name: cfg, configMap: {{ name: late-config }} }}\n"
    ));
    let waiting = eventually(Duration::from_secs(30), "a FailedMount event", || {
        let events = cluster.kubectl_ok(&[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=late,reason=FailedMount",
            "-o",
            "jsonpath={.items[*].message}",
        ]);
        (!events.is_empty()).then_some(events)
    });
    assert!(waiting.contains("\"late-config\" not found"), "{waiting}");
    assert_eq!(
        pod_field(&cluster, "late", "{.status.phase}").as_deref(),
        Some("Pending")
    );
    assert!(
        !env.ps().contains_key("default-late"),
        "not on the board yet"
    );
    cluster.apply(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: { name: late-config }\ndata: { a: b }\n",
    );
    eventually(Duration::from_secs(30), "late Running", || {
        (pod_field(&cluster, "late", "{.status.phase}")? == "Running").then_some(())
    });
    cluster.kubectl_ok(&["delete", "pod", "late", "--wait=true", "--timeout=30s"]);
    cluster.kubectl_ok(&["delete", "configmap", "late-config"]);

    // A cluster pod may not replace one of the board's own (here applied by hand) by its name.
    let own = env.spec("own.toml", &env.kv_spec("default-taken", ""));
    env.ctl_ok(&["apply", "-f", own.to_str().unwrap()]);
    let before = env.ps()["default-taken"]["created"].clone();
    cluster.apply(&format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{ name: taken }}\nspec:\n  nodeName: {node}\n  \
         automountServiceAccountToken: false\n  containers:\n  - name: app\n    image: file://{KV_SERVER}\n"
    ));
    let message = eventually(Duration::from_secs(30), "pod taken Failed", || {
        (pod_field(&cluster, "taken", "{.status.phase}")? == "Failed")
            .then(|| pod_field(&cluster, "taken", "{.status.message}"))
            .flatten()
    });
    assert!(message.contains("has a pod named"), "{message}");
    assert_eq!(
        env.ps()["default-taken"]["created"],
        before,
        "the board's pod untouched"
    );
    cluster.kubectl_ok(&["delete", "pod", "taken", "--wait=true", "--timeout=30s"]);
    assert!(
        env.ps().contains_key("default-taken"),
        "deleting the cluster's pod leaves the board's"
    );
    env.ctl_ok(&["delete", "default-taken"]);

    // The API server goes: the pod keeps serving, through a daemon restart too.
    cluster.stop_apiserver();
    assert!(serves(app), "serving with the API server gone");
    daemon.terminate();
    daemon = node_daemon(&env, &cluster, &node, kubelet_port);
    let ip_after = eventually(
        Duration::from_secs(30),
        "the pod back after a restart",
        || {
            let p = env.ps().remove(&local)?;
            (p["status"] == "running").then(|| p["ip"].as_str().unwrap().to_string())
        },
    );
    assert_eq!(ip_after, ip, "recovered in place");
    eventually(Duration::from_secs(30), "serving offline", || {
        serves(app).then_some(())
    });
    let started = env.ps()[&local]["containers"].clone();

    // The API server back: reconciled, nothing restarted.
    cluster.resume_apiserver();
    eventually(Duration::from_secs(60), "node Ready again", || {
        (node_ready(&cluster, &node)? == "True").then_some(())
    });
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        env.ps()[&local]["containers"][2]["started_at"],
        started[2]["started_at"],
        "the app was not restarted"
    );
    assert_eq!(
        pod_field(&cluster, "web", "{.status.phase}").as_deref(),
        Some("Running")
    );

    // Deleted while the board is offline: removed when it comes back.
    daemon.terminate();
    cluster.kubectl_ok(&["delete", "pod", "web", "--grace-period=0", "--force"]);
    daemon = node_daemon(&env, &cluster, &node, kubelet_port);
    eventually(
        Duration::from_secs(60),
        "the deleted pod gone from the board",
        || (!env.ps().contains_key(&local)).then_some(()),
    );

    // `kubectl delete pod` of a running pod: gone from the board and from the cluster.
    // This one mounts its service account's token, as pods do by default: the node makes the
    // projected volume (a token bound to the pod, the cluster's CA, the namespace).
    let plain =
        web_pod("web2", &node, free_port()).replace("  automountServiceAccountToken: false\n", "");
    cluster.apply(&plain);
    eventually(Duration::from_secs(60), "web2 Running", || {
        (pod_field(&cluster, "web2", "{.status.phase}")? == "Running").then_some(())
    });
    let volumes = env.state_dir().join("volumes/default-web2");
    let access = std::fs::read_dir(&volumes)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("kube-api-access")
        })
        .expect("the service account volume");
    let read = |f: &str| std::fs::read_to_string(access.join(f)).unwrap();
    assert_eq!(read("namespace"), "default");
    assert!(read("ca.crt").contains("BEGIN CERTIFICATE"));
    let token = read("token");
    assert_eq!(token.split('.').count(), 3, "a JWT: {token}");
    cluster.kubectl_ok(&["delete", "pod", "web2", "--wait=true", "--timeout=60s"]);
    assert!(
        !env.ps().contains_key("default-web2"),
        "stopped on the board"
    );

    // peapod stops: the node goes NotReady within the grace period.
    daemon.terminate();
    let t0 = std::time::Instant::now();
    eventually(
        cluster.grace + Duration::from_secs(20),
        "node NotReady",
        || (node_ready(&cluster, &node)? != "True").then_some(()),
    );
    eprintln!("NotReady {:?} after the daemon stopped", t0.elapsed());
}

/// The same mapping without a cluster: `peapod apply -f pod.yaml`, a manifest in the pods
/// directory (a static pod), and a field peapod cannot honour refused by name.
#[test]
#[ignore = "needs root and network namespaces"]
fn a_pod_manifest_applies_without_a_cluster() {
    let env = Env::new();
    let _daemon = env.daemon();
    std::fs::copy(KV_SERVER, env.dir.path().join("app.wasm")).unwrap();
    let manifest = |name: &str, extra: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  labels: {{ app: web }}\nspec:\n  \
             containers:\n  - name: app\n    image: app.wasm\n    args: [\"--listen\", \"0.0.0.0:8080\"]\n    \
             readinessProbe: {{ httpGet: {{ path: /healthz, port: 8080 }}, periodSeconds: 1 }}\n{extra}"
        )
    };
    let yaml = env.spec("web.yaml", &manifest("web", ""));
    let out = env.ctl_ok(&["apply", "-f", yaml.to_str().unwrap()]);
    assert!(out.contains("pod/web created"), "{out}");
    let ip = env.wait_running("web");
    eventually(Duration::from_secs(30), "web serves", || {
        serves(format!("{ip}:8080").parse().unwrap()).then_some(())
    });
    let pods = env.ctl_ok(&["get", "pods", "-l", "app=web"]);
    assert!(pods.contains("web"), "{pods}");
    // Applied again unchanged: left alone.
    let out = env.ctl_ok(&["apply", "-f", yaml.to_str().unwrap()]);
    assert!(out.contains("pod/web unchanged"), "{out}");

    // Refused, naming the manifest's fields; nothing made.
    let bad = env.spec(
        "bad.yaml",
        &manifest(
            "bad",
            "    stdin: true\n    command: [\"/bin/sh\"]\n  hostNetwork: true\n",
        ),
    );
    let (code, _, stderr) = env.ctl(&["apply", "-f", bad.to_str().unwrap()]);
    assert_eq!(code, 2, "{stderr}");
    for f in [
        "spec.containers[0].stdin",
        "spec.containers[0].command",
        "spec.hostNetwork",
    ] {
        assert!(stderr.contains(f), "{f} not named: {stderr}");
    }
    assert!(stderr.contains("no entrypoint"), "{stderr}");
    assert!(!env.ps().contains_key("bad"));

    // A manifest in the pods directory runs as a static pod.
    let image = format!("file://{}", env.dir.path().join("app.wasm").display());
    env.pod_file(
        "static.yaml",
        &manifest("static", "").replace("app.wasm", &image),
    );
    env.wait_running("static");
}
