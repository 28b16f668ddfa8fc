//! A client of the daemon's API (the routes are listed in `daemon/api.rs`), over its unix socket.

use std::path::{Path, PathBuf};

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::Value;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No daemon: the socket is missing or nobody listens on it.
    #[error(
        "cannot reach the peapod daemon at {}: {source} (is it running? `systemctl status peapod`, or start `peapod daemon`)",
        socket.display()
    )]
    Unreachable {
        socket: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The socket's permissions keep this user out.
    #[error(
        "permission denied on {}: the API is for root and the `peapod` group (use sudo, or add yourself to the group)",
        socket.display()
    )]
    Denied { socket: PathBuf },
    #[error("talking to the daemon: {0}")]
    Protocol(String),
    /// The daemon answered with an error.
    #[error("{message}")]
    Api {
        status: StatusCode,
        message: String,
        problems: Vec<String>,
    },
}

pub struct Client {
    socket: PathBuf,
}

impl Client {
    pub fn new(socket: &Path) -> Self {
        Client {
            socket: socket.to_path_buf(),
        }
    }

    /// Sends one request and returns the response with its body still streaming.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<hyper::Response<Incoming>, ClientError> {
        let stream = tokio::net::UnixStream::connect(&self.socket)
            .await
            .map_err(|source| match source.kind() {
                std::io::ErrorKind::PermissionDenied => ClientError::Denied {
                    socket: self.socket.clone(),
                },
                _ => ClientError::Unreachable {
                    socket: self.socket.clone(),
                    source,
                },
            })?;
        let proto = |e: hyper::Error| ClientError::Protocol(e.to_string());
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(proto)?;
        tokio::spawn(conn);
        let bytes = body.map(|b| b.to_string()).unwrap_or_default();
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "peapod")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(bytes)))
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        let resp = sender.send_request(req).await.map_err(proto)?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status();
        let body = resp.into_body().collect().await.map_err(proto)?.to_bytes();
        let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        Err(ClientError::Api {
            status,
            message: v["error"]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| format!("{status}: {}", String::from_utf8_lossy(&body))),
            problems: v["problems"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|p| p.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default(),
        })
    }

    /// A request whose answer is JSON.
    pub async fn json(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, ClientError> {
        let resp = self.send(method, path, body).await?;
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| ClientError::Protocol(e.to_string()))?
            .to_bytes();
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Protocol(e.to_string()))
    }

    pub async fn get(&self, path: &str) -> Result<Value, ClientError> {
        self.json(Method::GET, path, None).await
    }
}
