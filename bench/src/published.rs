//! Published ports: connection setup and throughput through a published host port (DNAT in
//! peapod's nf_tables table) against the pod's own address, both measured from the host.
//!
//! The "host" is a network namespace of the bench's own (`ip netns`, swept by its prefix), with
//! an address on a veth standing for the board's LAN address: peapod programs that namespace's
//! firewall and ip_forward, and the machine's stay as they are.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use peapod::config::Config;
use peapod::run::pod::RunningPod;
use peapod::spec::PodSpec;
use peapod::wasm::executor::Executor;

use crate::floor::ip;
use crate::stats::{Figure, ms};

/// The host namespace's own address (a documentation range, on a veth of its own).
const HOST_ADDR: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);

/// Measures in a new namespace `<prefix>pub`; `dir` holds the pod's run and state dirs.
pub(crate) fn measure(
    prefix: &str,
    dir: &std::path::Path,
    cfg: &Config,
    iterations: usize,
    mib: usize,
    figures: &mut Vec<Figure>,
) -> Result<()> {
    let ns = format!("{prefix}pub");
    ip(&["netns", "add", &ns])?;
    ip(&["-n", &ns, "link", "set", "lo", "up"])?;
    ip(&[
        "-n", &ns, "link", "add", "lan0", "type", "veth", "peer", "name", "lan1",
    ])?;
    ip(&[
        "-n",
        &ns,
        "addr",
        "add",
        &format!("{HOST_ADDR}/24"),
        "dev",
        "lan0",
    ])?;
    ip(&["-n", &ns, "link", "set", "lan0", "up"])?;
    let cfg = Config {
        run_dir: dir.join("pub-run"),
        state_dir: dir.join("pub-state"),
        egress: false,
        ..cfg.clone()
    };
    let dir = dir.to_path_buf();
    let found = std::thread::spawn(move || -> Result<Vec<Figure>> {
        let f = std::fs::File::open(format!("/run/netns/{ns}"))?;
        nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET)?;
        in_host_namespace(&cfg, &dir, iterations, mib)
    })
    .join()
    .map_err(|_| anyhow!("the published-port bench thread panicked"))??;
    figures.extend(found);
    Ok(())
}

fn in_host_namespace(
    cfg: &Config,
    dir: &std::path::Path,
    iterations: usize,
    mib: usize,
) -> Result<Vec<Figure>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let exec = Executor::new().map_err(|e| anyhow!("{e:#}"))?;
    let toolbox = peapod_guests::TOOLBOX;
    let text = format!(
        "[pod]\nname = \"bpub\"\n[pod.restart_backoff]\ninitial = \"10ms\"\nmax = \"10ms\"\n\
         [[containers]]\nname = \"listen\"\nmodule = {toolbox:?}\n\
         args = [\"listen\", \"0.0.0.0:9000\", \"x\"]\n\
         ports = [{{ container_port = 9000, host_port = 19000 }}]\n\
         [[containers]]\nname = \"sink\"\nmodule = {toolbox:?}\nargs = [\"sink\", \"0.0.0.0:9001\", \"0\"]\n\
         ports = [{{ container_port = 9001, host_port = 19001 }}]\n"
    );
    let spec = PodSpec::parse(&dir.join("bpub.toml"), &text)?;
    let modules = peapod::loader::load(&exec, &spec, cfg, peapod::caller::Caller::myself())?;
    let pod = rt.block_on(RunningPod::start_with_logs(
        cfg,
        &exec,
        &spec,
        modules,
        Some(std::sync::Arc::new(|_, _, _| {})),
    ))?;
    let measured = (|| -> Result<Vec<Figure>> {
        let pod_ip = pod.ip;
        let mut figures = Vec::new();
        let direct = connects(SocketAddr::from((pod_ip, 9000)), iterations)?;
        for (label, addr) in [
            ("connect via 127.0.0.1:HOST_PORT", Ipv4Addr::LOCALHOST),
            ("connect via the host's address:HOST_PORT", HOST_ADDR),
        ] {
            let published = connects(SocketAddr::from((addr, 19000)), iterations)?;
            figures.push(
                Figure::new("published port", label, "ms", &published).against("pod IP", &direct),
            );
        }
        let runs = iterations.clamp(1, 5);
        let direct = throughput(SocketAddr::from((pod_ip, 9001)), mib, runs)?;
        let published = throughput(SocketAddr::from((Ipv4Addr::LOCALHOST, 19001)), mib, runs)?;
        figures.push(
            Figure::new(
                "published port",
                "throughput via 127.0.0.1:HOST_PORT",
                "MB/s",
                &published,
            )
            .against("pod IP", &direct),
        );
        Ok(figures)
    })();
    rt.block_on(pod.stop())?;
    measured
}

/// Connection setup (connect until established) to `addr`, `n` times, ms; each connection is
/// then read to its end (the listener sends a byte and closes).
fn connects(addr: SocketAddr, n: usize) -> Result<Vec<f64>> {
    let mut samples = Vec::new();
    wait_for(addr)?;
    for _ in 0..n.max(20) {
        let t0 = Instant::now();
        let mut c = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
            .with_context(|| format!("connect {addr}"))?;
        samples.push(ms(t0.elapsed()));
        let mut rest = Vec::new();
        c.read_to_end(&mut rest)?;
    }
    Ok(samples)
}

/// `mib` MiB sent to the sink at `addr` (which reads to the end and closes), `runs` times, MB/s.
fn throughput(addr: SocketAddr, mib: usize, runs: usize) -> Result<Vec<f64>> {
    let chunk = vec![0x5au8; 64 * 1024];
    let mut samples = Vec::new();
    for _ in 0..runs {
        // The sink serves connections one after another and never exits: a one-shot sink
        // restarted between runs raced the next connection, which the ending instance's
        // listener could still complete and then reset as it closed.
        let mut c = wait_for(addr)?;
        let t0 = Instant::now();
        for _ in 0..mib * 16 {
            c.write_all(&chunk)?;
        }
        c.shutdown(std::net::Shutdown::Write)?;
        let mut rest = Vec::new();
        c.read_to_end(&mut rest)?;
        samples.push((mib << 20) as f64 / t0.elapsed().as_micros() as f64);
    }
    Ok(samples)
}

/// A connection to `addr` once something listens there (at most 10 s).
fn wait_for(addr: SocketAddr) -> Result<TcpStream> {
    let t0 = Instant::now();
    loop {
        match TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
            Ok(c) => return Ok(c),
            Err(e) if t0.elapsed() > Duration::from_secs(10) => {
                return Err(e).with_context(|| format!("nothing answers on {addr}"));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
}
