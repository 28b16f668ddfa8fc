//! A test harness for sidecars that needs no root and no pod: a guest runs in-process on
//! peapod's own engine (the same WASI, limits and name lookups as in a pod), in the host's
//! network namespace, beside a fake app that the test scripts. A sidecar's author writes plain
//! `cargo test`s:
//!
//! ```no_run
//! use peapod_harness::{FakeApp, Sidecar, free_addr, http};
//! use std::time::Duration;
//!
//! let app = FakeApp::start(|req| (200, format!("you asked for {}", req.path).into_bytes()));
//! let listen = free_addr();
//! let proxy = Sidecar::new("target/guests/auth-proxy.wasm")
//!     .env("LISTEN", &listen)
//!     .env("UPSTREAM", &app.addr().to_string())
//!     .start();
//! proxy.wait_for_log("listening", Duration::from_secs(10));
//! let answer = http(&listen, "GET /kv HTTP/1.1\r\nHost: x\r\n\r\n");
//! assert!(answer.starts_with("HTTP/1.1 401"));
//! ```
//!
//! In a pod the app next door is `127.0.0.1:PORT`; here the fake app is on `127.0.0.1` too, on a
//! port of its own, so the same settings work in both.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use peapod::logs::{ContainerLog, LogSink, Stream};
use peapod::wasm::executor::{Executor, Mount, Outcome, RunSpec};

/// A guest to run: its module, arguments, environment and directories.
#[derive(Debug, Clone)]
pub struct Sidecar {
    wasm: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    mounts: Vec<(PathBuf, String, bool)>,
    memory_mib: u64,
    echo: bool,
}

impl Sidecar {
    /// The guest at `wasm` (a `.wasm` built for wasm32-wasip2 or wasip1).
    pub fn new(wasm: impl AsRef<Path>) -> Self {
        Sidecar {
            wasm: wasm.as_ref().to_path_buf(),
            args: Vec::new(),
            env: Vec::new(),
            mounts: Vec::new(),
            memory_mib: 64,
            echo: false,
        }
    }

    pub fn arg(mut self, arg: &str) -> Self {
        self.args.push(arg.to_string());
        self
    }

    /// A variable of its environment (a container's `env`).
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    /// Host directory `dir` shown to the guest at `guest` (a volume mount).
    pub fn mount(mut self, dir: impl AsRef<Path>, guest: &str) -> Self {
        self.mounts
            .push((dir.as_ref().to_path_buf(), guest.to_string(), false));
        self
    }

    /// [`Sidecar::mount`], read-only (a `secret` or `files` volume).
    pub fn mount_read_only(mut self, dir: impl AsRef<Path>, guest: &str) -> Self {
        self.mounts
            .push((dir.as_ref().to_path_buf(), guest.to_string(), true));
        self
    }

    /// Its memory limit (`memory_limit_mib`; 64 by default).
    pub fn memory_mib(mut self, mib: u64) -> Self {
        self.memory_mib = mib;
        self
    }

    /// Its output is also printed on this process's stdout and stderr as it comes (the runner
    /// for guests' unit tests).
    pub fn echo(mut self) -> Self {
        self.echo = true;
        self
    }

    /// Compiles and starts the guest on a thread of its own. Panics when the module cannot be
    /// read or compiled (a test's setup error).
    pub fn start(self) -> Running {
        let exec = Executor::new().expect("wasm engine");
        let read =
            peapod::module_file::read(&self.wasm, 64 << 20, peapod::caller::Caller::myself())
                .unwrap_or_else(|e| {
                    panic!(
                        "{}: {e} (built? see the authoring guide)",
                        self.wasm.display()
                    )
                });
        let (module, _) = exec
            .prepare(&self.wasm, &read, false)
            .unwrap_or_else(|e| panic!("{}: {e}", self.wasm.display()));
        let lines: Arc<Mutex<Vec<(Stream, String)>>> = Arc::default();
        let sink: LogSink = {
            let (lines, echo) = (lines.clone(), self.echo);
            Arc::new(move |_id: &str, stream: Stream, line: &str| {
                if echo {
                    match stream {
                        Stream::Stdout => println!("{line}"),
                        Stream::Stderr => eprintln!("{line}"),
                    }
                }
                lines
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push((stream, line.to_string()));
            })
        };
        let name = self
            .wasm
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "sidecar".into());
        let spec = RunSpec {
            name: name.clone(),
            args: self.args,
            env: self.env,
            memory_limit: self.memory_mib << 20,
            open_files: peapod::config::DEFAULT_OPEN_FILES,
            mounts: (self.mounts.into_iter())
                .map(|(host, guest, read_only)| Mount {
                    host,
                    hold: None,
                    guest,
                    read_only,
                })
                .collect(),
            env_files: Vec::new(),
            log: ContainerLog::new("harness", &name, Some(sink)),
            usage: Default::default(),
            pod_names: None,
            lookups: Default::default(),
            binds: Default::default(),
            siblings: Default::default(),
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(format!("harness-{name}"))
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                rt.block_on(async move {
                    tokio::select! {
                        outcome = exec.run(&module, &spec) => Some(outcome),
                        _ = stopped => None,
                    }
                })
            })
            .expect("harness thread");
        Running {
            lines,
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

/// A guest running in the harness. Dropped, it is stopped.
pub struct Running {
    lines: Arc<Mutex<Vec<(Stream, String)>>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<Option<Outcome>>>,
}

/// How a guest's run ended.
#[derive(Debug)]
pub struct Ended {
    /// `Some(code)` when it exited; `None` when it was stopped, trapped or hit a limit.
    pub exit_code: Option<i32>,
    /// peapod's words for the end: `Completed`, `Error`, `OOMKilled`, `Trapped`, ...; `Stopped`
    /// when the harness stopped it.
    pub reason: String,
    /// Its output, stdout and stderr interleaved as written.
    pub logs: String,
}

impl Running {
    /// Its output so far, stdout and stderr interleaved, a line each.
    pub fn logs(&self) -> String {
        let lines = self.lines.lock().unwrap_or_else(|p| p.into_inner());
        lines.iter().map(|(_, l)| format!("{l}\n")).collect()
    }

    /// The lines it wrote to stderr.
    pub fn stderr(&self) -> String {
        let lines = self.lines.lock().unwrap_or_else(|p| p.into_inner());
        (lines.iter())
            .filter(|(s, _)| *s == Stream::Stderr)
            .map(|(_, l)| format!("{l}\n"))
            .collect()
    }

    /// Waits until a line of its output contains `needle`; returns that line. Panics (with its
    /// output) after `within`, or when the guest ended first.
    pub fn wait_for_log(&self, needle: &str, within: Duration) -> String {
        let t0 = Instant::now();
        loop {
            {
                let lines = self.lines.lock().unwrap_or_else(|p| p.into_inner());
                if let Some((_, l)) = lines.iter().find(|(_, l)| l.contains(needle)) {
                    return l.clone();
                }
            }
            if self.thread.as_ref().is_some_and(|t| t.is_finished()) {
                panic!(
                    "the guest ended before it logged {needle:?}:\n{}",
                    self.logs()
                );
            }
            if t0.elapsed() > within {
                panic!(
                    "no {needle:?} in the guest's output within {within:?}:\n{}",
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops it (as a pod's stop ends a module) and returns how it ended.
    pub fn stop(mut self) -> Ended {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        self.ended()
    }

    /// Waits for it to end by itself (panics after `within`).
    pub fn wait(mut self, within: Duration) -> Ended {
        let t0 = Instant::now();
        while !self.thread.as_ref().is_none_or(|t| t.is_finished()) {
            if t0.elapsed() > within {
                panic!("the guest still runs after {within:?}:\n{}", self.logs());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.ended()
    }

    fn ended(&mut self) -> Ended {
        let outcome = self.thread.take().and_then(|t| t.join().ok()).flatten();
        Ended {
            exit_code: outcome.as_ref().and_then(Outcome::exit_code),
            reason: outcome
                .as_ref()
                .map_or("Stopped", Outcome::reason)
                .to_string(),
            logs: self.logs(),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A request the fake app received.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Received {
    /// The first header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        (self.headers.iter())
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

type Handler = Arc<dyn Fn(&Received) -> (u16, Vec<u8>) + Send + Sync>;

/// An app on `127.0.0.1` (a port of its own) that answers HTTP/1.1 as `handler` says and keeps
/// every request it received. Connections are kept alive; bodies may be chunked.
pub struct FakeApp {
    addr: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
}

impl FakeApp {
    pub fn start(handler: impl Fn(&Received) -> (u16, Vec<u8>) + Send + Sync + 'static) -> Self {
        Self::start_on("127.0.0.1:0", handler)
    }

    /// [`FakeApp::start`] on `addr` (a remote that comes back where it was).
    pub fn start_on(
        addr: &str,
        handler: impl Fn(&Received) -> (u16, Vec<u8>) + Send + Sync + 'static,
    ) -> Self {
        let listener = TcpListener::bind(addr).expect("bind the fake app");
        let addr = listener.local_addr().expect("its address");
        let received: Arc<Mutex<Vec<Received>>> = Arc::default();
        let handler: Handler = Arc::new(handler);
        let kept = received.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let (handler, kept) = (handler.clone(), kept.clone());
                std::thread::spawn(move || serve(conn, &handler, &kept));
            }
        });
        FakeApp { addr, received }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every request received so far, in order.
    pub fn received(&self) -> Vec<Received> {
        self.received
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// One connection of the fake app: requests in turn until the client closes.
fn serve(mut conn: TcpStream, handler: &Handler, kept: &Mutex<Vec<Received>>) {
    let mut buf = Vec::new();
    loop {
        let Some((req, used)) = read_request(&mut conn, &mut buf) else {
            return;
        };
        buf.drain(..used);
        let (status, body) = handler(&req);
        kept.lock().unwrap_or_else(|p| p.into_inner()).push(req);
        let head = format!(
            "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nContent-Type: text/plain\r\n\r\n",
            body.len()
        );
        if conn.write_all(head.as_bytes()).is_err() || conn.write_all(&body).is_err() {
            return;
        }
    }
}

/// Reads one request (body by Content-Length or chunked) from `conn` into `buf`: the request and
/// how many bytes of `buf` it took.
fn read_request(conn: &mut TcpStream, buf: &mut Vec<u8>) -> Option<(Received, usize)> {
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut req = httparse::Request::new(&mut headers);
        if let Ok(httparse::Status::Complete(head_len)) = req.parse(buf) {
            let headers: Vec<(String, String)> = (req.headers.iter())
                .map(|h| {
                    (
                        h.name.to_string(),
                        String::from_utf8_lossy(h.value).into_owned(),
                    )
                })
                .collect();
            let mut r = Received {
                method: req.method.unwrap_or_default().to_string(),
                path: req.path.unwrap_or_default().to_string(),
                headers,
                body: Vec::new(),
            };
            let chunked = r
                .header("transfer-encoding")
                .is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
            let length: usize = r
                .header("content-length")
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            let mut at = head_len;
            if chunked {
                loop {
                    let line_end = loop {
                        if let Some(i) = buf[at..].windows(2).position(|w| w == b"\r\n") {
                            break at + i;
                        }
                        fill(conn, buf)?;
                    };
                    let size = usize::from_str_radix(
                        String::from_utf8_lossy(&buf[at..line_end])
                            .split(';')
                            .next()?
                            .trim(),
                        16,
                    )
                    .ok()?;
                    at = line_end + 2;
                    while buf.len() < at + size + 2 {
                        fill(conn, buf)?;
                    }
                    r.body.extend_from_slice(&buf[at..at + size]);
                    at += size + 2;
                    if size == 0 {
                        break;
                    }
                }
            } else {
                while buf.len() < head_len + length {
                    fill(conn, buf)?;
                }
                r.body = buf[head_len..head_len + length].to_vec();
                at = head_len + length;
            }
            return Some((r, at));
        }
        fill(conn, buf)?;
    }
}

fn fill(conn: &mut TcpStream, buf: &mut Vec<u8>) -> Option<()> {
    let mut chunk = [0u8; 8192];
    match conn.read(&mut chunk) {
        Ok(0) | Err(_) => None,
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            Some(())
        }
    }
}

/// Builds the guest crate in `dir` for wasm32-wasip2 (release, into `dir/target/wasm`, apart
/// from the test's own build) and returns its `NAME.wasm`. Panics when the build fails (its
/// errors are on the test's output).
pub fn build_guest(dir: impl AsRef<Path>, name: &str) -> PathBuf {
    let dir = dir.as_ref();
    let target = dir.join("target").join("wasm");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = std::process::Command::new(cargo)
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--manifest-path",
        ])
        .arg(dir.join("Cargo.toml"))
        .env("CARGO_TARGET_DIR", &target)
        // The test's own build settings are for the host.
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET")
        .status()
        .expect("run cargo");
    assert!(
        status.success(),
        "building {} for wasm32-wasip2 failed (is the target installed? rustup target add wasm32-wasip2)",
        dir.display()
    );
    target
        .join("wasm32-wasip2")
        .join("release")
        .join(format!("{name}.wasm"))
}

/// Waits until `ready` holds (checked every 25 ms); panics naming `what` after 20 s.
pub fn eventually(what: &str, mut ready: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !ready() {
        assert!(t0.elapsed() < Duration::from_secs(20), "never: {what}");
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// A free address on 127.0.0.1 (bound, then let go, for the guest to bind).
pub fn free_addr() -> String {
    let l = TcpListener::bind("127.0.0.1:0").expect("a free port");
    l.local_addr().expect("its address").to_string()
}

/// Sends `request` (raw HTTP/1.1, `Connection: close` added when it has no `Connection`) to
/// `addr` and returns the whole answer as text.
pub fn http(addr: &str, request: &str) -> String {
    let mut conn = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    conn.set_read_timeout(Some(Duration::from_secs(10))).ok();
    let request = if request.to_ascii_lowercase().contains("\r\nconnection:") {
        request.to_string()
    } else {
        request.replacen("\r\n", "\r\nConnection: close\r\n", 1)
    };
    conn.write_all(request.as_bytes()).expect("send");
    let mut out = Vec::new();
    let _ = conn.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}
