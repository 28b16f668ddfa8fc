//! auth-proxy: the pod's only door. It listens on the pod's address (`LISTEN`) and forwards to
//! the app (`UPSTREAM`, which binds 127.0.0.1 only) just the requests that carry
//! `Authorization: Bearer <token>` with the token in the file `TOKEN_FILE` (a `secret` volume).
//! Anything else gets 401 and never reaches the app.
//!
//! | variable       | default            | what                                                  |
//! | -------------- | ------------------ | ----------------------------------------------------- |
//! | `LISTEN`       | `0.0.0.0:8443`     | where clients come in                                 |
//! | `UPSTREAM`     | `127.0.0.1:8080`   | the app                                               |
//! | `TOKEN_FILE`   | (required)         | the token's file; re-read when it changes (rotation)   |
//! | `MAX_FAILURES` | `10`               | refused attempts per source address per minute before |
//! |                |                    | it gets 429 without its token being looked at         |
//! | `ADMIN`        | `127.0.0.1:9901`   | `/healthz`, `/readyz`, `/prestop` for peapod          |
//! | `IDLE_TIMEOUT` | `60s`              | a kept-alive connection with no request is closed     |
//! | `TOKEN_RELOAD` | `5s`               | how often the token file is looked at (a rotated      |
//! |                |                    | token applies without a restart: with a directory     |
//! |                |                    | `secret`, or a file one edited in place)              |
//!
//! The token is never logged; a refusal is logged with its source and reason. Bodies stream
//! both ways (chunked stays chunked) and connections are kept alive on both sides. The
//! `Authorization` header is not passed to the app; `X-Forwarded-For` is set.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::IpAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use peapod_sdk::http::{self, Framing, HeadError, Reader, Response};
use peapod_sdk::net::{Conn, Listener};
use peapod_sdk::{Error, Result, config, info, warn};
use subtle::ConstantTimeEq;
use wstd::future::FutureExt as _;

/// How long a client may take to send a whole head (a slow client holds no slot for long).
const HEAD_TIMEOUT: Duration = Duration::from_secs(30);
/// The window of `MAX_FAILURES`.
const WINDOW: Duration = Duration::from_secs(60);
/// Source addresses remembered at most (older windows go first).
const MAX_SOURCES: usize = 10_000;

struct Settings {
    listen: String,
    upstream: String,
    token_file: String,
    max_failures: u32,
    admin: String,
    idle: Duration,
    reload: Duration,
}

impl Settings {
    fn from_env() -> Result<Self> {
        Ok(Settings {
            listen: config::env_or("LISTEN", "0.0.0.0:8443"),
            upstream: config::env_or("UPSTREAM", "127.0.0.1:8080"),
            token_file: config::env("TOKEN_FILE")?,
            max_failures: config::parse_or("MAX_FAILURES", 10)?,
            admin: config::env_or("ADMIN", "127.0.0.1:9901"),
            idle: config::duration_or("IDLE_TIMEOUT", Duration::from_secs(60))?,
            reload: config::duration_or("TOKEN_RELOAD", Duration::from_secs(5))?,
        })
    }
}

/// The token, re-read from its file now and then (a rotated secret applies without a restart).
struct Token {
    file: String,
    value: String,
    checked: Instant,
    every: Duration,
}

impl Token {
    fn load(file: &str, every: Duration) -> Result<Self> {
        Ok(Token {
            file: file.to_string(),
            value: config::secret(file)?,
            checked: Instant::now(),
            every,
        })
    }

    fn matches(&mut self, offered: &str) -> bool {
        if self.checked.elapsed() >= self.every {
            self.checked = Instant::now();
            match config::secret(&self.file) {
                Ok(v) => self.value = v,
                Err(e) => warn!("token file unreadable, keeping the last token: {e}"),
            }
        }
        bool::from(self.value.as_bytes().ct_eq(offered.as_bytes()))
    }
}

/// Refused attempts per source address in the current window.
#[derive(Default)]
struct Failures {
    by_source: HashMap<IpAddr, (Instant, u32)>,
}

impl Failures {
    fn blocked(&mut self, ip: IpAddr, max: u32) -> bool {
        match self.by_source.get(&ip) {
            Some((since, n)) if since.elapsed() < WINDOW => *n >= max,
            _ => false,
        }
    }

    fn add(&mut self, ip: IpAddr) {
        if self.by_source.len() >= MAX_SOURCES {
            self.by_source
                .retain(|_, (since, _)| since.elapsed() < WINDOW);
        }
        let e = self.by_source.entry(ip).or_insert((Instant::now(), 0));
        if e.0.elapsed() >= WINDOW {
            *e = (Instant::now(), 0);
        }
        e.1 += 1;
    }
}

struct Proxy {
    settings: Settings,
    token: RefCell<Token>,
    failures: RefCell<Failures>,
}

fn main() {
    peapod_sdk::run(async {
        let settings = Settings::from_env()?;
        let token = Token::load(&settings.token_file, settings.reload)?;
        http::serve_admin(&settings.admin).await?;
        let listener = Listener::bind(&settings.listen).await?;
        info!(
            "auth-proxy listening";
            listen = listener.local_addr(),
            upstream = settings.upstream,
            token_file = settings.token_file,
            admin = settings.admin
        );
        let proxy = Rc::new(Proxy {
            settings,
            token: RefCell::new(token),
            failures: RefCell::default(),
        });
        loop {
            let conn = listener.accept().await?;
            let proxy = proxy.clone();
            peapod_sdk::spawn(async move {
                if let Err(e) = proxy.connection(conn).await {
                    peapod_sdk::debug!("connection: {e}");
                }
            });
        }
    })
}

/// What became of one exchange.
enum Next {
    KeepAlive,
    Close,
}

impl Proxy {
    /// One client connection: its requests in turn, each checked, then passed to the app on a
    /// connection of this client's own (kept alive with it).
    async fn connection(&self, client: Conn) -> Result<()> {
        let mut upstream: Option<(Conn, Vec<u8>)> = None;
        let mut buf = Vec::new();
        let mut first = true;
        loop {
            let mut reader = Reader::with_buffer(&client, std::mem::take(&mut buf));
            let wait = if first {
                HEAD_TIMEOUT
            } else {
                self.settings.idle
            };
            first = false;
            let head = match reader
                .head()
                .timeout(wstd::time::Duration::from(wait))
                .await
            {
                Err(_) => return Ok(()), // idle or too slow: closed
                Ok(Ok(Some(h))) => h,
                Ok(Ok(None)) => return Ok(()),
                Ok(Err(HeadError::TooLarge)) => {
                    return refuse(&client, 431, "head too large").await;
                }
                Ok(Err(HeadError::Io(_) | HeadError::Truncated)) => return Ok(()),
                Ok(Err(e)) => return refuse(&client, 400, &e.to_string()).await,
            };
            let next = self
                .exchange(&client, &mut reader, &head, &mut upstream)
                .await?;
            buf = reader.into_buffer();
            if let Next::Close = next {
                return Ok(());
            }
        }
    }

    async fn exchange(
        &self,
        client: &Conn,
        reader: &mut Reader<'_>,
        head: &[u8],
        upstream: &mut Option<(Conn, Vec<u8>)>,
    ) -> Result<Next> {
        let req = match http::parse_request(head) {
            Ok(r) => r,
            Err(e) => {
                refuse(client, 400, &e.to_string()).await?;
                return Ok(Next::Close);
            }
        };
        let source = client.peer().ip();
        let max = self.settings.max_failures;
        if self.failures.borrow_mut().blocked(source, max) {
            warn!("refused"; from = source, reason = "too many failed attempts", path = req.path());
            let resp = Response::text(429, "too many failed attempts: wait a minute\n")
                .with_header("Retry-After", &WINDOW.as_secs().to_string());
            http::write_response(client, &resp, false)
                .await
                .map_err(io)?;
            return Ok(Next::Close);
        }
        let offered = req
            .header("authorization")
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim);
        let why = match offered {
            None => Some("no bearer token"),
            Some(t) if !self.token.borrow_mut().matches(t) => Some("wrong token"),
            Some(_) => None,
        };
        if let Some(why) = why {
            self.failures.borrow_mut().add(source);
            warn!("refused"; from = source, reason = why, method = req.method, path = req.path());
            let resp = Response::text(401, "unauthorized\n")
                .with_header("WWW-Authenticate", "Bearer realm=\"peapod\"");
            // The body (if any) is not read: the connection closes.
            http::write_response(client, &resp, false)
                .await
                .map_err(io)?;
            return Ok(Next::Close);
        }
        let framing = match http::request_framing(&req.headers) {
            Ok(f) => f,
            Err(e) => {
                refuse(client, 400, &e.to_string()).await?;
                return Ok(Next::Close);
            }
        };
        // The app, on this client's connection to it (made at its first request).
        if upstream.is_none() {
            match Conn::connect(&self.settings.upstream).await {
                Ok(c) => *upstream = Some((c, Vec::new())),
                Err(e) => {
                    warn!("upstream unreachable: {e}"; upstream = self.settings.upstream);
                    refuse(client, 502, "the app is not reachable").await?;
                    return Ok(Next::Close);
                }
            }
        }
        let (app, app_buf) = upstream.as_mut().expect("connected");
        let mut out = format!("{} {} HTTP/1.1\r\n", req.method, req.target);
        for (k, v) in &req.headers {
            if !hop_by_hop(k)
                && !k.eq_ignore_ascii_case("authorization")
                && !k.eq_ignore_ascii_case("x-forwarded-for")
            {
                out.push_str(&format!("{k}: {v}\r\n"));
            }
        }
        let forwarded = match req.header("x-forwarded-for") {
            Some(prior) => format!("{prior}, {source}"),
            None => source.to_string(),
        };
        out.push_str(&format!("X-Forwarded-For: {forwarded}\r\n"));
        if framing == Framing::Chunked {
            out.push_str("Transfer-Encoding: chunked\r\n");
        }
        out.push_str("\r\n");
        app.write_all(out.as_bytes()).await.map_err(io)?;
        reader.copy_body(framing, app).await?;

        // The app's answer (interim 1xx answers passed on first).
        let mut from_app = Reader::with_buffer(app, std::mem::take(app_buf));
        let resp = loop {
            let head = match from_app.head().await {
                Ok(Some(h)) => h,
                Ok(None) | Err(_) => {
                    *upstream = None;
                    refuse(
                        client,
                        502,
                        "the app closed the connection without an answer",
                    )
                    .await?;
                    return Ok(Next::Close);
                }
            };
            let resp = http::parse_response(&head).map_err(|e| Error::Http(e.to_string()))?;
            if (100..200).contains(&resp.status) && resp.status != 101 {
                client.write_all(&head).await.map_err(io)?;
                continue;
            }
            break resp;
        };
        let framing = http::response_framing(&req.method, resp.status, &resp.headers)?;
        let app_closes = resp
            .header("connection")
            .is_some_and(|c| c.to_ascii_lowercase().contains("close"))
            || framing == Framing::UntilClose;
        // The client's connection outlives the app's (a new one is made for its next request)
        // unless the body ends with the app's connection.
        let keep = req.keep_alive() && framing != Framing::UntilClose;
        let mut out = format!("HTTP/1.1 {} {}\r\n", resp.status, http::reason(resp.status));
        for (k, v) in &resp.headers {
            if !hop_by_hop(k) {
                out.push_str(&format!("{k}: {v}\r\n"));
            }
        }
        if framing == Framing::Chunked {
            out.push_str("Transfer-Encoding: chunked\r\n");
        }
        if !keep {
            out.push_str("Connection: close\r\n");
        }
        out.push_str("\r\n");
        client.write_all(out.as_bytes()).await.map_err(io)?;
        from_app.copy_body(framing, client).await?;
        let left = from_app.into_buffer();
        if app_closes {
            *upstream = None;
        } else if let Some((_, b)) = upstream.as_mut() {
            *b = left;
        }
        Ok(if keep { Next::KeepAlive } else { Next::Close })
    }
}

/// Headers of one hop only, not passed on (RFC 9110 §7.6.1); `Transfer-Encoding` is set again
/// from the body's framing.
fn hop_by_hop(name: &str) -> bool {
    [
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    ]
    .iter()
    .any(|h| name.eq_ignore_ascii_case(h))
}

async fn refuse(client: &Conn, status: u16, why: &str) -> Result<()> {
    http::write_response(client, &Response::text(status, format!("{why}\n")), false)
        .await
        .map_err(io)
}

fn io(e: std::io::Error) -> Error {
    Error::io("client", e)
}
