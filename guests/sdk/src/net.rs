//! TCP on the pod's addresses, async on WASI 0.2's sockets: a [`Listener`] whose accepted
//! [`Conn`]s know their peer's address (a proxy limits by it), and [`Conn::connect`].
//!
//! A pod's containers share one network namespace: `127.0.0.1:PORT` is the app next door, the
//! pod's address is what other pods and published ports reach.

use std::net::{SocketAddr, ToSocketAddrs};

use wasip2::sockets::network::{
    ErrorCode, IpAddressFamily, IpSocketAddress, Ipv4SocketAddress, Ipv6SocketAddress,
};
use wasip2::sockets::tcp::{ShutdownType, TcpSocket};
use wstd::io::{AsyncInputStream, AsyncOutputStream, AsyncRead, AsyncWrite};
use wstd::runtime::AsyncPollable;

use crate::{Error, Result};

/// A listening socket.
#[derive(Debug)]
pub struct Listener {
    // Drop order: the pollable (a child of the socket) before the socket.
    pollable: AsyncPollable,
    socket: TcpSocket,
    addr: SocketAddr,
}

impl Listener {
    /// Binds and listens on `addr` (`0.0.0.0:8443`: every address of the pod; `127.0.0.1:9000`:
    /// only the pod's own containers).
    pub async fn bind(addr: &str) -> Result<Self> {
        let sa: SocketAddr = addr.parse().map_err(|_| Error::Config {
            var: addr.to_string(),
            why: "is not an address like 0.0.0.0:8080".into(),
        })?;
        let what = || format!("listen on {sa}");
        let socket = wasip2::sockets::tcp_create_socket::create_tcp_socket(family(sa))
            .map_err(|e| Error::io(what(), io_err(e)))?;
        let network = wasip2::sockets::instance_network::instance_network();
        socket
            .start_bind(&network, to_wasi(sa))
            .map_err(|e| Error::io(what(), io_err(e)))?;
        let pollable = AsyncPollable::new(socket.subscribe());
        pollable.wait_for().await;
        socket
            .finish_bind()
            .map_err(|e| Error::io(what(), io_err(e)))?;
        let _ = socket.set_listen_backlog_size(1024);
        socket
            .start_listen()
            .map_err(|e| Error::io(what(), io_err(e)))?;
        pollable.wait_for().await;
        socket
            .finish_listen()
            .map_err(|e| Error::io(what(), io_err(e)))?;
        let addr = socket.local_address().map(from_wasi).unwrap_or(sa);
        Ok(Listener {
            pollable,
            socket,
            addr,
        })
    }

    /// The bound address (with the port the system chose, for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The next connection.
    pub async fn accept(&self) -> Result<Conn> {
        loop {
            self.pollable.wait_for().await;
            match self.socket.accept() {
                Ok((socket, input, output)) => {
                    let peer = socket
                        .remote_address()
                        .map(from_wasi)
                        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
                    return Ok(Conn {
                        input: AsyncInputStream::new(input),
                        output: AsyncOutputStream::new(output),
                        socket,
                        peer,
                    });
                }
                Err(ErrorCode::WouldBlock) => continue,
                // A connection that went before it was taken: the next one.
                Err(ErrorCode::ConnectionAborted | ErrorCode::ConnectionReset) => continue,
                Err(e) => return Err(Error::io(format!("accept on {}", self.addr), io_err(e))),
            }
        }
    }
}

/// One TCP connection.
#[derive(Debug)]
pub struct Conn {
    // Drop order: the streams (children of the socket) before the socket.
    input: AsyncInputStream,
    output: AsyncOutputStream,
    socket: TcpSocket,
    peer: SocketAddr,
}

impl Conn {
    /// Connects to `addr` (`127.0.0.1:8080`, or `host:port`, looked up through WASI).
    pub async fn connect(addr: &str) -> Result<Self> {
        let what = || format!("connect to {addr}");
        let addrs: Vec<SocketAddr> = addr
            .to_socket_addrs()
            .map_err(|e| Error::io(what(), e))?
            .collect();
        let mut last = std::io::Error::new(std::io::ErrorKind::NotFound, "no address");
        for sa in addrs {
            match Self::connect_addr(sa).await {
                Ok(c) => return Ok(c),
                Err(e) => last = e,
            }
        }
        Err(Error::io(what(), last))
    }

    async fn connect_addr(sa: SocketAddr) -> std::io::Result<Self> {
        let socket =
            wasip2::sockets::tcp_create_socket::create_tcp_socket(family(sa)).map_err(io_err)?;
        let network = wasip2::sockets::instance_network::instance_network();
        socket
            .start_connect(&network, to_wasi(sa))
            .map_err(io_err)?;
        let pollable = AsyncPollable::new(socket.subscribe());
        let (input, output) = loop {
            pollable.wait_for().await;
            match socket.finish_connect() {
                Ok(streams) => break streams,
                Err(ErrorCode::WouldBlock) => continue,
                Err(e) => return Err(io_err(e)),
            }
        };
        drop(pollable);
        Ok(Conn {
            input: AsyncInputStream::new(input),
            output: AsyncOutputStream::new(output),
            socket,
            peer: sa,
        })
    }

    /// The other end's address.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// Reads what has come (0: the peer closed its side).
    pub async fn read(&self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.input.read(buf).await
    }

    /// Writes all of `buf`.
    pub async fn write_all(&self, buf: &[u8]) -> std::io::Result<()> {
        self.output.write_all(buf).await
    }

    /// Flushes what was written.
    pub async fn flush(&self) -> std::io::Result<()> {
        self.output.flush().await
    }

    /// Closes the sending side (the peer reads its end); reading goes on.
    pub fn shutdown_write(&self) {
        let _ = self.socket.shutdown(ShutdownType::Send);
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        let _ = self.socket.shutdown(ShutdownType::Both);
    }
}

impl AsyncRead for &Conn {
    async fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.input.read(buf).await
    }
}

impl AsyncWrite for &Conn {
    async fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.output.write(buf).await
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        self.output.flush().await
    }
}

fn family(sa: SocketAddr) -> IpAddressFamily {
    match sa {
        SocketAddr::V4(_) => IpAddressFamily::Ipv4,
        SocketAddr::V6(_) => IpAddressFamily::Ipv6,
    }
}

fn to_wasi(sa: SocketAddr) -> IpSocketAddress {
    match sa {
        SocketAddr::V4(a) => {
            let o = a.ip().octets();
            IpSocketAddress::Ipv4(Ipv4SocketAddress {
                port: a.port(),
                address: (o[0], o[1], o[2], o[3]),
            })
        }
        SocketAddr::V6(a) => {
            let s = a.ip().segments();
            IpSocketAddress::Ipv6(Ipv6SocketAddress {
                port: a.port(),
                flow_info: a.flowinfo(),
                address: (s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7]),
                scope_id: a.scope_id(),
            })
        }
    }
}

fn from_wasi(a: IpSocketAddress) -> SocketAddr {
    match a {
        IpSocketAddress::Ipv4(a) => {
            let (x, y, z, w) = a.address;
            SocketAddr::from(([x, y, z, w], a.port))
        }
        IpSocketAddress::Ipv6(a) => {
            let (p, q, r, s, t, u, v, w) = a.address;
            SocketAddr::from(([p, q, r, s, t, u, v, w], a.port))
        }
    }
}

fn io_err(e: ErrorCode) -> std::io::Error {
    use std::io::ErrorKind as K;
    let kind = match e {
        ErrorCode::AccessDenied => K::PermissionDenied,
        ErrorCode::NotSupported => K::Unsupported,
        ErrorCode::InvalidArgument => K::InvalidInput,
        ErrorCode::OutOfMemory => K::OutOfMemory,
        ErrorCode::Timeout => K::TimedOut,
        ErrorCode::WouldBlock => K::WouldBlock,
        ErrorCode::AddressInUse => K::AddrInUse,
        ErrorCode::AddressNotBindable => K::AddrNotAvailable,
        ErrorCode::ConnectionRefused => K::ConnectionRefused,
        ErrorCode::ConnectionReset => K::ConnectionReset,
        ErrorCode::ConnectionAborted => K::ConnectionAborted,
        ErrorCode::RemoteUnreachable => K::HostUnreachable,
        _ => K::Other,
    };
    std::io::Error::new(kind, format!("{e:?}"))
}
