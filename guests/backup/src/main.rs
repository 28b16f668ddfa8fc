//! The demo sidecar: a first backup agent (wasip2).
//!
//! Every `--interval-ms` (default 3000) it reads the app's whole store over the pod's shared
//! loopback (`--app`, default 127.0.0.1:8080) and logs a snapshot. When it sees a new app
//! instance whose store is empty (the app crashed and was restarted in place), it writes the last
//! snapshot back.
//!
//! With files (a guest sees only its pod's volume mounts):
//! - `--config FILE` reads `key = value` lines first (`app`, `interval_ms`), as a config file
//!   mounted from a `files` volume; flags after it win.
//! - `--dir DIR` keeps each snapshot in `DIR/snapshot.txt` (written to a temporary file, then
//!   renamed over it, so a power cut leaves the old or the new one) and starts from it: mounted
//!   from a `host_path`, the keys survive a re-created pod, a daemon restart and a reboot.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

struct Response {
    status: u16,
    instance: String,
    body: String,
}

fn request(app: &str, method: &str, path: &str, body: &str) -> std::io::Result<Response> {
    let mut conn = TcpStream::connect(app)?;
    write!(
        conn,
        "{method} {path} HTTP/1.1\r\nHost: {app}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut raw = Vec::new();
    conn.read_to_end(&mut raw)?;
    let mut headers = [httparse::EMPTY_HEADER; 16];
    let mut resp = httparse::Response::new(&mut headers);
    let bad = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, m.to_string());
    let httparse::Status::Complete(len) = resp.parse(&raw).map_err(|_| bad("bad response"))? else {
        return Err(bad("truncated response"));
    };
    let instance = resp
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("x-instance"))
        .map(|h| String::from_utf8_lossy(h.value).into_owned())
        .unwrap_or_default();
    Ok(Response {
        status: resp.code.unwrap_or(0),
        instance,
        body: String::from_utf8_lossy(&raw[len..]).into_owned(),
    })
}

/// Applies one setting (from the command line or the config file).
fn set(key: &str, value: &str, app: &mut String, interval: &mut Duration) {
    match key {
        "app" => *app = value.to_string(),
        "interval_ms" => match value.parse() {
            Ok(ms) => *interval = Duration::from_millis(ms),
            Err(_) => fail(&format!("interval_ms: {value:?} is not a number")),
        },
        other => fail(&format!("unknown setting {other:?}")),
    }
}

fn fail(message: &str) -> ! {
    eprintln!("backup: {message}");
    std::process::exit(2)
}

/// Writes `text` to `dir/snapshot.txt` through a temporary file and a rename.
fn save(dir: &str, text: &str) -> std::io::Result<()> {
    let tmp = format!("{dir}/snapshot.txt.tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, format!("{dir}/snapshot.txt"))
}

fn main() {
    let mut app = "127.0.0.1:8080".to_string();
    let mut interval = Duration::from_secs(3);
    let mut dir: Option<String> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || {
            args.next()
                .unwrap_or_else(|| fail(&format!("{a} needs a value")))
        };
        match a.as_str() {
            "--app" => app = value(),
            "--interval-ms" => set("interval_ms", &value(), &mut app, &mut interval),
            "--dir" => dir = Some(value()),
            "--config" => {
                let file = value();
                let text = std::fs::read_to_string(&file)
                    .unwrap_or_else(|e| fail(&format!("cannot read {file}: {e}")));
                for line in text.lines().map(str::trim) {
                    if line.is_empty() || line.starts_with('#') {
                        continue;
                    }
                    let Some((k, v)) = line.split_once('=') else {
                        fail(&format!("{file}: {line:?} is not `key = value`"))
                    };
                    set(k.trim(), v.trim(), &mut app, &mut interval);
                }
                println!("backup: read {file}");
            }
            other => fail(&format!("unknown argument {other:?}")),
        }
    }
    println!("backup: watching {app} every {interval:?}");
    let mut last: Option<(String, String)> = None; // (instance, snapshot)
    if let Some(d) = &dir {
        match std::fs::read_to_string(format!("{d}/snapshot.txt")) {
            Ok(text) => {
                println!(
                    "backup: found a snapshot of {} keys in {d}",
                    text.lines().count()
                );
                // Not an instance the app ever has: the first app seen, if empty, gets it back.
                last = Some(("(saved)".into(), text));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                println!("backup: no snapshot in {d} yet")
            }
            Err(e) => println!("backup: cannot read the snapshot in {d}: {e}"),
        }
    }
    loop {
        std::thread::sleep(interval);
        let snap = match request(&app, "GET", "/kv", "") {
            Ok(r) if r.status == 200 => r,
            Ok(r) => {
                println!("backup: app answered {}", r.status);
                continue;
            }
            Err(e) => {
                println!("backup: app unreachable ({e}); will retry");
                continue;
            }
        };
        let keys = snap.body.lines().count();
        match &last {
            Some((inst, old)) if *inst != snap.instance && keys == 0 && !old.is_empty() => {
                let mut restored = 0;
                for line in old.lines() {
                    if let Some((k, v)) = line.split_once('=')
                        && request(&app, "PUT", &format!("/kv/{k}"), v)
                            .is_ok_and(|r| r.status == 201)
                    {
                        restored += 1;
                    }
                }
                if inst == "(saved)" {
                    println!(
                        "backup: app instance {} started empty; restored {restored} keys from the saved snapshot",
                        snap.instance
                    );
                } else {
                    println!(
                        "backup: app restarted (instance {} -> {}); restored {restored} keys",
                        inst, snap.instance
                    );
                }
                last = Some((snap.instance, old.clone()));
            }
            _ => {
                let body = snap.body.trim_end().replace('\n', ", ");
                println!("backup: snapshot of {keys} keys: {{{body}}}");
                if let Some(d) = &dir
                    && last.as_ref().is_none_or(|(_, old)| *old != snap.body)
                    && let Err(e) = save(d, &snap.body)
                {
                    println!("backup: cannot save the snapshot in {d}: {e}");
                }
                last = Some((snap.instance, snap.body));
            }
        }
    }
}
