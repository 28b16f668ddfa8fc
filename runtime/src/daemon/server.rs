//! Serving the API on the unix socket with bounds, so that no client can starve the daemon or
//! lock root out of it.
//!
//! - The accept loop never waits for a free slot: it always takes the next connection off the
//!   socket, so a flood of connections cannot fill the kernel's backlog in front of a real
//!   request. Room for a new connection is made by [`Conns::make_room`]:
//!   - a caller other than root has at most `quotas.api_connections` open; past that, its own
//!     oldest *stalled* connection (one whose request header has not arrived whole: idle, or
//!     half a header) is closed for the new one, or the new one is refused when all of its
//!     connections are being served;
//!   - callers other than root together hold at most `limits.api_connections` less a quarter
//!     (the reserve only root's connections may use): past that, the oldest stalled
//!     connection of theirs is closed, or the new one refused;
//!   - at `limits.api_connections` in all, the oldest stalled connection goes (another user's
//!     first), and for root, if none is stalled, the oldest connection of another user.
//! - A request header must arrive within [`HEADER_TIMEOUT`] of the connection (keep-alive is
//!   off, one request per connection, as the CLI uses it), and the body of an apply within
//!   [`super::api::BODY_TIMEOUT`]. `logs?follow=true` streams are bounded per user
//!   (`quotas.follow_streams`, in [`super::api`]).
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

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;

use crate::caller::Caller;

/// A client must send its request header within this.
pub(super) const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// How many connections the server keeps open, in all and per user (see the module's comment).
#[derive(Debug, Clone, Copy)]
pub(super) struct ConnBounds {
    /// `limits.api_connections`.
    pub max: usize,
    /// `quotas.api_connections`: a caller other than root.
    pub per_user: usize,
}

impl ConnBounds {
    /// The connections only root may use: a quarter of them (at least one).
    fn reserve(&self) -> usize {
        (self.max / 4).max(1)
    }
}

/// Set once a connection's request header has arrived whole (its request is being served).
#[derive(Clone, Default)]
pub(super) struct Started(Arc<AtomicBool>);

/// Marks the connection's request as started (a layer of the API's router).
pub(super) async fn mark_started(req: Request, next: Next) -> Response {
    if let Some(s) = req.extensions().get::<Started>() {
        s.0.store(true, Ordering::Relaxed);
    }
    next.run(req).await
}

struct Conn {
    uid: u32,
    started: Started,
    cancel: CancellationToken,
}

impl Conn {
    /// Its request header has not arrived whole (an idle connection, or half a header).
    fn stalled(&self) -> bool {
        !self.started.0.load(Ordering::Relaxed)
    }
}

/// Open connections, oldest first (ids grow).
#[derive(Default)]
struct Conns {
    next: u64,
    open: BTreeMap<u64, Conn>,
}

impl Conns {
    /// Makes room for a new connection of user `uid`, closing what the bounds say; `false`:
    /// the new connection is refused (see the module's comment).
    fn make_room(&mut self, uid: u32, b: ConnBounds) -> bool {
        let root = uid == 0;
        let user = |c: &Conn| c.uid != 0;
        if !root {
            let theirs = self.open.values().filter(|c| c.uid == uid).count();
            if theirs >= b.per_user && !self.close_oldest(|c| c.uid == uid && c.stalled()) {
                return false;
            }
            let users = self.open.values().filter(|c| user(c)).count();
            if users >= b.max.saturating_sub(b.reserve())
                && !self.close_oldest(|c| user(c) && c.stalled())
            {
                return false;
            }
        }
        if self.open.len() >= b.max {
            return self.close_oldest(|c| user(c) && c.stalled())
                || self.close_oldest(Conn::stalled)
                || (root && self.close_oldest(user));
        }
        true
    }

    /// Closes the oldest connection `which` picks; whether there was one.
    fn close_oldest(&mut self, which: impl Fn(&Conn) -> bool) -> bool {
        let Some(id) = self.open.iter().find(|(_, c)| which(c)).map(|(id, _)| *id) else {
            return false;
        };
        let c = self.open.remove(&id).expect("found");
        c.cancel.cancel();
        true
    }
}

/// How long connections in flight may take to finish once the server is told to stop (a
/// `logs -f` stream, a slow client): then they are closed.
pub(super) const DRAIN_LIMIT: Duration = Duration::from_secs(2);

/// Serves `router` on `listener`, within `bounds`, until `shutdown` resolves; then drains (as
/// mini-redis' server does): no new connection is taken, each open one finishes the request it
/// is serving (one that has sent no whole request is closed at once), and what is still open
/// after [`DRAIN_LIMIT`] is closed. Returns when every connection has ended.
pub(super) async fn serve(
    listener: UnixListener,
    router: axum::Router,
    bounds: ConnBounds,
    shutdown: impl Future<Output = ()>,
) {
    let conns = Arc::new(Mutex::new(Conns::default()));
    let (drain, hard) = (CancellationToken::new(), CancellationToken::new());
    let tracker = tokio_util::task::TaskTracker::new();
    let mut last_warning: Option<Instant> = None;
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            r = listener.accept() => r,
            () = &mut shutdown => break,
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
        let (id, started, cancel) = {
            let mut c = conns.lock().expect("conns lock");
            if !c.make_room(caller.uid, bounds) {
                continue; // dropped: the caller's (or the users') slots are all being served
            }
            c.next += 1;
            let id = c.next;
            let started = Started::default();
            let cancel = hard.child_token();
            c.open.insert(
                id,
                Conn {
                    uid: caller.uid,
                    started: started.clone(),
                    cancel: cancel.clone(),
                },
            );
            (id, started, cancel)
        };
        let service = TowerToHyperService::new(
            router
                .clone()
                .layer(axum::Extension(caller))
                .layer(axum::Extension(started)),
        );
        let (conns, drain) = (conns.clone(), drain.clone());
        tracker.spawn(async move {
            let io = TokioIo::new(Watched { inner: stream });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .keep_alive(false)
                .serve_connection(io, service);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = cancel.cancelled() => {}
                _ = drain.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    tokio::select! {
                        _ = conn.as_mut() => {}
                        _ = cancel.cancelled() => {}
                    }
                }
            }
            conns.lock().expect("conns lock").open.remove(&id);
        });
    }
    drop(listener);
    drain.cancel();
    tracker.close();
    if tokio::time::timeout(DRAIN_LIMIT, tracker.wait())
        .await
        .is_err()
    {
        hard.cancel();
        tracker.wait().await;
    }
}

/// The connection's stream.
struct Watched {
    inner: UnixStream,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
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

#[cfg(test)]
mod tests {
    use super::*;

    const B: ConnBounds = ConnBounds {
        max: 8,
        per_user: 3,
    };

    /// Opens a connection of `uid` if there is room; its id.
    fn open(c: &mut Conns, uid: u32, started: bool) -> Option<u64> {
        if !c.make_room(uid, B) {
            return None;
        }
        c.next += 1;
        let s = Started::default();
        s.0.store(started, Ordering::Relaxed);
        c.open.insert(
            c.next,
            Conn {
                uid,
                started: s,
                cancel: CancellationToken::new(),
            },
        );
        Some(c.next)
    }

    fn count(c: &Conns, uid: u32) -> usize {
        c.open.values().filter(|x| x.uid == uid).count()
    }

    /// Round 2, finding 5: 2000 connections that each sent half a header (or one byte) held
    /// every slot; now a user's stalled connections make way for their own next one, and the
    /// rest of the server stays free.
    #[test]
    fn a_user_flooding_stalled_connections_holds_only_their_share() {
        let mut c = Conns::default();
        for _ in 0..2000 {
            assert!(open(&mut c, 1000, false).is_some(), "their own oldest goes");
        }
        assert_eq!(count(&c, 1000), B.per_user);
        // Others and root still get in.
        assert!(open(&mut c, 1001, false).is_some());
        assert!(open(&mut c, 0, false).is_some());
    }

    #[test]
    fn requests_being_served_are_not_closed_for_the_same_user() {
        let mut c = Conns::default();
        for _ in 0..B.per_user {
            open(&mut c, 1000, true).unwrap();
        }
        assert_eq!(
            open(&mut c, 1000, false),
            None,
            "refused: all of theirs are served"
        );
        assert_eq!(count(&c, 1000), B.per_user);
    }

    #[test]
    fn users_together_leave_roots_reserve_and_root_always_gets_in() {
        let mut c = Conns::default();
        // Many users, each within their own share, all being served (follow streams).
        let mut uid = 1000;
        while open(&mut c, uid, true).is_some() {
            uid += 1;
        }
        assert_eq!(
            c.open.len(),
            B.max - B.reserve(),
            "users stop short of root's reserve"
        );
        for _ in 0..B.reserve() {
            open(&mut c, 0, false).unwrap();
        }
        assert_eq!(c.open.len(), B.max);
        // Full: root's next connection closes a stalled one of its own before a user's busy one
        // (here all of root's are stalled).
        open(&mut c, 0, true).unwrap();
        assert_eq!(c.open.len(), B.max);
        // With root's all being served, root closes the oldest user connection.
        for x in c.open.values_mut().filter(|x| x.uid == 0) {
            x.started.0.store(true, Ordering::Relaxed);
        }
        let users = c.open.values().filter(|x| x.uid != 0).count();
        open(&mut c, 0, true).unwrap();
        assert_eq!(c.open.values().filter(|x| x.uid != 0).count(), users - 1);
        // A user cannot close root's.
        assert_eq!(open(&mut c, 5000, false), None);
    }

    /// A stop lets the request in flight finish and answer, closes an idle connection at once,
    /// and takes no new connection.
    #[tokio::test]
    async fn a_stop_drains_the_requests_in_flight() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("api.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let router = axum::Router::new()
            .route(
                "/slow",
                axum::routing::get(|| async {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    "done"
                }),
            )
            .layer(axum::middleware::from_fn(mark_started));
        let (stop_tx, stop) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, router, B, async {
            let _ = stop.await;
        }));
        let mut busy = UnixStream::connect(&path).await.unwrap();
        busy.write_all(b"GET /slow HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        let mut idle = UnixStream::connect(&path).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        stop_tx.send(()).unwrap();
        let t0 = Instant::now();
        let mut answer = String::new();
        busy.read_to_string(&mut answer).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.ends_with("done"), "{answer}");
        let mut nothing = Vec::new();
        let n = idle.read_to_end(&mut nothing).await.unwrap_or(0);
        assert_eq!(n, 0, "the idle connection is closed without an answer");
        tokio::time::timeout(DRAIN_LIMIT, server)
            .await
            .expect("the server returns once its connections ended")
            .unwrap();
        assert!(t0.elapsed() < DRAIN_LIMIT, "drained, not timed out");
        assert!(
            UnixStream::connect(&path).await.is_err(),
            "no connection is taken after the stop"
        );
    }
}
