//! A real Kubernetes control plane for a test: etcd, kube-apiserver and kube-controller-manager
//! of one release (built from the Go module proxy by scripts/k8s-build, once per machine), on
//! 127.0.0.1 ports of their own, with a CA and certificates the test makes (openssl), all in
//! the test's directory; driven with the real kubectl. Stopped by PID on drop.

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use super::*;

/// The programs' directory (built when missing: ~15 min the first time on a machine).
fn k8s_bin() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = Command::new(root.join("scripts/k8s-build"))
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    assert!(out.status.success(), "scripts/k8s-build failed");
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

pub(crate) struct Cluster {
    pub dir: tempfile::TempDir,
    bin: PathBuf,
    etcd: Option<Child>,
    apiserver: Option<Child>,
    controllers: Option<Child>,
    pub port: u16,
    etcd_port: u16,
    peer_port: u16,
    /// How long the node lifecycle controller waits for a node's heartbeat.
    pub grace: Duration,
}

impl Cluster {
    pub(crate) fn start() -> Cluster {
        let bin = k8s_bin();
        let dir = tempfile::Builder::new()
            .prefix("peapod-cluster")
            .tempdir()
            .unwrap();
        let mut c = Cluster {
            dir,
            bin,
            etcd: None,
            apiserver: None,
            controllers: None,
            port: free_port(),
            etcd_port: free_port(),
            peer_port: free_port(),
            grace: Duration::from_secs(15),
        };
        c.certificates();
        c.start_etcd();
        c.resume_apiserver();
        c.start_controllers();
        // The default service account (made by the controllers) lets pods be created.
        eventually(Duration::from_secs(60), "service account default", || {
            c.kubectl(&["get", "serviceaccount", "default"])
                .status
                .success()
                .then_some(())
        });
        c
    }

    fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }

    fn openssl(&self, args: &[&str]) {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(self.dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A certificate `name.crt` (key `name.key`) signed by the test's CA.
    fn issue(&self, name: &str, subject: &str, ext: &str) {
        let (key, csr, crt, extf) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.crt"),
            format!("{name}.ext"),
        );
        std::fs::write(self.path(&extf), ext).unwrap();
        self.openssl(&[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-subj",
            subject,
            "-keyout",
            &key,
            "-out",
            &csr,
        ]);
        self.openssl(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-out",
            &crt,
            "-extfile",
            &extf,
        ]);
    }

    fn certificates(&self) {
        self.openssl(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=peapod-test-ca",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ]);
        let client = "extendedKeyUsage=clientAuth\n";
        self.issue(
            "apiserver",
            "/CN=kube-apiserver",
            "subjectAltName=IP:127.0.0.1,DNS:localhost,IP:10.0.0.1\nextendedKeyUsage=serverAuth\n",
        );
        self.issue("admin", "/O=system:masters/CN=admin", client);
        self.issue(
            "kubelet-client",
            "/O=system:masters/CN=kube-apiserver-kubelet-client",
            client,
        );
        // The controllers as the cluster's admin: one identity for all of them (a real
        // cluster gives each its service account).
        self.issue(
            "controllers",
            "/O=system:masters/CN=system:kube-controller-manager",
            client,
        );
        self.openssl(&["genrsa", "-out", "sa.key", "2048"]);
        self.openssl(&["rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub"]);
        self.kubeconfig("admin");
        self.kubeconfig("controllers");
    }

    /// A kubeconfig for the client certificate `name`.
    fn kubeconfig(&self, name: &str) -> PathBuf {
        let p = self.path(&format!("{name}.kubeconfig"));
        std::fs::write(
            &p,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    \
                 server: https://127.0.0.1:{port}\n    certificate-authority: {ca}\n\
                 users:\n- name: {name}\n  user:\n    client-certificate: {dir}/{name}.crt\n    \
                 client-key: {dir}/{name}.key\ncontexts:\n- name: test\n  context:\n    \
                 cluster: test\n    user: {name}\ncurrent-context: test\n",
                port = self.port,
                ca = self.path("ca.crt").display(),
                dir = self.dir.path().display(),
            ),
        )
        .unwrap();
        p
    }

    /// A node's kubeconfig: a certificate for `system:node:NAME` (group `system:nodes`), which
    /// the Node authorizer and the NodeRestriction admission plugin hold to its own objects.
    pub(crate) fn node_kubeconfig(&self, node: &str) -> PathBuf {
        let name = format!("node-{node}");
        self.issue(
            &name,
            &format!("/O=system:nodes/CN=system:node:{node}"),
            "extendedKeyUsage=clientAuth\n",
        );
        self.kubeconfig(&name)
    }

    /// A kubelet serving certificate for `node` at 127.0.0.1, signed by the cluster's CA (the
    /// API server checks it: `--kubelet-certificate-authority`, as k3s does): (cert, key).
    pub(crate) fn kubelet_serving(&self, node: &str) -> (PathBuf, PathBuf) {
        let name = format!("kubelet-{node}");
        self.issue(
            &name,
            &format!("/O=system:nodes/CN=system:node:{node}"),
            &format!("subjectAltName=IP:127.0.0.1,DNS:{node}\nextendedKeyUsage=serverAuth\n"),
        );
        (
            self.path(&format!("{name}.crt")),
            self.path(&format!("{name}.key")),
        )
    }

    fn log(&self, name: &str) -> std::fs::File {
        std::fs::File::create(self.path(&format!("{name}.log"))).unwrap()
    }

    fn start_etcd(&mut self) {
        let (client, peer) = (
            format!("http://127.0.0.1:{}", self.etcd_port),
            format!("http://127.0.0.1:{}", self.peer_port),
        );
        let log = self.log("etcd");
        let child = Command::new(self.bin.join("etcd"))
            .arg("--data-dir")
            .arg(self.path("etcd"))
            .args([
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
            ])
            .args([
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
            ])
            .args(["--initial-cluster", &format!("default={peer}")])
            .args(["--log-level", "warn", "--unsafe-no-fsync"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.etcd = Some(child);
    }

    /// Starts (again) the API server, and waits until it is ready.
    pub(crate) fn resume_apiserver(&mut self) {
        assert!(self.apiserver.is_none(), "already running");
        let p = |f: &str| self.path(f).display().to_string();
        let log = self.log("apiserver");
        let child = Command::new(self.bin.join("kube-apiserver"))
            .arg(format!(
                "--etcd-servers=http://127.0.0.1:{}",
                self.etcd_port
            ))
            .arg("--bind-address=127.0.0.1")
            .arg("--advertise-address=127.0.0.1")
            .arg(format!("--secure-port={}", self.port))
            .arg(format!("--tls-cert-file={}", p("apiserver.crt")))
            .arg(format!("--tls-private-key-file={}", p("apiserver.key")))
            .arg(format!("--client-ca-file={}", p("ca.crt")))
            .arg(format!("--service-account-key-file={}", p("sa.pub")))
            .arg(format!(
                "--service-account-signing-key-file={}",
                p("sa.key")
            ))
            .arg("--service-account-issuer=https://kubernetes.default.svc")
            .arg("--service-cluster-ip-range=10.0.0.0/24")
            .arg("--authorization-mode=Node,RBAC")
            .arg("--enable-admission-plugins=NodeRestriction")
            .arg(format!(
                "--kubelet-client-certificate={}",
                p("kubelet-client.crt")
            ))
            .arg(format!("--kubelet-client-key={}", p("kubelet-client.key")))
            .arg("--kubelet-preferred-address-types=InternalIP")
            .arg(format!("--kubelet-certificate-authority={}", p("ca.crt")))
            .arg("--endpoint-reconciler-type=none")
            .arg("-v=0")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.apiserver = Some(child);
        eventually(Duration::from_secs(90), "the API server ready", || {
            let out = self.kubectl(&["get", "--raw", "/readyz"]);
            out.status.success().then_some(())
        });
    }

    pub(crate) fn stop_apiserver(&mut self) {
        if let Some(mut c) = self.apiserver.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn start_controllers(&mut self) {
        let p = |f: &str| self.path(f).display().to_string();
        let log = self.log("controllers");
        let child = Command::new(self.bin.join("kube-controller-manager"))
            .arg(format!("--kubeconfig={}", p("controllers.kubeconfig")))
            .arg("--bind-address=127.0.0.1")
            .arg("--secure-port=0")
            .arg("--leader-elect=false")
            .arg(format!("--service-account-private-key-file={}", p("sa.key")))
            .arg(format!("--root-ca-file={}", p("ca.crt")))
            .arg("--controllers=serviceaccount-controller,serviceaccount-token-controller,root-ca-certificate-publisher-controller,node-lifecycle-controller")
            .arg("--node-monitor-period=1s")
            .arg(format!("--node-monitor-grace-period={}s", self.grace.as_secs()))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.controllers = Some(child);
    }

    /// `kubectl` as the cluster's admin.
    pub(crate) fn kubectl(&self, args: &[&str]) -> Output {
        Command::new(self.bin.join("kubectl"))
            .arg(format!(
                "--kubeconfig={}",
                self.path("admin.kubeconfig").display()
            ))
            .arg("--request-timeout=20s")
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// `kubectl ARGS` started with its stdout piped (a stream: `logs -f`, `get -w`).
    pub(crate) fn kubectl_command(&self, args: &[&str]) -> Child {
        Command::new(self.bin.join("kubectl"))
            .arg(format!(
                "--kubeconfig={}",
                self.path("admin.kubeconfig").display()
            ))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    }

    /// `kubectl ARGS`, which must succeed: its stdout.
    pub(crate) fn kubectl_ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(
            out.status.success(),
            "kubectl {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// `kubectl apply -f -` of `yaml`.
    pub(crate) fn apply(&self, yaml: &str) {
        let mut child = Command::new(self.bin.join("kubectl"))
            .arg(format!(
                "--kubeconfig={}",
                self.path("admin.kubeconfig").display()
            ))
            .args(["apply", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(yaml.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "kubectl apply: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A JSONPath of an object (`kubectl get KIND NAME -o jsonpath=...`), or `None` when the
    /// get fails.
    pub(crate) fn jsonpath(&self, what: &[&str], path: &str) -> Option<String> {
        let mut args = vec!["get"];
        args.extend_from_slice(what);
        let expr = format!("jsonpath={path}");
        args.extend_from_slice(&["-o", &expr]);
        let out = self.kubectl(&args);
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The logs of the control plane, for a failing test's message.
    pub(crate) fn logs(&self) -> String {
        ["apiserver", "controllers", "etcd"]
            .iter()
            .map(|n| {
                let text =
                    std::fs::read_to_string(self.path(&format!("{n}.log"))).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(30).collect();
                format!(
                    "--- {n}\n{}",
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("the control plane's last log lines:\n{}", self.logs());
        }
        for c in [&mut self.controllers, &mut self.apiserver, &mut self.etcd] {
            if let Some(mut c) = c.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}
