//! The kernel floor: the sandbox's kernel work done by `ip` commands and by raw netlink with nothing
//! else (no lock, no lease file, no checks), and native iperf3 over a namespace's loopback.

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use peapod::config::Config;
use peapod::host::net::{Links, Netlink};
use peapod::host::netns;
use peapod::host::sandbox::{SandboxError, plumb};

use crate::stats::ms;

pub(crate) fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

/// An address of the subnet kept clear of the pods' leases (the last usable one).
fn floor_ip(cfg: &Config) -> Ipv4Addr {
    cfg.subnet.hosts().last().expect("hosts")
}

/// `ip netns add` + `ip link` + `ip addr` + `ip route`: seven commands, as a script would.
/// `prefix` names the namespaces (in /run/netns) so the sweep finds them after an interrupt.
pub(crate) fn ip_commands(cfg: &Config, prefix: &str, iterations: usize) -> Result<Vec<f64>> {
    let addr = format!("{}/{}", floor_ip(cfg), cfg.subnet.prefix_len());
    let gw = cfg.gateway().to_string();
    let mut samples = vec![];
    for i in 0..iterations {
        let ns = format!("{prefix}{i}");
        let veth = format!("pbi{}{i}", &prefix[prefix.len() - 4..]);
        let t0 = Instant::now();
        ip(&["netns", "add", &ns])?;
        ip(&[
            "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns,
        ])?;
        ip(&["link", "set", &veth, "master", &cfg.bridge, "up"])?;
        ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        ip(&["-n", &ns, "addr", "add", &addr, "dev", "eth0"])?;
        ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
        ip(&["-n", &ns, "route", "add", "default", "via", &gw])?;
        samples.push(ms(t0.elapsed()));
        ip(&["netns", "del", &ns])?;
    }
    Ok(samples)
}

/// The same work over netlink from this process: pin a namespace, one veth message, four
/// messages inside. This is `peapod::host::sandbox::plumb`, the code the sandbox itself runs.
pub(crate) async fn raw_netlink(
    cfg: &Config,
    dir: &Path,
    tag: &str,
    iterations: usize,
) -> Result<Vec<f64>> {
    let host = Netlink::HOST;
    let bridge = host
        .ensure_bridge(&cfg.bridge, cfg.gateway(), cfg.subnet.prefix_len())
        .await?;
    let mut samples = vec![];
    for i in 0..iterations {
        let pin = dir.join(format!("floor{i}"));
        let veth = format!("pbr{tag}{i}");
        let t0 = Instant::now();
        let fd = Arc::new(netns::create_pinned(&pin)?);
        plumb(&host, bridge, cfg, &fd, &veth, floor_ip(cfg)).await?;
        samples.push(ms(t0.elapsed()));
        drop(fd);
        host.delete_link(&veth).await?;
        netns::remove_pinned(&pin)?;
    }
    Ok(samples)
}

/// Native iperf3 over the loopback of a namespace of our own; MB/s per run.
pub(crate) async fn iperf3(dir: &Path, mib: usize, iterations: usize) -> Result<Vec<f64>> {
    let pin = dir.join("iperf-ns");
    let fd = Arc::new(netns::create_pinned(&pin)?);
    let result = async {
        let nl = Netlink::inside(fd.clone());
        let lo = nl
            .link_index("lo")
            .await?
            .ok_or(SandboxError::Missing("lo"))?;
        nl.set_up(lo, "lo").await?;
        let net = format!("--net={}", pin.display());
        let mut samples = vec![];
        for _ in 0..iterations {
            let mut server = Command::new("nsenter")
                .args([&net, "iperf3", "-s", "-1", "-p", "5201"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .context("start iperf3 server")?;
            let mut out = None;
            for _ in 0..100 {
                tokio::time::sleep(Duration::from_millis(20)).await;
                let o = Command::new("nsenter")
                    .args([&net, "iperf3", "-c", "127.0.0.1", "-p", "5201", "-J"])
                    .arg("-n")
                    .arg(format!("{mib}M"))
                    .output()?;
                if o.status.success() {
                    out = Some(o.stdout);
                    break;
                }
            }
            let _ = server.kill();
            let _ = server.wait();
            let out = out.context("iperf3 client never connected")?;
            let v: serde_json::Value = serde_json::from_slice(&out)?;
            let bps = v["end"]["sum_received"]["bits_per_second"]
                .as_f64()
                .ok_or_else(|| anyhow!("no bits_per_second in iperf3 output"))?;
            samples.push(bps / 8.0 / 1e6);
        }
        Ok::<_, anyhow::Error>(samples)
    }
    .await;
    drop(fd);
    netns::remove_pinned(&pin)?;
    result
}
