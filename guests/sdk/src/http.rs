//! HTTP/1.1 for sidecars: a small server ([`serve`]) and client ([`send`]) over [`crate::net`],
//! for the app on the pod's loopback and for the network; and the pieces a proxy needs to pass
//! a message through without holding it ([`Reader`], [`Framing`], [`copy_body`]).
//!
//! Heads are parsed by `httparse`; bodies are framed by `Content-Length` or chunked encoding
//! (requests), or also by the connection's end (responses). Heads are at most [`MAX_HEAD`]
//! bytes; bodies read whole at most [`MAX_BODY`].
//!
//! peapod's probes and hooks: [`health`] answers `GET /healthz` (alive), `/readyz` (ready, as
//! [`set_ready`] says) and `/prestop` (asks the sidecar to stop: [`crate::stop`]), so a spec has
//!
//! ```toml
//! readiness_probe = { http_get = { path = "/readyz", port = 9000 } }
//! lifecycle = { pre_stop = { http_get = { path = "/prestop", port = 9000 } } }
//! ```

use std::cell::Cell;
use std::future::Future;
use std::net::SocketAddr;
use std::rc::Rc;

use crate::net::{Conn, Listener};
use crate::{Error, Result};

/// The largest head (request or status line and headers) read.
pub const MAX_HEAD: usize = 16 * 1024;
/// The largest body read whole (a proxy streams bodies of any size instead).
pub const MAX_BODY: usize = 8 << 20;
/// The most headers in a head.
const MAX_HEADERS: usize = 64;

/// A request: its head, and its body when read whole.
#[derive(Debug, Clone, Default)]
pub struct Request {
    pub method: String,
    /// The request target: path and query (`/kv/a?x=1`).
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Who sent it (on the server side).
    pub peer: Option<SocketAddr>,
    /// `HTTP/1.0` (1.0 closes after one exchange unless it asks to keep alive).
    pub http10: bool,
}

impl Request {
    pub fn new(method: &str, target: &str) -> Self {
        Request {
            method: method.to_string(),
            target: target.to_string(),
            ..Request::default()
        }
    }

    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    pub fn with_body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// The first header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }

    /// The path, without the query.
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or("")
    }

    /// Whether the connection stays open after this exchange.
    pub fn keep_alive(&self) -> bool {
        let conn = self.header("connection").map(str::to_ascii_lowercase);
        match conn.as_deref() {
            Some(c) if c.contains("close") => false,
            Some(c) if c.contains("keep-alive") => true,
            _ => !self.http10,
        }
    }
}

/// A response.
#[derive(Debug, Clone, Default)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn new(status: u16, body: impl Into<Vec<u8>>) -> Self {
        Response {
            status,
            headers: Vec::new(),
            body: body.into(),
        }
    }

    /// A `text/plain` response.
    pub fn text(status: u16, body: impl Into<String>) -> Self {
        Response::new(status, body.into()).with_header("Content-Type", "text/plain; charset=utf-8")
    }

    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// The first header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }

    /// The body as text (invalid UTF-8 replaced).
    pub fn text_body(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// `Ok(self)` for a 2xx status, else an error naming the status.
    pub fn success(self) -> Result<Self> {
        match self.status {
            200..=299 => Ok(self),
            s => Err(Error::Http(format!("answered {s} {}", reason(s)))),
        }
    }
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// The reason phrase of a status.
pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        301 => "Moved Permanently",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        411 => "Length Required",
        413 => "Content Too Large",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "",
    }
}

/// How a message's body ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body.
    Empty,
    /// `Content-Length` bytes.
    Length(u64),
    /// Chunked transfer encoding.
    Chunked,
    /// Until the connection closes (a response only).
    UntilClose,
}

/// A request's framing: chunked, else its `Content-Length`, else none. Both, or a bad length,
/// is refused (request smuggling goes through such heads).
pub fn request_framing(headers: &[(String, String)]) -> Result<Framing> {
    let chunked = is_chunked(headers)?;
    let lengths: Vec<&str> = headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .map(|(_, v)| v.trim())
        .collect();
    match (chunked, lengths.as_slice()) {
        (true, []) => Ok(Framing::Chunked),
        (true, _) => Err(Error::Http(
            "both Transfer-Encoding and Content-Length".into(),
        )),
        (false, []) => Ok(Framing::Empty),
        (false, [one]) => one
            .parse::<u64>()
            .ok()
            .filter(|_| one.bytes().all(|b| b.is_ascii_digit()))
            .map(|n| {
                if n == 0 {
                    Framing::Empty
                } else {
                    Framing::Length(n)
                }
            })
            .ok_or_else(|| Error::Http(format!("bad Content-Length {one:?}"))),
        (false, _) => Err(Error::Http("more than one Content-Length".into())),
    }
}

/// A response's framing, given the request's method and the status.
pub fn response_framing(
    method: &str,
    status: u16,
    headers: &[(String, String)],
) -> Result<Framing> {
    if method.eq_ignore_ascii_case("HEAD")
        || (100..200).contains(&status)
        || status == 204
        || status == 304
    {
        return Ok(Framing::Empty);
    }
    if is_chunked(headers)? {
        return Ok(Framing::Chunked);
    }
    match header(headers, "content-length").map(str::trim) {
        None => Ok(Framing::UntilClose),
        Some(v) => v
            .parse::<u64>()
            .map(|n| {
                if n == 0 {
                    Framing::Empty
                } else {
                    Framing::Length(n)
                }
            })
            .map_err(|_| Error::Http(format!("bad Content-Length {v:?}"))),
    }
}

fn is_chunked(headers: &[(String, String)]) -> Result<bool> {
    let Some(te) = header(headers, "transfer-encoding") else {
        return Ok(false);
    };
    let te = te.trim().to_ascii_lowercase();
    if te == "chunked" {
        Ok(true)
    } else {
        Err(Error::Http(format!("unsupported Transfer-Encoding {te:?}")))
    }
}

/// A connection's reading side with a buffer: heads to their blank line, bodies by framing.
#[derive(Debug)]
pub struct Reader<'c> {
    conn: &'c Conn,
    buf: Vec<u8>,
}

/// Why a head could not be read.
#[derive(Debug)]
pub enum HeadError {
    /// The connection closed before a whole head (after some bytes of it).
    Truncated,
    /// More than [`MAX_HEAD`] bytes.
    TooLarge,
    /// Not HTTP/1.x.
    Malformed(String),
    Io(std::io::Error),
}

impl std::fmt::Display for HeadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HeadError::Truncated => f.write_str("the connection closed in the middle of a head"),
            HeadError::TooLarge => write!(f, "a head larger than {MAX_HEAD} bytes"),
            HeadError::Malformed(m) => write!(f, "not HTTP/1.1: {m}"),
            HeadError::Io(e) => write!(f, "{e}"),
        }
    }
}

impl<'c> Reader<'c> {
    pub fn new(conn: &'c Conn) -> Self {
        Reader {
            conn,
            buf: Vec::new(),
        }
    }

    /// A reader that starts with `buf` (bytes read before, by [`Reader::into_buffer`] of an
    /// earlier reader of the same connection).
    pub fn with_buffer(conn: &'c Conn, buf: Vec<u8>) -> Self {
        Reader { conn, buf }
    }

    /// What was read and not yet used (for the next reader of the connection).
    pub fn into_buffer(self) -> Vec<u8> {
        self.buf
    }

    /// Reads more into the buffer; false at the end of the stream.
    async fn fill(&mut self) -> std::io::Result<bool> {
        // Read straight into the buffer's spare room: a large read is one host call, and a
        // proxy's body passes in few of them.
        const CHUNK: usize = 64 * 1024;
        let len = self.buf.len();
        self.buf.resize(len + CHUNK, 0);
        let n = self.conn.read(&mut self.buf[len..]).await;
        self.buf.truncate(len + *n.as_ref().unwrap_or(&0));
        Ok(n? > 0)
    }

    /// The next head's bytes (through its blank line); `Ok(None)` when the connection closed
    /// cleanly before it.
    pub async fn head(&mut self) -> Result<Option<Vec<u8>>, HeadError> {
        let mut searched: usize = 0;
        loop {
            if let Some(end) = find(&self.buf[searched.saturating_sub(3)..], b"\r\n\r\n") {
                let end = searched.saturating_sub(3) + end + 4;
                return Ok(Some(self.buf.drain(..end).collect()));
            }
            searched = self.buf.len();
            if self.buf.len() > MAX_HEAD {
                return Err(HeadError::TooLarge);
            }
            if !self.fill().await.map_err(HeadError::Io)? {
                return match self.buf.is_empty() {
                    true => Ok(None),
                    false => Err(HeadError::Truncated),
                };
            }
        }
    }

    /// The next request: its head parsed, its body read whole (at most `max_body` bytes).
    pub async fn request(&mut self, max_body: usize) -> Result<Option<Request>> {
        let head = match self.head().await {
            Ok(Some(h)) => h,
            Ok(None) => return Ok(None),
            Err(e) => return Err(Error::Http(e.to_string())),
        };
        let mut req = parse_request(&head).map_err(|e| Error::Http(e.to_string()))?;
        req.peer = Some(self.conn.peer());
        let framing = request_framing(&req.headers)?;
        req.body = self.body(framing, max_body).await?;
        Ok(Some(req))
    }

    /// A body read whole and decoded (at most `max` bytes).
    pub async fn body(&mut self, framing: Framing, max: usize) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        let too_big = || Error::Http(format!("a body larger than {max} bytes"));
        let io = |e| Error::io("reading a body", e);
        match framing {
            Framing::Empty => {}
            Framing::Length(n) => {
                if n > max as u64 {
                    return Err(too_big());
                }
                self.exact(n as usize, &mut out).await.map_err(io)?;
            }
            Framing::UntilClose => loop {
                out.append(&mut self.buf);
                if out.len() > max {
                    return Err(too_big());
                }
                if !self.fill().await.map_err(io)? {
                    break;
                }
            },
            Framing::Chunked => loop {
                let size = self.chunk_size().await?;
                if size == 0 {
                    // Trailers, to the blank line.
                    while !self.line().await.map_err(io)?.is_empty() {}
                    break;
                }
                if out.len() as u64 + size > max as u64 {
                    return Err(too_big());
                }
                self.exact(size as usize, &mut out).await.map_err(io)?;
                self.line().await.map_err(io)?;
            },
        }
        Ok(out)
    }

    /// Moves `n` bytes into `out`.
    async fn exact(&mut self, n: usize, out: &mut Vec<u8>) -> std::io::Result<()> {
        while self.buf.len() < n {
            if !self.fill().await? {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
        }
        out.extend(self.buf.drain(..n));
        Ok(())
    }

    /// One line without its CRLF (at most 4 KiB).
    async fn line(&mut self) -> std::io::Result<Vec<u8>> {
        loop {
            if let Some(i) = find(&self.buf, b"\r\n") {
                let mut l: Vec<u8> = self.buf.drain(..i + 2).collect();
                l.truncate(i);
                return Ok(l);
            }
            if self.buf.len() > 4096 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "line too long",
                ));
            }
            if !self.fill().await? {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
        }
    }

    async fn chunk_size(&mut self) -> Result<u64> {
        let line = self
            .line()
            .await
            .map_err(|e| Error::io("reading a chunk", e))?;
        let text = String::from_utf8_lossy(&line);
        let hex = text.split(';').next().unwrap_or("").trim();
        if hex.is_empty() || hex.len() > 15 {
            return Err(Error::Http(format!("bad chunk size {hex:?}")));
        }
        u64::from_str_radix(hex, 16).map_err(|_| Error::Http(format!("bad chunk size {hex:?}")))
    }

    /// Passes a body through to `to` as it comes, in its own framing (a chunked body stays
    /// chunked): nothing is held but one buffer. Returns the bytes of payload passed.
    pub async fn copy_body(&mut self, framing: Framing, to: &Conn) -> Result<u64> {
        let io = |e| Error::io("passing a body", e);
        let mut passed = 0u64;
        match framing {
            Framing::Empty => {}
            Framing::Length(n) => {
                passed = self.pass(n, to).await.map_err(io)?;
            }
            Framing::UntilClose => loop {
                if !self.buf.is_empty() {
                    to.write_all(&self.buf).await.map_err(io)?;
                    passed += self.buf.len() as u64;
                    self.buf.clear();
                }
                if !self.fill().await.map_err(io)? {
                    break;
                }
            },
            Framing::Chunked => loop {
                let size = self.chunk_size().await?;
                to.write_all(format!("{size:x}\r\n").as_bytes())
                    .await
                    .map_err(io)?;
                if size == 0 {
                    loop {
                        let l = self.line().await.map_err(io)?;
                        to.write_all(&l).await.map_err(io)?;
                        to.write_all(b"\r\n").await.map_err(io)?;
                        if l.is_empty() {
                            break;
                        }
                    }
                    break;
                }
                passed += self.pass(size, to).await.map_err(io)?;
                self.line().await.map_err(io)?;
                to.write_all(b"\r\n").await.map_err(io)?;
            },
        }
        to.flush().await.map_err(io)?;
        Ok(passed)
    }

    /// Passes exactly `n` bytes to `to`.
    async fn pass(&mut self, mut n: u64, to: &Conn) -> std::io::Result<u64> {
        let total = n;
        while n > 0 {
            if self.buf.is_empty() && !self.fill().await? {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            let take = (self.buf.len() as u64).min(n) as usize;
            to.write_all(&self.buf[..take]).await?;
            self.buf.drain(..take);
            n -= take as u64;
        }
        Ok(total)
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// `Ok` when httparse read a whole head.
fn whole(parsed: httparse::Result<usize>) -> Result<(), HeadError> {
    match parsed {
        Ok(httparse::Status::Complete(_)) => Ok(()),
        Ok(httparse::Status::Partial) => Err(HeadError::Truncated),
        Err(e) => Err(HeadError::Malformed(e.to_string())),
    }
}

/// A request head (no body).
pub fn parse_request(head: &[u8]) -> Result<Request, HeadError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    whole(req.parse(head))?;
    Ok(Request {
        method: req.method.unwrap_or_default().to_string(),
        target: req.path.unwrap_or_default().to_string(),
        headers: owned(req.headers),
        body: Vec::new(),
        peer: None,
        http10: req.version == Some(0),
    })
}

/// A response head: status and headers.
pub fn parse_response(head: &[u8]) -> Result<Response, HeadError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    whole(resp.parse(head))?;
    Ok(Response {
        status: resp.code.unwrap_or(0),
        headers: owned(resp.headers),
        body: Vec::new(),
    })
}

fn owned(headers: &[httparse::Header<'_>]) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|h| {
            (
                h.name.to_string(),
                String::from_utf8_lossy(h.value).into_owned(),
            )
        })
        .collect()
}

/// Writes `resp` with its `Content-Length` (and `Connection: close` unless `keep_alive`).
pub async fn write_response(conn: &Conn, resp: &Response, keep_alive: bool) -> std::io::Result<()> {
    let mut head = format!("HTTP/1.1 {} {}\r\n", resp.status, reason(resp.status));
    for (k, v) in &resp.headers {
        if !k.eq_ignore_ascii_case("content-length") && !k.eq_ignore_ascii_case("connection") {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
    }
    head.push_str(&format!("Content-Length: {}\r\n", resp.body.len()));
    if !keep_alive {
        head.push_str("Connection: close\r\n");
    }
    head.push_str("\r\n");
    let mut out = head.into_bytes();
    out.extend_from_slice(&resp.body);
    conn.write_all(&out).await?;
    conn.flush().await
}

/// Serves `listener`'s connections (each on a task of its own, kept alive while the client
/// likes) with `handler`, until a stop is asked for ([`crate::stop`]).
pub async fn serve<H, F>(listener: Listener, handler: H) -> Result<()>
where
    H: Fn(Request) -> F + 'static,
    F: Future<Output = Response> + 'static,
{
    let handler = Rc::new(handler);
    while !crate::stop::requested() {
        let conn = listener.accept().await?;
        let handler = handler.clone();
        crate::spawn(async move {
            let mut reader = Reader::new(&conn);
            loop {
                let req = match reader.request(MAX_BODY).await {
                    Ok(Some(r)) => r,
                    Ok(None) => break,
                    Err(e) => {
                        let _ =
                            write_response(&conn, &Response::text(400, format!("{e}\n")), false)
                                .await;
                        break;
                    }
                };
                let keep = req.keep_alive();
                let head = req.method.eq_ignore_ascii_case("HEAD");
                let mut resp = handler(req).await;
                if head {
                    resp.body.clear();
                }
                if write_response(&conn, &resp, keep).await.is_err() || !keep {
                    break;
                }
            }
        });
    }
    Ok(())
}

/// Serves [`health`] on `addr` (and 404 for anything else) on a task of its own: the address
/// for a sidecar's probes and pre-stop hook, best on the pod's loopback (`127.0.0.1:9901`),
/// where only the pod's containers and peapod's probes reach it.
pub async fn serve_admin(addr: &str) -> Result<()> {
    let listener = Listener::bind(addr).await?;
    crate::spawn(async move {
        let r = serve(listener, |req| async move {
            health(&req).unwrap_or_else(|| Response::text(404, "not found\n"))
        })
        .await;
        if let Err(e) = r {
            crate::error!("admin endpoint: {e}");
        }
    });
    Ok(())
}

thread_local! {
    static READY: Cell<bool> = const { Cell::new(true) };
}

/// Says whether `/readyz` answers 200 (ready) or 503.
pub fn set_ready(ready: bool) {
    READY.with(|r| r.set(ready));
}

/// The answer to peapod's probes and pre-stop hook, when `req` is one: `/healthz` (200 while
/// the guest runs), `/readyz` (200 or 503, see [`set_ready`]), `/prestop` (asks for a stop).
pub fn health(req: &Request) -> Option<Response> {
    match req.path() {
        "/healthz" => Some(Response::text(200, "ok\n")),
        "/readyz" => Some(match READY.with(Cell::get) && !crate::stop::requested() {
            true => Response::text(200, "ready\n"),
            false => Response::text(503, "not ready\n"),
        }),
        "/prestop" => {
            crate::stop::request();
            Some(Response::text(200, "stopping\n"))
        }
        _ => None,
    }
}

/// Sends `req` to `addr` (`127.0.0.1:8080`, `host:port`) on a connection of its own and reads
/// the whole response (at most [`MAX_BODY`]).
pub async fn send(addr: &str, req: &Request) -> Result<Response> {
    let conn = Conn::connect(addr).await?;
    let mut head = format!("{} {} HTTP/1.1\r\n", req.method, req.target);
    if req.header("host").is_none() {
        head.push_str(&format!("Host: {addr}\r\n"));
    }
    for (k, v) in &req.headers {
        if !k.eq_ignore_ascii_case("content-length") && !k.eq_ignore_ascii_case("connection") {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
    }
    head.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        req.body.len()
    ));
    let mut out = head.into_bytes();
    out.extend_from_slice(&req.body);
    let what = || format!("{} {} to {addr}", req.method, req.target);
    conn.write_all(&out)
        .await
        .map_err(|e| Error::io(what(), e))?;
    conn.flush().await.map_err(|e| Error::io(what(), e))?;
    let mut reader = Reader::new(&conn);
    let head = match reader.head().await {
        Ok(Some(h)) => h,
        Ok(None) => return Err(Error::Http(format!("{}: closed without an answer", what()))),
        Err(e) => return Err(Error::Http(format!("{}: {e}", what()))),
    };
    let mut resp = parse_response(&head).map_err(|e| Error::Http(format!("{}: {e}", what())))?;
    let framing = response_framing(&req.method, resp.status, &resp.headers)?;
    resp.body = reader.body(framing, MAX_BODY).await?;
    Ok(resp)
}

/// `GET path` from `addr`.
pub async fn get(addr: &str, path: &str) -> Result<Response> {
    send(addr, &Request::new("GET", path)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn smuggling_heads_are_refused() {
        assert!(
            request_framing(&h(&[
                ("Content-Length", "5"),
                ("Transfer-Encoding", "chunked")
            ]))
            .is_err()
        );
        assert!(request_framing(&h(&[("Content-Length", "5"), ("Content-Length", "6")])).is_err());
        assert!(request_framing(&h(&[("Content-Length", "+5")])).is_err());
        assert!(request_framing(&h(&[("Transfer-Encoding", "gzip, chunked")])).is_err());
        assert_eq!(
            request_framing(&h(&[("content-length", "5")])).unwrap(),
            Framing::Length(5)
        );
        assert_eq!(request_framing(&h(&[])).unwrap(), Framing::Empty);
    }

    #[test]
    fn response_framing_follows_method_and_status() {
        assert_eq!(
            response_framing("HEAD", 200, &h(&[("Content-Length", "9")])).unwrap(),
            Framing::Empty
        );
        assert_eq!(
            response_framing("GET", 204, &h(&[])).unwrap(),
            Framing::Empty
        );
        assert_eq!(
            response_framing("GET", 200, &h(&[])).unwrap(),
            Framing::UntilClose
        );
    }
}
