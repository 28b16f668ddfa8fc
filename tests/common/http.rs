//! HTTP from the host: to a pod's kv-server, and to the daemon's API socket.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::*;

#[derive(Debug)]
pub(crate) struct Http {
    pub status: u16,
    pub instance: String,
    pub body: String,
}

/// A one-shot HTTP/1.1 request.
pub(crate) fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &str,
) -> std::io::Result<Http> {
    http_with(addr, method, path, "", body)
}

/// [`http`] with `headers` (each line ending in `\r\n`), e.g. an `Authorization` for a pod
/// behind the auth proxy.
pub(crate) fn http_with(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &str,
    body: &str,
) -> std::io::Result<Http> {
    let mut c = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    c.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        c,
        "{method} {path} HTTP/1.1\r\nHost: x\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut raw = String::new();
    c.read_to_string(&mut raw)?;
    let (head, body) = raw
        .split_once("\r\n\r\n")
        .ok_or_else(|| std::io::Error::other(format!("bad response {raw:?}")))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status in {head:?}")))?;
    let instance = head
        .lines()
        .find_map(|l| l.strip_prefix("X-Instance: "))
        .unwrap_or("")
        .to_string();
    Ok(Http {
        status,
        instance,
        body: body.to_string(),
    })
}

/// Waits until the kv-server at `addr` answers /healthz; returns its instance id.
pub(crate) fn wait_healthy(addr: SocketAddr) -> String {
    wait_healthy_with(addr, "")
}

/// [`wait_healthy`] with `headers`.
pub(crate) fn wait_healthy_with(addr: SocketAddr, headers: &str) -> String {
    eventually(Duration::from_secs(30), &format!("{addr} healthy"), || {
        http_with(addr, "GET", "/healthz", headers, "")
            .ok()
            .filter(|r| r.status == 200)
            .map(|r| r.instance)
    })
}

/// A free TCP port on the host's loopback (nothing listens there now).
pub(crate) fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// One raw HTTP/1.1 request on the API socket, as curl --unix-socket sends it: (status, body).
pub(crate) fn raw_api(env: &Env, method: &str, path: &str, body: &str) -> (u16, serde_json::Value) {
    use std::io::{Read, Write};
    let mut c = std::os::unix::net::UnixStream::connect(env.socket()).unwrap();
    write!(
        c,
        "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut raw = String::new();
    c.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (
        status,
        serde_json::from_str(body).unwrap_or(serde_json::Value::Null),
    )
}
