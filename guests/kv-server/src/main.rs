//! The demo app: a tiny in-memory key-value store over HTTP/1.1 (wasip2).
//!
//! ```text
//! GET    /kv          all pairs, one `key=value` a line
//! GET    /kv/KEY      one value (404 if absent)
//! PUT    /kv/KEY      store the request body
//! DELETE /kv/KEY      remove
//! POST   /import      store every `key=value` line of the body (what GET /kv gives: a restore)
//! GET    /healthz     "ok"
//! POST   /crash       answer, then trap (to watch a restart in place)
//! POST   /exit/CODE   answer, then exit with CODE
//! ```
//! Every response carries `X-Instance`, a value fixed at start, so a client can tell a restarted
//! instance from the old one. Listens on `--listen ADDR` (default 0.0.0.0:8080).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{SystemTime, UNIX_EPOCH};

struct Reply {
    status: &'static str,
    body: String,
}

fn reply(status: &'static str, body: impl Into<String>) -> Reply {
    Reply {
        status,
        body: body.into(),
    }
}

enum After {
    Serve,
    Crash,
    Exit(i32),
}

fn main() {
    let mut listen = "0.0.0.0:8080".to_string();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--listen" => listen = args.next().expect("--listen needs ADDR"),
            other => {
                eprintln!("unknown argument {other:?}");
                std::process::exit(2);
            }
        }
    }
    let instance = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let listener = TcpListener::bind(&listen).unwrap_or_else(|e| {
        eprintln!("cannot listen on {listen}: {e}");
        std::process::exit(1);
    });
    println!("kv-server listening on {listen} (instance {instance:x})");
    let mut store = BTreeMap::new();
    for conn in listener.incoming() {
        let Ok(mut conn) = conn else { continue };
        match serve(&mut conn, &mut store, instance) {
            Ok(After::Serve) => {}
            Ok(After::Crash) => panic!("crash requested over HTTP"),
            Ok(After::Exit(code)) => {
                println!("exit {code} requested over HTTP");
                std::process::exit(code)
            }
            Err(e) => eprintln!("connection: {e}"),
        }
    }
}

fn serve(
    conn: &mut TcpStream,
    store: &mut BTreeMap<String, String>,
    instance: u64,
) -> std::io::Result<After> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let (method, path, body_start, content_length) = loop {
        let n = conn.read(&mut chunk)?;
        if n == 0 {
            return Ok(After::Serve);
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&buf) {
            Ok(httparse::Status::Complete(len)) => {
                let cl = req
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                    .and_then(|h| std::str::from_utf8(h.value).ok()?.trim().parse().ok())
                    .unwrap_or(0usize);
                break (
                    req.method.unwrap_or("").to_string(),
                    req.path.unwrap_or("").to_string(),
                    len,
                    cl,
                );
            }
            Ok(httparse::Status::Partial) if buf.len() < 64 * 1024 => continue,
            _ => {
                respond(conn, instance, reply("400 Bad Request", "bad request\n"))?;
                return Ok(After::Serve);
            }
        }
    };
    while buf.len() < body_start + content_length {
        let n = conn.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let end = buf.len().min(body_start + content_length);
    let body = String::from_utf8_lossy(&buf[body_start..end]).into_owned();

    let mut after = After::Serve;
    let r = match (method.as_str(), path.as_str()) {
        ("GET", "/healthz") => reply("200 OK", "ok\n"),
        ("GET", "/kv") => reply(
            "200 OK",
            store
                .iter()
                .map(|(k, v)| format!("{k}={v}\n"))
                .collect::<String>(),
        ),
        ("POST", "/import") => {
            let pairs: Vec<(&str, &str)> = body.lines().filter_map(|l| l.split_once('=')).collect();
            if pairs.len() != body.lines().filter(|l| !l.is_empty()).count() {
                reply("400 Bad Request", "every line is key=value\n")
            } else {
                for (k, v) in &pairs {
                    store.insert(k.to_string(), v.to_string());
                }
                reply("200 OK", format!("imported {} keys\n", pairs.len()))
            }
        }
        ("POST", "/crash") => {
            after = After::Crash;
            reply("200 OK", "crashing\n")
        }
        (m, p) if p.starts_with("/exit/") && m == "POST" => match p[6..].parse() {
            Ok(code) => {
                after = After::Exit(code);
                reply("200 OK", format!("exiting with {code}\n"))
            }
            Err(_) => reply("400 Bad Request", "exit code must be a number\n"),
        },
        (m, p) if p.starts_with("/kv/") && p.len() > 4 => {
            let key = p[4..].to_string();
            match m {
                "GET" => match store.get(&key) {
                    Some(v) => reply("200 OK", format!("{v}\n")),
                    None => reply("404 Not Found", "no such key\n"),
                },
                "PUT" => {
                    let v = body.trim_end_matches('\n').to_string();
                    if key.contains('=') || v.contains('\n') {
                        reply("400 Bad Request", "keys have no '=', values no newline\n")
                    } else {
                        store.insert(key, v);
                        reply("201 Created", "stored\n")
                    }
                }
                "DELETE" => {
                    store.remove(&key);
                    reply("204 No Content", "")
                }
                _ => reply("405 Method Not Allowed", "use GET, PUT or DELETE\n"),
            }
        }
        _ => reply("404 Not Found", "not found\n"),
    };
    respond(conn, instance, r)?;
    Ok(after)
}

fn respond(conn: &mut TcpStream, instance: u64, r: Reply) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nX-Instance: {instance:x}\r\nConnection: close\r\n\r\n",
        r.status,
        r.body.len()
    );
    conn.write_all(head.as_bytes())?;
    conn.write_all(r.body.as_bytes())?;
    conn.flush()
}
