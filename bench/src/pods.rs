//! peapod's own figures, measured in process through the library: the same code `peapod run` uses.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use peapod::config::Config;
use peapod::logs::{LogSink, Stream};
use peapod::run::pod::RunningPod;
use peapod::spec::PodSpec;
use peapod::wasm::executor::{Executor, Prepared};

use crate::stats::{Figure, ms, process_cpu_ms, rss_kib, thread_cpu_ms, threads};

pub(crate) struct Ctx {
    pub cfg: Config,
    pub exec: Executor,
    pub dir: std::path::PathBuf,
    pub iterations: usize,
    pub pods: usize,
    /// Pods started at once in the density figure.
    pub parallel: usize,
    pub mib: usize,
    seq: u32,
}

impl Ctx {
    pub(crate) fn new(
        cfg: Config,
        dir: std::path::PathBuf,
        iterations: usize,
        pods: usize,
        mib: usize,
    ) -> Result<Ctx> {
        Ok(Ctx {
            cfg,
            exec: Executor::new().map_err(|e| anyhow!("{e:#}"))?,
            dir,
            iterations,
            pods,
            parallel: 1,
            mib,
            seq: 0,
        })
    }

    pub(crate) fn name(&mut self, what: &str) -> String {
        self.seq += 1;
        format!("b{what}{}", self.seq)
    }

    /// A spec with `containers` as (name, module, args), restarting `Always` with the shortest backoff (10 ms from start to start).
    fn spec(
        &mut self,
        what: &str,
        policy: &str,
        containers: &[(&str, &str, &[&str])],
    ) -> Result<PodSpec> {
        let name = self.name(what);
        let mut text = format!(
            "[pod]\nname = {name:?}\nrestart_policy = {policy:?}\n[pod.restart_backoff]\ninitial = \"10ms\"\nmax = \"10ms\"\n"
        );
        for (c, module, args) in containers {
            text.push_str(&format!(
                "[[containers]]\nname = {c:?}\nmodule = {module:?}\nargs = {args:?}\n"
            ));
        }
        Ok(PodSpec::parse(
            &self.dir.join(format!("{name}.toml")),
            &text,
        )?)
    }

    fn demo_spec(&mut self) -> Result<PodSpec> {
        self.spec(
            "demo",
            "Always",
            &[
                (
                    "app",
                    peapod_guests::KV_SERVER,
                    &["--listen", "0.0.0.0:8080"],
                ),
                (
                    "backup",
                    peapod_guests::BACKUP,
                    &["--app", "127.0.0.1:8080"],
                ),
            ],
        )
    }

    pub(crate) fn compile(&self, spec: &PodSpec) -> Result<Vec<Prepared>> {
        Ok(peapod::loader::load(
            &self.exec,
            spec,
            &self.cfg,
            peapod::caller::Caller::myself(),
        )?)
    }

    pub(crate) async fn start(
        &self,
        spec: &PodSpec,
        modules: Vec<Prepared>,
        sink: Option<LogSink>,
    ) -> Result<RunningPod> {
        Ok(RunningPod::start_with_logs(&self.cfg, &self.exec, spec, modules, sink).await?)
    }

    /// Pod start (figure 1), cold (compiling) and warm (compiled modules reused), split into its
    /// parts, and pod re-create (figure 4). Returns the compiled demo modules for later figures.
    pub(crate) async fn pod_start(&mut self, figures: &mut Vec<Figure>) -> Result<Vec<Prepared>> {
        let (mut compile, mut sandbox, mut modules_t, mut cold, mut warm, mut stop, mut recreate) =
            (vec![], vec![], vec![], vec![], vec![], vec![], vec![]);
        let mut warm_modules = None;
        for i in 0..self.iterations {
            let spec = self.demo_spec()?;
            let t0 = Instant::now();
            let compiled = if i % 2 == 0 || warm_modules.is_none() {
                let m = self.compile(&spec)?;
                compile.push(ms(t0.elapsed()));
                warm_modules = Some(m.clone());
                m
            } else {
                warm_modules.clone().unwrap()
            };
            let t1 = Instant::now();
            let pod = self.start(&spec, compiled.clone(), None).await?;
            wait_accept(SocketAddr::from((pod.ip, 8080)))?;
            let total = t1.elapsed();
            sandbox.push(ms(pod.sandbox_time));
            modules_t.push(ms(total - pod.sandbox_time));
            if i % 2 == 0 {
                cold.push(ms(t0.elapsed()));
            } else {
                warm.push(ms(total));
            }
            // 4. Re-create: delete, create again (warm), serving on the new IP.
            let old_ip = pod.ip;
            let t2 = Instant::now();
            let report = pod.stop().await?;
            stop.push(ms(t2.elapsed()));
            if let Some(e) = report.teardown {
                return Err(anyhow!("teardown: {e}"));
            }
            let again = self.start(&spec, compiled, None).await?;
            wait_accept(SocketAddr::from((again.ip, 8080)))?;
            recreate.push(ms(t2.elapsed()));
            anyhow::ensure!(again.ip != old_ip, "re-created pod kept its IP");
            again.stop().await?;
        }
        figures.push(Figure::new(
            "pod start",
            "compile 2 modules (cold)",
            "ms",
            &compile,
        ));
        figures.push(Figure::new(
            "pod start",
            "sandbox (netns+veth+IP+routes)",
            "ms",
            &sandbox,
        ));
        figures.push(Figure::new(
            "pod start",
            "modules: instantiate until accepting",
            "ms",
            &modules_t,
        ));
        figures.push(Figure::new("pod start", "total, cold compile", "ms", &cold));
        figures.push(Figure::new(
            "pod start",
            "total, warm (compiled)",
            "ms",
            &warm,
        ));
        figures.push(Figure::new(
            "pod re-create",
            "stop (modules + teardown)",
            "ms",
            &stop,
        ));
        figures.push(Figure::new(
            "pod re-create",
            "delete + create -> serving on new IP",
            "ms",
            &recreate,
        ));
        Ok(warm_modules.expect("at least one iteration"))
    }

    /// 3. Restart in place: the app exits, the new instance accepts on the same port (backoff at
    ///    its 10 ms floor, which a run longer than 10 ms does not wait).
    pub(crate) async fn restart(
        &mut self,
        modules: Vec<Prepared>,
        figures: &mut Vec<Figure>,
    ) -> Result<()> {
        let spec = self.demo_spec()?;
        let pod = self.start(&spec, modules, None).await?;
        let addr = SocketAddr::from((pod.ip, 8080));
        wait_accept(addr)?;
        let mut samples = vec![];
        for _ in 0..self.iterations {
            let before = instance(addr)?;
            // An app that ran 10 ms or more is restarted at once; a quicker exit waits out the
            // floor (one start per 10 ms), which is not what this figure is about.
            std::thread::sleep(peapod::spec::MIN_BACKOFF);
            let t0 = Instant::now();
            http(addr, "POST", "/exit/0")?;
            let deadline = t0 + Duration::from_secs(10);
            loop {
                if instance(addr).is_ok_and(|i| i != before) {
                    break;
                }
                anyhow::ensure!(Instant::now() < deadline, "app did not come back");
                std::thread::sleep(Duration::from_micros(100));
            }
            samples.push(ms(t0.elapsed()));
        }
        figures.push(Figure::new(
            "restart in place",
            "exit -> new instance serving, same IP",
            "ms",
            &samples,
        ));

        // The same restarts (traps and exits in turn) while a client connects in a tight loop,
        // a new connection each time: what it sees while the app is between two runs.
        let restarts = self.iterations * 5;
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let client = std::thread::spawn({
            let done = done.clone();
            move || {
                let (mut answered, mut refused, mut reset, mut other) = (0u32, 0u32, 0u32, 0u32);
                while !done.load(std::sync::atomic::Ordering::Relaxed) {
                    match http(addr, "GET", "/healthz") {
                        Ok(r) if r.starts_with("HTTP/1.1 200") => answered += 1,
                        Err(e) => match e.downcast_ref::<std::io::Error>().map(|e| e.kind()) {
                            Some(std::io::ErrorKind::ConnectionRefused) => refused += 1,
                            Some(std::io::ErrorKind::ConnectionReset) => reset += 1,
                            _ => other += 1,
                        },
                        Ok(_) => other += 1,
                    }
                }
                (answered, refused, reset, other)
            }
        });
        for i in 0..restarts {
            let before = instance(addr)?;
            std::thread::sleep(peapod::spec::MIN_BACKOFF);
            http(addr, "POST", if i % 2 == 0 { "/crash" } else { "/exit/0" })?;
            let deadline = Instant::now() + Duration::from_secs(10);
            while !instance(addr).is_ok_and(|i| i != before) {
                anyhow::ensure!(Instant::now() < deadline, "app did not come back");
                std::thread::sleep(Duration::from_micros(100));
            }
        }
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        let (answered, refused, reset, other) = client.join().expect("client thread");
        pod.stop().await?;
        figures.push(
            Figure::new(
                "restart in place",
                format!("connections refused through {restarts} restarts, a client connecting in a tight loop"),
                "conns",
                &[f64::from(refused)],
            )
            .noted(format!("{answered} answered, {reset} reset, {other} other failures")),
        );
        Ok(())
    }

    /// Fairness: the app's request latency (connect + GET /healthz + answer) with a sibling that
    /// spins without ever yielding, against the same app alone. The spinner is preempted at each
    /// epoch tick (250 µs while it spins); what it adds is about one tick per wake-up of the
    /// app. And the ticker's own CPU, with and without the spinner.
    pub(crate) async fn sibling_latency(&mut self, figures: &mut Vec<Figure>) -> Result<()> {
        let toolbox = peapod_guests::TOOLBOX;
        let app = (
            "app",
            peapod_guests::KV_SERVER,
            &["--listen", "0.0.0.0:8080"][..],
        );
        let (mut runs, mut ticks) = (vec![], vec![]);
        for containers in [vec![app], vec![app, ("spin", toolbox, &["spin"][..])]] {
            let spec = self.spec("fair", "Always", &containers)?;
            let modules = self.compile(&spec)?;
            let pod = self.start(&spec, modules, None).await?;
            let addr = SocketAddr::from((pod.ip, 8080));
            wait_accept(addr)?;
            let mut samples = vec![];
            for _ in 0..self.iterations.max(20) {
                let t0 = Instant::now();
                instance(addr)?;
                samples.push(ms(t0.elapsed()));
            }
            // The ticker's own CPU over a second, the app idle.
            let (wall, ticker) = (Instant::now(), thread_cpu_ms("peapod-epoch"));
            tokio::time::sleep(Duration::from_secs(1)).await;
            ticks.push(100.0 * (thread_cpu_ms("peapod-epoch") - ticker) / ms(wall.elapsed()));
            pod.stop().await?;
            runs.push(samples);
        }
        figures.push(
            Figure::new(
                "fairness",
                "app request next to a never-yielding sibling",
                "ms",
                &runs[1],
            )
            .against("app alone", &runs[0]),
        );
        figures.push(
            Figure::new(
                "fairness",
                "epoch ticker's CPU while a module spins",
                "% core",
                &ticks[1..],
            )
            .against("no module spinning", &ticks[..1]),
        );
        Ok(())
    }

    /// A one-container pod of `module args` with `extra` TOML lines in its container.
    fn spec_with(
        &mut self,
        what: &str,
        module: &str,
        args: &[&str],
        extra: &str,
    ) -> Result<PodSpec> {
        let name = self.name(what);
        let text = format!(
            "[pod]\nname = {name:?}\n[[containers]]\nname = \"c\"\nmodule = {module:?}\nargs = {args:?}\n{extra}\n"
        );
        Ok(PodSpec::parse(
            &self.dir.join(format!("{name}.toml")),
            &text,
        )?)
    }

    /// `cpu_limit` accuracy: the share of one core a never-yielding spinner with `cpu_limit =
    /// "250m"` uses over each one-second window (from its own CPU clock, as `inspect` shows
    /// it), against the same spinner without a limit.
    pub(crate) async fn cpu_cap(&mut self, figures: &mut Vec<Figure>) -> Result<()> {
        let windows = self.iterations.clamp(2, 5);
        let mut runs = vec![];
        for extra in ["cpu_limit = \"250m\"", ""] {
            let spec = self.spec_with("cpu", peapod_guests::TOOLBOX, &["spin"], extra)?;
            runs.push(self.cpu_shares(&spec, windows).await?);
        }
        figures.push(
            Figure::new(
                "cpu_limit",
                "spinner with cpu_limit 250m, share of a core per 1 s",
                "%",
                &runs[0],
            )
            .against("no limit", &runs[1]),
        );

        // A pod of two spinners: with a core each (their limits add up to two cores, so they
        // run on two threads of the pod) against none (one thread for the pod).
        let mut runs = vec![];
        for extra in ["cpu_limit = \"1\"\n", ""] {
            let name = self.name("cores");
            let text = format!(
                "[pod]\nname = {name:?}\n\
                 [[containers]]\nname = \"a\"\nmodule = {m:?}\nargs = [\"spin\"]\n{extra}\
                 [[containers]]\nname = \"b\"\nmodule = {m:?}\nargs = [\"spin\"]\n{extra}",
                m = peapod_guests::TOOLBOX
            );
            let spec = PodSpec::parse(&self.dir.join(format!("{name}.toml")), &text)?;
            runs.push(self.cpu_shares(&spec, windows).await?);
        }
        figures.push(
            Figure::new(
                "cpu_limit",
                "a pod of two spinners with cpu_limit 1 each: its CPU per 1 s (100 % = a core)",
                "%",
                &runs[0],
            )
            .against("no limits (one thread)", &runs[1]),
        );
        Ok(())
    }

    /// Runs pod `spec` and returns its containers' CPU, all together, over each of `windows`
    /// one-second windows, in % of a core (from their own CPU clocks, as `inspect` shows them).
    async fn cpu_shares(&mut self, spec: &PodSpec, windows: usize) -> Result<Vec<f64>> {
        let modules = self.compile(spec)?;
        let pod = self.start(spec, modules, None).await?;
        let cpu = || pod.statuses().iter().map(|s| s.cpu_seconds).sum::<f64>();
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut shares = vec![];
        for _ in 0..windows {
            let (c0, t0) = (cpu(), Instant::now());
            tokio::time::sleep(Duration::from_secs(1)).await;
            shares.push((cpu() - c0) / t0.elapsed().as_secs_f64() * 100.0);
        }
        pod.stop().await?;
        Ok(shares)
    }

    /// Probe overhead: CPU time of the pod's thread (probe client and the app answering it,
    /// from the kernel's schedstat) per 1000 probes, for an HTTP and a TCP readiness probe
    /// every 10 ms against kv-server, over one second each.
    pub(crate) async fn probe_cost(&mut self, figures: &mut Vec<Figure>) -> Result<()> {
        let period = Duration::from_millis(10);
        let mut runs = vec![];
        for probe in [
            "http_get = { path = \"/healthz\", port = 8080 }",
            "tcp_socket = { port = 8080 }",
        ] {
            let extra = format!("readiness_probe = {{ {probe}, period = \"10ms\" }}");
            let mut samples = vec![];
            for _ in 0..self.iterations.clamp(2, 5) {
                let spec = self.spec_with(
                    "probe",
                    peapod_guests::KV_SERVER,
                    &["--listen", "0.0.0.0:8080"],
                    &extra,
                )?;
                let modules = self.compile(&spec)?;
                let pod = self.start(&spec, modules, None).await?;
                wait_accept(SocketAddr::from((pod.ip, 8080)))?;
                let thread = pod_thread_id(&spec.name)?;
                let (c0, t0) = (thread_cpu_ns(thread)?, Instant::now());
                tokio::time::sleep(Duration::from_secs(1)).await;
                let used = thread_cpu_ns(thread)? - c0;
                let probes = t0.elapsed().as_secs_f64() / period.as_secs_f64();
                samples.push(used as f64 / 1e6 / probes * 1000.0);
                pod.stop().await?;
            }
            runs.push(samples);
        }
        figures.push(Figure::new(
            "probes",
            "http_get probe: pod CPU per 1000 probes",
            "ms",
            &runs[0],
        ));
        figures.push(Figure::new(
            "probes",
            "tcp_socket probe: pod CPU per 1000 probes",
            "ms",
            &runs[1],
        ));
        Ok(())
    }

    /// 5. In-pod loopback throughput: a wasip2 sender and receiver over 127.0.0.1.
    pub(crate) async fn throughput(&mut self, iterations: usize) -> Result<Vec<f64>> {
        let mib = self.mib.to_string();
        let toolbox = peapod_guests::TOOLBOX;
        let mut samples = vec![];
        let mut compiled: Option<Vec<Prepared>> = None;
        for _ in 0..iterations {
            let spec = self.spec(
                "tput",
                "Never",
                &[
                    ("rx", toolbox, &["sink", "127.0.0.1:5001"]),
                    ("tx", toolbox, &["source", "127.0.0.1:5001", &mib]),
                ],
            )?;
            // Same modules every run: compile once (start time is not what this figure measures).
            let modules = match &compiled {
                Some(m) => m.clone(),
                None => compiled.insert(self.compile(&spec)?).clone(),
            };
            let result = Arc::new(Mutex::new(None));
            let r = result.clone();
            let sink: LogSink = Arc::new(move |_, stream, line| {
                if stream == Stream::Stdout && line.starts_with("received ") {
                    *r.lock().unwrap() = Some(line.to_string());
                }
            });
            let mut pod = self.start(&spec, modules, Some(sink)).await?;
            tokio::time::timeout(Duration::from_secs(120), pod.wait())
                .await
                .context("throughput pod did not finish")?;
            pod.stop().await?;
            let line = result
                .lock()
                .unwrap()
                .take()
                .context("no result from the sink")?;
            // "received BYTES bytes in MICROS us"
            let w: Vec<&str> = line.split_whitespace().collect();
            let bytes: f64 = w[1].parse()?;
            let micros: f64 = w[4].parse()?;
            samples.push(bytes / micros); // bytes per µs == MB/s
        }
        Ok(samples)
    }

    /// Write throughput into a volume: a guest writes `mib` MiB (64 KiB writes, no fsync) to an
    /// `empty_dir` on disk and to one with a `size_limit` (a tmpfs), against the host writing
    /// the same bytes the same way into the same directory.
    pub(crate) async fn volume_write(
        &mut self,
        runs: usize,
        figures: &mut Vec<Figure>,
    ) -> Result<()> {
        let mib = self.mib.min(256);
        let kib = mib * 1024;
        let toolbox = peapod_guests::TOOLBOX;
        let limit = format!("empty_dir = {{ size_limit = \"{}MiB\" }}", mib + 16);
        for (label, volume) in [("on disk", "empty_dir = {}"), ("tmpfs", limit.as_str())] {
            let (mut guest, mut host) = (vec![], vec![]);
            let mut compiled: Option<Vec<Prepared>> = None;
            for _ in 0..runs {
                let name = self.name("vol");
                let text = format!(
                    "[pod]\nname = {name:?}\nrestart_policy = \"Never\"\n\
                     [[volumes]]\nname = \"data\"\n{volume}\n\
                     [[containers]]\nname = \"w\"\nmodule = {toolbox:?}\n\
                     args = [\"fs\", \"fill /data/guest {kib}\", \"rm /data/guest\", \"hold\"]\n\
                     volume_mounts = [{{ name = \"data\", mount_path = \"/data\" }}]\n"
                );
                let spec = PodSpec::parse(&self.dir.join(format!("{name}.toml")), &text)?;
                let modules = match &compiled {
                    Some(m) => m.clone(),
                    None => compiled.insert(self.compile(&spec)?).clone(),
                };
                let result = Arc::new(Mutex::new(None));
                let r = result.clone();
                let sink: LogSink = Arc::new(move |_, _, line| {
                    if line.starts_with("fill /data/guest: ")
                        || line.starts_with("rm /data/guest: ")
                    {
                        r.lock()
                            .unwrap()
                            .get_or_insert(vec![])
                            .push(line.to_string());
                    }
                });
                let pod = self.start(&spec, modules, Some(sink)).await?;
                let t0 = Instant::now();
                let lines = loop {
                    if let Some(l) = result.lock().unwrap().as_ref().filter(|l| l.len() == 2) {
                        break l.clone();
                    }
                    anyhow::ensure!(t0.elapsed() < Duration::from_secs(120), "no fill result");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                };
                // "fill /data/guest: ok: BYTES bytes in MICROS us"
                let w: Vec<&str> = lines[0].split_whitespace().collect();
                anyhow::ensure!(w.get(2) == Some(&"ok:"), "guest write failed: {}", lines[0]);
                guest.push(w[3].parse::<f64>()? / w[6].parse::<f64>()?);
                // The host, into the same directory, the same way.
                let dir = peapod::host::volumes::pod_dir(&self.cfg, &name).join("data");
                let chunk = vec![0x42u8; 64 * 1024];
                let t0 = Instant::now();
                let mut f = std::fs::File::create(dir.join("host"))?;
                for _ in 0..kib / 64 {
                    f.write_all(&chunk)?;
                }
                drop(f);
                host.push((kib * 1024) as f64 / t0.elapsed().as_micros() as f64);
                std::fs::remove_file(dir.join("host"))?;
                pod.stop().await?;
            }
            figures.push(
                Figure::new(
                    "volume write",
                    format!("guest writes {mib} MiB to an empty_dir {label}"),
                    "MB/s",
                    &guest,
                )
                .against("host, same dir", &host),
            );
        }
        Ok(())
    }

    /// 6. Density: N pods of two modules each, started one after another; RSS before and after.
    pub(crate) async fn density(
        &mut self,
        modules: Vec<Prepared>,
        figures: &mut Vec<Figure>,
    ) -> Result<()> {
        let before = rss_kib("self");
        let t0 = Instant::now();
        let mut pods = vec![];
        let mut starts = vec![];
        let mut under_way = tokio::task::JoinSet::new();
        for _ in 0..self.pods {
            let spec = self.demo_spec()?;
            if under_way.len() >= self.parallel {
                let (pod, took) = under_way.join_next().await.expect("one is under way")??;
                pods.push(pod);
                starts.push(took);
            }
            let (cfg, exec, modules) = (self.cfg.clone(), self.exec.clone(), modules.clone());
            under_way.spawn(async move {
                let t = Instant::now();
                let pod = RunningPod::start_with_logs(&cfg, &exec, &spec, modules, None).await?;
                anyhow::Ok((pod, ms(t.elapsed())))
            });
        }
        while let Some(r) = under_way.join_next().await {
            let (pod, took) = r??;
            pods.push(pod);
            starts.push(took);
        }
        let started = t0.elapsed();
        for p in &pods {
            wait_accept(SocketAddr::from((p.ip, 8080)))?;
        }
        let took = t0.elapsed();
        // Let every sidecar take its first snapshot, so its memory is counted; what the idle
        // pods cost in CPU meanwhile (the epoch ticker's part of it), and in threads.
        let idle = Duration::from_secs(4);
        let (cpu, ticker) = (process_cpu_ms(), thread_cpu_ms("peapod-epoch"));
        tokio::time::sleep(idle).await;
        let idle_cpu = 100.0 * (process_cpu_ms() - cpu) / ms(idle);
        let idle_ticker = 100.0 * (thread_cpu_ms("peapod-epoch") - ticker) / ms(idle);
        let thread_count = threads();
        let after = rss_kib("self");
        let ips: std::collections::HashSet<Ipv4Addr> = pods.iter().map(|p| p.ip).collect();
        anyhow::ensure!(ips.len() == pods.len(), "two pods shared an IP");
        for p in pods {
            p.stop().await?;
        }
        let n = self.pods as f64;
        figures.push(Figure::new(
            "density",
            format!("start {} pods, all serving", self.pods),
            "ms",
            &[ms(took)],
        ));
        figures.push(Figure::new(
            "density",
            "start time per pod",
            "ms",
            &[ms(took) / n],
        ));
        figures.push(Figure::new(
            "density",
            "of which starting them, one after another",
            "ms",
            &[ms(started)],
        ));
        // Does a start cost more as pods accumulate? The first tenth against the last.
        let tenth = (starts.len() / 10).max(1);
        figures.push(
            Figure::new(
                "density",
                format!("each start as the {} accumulate: last tenth", self.pods),
                "ms",
                &starts[starts.len() - tenth..],
            )
            .against("first tenth", &starts[..tenth]),
        );
        figures.push(Figure::new(
            "density",
            "process RSS before",
            "KiB",
            &[before],
        ));
        figures.push(Figure::new(
            "density",
            format!("process RSS with {} pods", self.pods),
            "KiB",
            &[after],
        ));
        figures.push(Figure::new(
            "density",
            "memory per pod (2 modules)",
            "KiB",
            &[(after - before) / n],
        ));
        figures.push(Figure::new(
            "density",
            format!("process CPU with {} idle pods (4 s)", self.pods),
            "% core",
            &[idle_cpu],
        ));
        figures.push(Figure::new(
            "density",
            "of which the epoch ticker",
            "% core",
            &[idle_ticker],
        ));
        figures.push(Figure::new(
            "density",
            format!("process threads with {} pods", self.pods),
            "threads",
            &[thread_count],
        ));
        Ok(())
    }
}

/// Connects until something accepts at `addr` (at most 30 s). A wait over 200 ms is reported
/// with what each try met (the 1 s outliers of issue 14: a lost SYN blocks a try until TCP resends
/// it; a late listener refuses quickly, many times).
pub(crate) fn wait_accept(addr: SocketAddr) -> Result<()> {
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs(30);
    let mut tries: Vec<(Duration, Duration, String)> = Vec::new();
    loop {
        let t = Instant::now();
        match TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
            Ok(_) => break,
            Err(e) => {
                let why = e.kind().to_string();
                match tries.last_mut() {
                    Some((_, took, w)) if *w == why && t.elapsed() < Duration::from_millis(50) => {
                        *took += t.elapsed()
                    }
                    _ => tries.push((t - t0, t.elapsed(), why)),
                }
            }
        }
        anyhow::ensure!(Instant::now() < deadline, "{addr} never accepted");
        std::thread::sleep(Duration::from_micros(100));
    }
    if t0.elapsed() > Duration::from_millis(200) {
        let tries: Vec<String> = tries
            .iter()
            .map(|(at, took, why)| format!("at {at:.1?} for {took:.1?}: {why}"))
            .collect();
        eprintln!(
            "bench: {addr} accepted after {:.1?}; before: {}",
            t0.elapsed(),
            tries.join("; ")
        );
    }
    Ok(())
}

/// A one-shot HTTP request to the demo app; returns (status line, head).
fn http(addr: SocketAddr, method: &str, path: &str) -> Result<String> {
    let mut c = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
    c.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        c,
        "{method} {path} HTTP/1.1\r\nHost: b\r\nContent-Length: 0\r\n\r\n"
    )?;
    let mut s = String::new();
    c.read_to_string(&mut s)?;
    Ok(s)
}

/// The app's instance id (X-Instance).
fn instance(addr: SocketAddr) -> Result<String> {
    let r = http(addr, "GET", "/healthz")?;
    r.lines()
        .find_map(|l| l.strip_prefix("X-Instance: "))
        .map(str::to_string)
        .context("no X-Instance")
}

/// The id of this process's thread named `pod-NAME` (a pod's thread; names are cut at 15 bytes).
fn pod_thread_id(pod: &str) -> Result<u32> {
    let want: String = format!("pod-{pod}").chars().take(15).collect();
    for t in std::fs::read_dir("/proc/self/task")? {
        let t = t?;
        let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        if comm.trim_end() == want {
            return Ok(t.file_name().to_string_lossy().parse()?);
        }
    }
    Err(anyhow!("no thread named {want}"))
}

/// Nanoseconds thread `tid` of this process has run (the first field of its schedstat).
fn thread_cpu_ns(tid: u32) -> Result<u64> {
    let s = std::fs::read_to_string(format!("/proc/self/task/{tid}/schedstat"))?;
    Ok(s.split_whitespace()
        .next()
        .context("empty schedstat")?
        .parse()?)
}
