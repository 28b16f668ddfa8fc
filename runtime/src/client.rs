//! A client of the daemon's API (the routes are listed in `daemon/api.rs`), over its unix socket:
//! one typed method a route, reading the same [`crate::wire`] types the server writes.

use std::path::{Path, PathBuf};

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;

use crate::wire::{self, ApiError};

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
        body: Option<&impl serde::Serialize>,
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
        let bytes = match body {
            Some(b) => serde_json::to_vec(b).map_err(|e| ClientError::Protocol(e.to_string()))?,
            None => Vec::new(),
        };
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
        Err(match serde_json::from_slice::<ApiError>(&body) {
            Ok(ApiError { error, problems }) => ClientError::Api {
                status,
                message: error,
                problems,
            },
            Err(_) => ClientError::Api {
                status,
                message: format!("{status}: {}", String::from_utf8_lossy(&body)),
                problems: Vec::new(),
            },
        })
    }

    /// A request whose answer is JSON of type `T`.
    pub async fn json<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&impl serde::Serialize>,
    ) -> Result<T, ClientError> {
        let resp = self.send(method, path, body).await?;
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| ClientError::Protocol(e.to_string()))?
            .to_bytes();
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Protocol(e.to_string()))
    }

    /// A `GET` whose answer is JSON of type `T`.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.json(Method::GET, path, None::<&()>).await
    }

    /// `GET /v1/healthz`.
    pub async fn health(&self) -> Result<wire::Health, ClientError> {
        self.get("/v1/healthz").await
    }

    /// Every pod, and the pods directory's problems.
    pub async fn pods(&self) -> Result<wire::PodList, ClientError> {
        self.get("/v1/pods").await
    }

    /// Pod `name`.
    pub async fn pod(&self, name: &str) -> Result<wire::PodView, ClientError> {
        self.get(&format!("/v1/pods/{name}")).await
    }

    /// Creates or updates the pod of spec `req`.
    pub async fn apply(&self, req: &wire::ApplyRequest) -> Result<wire::Applied, ClientError> {
        self.json(Method::POST, "/v1/pods", Some(req)).await
    }

    /// Deletes pod `name`; answers once it is gone.
    pub async fn delete(&self, name: &str) -> Result<wire::Deleted, ClientError> {
        self.json(Method::DELETE, &format!("/v1/pods/{name}"), None::<&()>)
            .await
    }

    /// Re-creates pod `name` (a new namespace and IP).
    pub async fn recreate(&self, name: &str) -> Result<wire::PodView, ClientError> {
        let path = format!("/v1/pods/{name}/restart");
        self.json(Method::POST, &path, None::<&()>).await
    }

    /// Restarts container `container` of pod `pod` in place.
    pub async fn restart_container(
        &self,
        pod: &str,
        container: &str,
    ) -> Result<wire::Restarted, ClientError> {
        let path = format!("/v1/pods/{pod}/containers/{container}/restart");
        self.json(Method::POST, &path, None::<&()>).await
    }

    /// The recorded events, oldest first; only pod `pod`'s when given.
    pub async fn events(&self, pod: Option<&str>) -> Result<wire::EventList, ClientError> {
        let query = pod.map(|p| format!("?pod={p}")).unwrap_or_default();
        self.get(&format!("/v1/events{query}")).await
    }

    /// The recorded events, then each new one as it comes: `each` is called for every one,
    /// until the daemon ends the stream (or the caller stops polling the future).
    pub async fn watch_events(
        &self,
        pod: Option<&str>,
        mut each: impl FnMut(wire::Event),
    ) -> Result<(), ClientError> {
        let query = pod.map(|p| format!("&pod={p}")).unwrap_or_default();
        let path = format!("/v1/events?watch=true{query}");
        let mut body = self
            .send(Method::GET, &path, None::<&()>)
            .await?
            .into_body();
        let proto = |e: String| ClientError::Protocol(e);
        let mut pending = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| proto(e.to_string()))?;
            let Some(data) = frame.data_ref() else {
                continue;
            };
            pending.extend_from_slice(data);
            while let Some(nl) = pending.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = pending.drain(..=nl).collect();
                each(serde_json::from_slice(&line).map_err(|e| proto(e.to_string()))?);
            }
        }
        Ok(())
    }

    /// The daemon's own figures.
    pub async fn daemon(&self) -> Result<wire::DaemonStatus, ClientError> {
        self.get("/v1/daemon").await
    }
}
