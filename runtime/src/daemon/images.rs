//! The API's images (`peapod pull`, `peapod images`, `peapod image prune`): the modules of
//! [`crate::images`]' store, and which pods run them.
//!
//! | method and path                              | does                                        |
//! |----------------------------------------------|---------------------------------------------|
//! | `POST /v1/images/pull` `{"reference":REF}`   | pull now (a tag is asked for again)         |
//! | `GET /v1/images`                             | what is stored, with the pods that run it   |
//! | `POST /v1/images/prune`                      | remove what no pod runs (root only)         |

use std::collections::{BTreeMap, BTreeSet};

use axum::Json;
use axum::body::Body;
use axum::extract::{Extension, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::api::{Shared, error, read_json};
use crate::caller::Caller;
use crate::images::{ImageError, ImageStore, Pulled};
use crate::spec::Image;
use crate::wire;

type Uses = BTreeMap<String, super::pods::ImageUse>;

fn view(p: Pulled, uses: &Uses) -> wire::ImageView {
    let u = uses.get(&p.module);
    wire::ImageView {
        pods: u
            .into_iter()
            .flat_map(|u| u.running.iter().cloned())
            .collect(),
        kept_by: u.into_iter().flat_map(|u| u.kept.iter().cloned()).collect(),
        pulled: p,
    }
}

fn status(e: &ImageError) -> StatusCode {
    match e {
        ImageError::UnknownRegistry { .. } => StatusCode::BAD_REQUEST,
        ImageError::NotFound { .. } => StatusCode::NOT_FOUND,
        ImageError::Denied { .. } => StatusCode::FORBIDDEN,
        ImageError::NotWasm { .. } => StatusCode::UNPROCESSABLE_ENTITY,
        ImageError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        ImageError::AuthFile { .. } | ImageError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
        ImageError::Unreachable { .. }
        | ImageError::DigestMismatch { .. }
        | ImageError::Other { .. } => StatusCode::BAD_GATEWAY,
    }
}

pub(super) async fn pull(State(pods): State<Shared>, body: Body) -> Response {
    let req: wire::PullRequest =
        match read_json(body, "{\"reference\": \"oci://REGISTRY/REPO:TAG\"}").await {
            Ok(r) => r,
            Err(resp) => return resp,
        };
    let image = match Image::reference(&req.reference) {
        Ok(i) => i,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("reference: {e}")),
    };
    let (cfg, users) = {
        let pods = pods.lock().await;
        (pods.planner().0, pods.image_users())
    };
    match crate::images::pull(&cfg, &image.reference).await {
        Ok(p) => Json(view(p, &users)).into_response(),
        Err(e) => error(status(&e), e.to_string()),
    }
}

pub(super) async fn list(State(pods): State<Shared>) -> Response {
    let (cfg, users) = {
        let pods = pods.lock().await;
        (pods.planner().0, pods.image_users())
    };
    let store = ImageStore::new(&cfg.state_dir);
    let pulled = store.list();
    // A module a pod runs or keeps whose tag has moved on (its reference now names another
    // module) is listed too, by the reference it was pinned as.
    let unlisted: Vec<Pulled> = users
        .iter()
        .filter(|(module, _)| !pulled.iter().any(|p| &p.module == *module))
        .filter_map(|(module, u)| {
            let meta = std::fs::metadata(store.blob_path(module).ok()?).ok()?;
            let pinned = u.pinned.clone().unwrap_or_default();
            let manifest = pinned
                .rsplit_once('@')
                .map(|(_, d)| d.to_string())
                .unwrap_or_default();
            Some(Pulled {
                reference: pinned,
                manifest,
                module: module.clone(),
                media_type: String::new(),
                size: meta.len(),
                pulled_at: meta.modified().map_or(0, wire::epoch_secs),
            })
        })
        .collect();
    let images = pulled
        .into_iter()
        .chain(unlisted)
        .map(|p| view(p, &users))
        .collect();
    Json(wire::ImageList { images }).into_response()
}

pub(super) async fn prune(
    State(pods): State<Shared>,
    Extension(caller): Extension<Caller>,
) -> Response {
    if !caller.is_root() {
        return error(
            StatusCode::FORBIDDEN,
            "only root may prune the board's images (other users' pods may need them again)",
        );
    }
    // Under the lock: no apply commits a pod on a module being removed.
    let pods = pods.lock().await;
    let users = pods.image_users();
    let in_use: BTreeSet<String> = users.keys().cloned().collect();
    let (removed, freed) = ImageStore::new(&pods.planner().0.state_dir).prune(&in_use);
    let removed = removed.into_iter().map(|p| view(p, &users)).collect();
    Json(wire::Pruned { removed, freed }).into_response()
}
