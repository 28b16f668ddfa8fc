//! The kubelet port: what the API server asks a node for itself, over TLS. `kubectl logs`
//! (`-f`, `-c`, `--previous`, `--tail`, `--timestamps`) reaches
//! `GET /containerLogs/{namespace}/{pod}/{container}` here through the API server's proxy;
//! the lines come from the daemon's log API, as text (the CRI framing taken off).
//!
//! Who may ask, as the kubelet decides it: a client certificate signed by the cluster's CA (the
//! one in the node's kubeconfig) gets past the handshake, any other TLS client is refused there;
//! then the API server is asked whether that certificate's user (its CN) and groups (its O) may
//! `get nodes/proxy` of this node (a SubjectAccessReview, which the Node authorizer lets a node
//! make): the API server's `--kubelet-client-certificate` may, another node's certificate may
//! not (403). Answers are kept a minute. The serving certificate is `[kubernetes]
//! kubelet_cert` (for an API server that checks it: `--kubelet-certificate-authority`, as k3s
//! sets), else made at start, self-signed for the node's name and address (as a kubelet
//! without one does).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{Extension, Path, Query, State};
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

/// A client, as its certificate names it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Identity {
    user: String,
    groups: Vec<String>,
}

/// What the handlers share: the daemon's API, and who may read this node's logs.
struct Kubelet {
    daemon: Client,
    client: kube::Client,
    node: String,
    /// Authorization answers by identity, with when they were given.
    decided: Mutex<HashMap<Identity, (bool, Instant)>>,
}

/// How long an authorization answer is kept.
const DECISION_TTL: Duration = Duration::from_secs(60);

/// Serves the kubelet port until the agent stops. `roots`: the cluster's CA (DER).
pub(super) async fn serve(
    client: kube::Client,
    node: NodeSettings,
    ip: IpAddr,
    socket: PathBuf,
    roots: Vec<Vec<u8>>,
) {
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
        .with_state(Arc::new(Kubelet {
            daemon: Client::new(&socket),
            client,
            node: node.node_name.clone(),
            decided: Mutex::default(),
        }));
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
            // (The handshake required a certificate of the cluster's CA.)
            let Some(identity) = (stream.get_ref().1.peer_certificates())
                .and_then(|c| c.first())
                .and_then(|c| identity(c))
            else {
                return;
            };
            let service = TowerToHyperService::new(router.layer(Extension(identity)));
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), service);
            let _ = conn.await;
        });
    }
}

/// The user (CN) and groups (O) a client certificate names, as the API server reads them.
fn identity(der: &CertificateDer<'_>) -> Option<Identity> {
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).ok()?;
    let subject = cert.subject();
    let user = subject
        .iter_common_name()
        .next()?
        .as_str()
        .ok()?
        .to_string();
    let groups = (subject.iter_organization())
        .filter_map(|o| o.as_str().ok().map(str::to_string))
        .collect();
    Some(Identity { user, groups })
}

impl Kubelet {
    /// May `who` read this node's logs (`get nodes/proxy`, the kubelet's check)?
    async fn allowed(&self, who: &Identity) -> bool {
        use k8s_openapi::api::authorization::v1::{
            ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
        };
        if let Some((ok, at)) = self.decided.lock().expect("lock").get(who)
            && at.elapsed() < DECISION_TTL
        {
            return *ok;
        }
        let review = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: Some(who.user.clone()),
                groups: Some(who.groups.clone()),
                resource_attributes: Some(ResourceAttributes {
                    verb: Some("get".into()),
                    resource: Some("nodes".into()),
                    subresource: Some("proxy".into()),
                    name: Some(self.node.clone()),
                    ..ResourceAttributes::default()
                }),
                ..SubjectAccessReviewSpec::default()
            },
            ..SubjectAccessReview::default()
        };
        let api: kube::Api<SubjectAccessReview> = kube::Api::all(self.client.clone());
        let ok = match api.create(&kube::api::PostParams::default(), &review).await {
            Ok(r) => r.status.is_some_and(|s| s.allowed),
            Err(e) => {
                // Not kept: asked again next time.
                tracing::warn!("kubernetes: authorizing {}: {e}", who.user);
                return false;
            }
        };
        self.decided
            .lock()
            .expect("lock")
            .insert(who.clone(), (ok, Instant::now()));
        ok
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
    let (chain, key) = match &node.kubelet_tls {
        Some((cert, key)) => {
            use rustls::pki_types::pem::PemObject;
            let chain = CertificateDer::pem_file_iter(cert)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .with_context(|| format!("kubernetes.kubelet_cert {}", cert.display()))?;
            let key = PrivateKeyDer::from_pem_file(key)
                .with_context(|| format!("kubernetes.kubelet_key {}", key.display()))?;
            (chain, key)
        }
        None => {
            let mut params = rcgen::CertificateParams::new(vec![node.node_name.clone()])
                .context("serving certificate")?;
            params.subject_alt_names.push(rcgen::SanType::IpAddress(ip));
            let key = rcgen::KeyPair::generate().context("serving key")?;
            let cert = params.self_signed(&key).context("serving certificate")?;
            let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
            (vec![cert.der().clone()], key)
        }
    };
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS versions")?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
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
    State(kubelet): State<Arc<Kubelet>>,
    Extension(who): Extension<Identity>,
    Path((namespace, pod, container)): Path<(String, String, String)>,
    Query(q): Query<LogQuery>,
) -> Response {
    if !kubelet.allowed(&who).await {
        let message = format!(
            "Forbidden (user={}, verb=get, resource=nodes, subresource=proxy)",
            who.user
        );
        return (StatusCode::FORBIDDEN, message).into_response();
    }
    let daemon = &kubelet.daemon;
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
    fn a_serving_certificate_is_made_when_none_is_given() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let ca = rcgen::CertificateParams::new(vec!["ca".to_string()]).unwrap();
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let ca = ca.self_signed(&ca_key).unwrap();
        let node = crate::config::NodeSettings {
            kubeconfig: "/k".into(),
            node_name: "pi-1".into(),
            node_ip: None,
            kubelet_port: 10250,
            labels: Default::default(),
            taints: vec![],
            host_paths: vec![],
            kubelet_tls: None,
        };
        let ip = "127.0.0.1".parse().unwrap();
        assert!(super::tls_config(&node, ip, vec![ca.der().to_vec()]).is_ok());
        let e = super::tls_config(&node, ip, vec![]).unwrap_err();
        assert!(e.to_string().contains("no certificate authority"), "{e}");
        let missing = crate::config::NodeSettings {
            kubelet_tls: Some(("/nonexistent.crt".into(), "/nonexistent.key".into())),
            ..node
        };
        let e = format!(
            "{:#}",
            super::tls_config(&missing, ip, vec![ca.der().to_vec()]).unwrap_err()
        );
        assert!(
            e.contains("kubernetes.kubelet_cert /nonexistent.crt"),
            "{e}"
        );
    }

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
