//! The board as a node of a Kubernetes cluster (`[kubernetes]` in the config): a small kubelet
//! in front of the daemon, as virtual-kubelet and Krustlet are, that talks to the daemon
//! through its own API like any client (`crate::client`), so the daemon stays the one owner of
//! pods, and the board's pods live on when the cluster is out of reach.
//!
//! - [`register`]: the Node (capacity, labels, taint), its Lease in `kube-node-lease` renewed
//!   every 10 s, its Ready condition.
//! - [`sync`]: the pods bound to the node, watched; each one translated by
//!   [`crate::spec::manifest`] (config maps and secrets fetched) and applied to the daemon
//!   (an unchanged pod is left alone, so a reconnect restarts nothing); a deleted one stopped
//!   and released; pods of this node the cluster no longer has are removed when the watch
//!   (re)starts; each pod's status reported back when it changes.
//! - [`status`]: a peapod pod's view as a v1 `PodStatus`.
//! - [`projected`]: projected volumes (the service account token the API server adds to
//!   every pod), made as the kubelet makes them.
//! - [`kubelet`]: the kubelet port (TLS): `/containerLogs` for `kubectl logs`, proxied by the
//!   API server.
//! - [`names`]: which peapod pod is which cluster pod.
//!
//! With the API server gone the agent retries with a backoff; the daemon keeps the pods
//! running, and after a daemon restart starts them again from its records (they are pods like
//! any other). Design notes: docs/kubernetes.md.

use std::time::Duration;

use crate::client::Client;
use crate::config::{Config, NodeSettings};

mod kubelet;
mod names;
mod projected;
mod register;
mod status;
mod sync;

/// The labels peapod puts on the pods it runs for the cluster.
pub const UID_LABEL: &str = "peapod.dev/k8s-uid";
pub const NAMESPACE_LABEL: &str = "peapod.dev/k8s-namespace";
pub const NAME_LABEL: &str = "peapod.dev/k8s-name";

/// Why a pod of the cluster is not (yet) on the board.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Blocked {
    /// It cannot run here: `Failed`, with why (naming the field).
    Unsupported(String),
    /// Not yet: something it needs from the cluster (a config map, a secret, a token) is
    /// missing or could not be fetched. Tried again every few seconds, as the kubelet does;
    /// the pod stays `Pending` with a `FailedMount` event.
    Waiting(String),
}

impl From<String> for Blocked {
    fn from(message: String) -> Self {
        Blocked::Unsupported(message)
    }
}

/// The node agent, until the daemon stops. Reports and retries its failures; never returns
/// early while the daemon runs.
pub async fn run(node: NodeSettings, cfg: Config) {
    // rustls' provider (the registry client installs the same one).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let daemon = Client::new(&cfg.socket);
    // The daemon's API answers once `serve` has recovered its pods.
    while daemon.health().await.is_err() {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut backoff = Duration::from_millis(500);
    let (client, roots) = loop {
        match connect(&node).await {
            Ok(c) => break c,
            Err(e) => {
                tracing::warn!("kubernetes: {e:#}; retrying in {backoff:?}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    };
    let ip = node.node_ip.unwrap_or_else(register::host_ip);
    let kubelet = tokio::spawn(kubelet::serve(
        client.clone(),
        node.clone(),
        ip,
        cfg.socket.clone(),
        roots,
    ));
    let registered = tokio::spawn(register::keep(
        client.clone(),
        node.clone(),
        ip,
        cfg.clone(),
    ));
    sync::run(client, node, ip, cfg).await;
    registered.abort();
    kubelet.abort();
}

/// A client of the API server from the node's kubeconfig, and the cluster's CA (DER).
async fn connect(node: &NodeSettings) -> anyhow::Result<(kube::Client, Vec<Vec<u8>>)> {
    use anyhow::Context;
    let kc = kube::config::Kubeconfig::read_from(&node.kubeconfig)
        .with_context(|| format!("kubernetes.kubeconfig {}", node.kubeconfig.display()))?;
    let config =
        kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
            .await
            .with_context(|| format!("kubernetes.kubeconfig {}", node.kubeconfig.display()))?;
    let roots = config.root_cert.clone().unwrap_or_default();
    let client = kube::Client::try_from(config).context("a client of the API server")?;
    Ok((client, roots))
}
