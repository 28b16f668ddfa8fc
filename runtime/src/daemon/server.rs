//! Serving the API on the unix socket with bounds, so that no client can starve the daemon.
//!
//! - The accept loop never waits for a free slot: it always takes the next connection off the
//!   socket, so a flood of connections cannot fill the kernel's backlog in front of a real
//!   request. At most `limits.api_connections` connections are open; a new one beyond that
//!   closes the oldest connection that has not sent a byte yet (an idle one), or, when every
//!   open connection is busy, is closed itself.
//! - A request header must arrive within [`HEADER_TIMEOUT`] of the connection (or of the last
//!   response: but keep-alive is off, one request per connection, as the CLI uses it), and the
//!   body of an apply within [`super::api::BODY_TIMEOUT`].
//! - `EMFILE`/`ENFILE` on accept (the daemon out of fds) is logged once a second and retried
//!   after a pause, instead of spinning.
//! - Every request carries the peer's credentials (`SO_PEERCRED`) as a [`Caller`] extension:
//!   files an API client names are read with its rights.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;

use crate::module_file::Caller;

/// A client must send its request header within this.
pub(super) const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Open connections: whether each has sent anything, and how to close it.
#[derive(Default)]
struct Conns {
    next: u64,
    open: BTreeMap<u64, (Arc<AtomicBool>, CancellationToken)>,
}

/// Serves `router` on `listener` until `shutdown`, with at most `max_conns` connections.
pub(super) async fn serve(
    listener: UnixListener,
    router: axum::Router,
    max_conns: usize,
    shutdown: CancellationToken,
) {
    let conns = Arc::new(Mutex::new(Conns::default()));
    let mut last_warning: Option<Instant> = None;
    loop {
        let stream = tokio::select! {
            r = listener.accept() => r,
            _ = shutdown.cancelled() => break,
        };
        let stream = match stream {
            Ok((s, _)) => s,
            Err(e) => {
                if last_warning.is_none_or(|t| t.elapsed() > Duration::from_secs(1)) {
                    tracing::warn!("api: accept: {e}");
                    last_warning = Some(Instant::now());
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let caller = match stream.peer_cred() {
            Ok(c) => Caller {
                uid: c.uid(),
                gid: c.gid(),
                pid: c.pid().unwrap_or(0),
            },
            Err(_) => continue,
        };
        let (id, seen, cancel) = {
            let mut c = conns.lock().expect("conns lock");
            if c.open.len() >= max_conns {
                let idle = c
                    .open
                    .iter()
                    .find(|(_, (seen, _))| !seen.load(Ordering::Relaxed))
                    .map(|(id, _)| *id);
                match idle {
                    Some(id) => {
                        let (_, cancel) = c.open.remove(&id).expect("found");
                        cancel.cancel();
                    }
                    None => continue, // every slot busy with a real request: drop this one
                }
            }
            c.next += 1;
            let id = c.next;
            let seen = Arc::new(AtomicBool::new(false));
            let cancel = shutdown.child_token();
            c.open.insert(id, (seen.clone(), cancel.clone()));
            (id, seen, cancel)
        };
        let service = TowerToHyperService::new(router.clone().layer(axum::Extension(caller)));
        let conns = conns.clone();
        tokio::spawn(async move {
            let io = TokioIo::new(Watched {
                inner: stream,
                seen,
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .keep_alive(false)
                .serve_connection(io, service);
            tokio::select! {
                _ = conn => {}
                _ = cancel.cancelled() => {}
            }
            conns.lock().expect("conns lock").open.remove(&id);
        });
    }
}

/// A connection that notes when its client first sent something.
struct Watched {
    inner: UnixStream,
    seen: Arc<AtomicBool>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.seen.store(true, Ordering::Relaxed);
        }
        r
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
