//! Listening sockets that outlive their module, so a restart in place refuses no connection.
//!
//! A guest's listener is a socket of the daemon's process (wasmtime-wasi opens it on the pod's
//! thread, inside the pod's namespace). When the module exits or traps, its store is dropped
//! and the socket closed: every connection that arrives before the next instance listens again
//! is refused, and those already waiting in the backlog are reset. Instead:
//!
//! 1. *Keep.* Before the old instance's store is dropped, the listeners it bound (the addresses
//!    its binds asked for, [`crate::wasm::binds`]) are found in the process's file table (TCP,
//!    listening, in this namespace, bound to that address) and duplicated: the kernel socket
//!    stays open and listening, so new connections wait in its backlog.
//! 2. *Hand over.* When the next instance binds the same address, the held listener and the
//!    guest's fresh socket are both given `SO_REUSEPORT`: the guest's bind succeeds beside the
//!    held one and its `listen` joins the same reuseport group.
//! 3. *Let go.* Once the guest's socket listens, the held one is closed; with the namespace's
//!    `net.ipv4.tcp_migrate_req` on (set in the pod's namespace only, never the host's), the
//!    kernel moves the connections queued on it to the guest's socket instead of resetting
//!    them.
//!
//! wasmtime-wasi gives a host no handle on a guest's socket, so the guest's fresh socket is found
//! the same way: in the address check that runs just before its bind, on the pod's thread, it is
//! the one unbound TCP socket of the address's family in the namespace. When that is not clear
//! (none, or two), the held listener is closed first and the bind goes on as before.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};

use socket2::{Domain, Protocol, SockRef, Socket, Type};

/// The network namespace of a socket, as the kernel's cookie for it (`SO_NETNS_COOKIE`, Linux
/// 5.14): equal cookies, same namespace.
fn netns_cookie(fd: BorrowedFd<'_>) -> io::Result<u64> {
    let mut cookie: u64 = 0;
    let mut len = size_of::<u64>() as libc::socklen_t;
    // SAFETY: a valid pointer to a u64 and its length, as SO_NETNS_COOKIE writes.
    let r = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_NETNS_COOKIE,
            (&raw mut cookie).cast(),
            &mut len,
        )
    };
    if r == 0 {
        Ok(cookie)
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Whether this kernel (and emulator) tells a socket's namespace, which keeping listeners needs;
/// asked once per process.
pub fn supported() -> Result<(), String> {
    static SUPPORTED: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    SUPPORTED
        .get_or_init(|| netns_here().map(drop).map_err(|e| e.to_string()))
        .clone()
}

/// The calling thread's network namespace, as a cookie.
fn netns_here() -> io::Result<u64> {
    netns_cookie(Socket::new(Domain::IPV4, Type::STREAM, None)?.as_fd())
}

/// A TCP socket of the calling thread's namespace, found in the process's file table.
struct Found {
    fd: RawFd,
    listening: bool,
    local: Option<SocketAddr>,
}

/// The TCP sockets of the network namespace `here` (a cookie) among the process's open files.
///
/// The descriptors are only looked at (`getsockopt`, `getsockname`): another thread may close
/// one meanwhile, which makes a call fail or look at whatever took its number; callers check
/// again on a duplicate they own, or on a socket that cannot close meanwhile.
fn tcp_sockets_in(here: u64) -> io::Result<Vec<Found>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc/self/fd")? {
        let Some(fd) = entry?
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<RawFd>().ok())
        else {
            continue;
        };
        // SAFETY: see above: borrowed for a few socket calls, which fail harmlessly on a
        // descriptor closed meanwhile.
        let b = unsafe { BorrowedFd::borrow_raw(fd) };
        let s = SockRef::from(&b);
        if !matches!(s.r#type(), Ok(t) if t == Type::STREAM)
            || !matches!(s.protocol(), Ok(Some(p)) if p == Protocol::TCP)
            || netns_cookie(b).ok() != Some(here)
        {
            continue;
        }
        found.push(Found {
            fd,
            listening: s.is_listener().unwrap_or(false),
            local: s.local_addr().ok().and_then(|a| a.as_socket()),
        });
    }
    Ok(found)
}

/// Duplicates of the listening TCP sockets of this namespace bound to one of `addrs`, with the
/// address of each (one per address, unless an earlier hand-over is still letting go): one look
/// at the file table for all of them.
pub fn listeners_on(addrs: &[SocketAddr]) -> io::Result<Vec<(SocketAddr, OwnedFd)>> {
    let here = netns_here()?;
    let mut held = Vec::new();
    for f in tcp_sockets_in(here)? {
        let Some(addr) = f.local.filter(|a| f.listening && addrs.contains(a)) else {
            continue;
        };
        // SAFETY: as in `tcp_sockets_in`; the duplicate is checked again below.
        let dup = unsafe { BorrowedFd::borrow_raw(f.fd) }.try_clone_to_owned()?;
        let s = SockRef::from(&dup);
        let same = s.is_listener().unwrap_or(false)
            && s.local_addr().ok().and_then(|a| a.as_socket()) == Some(addr)
            && netns_cookie(dup.as_fd()).ok() == Some(here);
        if same {
            held.push((addr, dup));
        }
    }
    Ok(held)
}

/// The guest's socket about to bind: the one unbound TCP socket of `addr`'s family in this
/// namespace, if there is exactly one. Called on the pod's thread, where the guest is stopped
/// in its bind, so that socket cannot close meanwhile.
pub fn unbound_socket(addr: SocketAddr) -> io::Result<Option<Guest>> {
    let family = Domain::for_address(addr);
    let mut unbound = tcp_sockets_in(netns_here()?)?.into_iter().filter(|f| {
        !f.listening
            && f.local.is_some_and(|l| {
                l.port() == 0 && l.ip().is_unspecified() && Domain::for_address(l) == family
            })
    });
    let (Some(one), None) = (unbound.next(), unbound.next()) else {
        return Ok(None);
    };
    // SAFETY: the guest's socket, open while its bind waits on this call (see above).
    let fd = unsafe { BorrowedFd::borrow_raw(one.fd) };
    let ino = nix::sys::stat::fstat(fd)?.st_ino;
    Ok(Some(Guest { fd: one.fd, ino }))
}

/// A guest's socket, by descriptor and inode (a number can be reused; the inode tells).
#[derive(Debug, Clone, Copy)]
pub struct Guest {
    fd: RawFd,
    ino: libc::ino_t,
}

impl Guest {
    /// Lets `held` (listeners on the address) and this unbound socket share the address: the
    /// guest's bind then succeeds beside them and its listen joins their reuseport group.
    pub fn share_with(&self, held: &[OwnedFd]) -> io::Result<()> {
        for h in held {
            SockRef::from(h).set_reuse_port(true)?;
        }
        // SAFETY: the guest's socket, open while its bind waits on this call (see above).
        SockRef::from(&unsafe { BorrowedFd::borrow_raw(self.fd) }).set_reuse_port(true)
    }

    /// Whether the socket is still the guest's and listens; `None` once it is gone.
    pub fn listening(&self) -> Option<bool> {
        // SAFETY: only looked at; the inode tells whether the number is still the guest's.
        let b = unsafe { BorrowedFd::borrow_raw(self.fd) };
        match nix::sys::stat::fstat(b) {
            Ok(st) if st.st_ino == self.ino => Some(SockRef::from(&b).is_listener().ok()?),
            _ => None,
        }
    }
}

/// Turns `net.ipv4.tcp_migrate_req` on in the calling thread's namespace (a pod's, never the
/// host's): a listener that closes hands its queued connections to another of its reuseport
/// group instead of resetting them.
pub fn allow_migration() -> io::Result<()> {
    const PATH: &str = "/proc/sys/net/ipv4/tcp_migrate_req";
    if std::fs::read_to_string(PATH)?.trim() == "1" {
        return Ok(());
    }
    std::fs::write(PATH, "1")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};

    /// Runs `f` on a thread in a network namespace of its own (`lo` up), so no other test's
    /// sockets are in it; `None` (skipped) without the right to make one.
    fn in_own_netns<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> Option<R> {
        std::thread::spawn(move || {
            if let Err(e) = nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET) {
                eprintln!("skipped: needs root for a network namespace ({e})");
                return None;
            }
            if let Err(e) = netns_here() {
                // QEMU's user mode does not translate it: peapod keeps no listener there.
                eprintln!("skipped: no SO_NETNS_COOKIE here ({e})");
                return None;
            }
            // A test may run a command; the product sets links up over netlink.
            let up = std::process::Command::new("ip")
                .args(["link", "set", "lo", "up"])
                .status()
                .expect("ip");
            assert!(up.success());
            Some(f())
        })
        .join()
        .unwrap()
    }

    /// The whole hand-over in a namespace of the test's own: the listener is found and kept
    /// past its owner's close, a client that connects meanwhile is not refused, the fresh
    /// socket binds beside the kept one, and when the kept one closes the waiting connection
    /// moves to the fresh one, its bytes intact.
    #[test]
    fn a_kept_listener_hands_its_waiting_connections_to_the_next_socket() {
        in_own_netns(|| {
            allow_migration().unwrap();
            let first = TcpListener::bind("127.0.0.1:8080").unwrap();
            let addr = first.local_addr().unwrap();
            let held: Vec<OwnedFd> = listeners_on(&[addr])
                .unwrap()
                .into_iter()
                .map(|(a, fd)| {
                    assert_eq!(a, addr);
                    fd
                })
                .collect();
            assert_eq!(held.len(), 1, "the listener is found by its address");
            drop(first);
            // The module is gone; the kept socket still listens: a client is not refused.
            let mut waiting = TcpStream::connect(addr).expect("a kept listener accepts");
            waiting.write_all(b"hi").unwrap();

            let fresh = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
            let guest = unbound_socket(addr)
                .unwrap()
                .expect("the one unbound socket is found");
            assert_eq!(guest.fd, fresh.as_raw_fd());
            assert_eq!(guest.listening(), Some(false));
            guest.share_with(&held).unwrap();
            fresh.set_reuse_address(true).unwrap();
            fresh
                .bind(&addr.into())
                .expect("binds beside the kept listener");
            fresh.listen(16).unwrap();
            assert_eq!(guest.listening(), Some(true));
            drop(held);
            let fresh = TcpListener::from(fresh);
            fresh.set_nonblocking(true).unwrap();
            let (mut s, _) = fresh.accept().expect("the waiting connection moved over");
            s.set_nonblocking(false).unwrap();
            let mut buf = [0; 2];
            s.read_exact(&mut buf).unwrap();
            assert_eq!(&buf, b"hi");
            drop(fresh);
            assert_eq!(guest.listening(), None, "gone");
        });
    }

    #[test]
    fn two_unbound_sockets_are_not_guessed_between() {
        in_own_netns(|| {
            let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
            let a = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
            assert!(unbound_socket(addr).unwrap().is_some());
            let _b = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
            assert!(unbound_socket(addr).unwrap().is_none());
            drop(a);
            // Another family's is not a candidate.
            let v6: SocketAddr = "[::1]:1".parse().unwrap();
            assert!(unbound_socket(v6).unwrap().is_none());
        });
    }
}
