//! Projected volumes, made by the node as the kubelet makes them: above all the
//! `kube-api-access-*` volume the API server adds to every pod whose service account mounts a
//! token (a service account token, the cluster's CA from the config map `kube-root-ca.crt`, the
//! pod's namespace). The files become a `files` volume of the pod.
//!
//! The token is asked for once per pod (a TokenRequest bound to the pod, as NodeRestriction
//! requires of a node) and kept in `<state_dir>/kubernetes/tokens/` (root's, 0600) with the
//! pod's uid in its name, so the pod's spec, and so the pod, stay the same across daemon
//! restarts; it is removed with the pod. Not refreshed: the API server gives a token asked for
//! with the API server's default expiry (3607 s) a year (`--service-account-extend-token-expiration`,
//! on by default); a pod that must outlive that is re-created.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, KeyToPath, Pod, Secret, ServiceAccount, VolumeProjection,
};
use kube::api::{Api, PostParams};

use super::Blocked;

/// The files of each projected volume of `pod`, by volume name; or what cannot be made, naming
/// the field.
pub(super) async fn files(
    client: &kube::Client,
    pod: &Pod,
    state_dir: &Path,
) -> Result<BTreeMap<String, BTreeMap<String, String>>, Blocked> {
    let mut out = BTreeMap::new();
    let Some(spec) = &pod.spec else {
        return Ok(out);
    };
    let ns = pod
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    for (i, v) in spec.volumes.iter().flatten().enumerate() {
        let Some(projected) = &v.projected else {
            continue;
        };
        let mut files = BTreeMap::new();
        for (j, source) in projected.sources.iter().flatten().enumerate() {
            let at = format!("spec.volumes[{i}].projected.sources[{j}]");
            source_files(
                client, pod, &ns, &v.name, source, &at, state_dir, &mut files,
            )
            .await?;
        }
        out.insert(v.name.clone(), files);
    }
    Ok(out)
}

#[allow(clippy::too_many_arguments)]
async fn source_files(
    client: &kube::Client,
    pod: &Pod,
    ns: &str,
    volume: &str,
    source: &VolumeProjection,
    at: &str,
    state_dir: &Path,
    files: &mut BTreeMap<String, String>,
) -> Result<(), Blocked> {
    if let Some(t) = &source.service_account_token {
        let token = token(
            client,
            pod,
            ns,
            volume,
            t.audience.clone(),
            t.expiration_seconds,
            state_dir,
        )
        .await
        .map_err(|e| Blocked::Waiting(format!("{at}.serviceAccountToken: {e}")))?;
        files.insert(t.path.clone(), token);
    } else if let Some(c) = &source.config_map {
        let api: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
        let found = api
            .get_opt(&c.name)
            .await
            .map_err(|e| Blocked::Waiting(format!("{at}.configMap: {e}")))?;
        let data = match found {
            Some(m) => m.data.unwrap_or_default(),
            None if c.optional == Some(true) => BTreeMap::new(),
            None => {
                return Err(Blocked::Waiting(format!(
                    "{at}.configMap.name: config map {:?} not found",
                    c.name
                )));
            }
        };
        pick(&data, c.items.as_deref(), &format!("{at}.configMap"), files)
            .map_err(Blocked::Waiting)?;
    } else if let Some(s) = &source.secret {
        let api: Api<Secret> = Api::namespaced(client.clone(), ns);
        let found = api
            .get_opt(&s.name)
            .await
            .map_err(|e| Blocked::Waiting(format!("{at}.secret: {e}")))?;
        let data = match found {
            Some(secret) => secret_text(secret)
                .map_err(|k| format!("{at}.secret: key {k:?} is not UTF-8 text"))?,
            None if s.optional == Some(true) => BTreeMap::new(),
            None => {
                return Err(Blocked::Waiting(format!(
                    "{at}.secret.name: secret {:?} not found",
                    s.name
                )));
            }
        };
        pick(&data, s.items.as_deref(), &format!("{at}.secret"), files)
            .map_err(Blocked::Waiting)?;
    } else if let Some(d) = &source.downward_api {
        for (k, item) in d.items.iter().flatten().enumerate() {
            let field = item.field_ref.as_ref().map(|f| f.field_path.as_str());
            let meta = &pod.metadata;
            let value = match field {
                Some("metadata.namespace") => Some(ns.to_string()),
                Some("metadata.name") => meta.name.clone(),
                Some("metadata.uid") => meta.uid.clone(),
                Some("spec.nodeName") => pod.spec.as_ref().and_then(|s| s.node_name.clone()),
                Some("spec.serviceAccountName") => pod
                    .spec
                    .as_ref()
                    .and_then(|s| s.service_account_name.clone()),
                _ => None,
            };
            let Some(value) = value else {
                return Err(Blocked::Unsupported(format!(
                    "{at}.downwardAPI.items[{k}]: peapod gives metadata.namespace, metadata.name, \
                     metadata.uid, spec.nodeName and spec.serviceAccountName"
                )));
            };
            files.insert(item.path.clone(), value);
        }
    } else {
        return Err(Blocked::Unsupported(format!(
            "{at}: not supported by peapod (a serviceAccountToken, configMap, secret or downwardAPI source is)"
        )));
    }
    Ok(())
}

/// A secret's data as text, a file a key; `Err` names a key whose value is not UTF-8.
pub(super) fn secret_text(secret: Secret) -> Result<BTreeMap<String, String>, String> {
    (secret.data.unwrap_or_default().into_iter())
        .map(|(k, v)| {
            String::from_utf8(v.0)
                .map(|text| (k.clone(), text))
                .map_err(|_| k)
        })
        .collect()
}

/// `items` of `data` (all of it without items) into `files`.
fn pick(
    data: &BTreeMap<String, String>,
    items: Option<&[KeyToPath]>,
    at: &str,
    files: &mut BTreeMap<String, String>,
) -> Result<(), String> {
    match items {
        None | Some([]) => files.extend(data.clone()),
        Some(items) => {
            for (k, item) in items.iter().enumerate() {
                let value = (data.get(&item.key))
                    .ok_or_else(|| format!("{at}.items[{k}].key: no key {:?}", item.key))?;
                files.insert(item.path.clone(), value.clone());
            }
        }
    }
    Ok(())
}

/// Where the token of `volume` of the pod `uid` is kept.
fn token_path(state_dir: &Path, uid: &str, volume: &str) -> PathBuf {
    tokens_dir(state_dir).join(format!("{uid}.{volume}"))
}

pub(super) fn tokens_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("kubernetes").join("tokens")
}

/// Removes the kept tokens of pod `uid`.
pub(super) fn forget(state_dir: &Path, uid: &str) {
    if let Ok(entries) = std::fs::read_dir(tokens_dir(state_dir)) {
        for e in entries.flatten() {
            if e.file_name()
                .to_string_lossy()
                .starts_with(&format!("{uid}."))
            {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}

/// The pod's service account token: the kept one, or a new one (bound to the pod).
async fn token(
    client: &kube::Client,
    pod: &Pod,
    ns: &str,
    volume: &str,
    audience: Option<String>,
    expiration: Option<i64>,
    state_dir: &Path,
) -> Result<String, String> {
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let kept = token_path(state_dir, &uid, volume);
    if let Ok(t) = std::fs::read_to_string(&kept) {
        return Ok(t);
    }
    let account = (pod.spec.as_ref())
        .and_then(|s| s.service_account_name.clone())
        .unwrap_or_else(|| "default".into());
    let request = TokenRequest {
        spec: TokenRequestSpec {
            audiences: audience.into_iter().collect(),
            expiration_seconds: expiration,
            bound_object_ref: Some(BoundObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: pod.metadata.name.clone(),
                uid: Some(uid),
            }),
        },
        ..TokenRequest::default()
    };
    let api: Api<ServiceAccount> = Api::namespaced(client.clone(), ns);
    let answer = api
        .create_token_request(&account, &PostParams::default(), &request)
        .await
        .map_err(|e| format!("a token of service account {account:?}: {e}"))?;
    let token = answer.status.map(|s| s.token).unwrap_or_default();
    crate::durable::private_dir(&tokens_dir(state_dir)).map_err(|e| e.to_string())?;
    crate::durable::replace(&kept, token.as_bytes()).map_err(|e| e.to_string())?;
    Ok(token)
}
