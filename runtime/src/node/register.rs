//! The Node object and its heartbeat: created (or updated) at start with the board's capacity,
//! labels and taint; its Lease in `kube-node-lease` renewed every [`RENEW`], and its Ready
//! condition with it. A node whose Lease goes stale is marked NotReady by the cluster's node
//! lifecycle controller (after its grace period: 40 s by default).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{
    DaemonEndpoint, Node, NodeAddress, NodeCondition, NodeDaemonEndpoints, NodeSpec, NodeStatus,
    NodeSystemInfo, Taint,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, OwnerReference, Time};
use kube::api::{Api, Patch, PatchParams, PostParams};

use crate::config::{Config, NodeSettings};

/// How often the Lease is renewed (the kubelet's default).
const RENEW: Duration = Duration::from_secs(10);
/// The Lease's duration (the kubelet's default).
const LEASE_SECONDS: i32 = 40;

/// The node's labels: the architecture and OS the scheduler matches on, what runs here, and
/// the config's own.
fn labels(node: &NodeSettings) -> BTreeMap<String, String> {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "arm" => "arm",
        other => other,
    };
    let mut l = BTreeMap::from([
        ("kubernetes.io/arch".to_string(), arch.to_string()),
        ("kubernetes.io/os".to_string(), "linux".to_string()),
        ("kubernetes.io/hostname".to_string(), node.node_name.clone()),
        ("peapod.dev/runtime".to_string(), "wasm".to_string()),
    ]);
    l.extend(node.labels.clone());
    l
}

/// `KEY[=VALUE]:EFFECT` (checked by the config) as a Taint.
fn taint(t: &str) -> Taint {
    let (kv, effect) = t.rsplit_once(':').unwrap_or((t, "NoSchedule"));
    let (key, value) = match kv.split_once('=') {
        Some((k, v)) => (k.to_string(), Some(v.to_string())),
        None => (kv.to_string(), None),
    };
    Taint {
        key,
        value,
        effect: effect.to_string(),
        time_added: None,
    }
}

/// The board's first non-loopback IPv4 address (the node's InternalIP unless
/// `kubernetes.node_ip` says it).
pub(super) fn host_ip() -> IpAddr {
    // The source address of a route out (no packet is sent by a UDP connect).
    std::net::UdpSocket::bind("0.0.0.0:0")
        .and_then(|s| s.connect("192.0.2.1:9").map(|()| s))
        .and_then(|s| s.local_addr())
        .map(|a| a.ip())
        .unwrap_or(IpAddr::from([127, 0, 0, 1]))
}

fn capacity(cfg: &Config) -> BTreeMap<String, Quantity> {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let memory = cfg.limits.allocatable_memory;
    // One address of the subnet per pod (the bridge takes one, network and broadcast two).
    let pods = (1u64 << (32 - cfg.subnet.prefix_len()))
        .saturating_sub(3)
        .min(1000);
    BTreeMap::from([
        ("cpu".to_string(), Quantity(cpus.to_string())),
        (
            "memory".to_string(),
            Quantity(format!("{}Ki", memory / 1024)),
        ),
        ("pods".to_string(), Quantity(pods.to_string())),
    ])
}

fn now() -> Time {
    Time(k8s_openapi::chrono::Utc::now())
}

fn status(node: &NodeSettings, ip: IpAddr, cfg: &Config) -> NodeStatus {
    let cap = capacity(cfg);
    let uname = nix::sys::utsname::uname().ok();
    let text = |f: fn(&nix::sys::utsname::UtsName) -> &std::ffi::OsStr| {
        uname
            .as_ref()
            .map(|u| f(u).to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    let condition = |type_: &str, status: &str, reason: &str, message: &str| NodeCondition {
        type_: type_.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_heartbeat_time: Some(now()),
        last_transition_time: None,
    };
    NodeStatus {
        capacity: Some(cap.clone()),
        allocatable: Some(cap),
        addresses: Some(vec![
            NodeAddress {
                type_: "InternalIP".into(),
                address: ip.to_string(),
            },
            NodeAddress {
                type_: "Hostname".into(),
                address: node.node_name.clone(),
            },
        ]),
        daemon_endpoints: Some(NodeDaemonEndpoints {
            kubelet_endpoint: Some(DaemonEndpoint {
                port: i32::from(node.kubelet_port),
            }),
        }),
        node_info: Some(NodeSystemInfo {
            architecture: labels(node)["kubernetes.io/arch"].clone(),
            operating_system: "linux".into(),
            kernel_version: text(|u| u.release()),
            os_image: "peapod".into(),
            container_runtime_version: format!("peapod://{}", env!("CARGO_PKG_VERSION")),
            kubelet_version: format!("v1.37.2-peapod-{}", env!("CARGO_PKG_VERSION")),
            machine_id: std::fs::read_to_string("/etc/machine-id")
                .map(|s| s.trim().to_string())
                .unwrap_or_default(),
            boot_id: std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
                .map(|s| s.trim().to_string())
                .unwrap_or_default(),
            ..NodeSystemInfo::default()
        }),
        conditions: Some(vec![
            condition("Ready", "True", "KubeletReady", "peapod is running pods"),
            condition("MemoryPressure", "False", "KubeletHasSufficientMemory", ""),
            condition("DiskPressure", "False", "KubeletHasNoDiskPressure", ""),
            condition("PIDPressure", "False", "KubeletHasSufficientPID", ""),
        ]),
        ..NodeStatus::default()
    }
}

/// Registers the node, then renews its Lease and Ready condition for as long as it runs.
pub(super) async fn keep(client: kube::Client, node: NodeSettings, ip: IpAddr, cfg: Config) {
    let nodes: Api<Node> = Api::all(client.clone());
    let leases: Api<Lease> = Api::namespaced(client, "kube-node-lease");
    let mut registered: Option<Node> = None;
    let mut tick = tokio::time::interval(RENEW);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if registered.is_none() {
            match register(&nodes, &node, ip, &cfg).await {
                Ok(n) => {
                    tracing::info!("kubernetes: registered node {}", node.node_name);
                    registered = Some(n);
                }
                Err(e) => {
                    tracing::warn!("kubernetes: registering node {}: {e}", node.node_name);
                    continue;
                }
            }
        }
        let owner = registered.as_ref().expect("registered");
        if let Err(e) = renew(&leases, &node, owner).await {
            tracing::warn!("kubernetes: renewing the node's lease: {e}");
        }
        let patch = serde_json::json!({ "status": status(&node, ip, &cfg) });
        match nodes
            .patch_status(
                &node.node_name,
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
        {
            Ok(_) => {}
            // Deleted by someone (`kubectl delete node`): registered again.
            Err(kube::Error::Api(e)) if e.code == 404 => registered = None,
            Err(e) => tracing::warn!("kubernetes: node status: {e}"),
        }
    }
}

async fn register(
    nodes: &Api<Node>,
    node: &NodeSettings,
    ip: IpAddr,
    cfg: &Config,
) -> kube::Result<Node> {
    let labels = labels(node);
    let created = match nodes.get_opt(&node.node_name).await? {
        Some(_) => {
            // Labels again (the config may have changed); taints are set at creation only
            // (a node may not change its own: the NodeRestriction admission plugin).
            let patch = serde_json::json!({ "metadata": { "labels": labels } });
            nodes
                .patch(
                    &node.node_name,
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await?
        }
        None => {
            let n = Node {
                metadata: ObjectMeta {
                    name: Some(node.node_name.clone()),
                    labels: Some(labels),
                    ..ObjectMeta::default()
                },
                spec: Some(NodeSpec {
                    taints: Some(node.taints.iter().map(|t| taint(t)).collect()),
                    ..NodeSpec::default()
                }),
                status: None,
            };
            nodes.create(&PostParams::default(), &n).await?
        }
    };
    let patch = serde_json::json!({ "status": status(node, ip, cfg) });
    nodes
        .patch_status(
            &node.node_name,
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await?;
    Ok(created)
}

async fn renew(leases: &Api<Lease>, node: &NodeSettings, owner: &Node) -> kube::Result<()> {
    let spec = LeaseSpec {
        holder_identity: Some(node.node_name.clone()),
        lease_duration_seconds: Some(LEASE_SECONDS),
        renew_time: Some(MicroTime(k8s_openapi::chrono::Utc::now())),
        ..LeaseSpec::default()
    };
    let patch = serde_json::json!({ "spec": spec });
    match leases
        .patch(
            &node.node_name,
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(node.node_name.clone()),
                    owner_references: Some(vec![OwnerReference {
                        api_version: "v1".into(),
                        kind: "Node".into(),
                        name: node.node_name.clone(),
                        uid: owner.metadata.uid.clone().unwrap_or_default(),
                        ..OwnerReference::default()
                    }]),
                    ..ObjectMeta::default()
                },
                spec: Some(spec),
            };
            leases
                .create(&PostParams::default(), &lease)
                .await
                .map(drop)
        }
        Err(e) => Err(e),
    }
}
