//! `peapod-bench` (run it with `bench/run`): peapod side by side with the kernel floor and, when
//! podman is installed, with podman pods. Prints a table and writes JSON.
//!
//! Everything runs on a bridge, subnet and dirs of the bench's own; all of it is removed at the end
//! and on SIGINT/SIGTERM by one sweep (pins, veths, `ip netns` namespaces, podman pods, the image).
//! Traffic goes only to loopback and to namespaces the bench created.

mod floor;
mod podman;
mod pods;
mod published;
mod report;
mod sidecars;
mod stats;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use peapod::config::Config;
use stats::Figure;
use tokio::signal::unix::{SignalKind, signal};

/// Measure pod start, restart in place, re-create, loopback throughput, published ports, volume
/// writes and density.
#[derive(Parser, Debug, Clone)]
struct Args {
    /// Repetitions of each timed figure
    #[arg(long, default_value_t = 20)]
    iterations: usize,
    /// Pods started at once for the density figure
    #[arg(long, default_value_t = 50)]
    pods: usize,
    /// Pods being started at a time in the density figure (1: one after another)
    #[arg(long, default_value_t = 1)]
    parallel: usize,
    /// MiB sent per throughput run
    #[arg(long, default_value_t = 512)]
    mib: usize,
    /// A run of under a minute (2 iterations, 5 pods, 32 MiB): proves the bench works
    #[arg(long)]
    quick: bool,
    /// Skip podman even when it is installed
    #[arg(long)]
    no_podman: bool,
    /// Where the JSON goes
    #[arg(long, default_value = "target/bench/results.json")]
    out: PathBuf,
}

/// The bench's own names and places, known to the sweep.
pub struct Place {
    pub tag: String,
    pub dir: tempfile::TempDir,
    pub cfg: Config,
}

impl Place {
    fn new() -> Result<Place> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .subsec_nanos();
        let tag = format!("{:04x}", (std::process::id() ^ nanos) & 0xffff);
        let routes = String::from_utf8(
            std::process::Command::new("ip")
                .args(["-4", "route"])
                .output()?
                .stdout,
        )?;
        // A /22 (1021 pods, as the default subnet holds) no route uses yet.
        let third = (0..64u32)
            .map(|k| (nanos + k) % 64 * 4)
            .find(|x| (*x..x + 4).all(|y| !routes.contains(&format!("10.199.{y}."))))
            .context("no free /22 in 10.199.0.0/16")?;
        let dir = tempfile::Builder::new().prefix("peapod-bench").tempdir()?;
        let cfg = Config {
            run_dir: dir.path().join("run"),
            state_dir: dir.path().join("state"),
            bridge: format!("ppbench{tag}"),
            subnet: format!("10.199.{third}.0/22").parse()?,
            socket: dir.path().join("run/peapod.sock"),
            pods_dir: dir.path().join("pods"),
            // The host's firewall and ip_forward stay as they are.
            egress: false,
            ..Config::default()
        };
        Ok(Place { tag, dir, cfg })
    }

    /// Prefix of `ip netns` names (global, in /run/netns).
    fn netns_prefix(&self) -> String {
        format!("peapod-bench-{}-", self.tag)
    }

    /// Removes everything the bench may have created, whatever state it stopped in.
    fn sweep(&self) {
        podman::sweep(&self.tag);
        if let Ok(entries) = std::fs::read_dir("/run/netns") {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.starts_with(&self.netns_prefix()) {
                    let _ = std::process::Command::new("ip")
                        .args(["netns", "del", &name])
                        .status();
                }
            }
        }
        let root = self.dir.path().display().to_string();
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        for m in mounts.lines().filter_map(|l| l.split(' ').nth(4)) {
            if m.starts_with(&root) {
                let _ = nix::mount::umount2(m, nix::mount::MntFlags::MNT_DETACH);
            }
        }
        let ports = std::process::Command::new("ip")
            .args(["-o", "link", "show", "master", &self.cfg.bridge])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        for p in ports.lines().filter_map(|l| l.split(": ").nth(1)) {
            let p = p.split('@').next().unwrap_or(p);
            let _ = std::process::Command::new("ip")
                .args(["link", "del", p])
                .status();
        }
        let _ = std::process::Command::new("ip")
            .args(["link", "del", &self.cfg.bridge])
            .stderr(std::process::Stdio::null())
            .status();
    }
}

async fn measure(args: &Args, place: &Place, figures: &mut Vec<Figure>) -> Result<()> {
    let mut ctx = pods::Ctx::new(
        place.cfg.clone(),
        place.dir.path().to_path_buf(),
        args.iterations,
        args.pods,
        args.mib,
    )?;
    ctx.parallel = args.parallel.max(1);
    eprintln!(
        "bench: pod start and re-create ({} iterations)",
        args.iterations
    );
    let modules = ctx.pod_start(figures).await?;

    eprintln!("bench: kernel floor");
    let sandbox = figures
        .iter()
        .position(|f| f.name.starts_with("sandbox"))
        .expect("sandbox figure");
    let ip = floor::ip_commands(&place.cfg, &place.netns_prefix(), args.iterations)?;
    let raw = floor::raw_netlink(&place.cfg, place.dir.path(), &place.tag, args.iterations).await?;
    let sb = figures[sandbox].clone();
    figures.push(
        Figure {
            name: "sandbox vs `ip` commands (7 execs)".into(),
            ..sb.clone()
        }
        .against("ip", &ip),
    );
    figures.push(
        Figure {
            name: "sandbox vs raw netlink, nothing else".into(),
            ..sb
        }
        .against("raw netlink", &raw),
    );

    eprintln!("bench: restart in place");
    ctx.restart(modules.clone(), figures).await?;

    eprintln!("bench: latency next to a spinning sibling");
    ctx.sibling_latency(figures).await?;

    eprintln!("bench: cpu_limit and probes");
    ctx.cpu_cap(figures).await?;
    ctx.probe_cost(figures).await?;

    eprintln!("bench: loopback throughput ({} MiB a run)", args.mib);
    let runs = args.iterations.clamp(1, 5);
    let wasm = ctx.throughput(runs).await?;
    let fig = Figure::new(
        "throughput",
        "in-pod loopback, wasip2 -> wasip2",
        "MB/s",
        &wasm,
    );
    figures.push(if which("iperf3") {
        fig.against(
            "iperf3",
            &floor::iperf3(place.dir.path(), args.mib, runs).await?,
        )
    } else {
        fig.noted("iperf3 not installed (apt-get install iperf3)")
    });

    eprintln!(
        "bench: published port vs pod IP ({} MiB a throughput run)",
        args.mib
    );
    tokio::task::block_in_place(|| {
        published::measure(
            &place.netns_prefix(),
            place.dir.path(),
            &place.cfg,
            args.iterations,
            args.mib,
            figures,
        )
    })?;

    eprintln!("bench: volume write ({} MiB a run)", args.mib.min(256));
    ctx.volume_write(runs, figures).await?;

    eprintln!("bench: sidecars (sizes, memory, the auth proxy's cost)");
    sidecars::measure(&mut ctx, args.mib, figures).await?;

    eprintln!("bench: density ({} pods)", args.pods);
    ctx.density(modules, figures).await?;

    if args.no_podman {
        eprintln!("bench: podman skipped (--no-podman)");
    } else if !which("podman") {
        eprintln!(
            "bench: podman not installed: no podman column (apt-get install podman busybox-static)"
        );
    } else {
        eprintln!("bench: podman");
        podman::compare(&place.tag, place.dir.path(), args.iterations, figures);
    }
    Ok(())
}

pub fn which(prog: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(prog).is_file()))
        .unwrap_or(false)
}

fn main() -> Result<()> {
    let mut args = Args::parse();
    if args.quick {
        args.iterations = 2;
        args.pods = 5;
        args.mib = 32;
    }
    anyhow::ensure!(
        nix::unistd::geteuid().is_root(),
        "the bench needs root (network namespaces, bridges, mounts)"
    );
    anyhow::ensure!(args.iterations >= 2, "--iterations must be at least 2");
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            std::env::var("PEAPOD_LOG")
                .unwrap_or_else(|_| "warn,peapod::run::supervisor=error".into()),
        )
        .init();
    let place = Place::new()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let mut figures = vec![];
    let outcome = rt.block_on(async {
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        tokio::select! {
            r = measure(&args, &place, &mut figures) => r,
            _ = term.recv() => Err(anyhow::anyhow!("interrupted")),
            _ = int.recv() => Err(anyhow::anyhow!("interrupted")),
        }
    });
    // Whatever happened, leave nothing behind. Pod threads of an interrupted run hold no pins.
    rt.shutdown_timeout(Duration::from_secs(2));
    place.sweep();
    outcome?;
    let machine = report::Machine::read();
    report::print(&machine, &figures);
    report::write_json(&args.out, &machine, &figures)?;
    eprintln!("bench: wrote {}", args.out.display());
    Ok(())
}
