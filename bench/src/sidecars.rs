//! The sidecars (issue 25): each one's module size and memory in a pod beside the demo app, and
//! the auth proxy's cost: a request's latency and a large answer's throughput through it, side
//! by side with the app alone, in one run.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use peapod::spec::PodSpec;

use crate::pods::{Ctx, wait_accept};
use crate::stats::{Figure, ms};

const TOKEN: &str = "bench-token-5c1f";
const SIDECARS: [(&str, &str); 4] = [
    ("auth-proxy", peapod_guests::AUTH_PROXY),
    ("backup", peapod_guests::BACKUP),
    ("sync", peapod_guests::SYNC),
    ("scheduler", peapod_guests::SCHEDULER),
];

/// One HTTP/1.1 exchange on a new connection; the whole answer.
fn exchange(addr: SocketAddr, request: &str) -> Result<Vec<u8>> {
    let mut c = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    c.set_read_timeout(Some(Duration::from_secs(10)))?;
    c.write_all(request.as_bytes())?;
    let mut out = Vec::new();
    c.read_to_end(&mut out)?;
    anyhow::ensure!(
        out.starts_with(b"HTTP/1.1 2"),
        "answer: {}",
        String::from_utf8_lossy(&out[..out.len().min(200)])
    );
    Ok(out)
}

pub(crate) async fn measure(ctx: &mut Ctx, mib: usize, figures: &mut Vec<Figure>) -> Result<()> {
    for (name, path) in SIDECARS {
        let bytes = std::fs::metadata(path)
            .with_context(|| path.to_string())?
            .len();
        figures.push(Figure::new(
            "sidecars",
            format!("{name} module size"),
            "KiB",
            &[bytes as f64 / 1024.0],
        ));
    }
    let name = ctx.name("side");
    let dir = ctx.dir.join(&name);
    for d in ["secrets", "backups", "queue"] {
        std::fs::create_dir_all(dir.join(d))?;
    }
    std::fs::write(dir.join("secrets/token"), TOKEN)?;
    let text = format!(
        r#"[pod]
name = "{name}"

[[volumes]]
name = "token"
secret = {{ path = "{secrets}" }}

[[volumes]]
name = "backups"
host_path = {{ path = "{backups}" }}

[[volumes]]
name = "queue"
host_path = {{ path = "{queue}" }}

[[containers]]
name = "app"
module = "{app}"
args = ["--listen", "0.0.0.0:8080"]

[[containers]]
name = "auth-proxy"
module = "{proxy}"
env = {{ TOKEN_FILE = "/run/secrets/token", MAX_FAILURES = "1000" }}
volume_mounts = [{{ name = "token", mount_path = "/run/secrets" }}]

[[containers]]
name = "backup"
module = "{backup}"
env = {{ DIR = "/backups", INTERVAL = "60s" }}
volume_mounts = [{{ name = "backups", mount_path = "/backups" }}]

[[containers]]
name = "sync"
module = "{sync}"
env = {{ REMOTE = "127.0.0.1:9", QUEUE_DIR = "/queue", INTERVAL = "60s" }}
volume_mounts = [{{ name = "queue", mount_path = "/queue" }}]

[[containers]]
name = "scheduler"
module = "{scheduler}"
env = {{ SCHEDULE = "tick * * * * * GET /healthz" }}
"#,
        secrets = dir.join("secrets").display(),
        backups = dir.join("backups").display(),
        queue = dir.join("queue").display(),
        app = peapod_guests::KV_SERVER,
        proxy = peapod_guests::AUTH_PROXY,
        backup = peapod_guests::BACKUP,
        sync = peapod_guests::SYNC,
        scheduler = peapod_guests::SCHEDULER,
    );
    let spec = PodSpec::parse(&dir.join("pod.toml"), &text)?;
    let modules = ctx.compile(&spec)?;
    let pod = ctx.start(&spec, modules, None).await?;
    let (app, proxy) = (
        SocketAddr::from((pod.ip, 8080)),
        SocketAddr::from((pod.ip, 8443)),
    );
    let result = async {
        tokio::task::block_in_place(|| -> Result<()> {
            wait_accept(app)?;
            wait_accept(proxy)?;
            // A value of `mib` MiB (at most 16) to read back, and a small one.
            let big = "v".repeat(mib.clamp(1, 16) << 20);
            exchange(
                app,
                &format!(
                    "PUT /kv/big HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{big}",
                    big.len()
                ),
            )?;
            exchange(
                app,
                "PUT /kv/k HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nok",
            )?;
            let auth = format!("Authorization: Bearer {TOKEN}\r\n");
            let get = |path: &str, headers: &str| {
                format!("GET {path} HTTP/1.1\r\nHost: x\r\n{headers}Connection: close\r\n\r\n")
            };
            let n = (ctx.iterations * 50).clamp(20, 500);
            let (mut direct, mut through) = (Vec::new(), Vec::new());
            for _ in 0..n {
                let t = Instant::now();
                exchange(app, &get("/kv/k", ""))?;
                direct.push(ms(t.elapsed()));
                let t = Instant::now();
                exchange(proxy, &get("/kv/k", &auth))?;
                through.push(ms(t.elapsed()));
            }
            figures.push(
                Figure::new(
                    "sidecars",
                    "a request through the auth proxy (new connection)",
                    "ms",
                    &through,
                )
                .against("app alone", &direct),
            );
            let runs = ctx.iterations.clamp(2, 5);
            let (mut direct, mut through) = (Vec::new(), Vec::new());
            for _ in 0..runs {
                let t = Instant::now();
                let a = exchange(app, &get("/kv/big", ""))?;
                direct.push(a.len() as f64 / 1e6 / t.elapsed().as_secs_f64());
                let t = Instant::now();
                let a = exchange(proxy, &get("/kv/big", &auth))?;
                through.push(a.len() as f64 / 1e6 / t.elapsed().as_secs_f64());
            }
            figures.push(
                Figure::new(
                    "sidecars",
                    format!("a {} MiB answer through the auth proxy", mib.clamp(1, 16)),
                    "MB/s",
                    &through,
                )
                .against("app alone", &direct),
            );
            Ok(())
        })?;
        // (The backup and sync read the app every minute: their memory here is after start.)
        tokio::time::sleep(Duration::from_secs(2)).await;
        for s in pod.statuses() {
            figures.push(Figure::new(
                "sidecars",
                format!("{} memory in the pod (linear memory + tables)", s.name),
                "KiB",
                &[s.memory_bytes as f64 / 1024.0],
            ));
        }
        Ok::<(), anyhow::Error>(())
    }
    .await;
    pod.stop().await?;
    result
}
