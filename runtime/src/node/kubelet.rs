//! The kubelet port: what the API server asks a node for itself, over TLS. `kubectl logs`
//! (`-f`, `-c`, `--previous`, `--tail`, `--timestamps`) reaches
//! `GET /containerLogs/{namespace}/{pod}/{container}` here through the API server's proxy;
//! the lines come from the daemon's log API, as text (the CRI framing taken off).
//!
//! Who may ask: a client certificate signed by the cluster's CA (the one in the node's
//! kubeconfig), which is what the API server presents (`--kubelet-client-certificate`); any
//! other TLS client is refused in the handshake. The serving certificate is made at start,
//! self-signed for the node's name and address (as a kubelet without one does).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures::StreamExt;
use http_body_util::BodyExt;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde::Deserialize;

use super::names;
use crate::client::{Client, ClientError};
use crate::config::NodeSettings;

/// Serves the kubelet port until the agent stops. `roots`: the cluster's CA (DER).
pub(super) async fn serve(node: NodeSettings, ip: IpAddr, socket: PathBuf, roots: Vec<Vec<u8>>) {
    let tls = match tls_config(&node, ip, roots) {
        Ok(c) => Arc::new(c),
        Err(e) => {
            tracing::error!("kubernetes: the kubelet port: {e:#}; `kubectl logs` will not work");
            return;
        }
    };
    let addr = SocketAddr::new(ip, node.kubelet_port);
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(
                "kubernetes: the kubelet port {addr}: {e}; `kubectl logs` will not work"
            );
            return;
        }
    };
    let router = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/containerLogs/{namespace}/{pod}/{container}", get(logs))
        .with_state(Arc::new(Client::new(&socket)));
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let (acceptor, router) = (acceptor.clone(), router.clone());
        tokio::spawn(async move {
            let Ok(stream) = acceptor.accept(tcp).await else {
                return;
            };
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(std::time::Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), TowerToHyperService::new(router));
            let _ = conn.await;
        });
    }
}

fn tls_config(
    node: &NodeSettings,
    ip: IpAddr,
    roots: Vec<Vec<u8>>,
) -> anyhow::Result<rustls::ServerConfig> {
    use anyhow::Context;
    let mut store = rustls::RootCertStore::empty();
    for der in roots {
        store
            .add(CertificateDer::from(der))
            .context("the cluster's CA in the kubeconfig")?;
    }
    anyhow::ensure!(
        !store.is_empty(),
        "the kubeconfig names no certificate authority: the API server's requests cannot be told from anyone's"
    );
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(store),
        provider.clone(),
    )
    .build()
    .context("client certificate verifier")?;
    let mut params = rcgen::CertificateParams::new(vec![node.node_name.clone()])
        .context("serving certificate")?;
    params.subject_alt_names.push(rcgen::SanType::IpAddress(ip));
    let key = rcgen::KeyPair::generate().context("serving key")?;
    let cert = params.self_signed(&key).context("serving certificate")?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS versions")?
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            vec![cert.der().clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
        .context("serving certificate")?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// The kubelet's `containerLogs` parameters that peapod serves.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct LogQuery {
    #[serde(default)]
    follow: bool,
    #[serde(default)]
    previous: bool,
    tail_lines: Option<usize>,
    #[serde(default)]
    timestamps: bool,
}

async fn logs(
    State(daemon): State<Arc<Client>>,
    Path((namespace, pod, container)): Path<(String, String, String)>,
    Query(q): Query<LogQuery>,
) -> Response {
    let local = names::pod_name(&namespace, &pod);
    let mut query = format!("container={}", enc(&container));
    if let Some(n) = q.tail_lines {
        query.push_str(&format!("&tail={n}"));
    }
    if q.follow {
        query.push_str("&follow=true");
    }
    if q.previous {
        query.push_str("&previous=true");
    } else {
        query.push_str("&current=true");
    }
    let path = format!("/v1/pods/{}/logs?{query}", enc(&local));
    let resp = match daemon
        .send(axum::http::Method::GET, &path, None::<&()>)
        .await
    {
        Ok(r) => r,
        Err(ClientError::Api {
            status, message, ..
        }) => {
            let status = StatusCode::from_u16(status.as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
            return (status, message).into_response();
        }
        Err(e) => return (StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response(),
    };
    // CRI lines (`TIME STREAM P|F TEXT`) as the kubelet gives them: the text, with its time
    // when asked; partial lines joined.
    let timestamps = q.timestamps;
    let mut pending = Vec::new();
    let lines = resp.into_body().into_data_stream().map(move |chunk| {
        let chunk = chunk.map_err(std::io::Error::other)?;
        pending.extend_from_slice(&chunk);
        let mut out = Vec::new();
        while let Some(end) = pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            out.extend(plain(&line[..line.len() - 1], timestamps));
        }
        Ok::<_, std::io::Error>(axum::body::Bytes::from(out))
    });
    (
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        Body::from_stream(lines),
    )
        .into_response()
}

/// One CRI log line as text: `TEXT\n` (`TIME TEXT\n` with `timestamps`), or `TEXT` alone for a
/// partial line; nothing for peapod's run marks (a following stream passes a restart's).
fn plain(line: &[u8], timestamps: bool) -> Vec<u8> {
    let mut parts = line.splitn(4, |&b| b == b' ');
    let (Some(time), Some(_stream), Some(tag), Some(text)) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return [line, b"\n"].concat();
    };
    if tag == crate::logs::cri::RUN_MARK_TAG.as_bytes() {
        return Vec::new();
    }
    let mut out = Vec::new();
    if timestamps {
        out.extend_from_slice(time);
        out.push(b' ');
    }
    out.extend_from_slice(text);
    if tag != b"P" {
        out.push(b'\n');
    }
    out
}

fn enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::plain;

    #[test]
    fn cri_lines_become_text() {
        let l = b"2026-12-03T10:00:00.000000000Z stdout F hello world";
        assert_eq!(plain(l, false), b"hello world\n");
        assert_eq!(
            plain(l, true),
            b"2026-12-03T10:00:00.000000000Z hello world\n"
        );
        assert_eq!(plain(b"2026-12-03T10:00:00Z stderr P part", false), b"part");
    }
}
