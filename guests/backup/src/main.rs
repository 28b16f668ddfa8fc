//! The demo sidecar: a first backup agent (wasip2).
//!
//! Every `--interval` (default 3s) it reads the app's whole store over the pod's shared loopback
//! (`--app`, default 127.0.0.1:8080) and logs a snapshot. When it sees a new app instance (the app
//! crashed and was restarted in place) whose store is empty, it writes the last snapshot back.

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

fn main() {
    let mut app = "127.0.0.1:8080".to_string();
    let mut interval = Duration::from_secs(3);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--app" => app = args.next().expect("--app needs HOST:PORT"),
            "--interval-ms" => {
                interval = Duration::from_millis(
                    args.next()
                        .and_then(|v| v.parse().ok())
                        .expect("--interval-ms needs a number"),
                )
            }
            other => {
                eprintln!("unknown argument {other:?}");
                std::process::exit(2);
            }
        }
    }
    println!("backup: watching {app} every {interval:?}");
    let mut last: Option<(String, String)> = None; // (instance, snapshot)
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
                println!(
                    "backup: app restarted (instance {} -> {}); restored {restored} keys",
                    inst, snap.instance
                );
                last = Some((snap.instance, old.clone()));
            }
            _ => {
                let body = snap.body.trim_end().replace('\n', ", ");
                println!("backup: snapshot of {keys} keys: {{{body}}}");
                last = Some((snap.instance, snap.body));
            }
        }
    }
}
