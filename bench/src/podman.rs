//! podman pods measured in the same run, in the same shapes: `podman pod create` + one container
//! running a static busybox listener (an image built locally with `podman import`, since no
//! registry is reachable), a restart of that container, a re-create of the pod, and the memory of
//! the pod's processes (conmon, infra, the container).
//!
//! podman runs with a private `containers.conf` (via `CONTAINERS_CONF`, `/etc/containers` is left
//! alone): `runtime = "runc"`, `default_ulimits` within the hard `nofile` limit, and
//! `events_logger = "file"` (no journald needed). Every pod, container and image is named
//! `peapod-bench-<tag>...` and removed by [`sweep`].

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, anyhow};

use crate::pods::wait_accept;
use crate::stats::{Figure, ms, rss_kib};

const BUSYBOX: &str = "/bin/busybox";

fn image(tag: &str) -> String {
    format!("localhost/peapod-bench-{tag}:latest")
}

fn conf_path(tag: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("peapod-bench-{tag}-containers.conf"))
}

fn podman(tag: &str, args: &[&str]) -> Result<String> {
    let out = Command::new("podman")
        .args(args)
        .env("CONTAINERS_CONF", conf_path(tag))
        .stdin(Stdio::null())
        .output()
        .context("run podman")?;
    anyhow::ensure!(
        out.status.success(),
        "podman {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn setup(tag: &str, dir: &Path) -> Result<()> {
    anyhow::ensure!(
        Path::new(BUSYBOX).exists(),
        "{BUSYBOX} missing (apt-get install busybox-static)"
    );
    anyhow::ensure!(crate::which("runc"), "runc missing (apt-get install runc)");
    // runc fails to set limits above what it may (root here lacks CAP_SYS_RESOURCE): stay at or
    // below the hard limits, and low enough that containers never hit them here.
    use nix::sys::resource::{Resource, getrlimit};
    let nofile = getrlimit(Resource::RLIMIT_NOFILE)?.1.min(1024);
    let nproc = getrlimit(Resource::RLIMIT_NPROC)?.1.min(1024);
    std::fs::write(
        conf_path(tag),
        format!(
            "[containers]\ndefault_ulimits = [\"nofile={nofile}:{nofile}\", \"nproc={nproc}:{nproc}\"]\n\n[engine]\nruntime = \"runc\"\nevents_logger = \"file\"\n"
        ),
    )?;
    let root = dir.join("busybox-rootfs");
    std::fs::create_dir_all(root.join("bin"))?;
    std::fs::create_dir_all(root.join("www"))?;
    std::fs::copy(BUSYBOX, root.join("bin/busybox"))?;
    std::fs::write(root.join("www/index.html"), "ok\n")?;
    let tar = dir.join("busybox.tar");
    let st = Command::new("tar")
        .arg("-C")
        .arg(&root)
        .arg("-cf")
        .arg(&tar)
        .arg(".")
        .status()?;
    anyhow::ensure!(st.success(), "tar of the busybox rootfs failed");
    podman(tag, &["import", tar.to_str().unwrap(), &image(tag)])?;
    Ok(())
}

struct Pod {
    name: String,
    ctr: String,
    ip: Ipv4Addr,
}

fn create(tag: &str, i: usize) -> Result<Pod> {
    let name = format!("peapod-bench-{tag}-{i}");
    let ctr = format!("{name}-app");
    podman(tag, &["pod", "create", "--name", &name])?;
    podman(
        tag,
        &[
            "run",
            "-d",
            "--pod",
            &name,
            "--name",
            &ctr,
            &image(tag),
            "/bin/busybox",
            "httpd",
            "-f",
            "-p",
            "8080",
            "-h",
            "/www",
        ],
    )?;
    let infra = podman(
        tag,
        &["pod", "inspect", &name, "--format", "{{.InfraContainerID}}"],
    )?;
    let ip = podman(
        tag,
        &[
            "inspect",
            &infra,
            "--format",
            "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
        ],
    )?;
    let ip = ip
        .parse()
        .map_err(|_| anyhow!("podman pod {name} has no IPv4 address ({ip:?})"))?;
    Ok(Pod { name, ctr, ip })
}

fn remove(tag: &str, pod: &Pod) -> Result<()> {
    podman(tag, &["pod", "rm", "-f", "-t", "0", &pod.name]).map(|_| ())
}

/// RSS of the pod's processes: conmon and the main process of the infra and app containers.
fn pod_rss(tag: &str, pod: &Pod) -> Result<f64> {
    let infra = podman(
        tag,
        &[
            "pod",
            "inspect",
            &pod.name,
            "--format",
            "{{.InfraContainerID}}",
        ],
    )?;
    let pids = podman(
        tag,
        &[
            "inspect",
            &infra,
            &pod.ctr,
            "--format",
            "{{.State.Pid}} {{.State.ConmonPid}}",
        ],
    )?;
    Ok(pids
        .split_whitespace()
        .filter(|p| *p != "0")
        .map(rss_kib)
        .sum())
}

/// Measures podman and attaches its samples to the matching peapod figures. When podman cannot
/// be measured here, those figures say why instead (the rest of the bench still stands).
pub(crate) fn compare(tag: &str, dir: &Path, iterations: usize, figures: &mut [Figure]) {
    match setup(tag, dir).and_then(|()| measure(tag, iterations)) {
        Ok([start, restart, recreate, memory]) => {
            for f in figures.iter_mut() {
                let samples = match peer_of(f) {
                    Some(Peer::Start) => &start,
                    Some(Peer::Restart) => &restart,
                    Some(Peer::Recreate) => &recreate,
                    Some(Peer::Memory) => &memory,
                    None => continue,
                };
                *f = f.clone().against("podman", samples);
            }
        }
        Err(e) => {
            eprintln!("bench: podman could not be measured: {e:#}");
            for f in figures.iter_mut().filter(|f| peer_of(f).is_some()) {
                f.note = Some(format!("podman: {e:#}"));
            }
        }
    }
}

/// Samples: pod start, container restart, pod re-create (ms), pod memory (KiB).
fn measure(tag: &str, iterations: usize) -> Result<[Vec<f64>; 4]> {
    let (mut start, mut restart, mut recreate, mut memory) = (vec![], vec![], vec![], vec![]);
    for i in 0..iterations {
        let t0 = Instant::now();
        let pod = create(tag, i)?;
        let addr = SocketAddr::from((pod.ip, 8080));
        wait_accept(addr)?;
        start.push(ms(t0.elapsed()));
        memory.push(pod_rss(tag, &pod)?);

        let t1 = Instant::now();
        podman(tag, &["restart", "-t", "0", &pod.ctr])?;
        wait_accept(addr)?;
        restart.push(ms(t1.elapsed()));

        let t2 = Instant::now();
        remove(tag, &pod)?;
        let again = create(tag, i + iterations)?;
        wait_accept(SocketAddr::from((again.ip, 8080)))?;
        recreate.push(ms(t2.elapsed()));
        remove(tag, &again)?;
    }
    Ok([start, restart, recreate, memory])
}

enum Peer {
    Start,
    Restart,
    Recreate,
    Memory,
}

/// Which podman figure a peapod figure is compared with.
fn peer_of(f: &Figure) -> Option<Peer> {
    match (f.group, f.name.as_str()) {
        ("pod start", "total, warm (compiled)") => Some(Peer::Start),
        ("restart in place", _) => Some(Peer::Restart),
        ("pod re-create", n) if n.starts_with("delete + create") => Some(Peer::Recreate),
        ("density", "memory per pod (2 modules)") => Some(Peer::Memory),
        _ => None,
    }
}

/// Removes the bench's podman pods, containers and image, if podman is there at all.
pub(crate) fn sweep(tag: &str) {
    // No config written: setup never ran, so nothing of ours exists in podman.
    if !crate::which("podman") || !conf_path(tag).exists() {
        return;
    }
    let prefix = format!("peapod-bench-{tag}-");
    if let Ok(pods) = podman(tag, &["pod", "ls", "--format", "{{.Name}}"]) {
        for p in pods.lines().filter(|p| p.starts_with(&prefix)) {
            let _ = podman(tag, &["pod", "rm", "-f", "-t", "0", p]);
        }
    }
    let _ = podman(tag, &["rmi", "-f", &image(tag)]);
    let _ = std::fs::remove_file(conf_path(tag));
}
