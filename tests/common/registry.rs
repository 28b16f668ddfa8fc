//! A real OCI registry for a test (Debian's `docker-registry`, the CNCF distribution server) on
//! 127.0.0.1, storing into the test's own directory, and artifacts pushed to it with the same
//! client crate peapod pulls with.

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::*;

/// What `scripts/setup` installs.
pub(crate) const REGISTRY_BIN: &str = "/usr/bin/docker-registry";

/// A registry process this test started (stopped by PID on drop).
pub(crate) struct Registry {
    child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub port: u16,
    /// Serves HTTPS with a self-signed certificate (no system trusts it).
    tls: bool,
}

impl Registry {
    pub(crate) fn start() -> Registry {
        Self::start_with(false)
    }

    /// A registry serving HTTPS with a certificate of its own, for 127.0.0.1, that no CA signed.
    pub(crate) fn start_self_signed() -> Registry {
        Self::start_with(true)
    }

    fn start_with(tls: bool) -> Registry {
        assert!(
            Path::new(REGISTRY_BIN).exists(),
            "{REGISTRY_BIN} is missing: run scripts/setup (it installs docker-registry)"
        );
        let dir = tempfile::Builder::new()
            .prefix("peapod-registry")
            .tempdir()
            .unwrap();
        if tls {
            let out = Command::new("openssl")
                .args([
                    "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                ])
                .args([
                    "-subj",
                    "/CN=127.0.0.1",
                    "-addext",
                    "subjectAltName=IP:127.0.0.1",
                ])
                .arg("-keyout")
                .arg(dir.path().join("key.pem"))
                .arg("-out")
                .arg(dir.path().join("cert.pem"))
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let mut r = Registry {
            child: None,
            dir,
            port: free_port(),
            tls,
        };
        r.resume();
        r
    }

    /// `127.0.0.1:PORT`, as references and `images.insecure` name it.
    pub(crate) fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Starts the registry (again: same storage, same port) and waits until it answers.
    pub(crate) fn resume(&mut self) {
        assert!(self.child.is_none(), "already running");
        let config = self.dir.path().join("config.yml");
        let tls = if self.tls {
            format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                self.dir.path().join("cert.pem").display(),
                self.dir.path().join("key.pem").display()
            )
        } else {
            String::new()
        };
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n\
                 http:\n  addr: 127.0.0.1:{}\n{tls}",
                self.dir.path().join("data").display(),
                self.port
            ),
        )
        .unwrap();
        let log = std::fs::File::create(self.dir.path().join("registry.log")).unwrap();
        let child = Command::new(REGISTRY_BIN)
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        eventually(Duration::from_secs(20), "the registry listening", || {
            TcpStream::connect(("127.0.0.1", self.port)).ok()
        });
    }

    /// Stops the registry (its storage stays).
    pub(crate) fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The file the registry serves blob `digest` from (a test may damage it).
    pub(crate) fn blob_file(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap();
        self.dir
            .path()
            .join("data/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    /// Pushes an artifact of `layers` (bytes, media type) with a config of `config_type` as
    /// `REPO:TAG` (`repo_tag`); returns the manifest's digest.
    pub(crate) fn push(
        &self,
        repo_tag: &str,
        layers: &[(&[u8], &str)],
        config_type: &str,
    ) -> String {
        use oci_client::client::{ClientConfig, ClientProtocol, Config, ImageLayer};
        let reference: oci_client::Reference =
            format!("{}/{repo_tag}", self.host()).parse().unwrap();
        // The TLS provider peapod uses (reqwest wants one installed even for plain HTTP).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = oci_client::Client::new(ClientConfig {
            protocol: ClientProtocol::Http,
            ..Default::default()
        });
        let layers: Vec<ImageLayer> = layers
            .iter()
            .map(|(bytes, media)| ImageLayer::new(bytes.to_vec(), media.to_string(), None))
            .collect();
        let config = Config::new(b"{}".to_vec(), config_type.to_string(), None);
        let auth = oci_client::secrets::RegistryAuth::Anonymous;
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async {
                client
                    .push(&reference, &layers, config, &auth, None)
                    .await
                    .unwrap();
                client
                    .fetch_manifest_digest(&reference, &auth)
                    .await
                    .unwrap()
            })
    }

    /// Pushes `module` as a WASM artifact (the CNCF layout: `application/wasm` layer, wasm
    /// config) as `repo_tag`; returns the manifest's digest.
    pub(crate) fn push_module(&self, repo_tag: &str, module: &[u8]) -> String {
        self.push(
            repo_tag,
            &[(module, "application/wasm")],
            "application/vnd.wasm.config.v0+json",
        )
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
    }
}
