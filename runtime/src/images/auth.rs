//! Registry credentials from a docker-style `config.json` (`images.auth_file`):
//!
//! ```json
//! { "auths": { "registry.example:5000": { "auth": "<base64 of user:password>" } } }
//! ```
//!
//! (`"username"`/`"password"` instead of `"auth"` are taken too; keys may carry a scheme, as
//! `docker login` writes them.) The file is read only when it is root's and no one else may
//! read or write it: it holds passwords, and who may change it chooses what the board runs.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use base64::Engine as _;
use oci_client::secrets::RegistryAuth;
use serde::Deserialize;

use super::ImageError;

#[derive(Deserialize)]
struct ConfigFile {
    #[serde(default)]
    auths: BTreeMap<String, Entry>,
}

#[derive(Deserialize)]
struct Entry {
    auth: Option<String>,
    username: Option<String>,
    password: Option<String>,
}

/// `https://host:5000/v1/` -> `host:5000`.
fn registry_of(key: &str) -> &str {
    let key = key.split_once("://").map_or(key, |(_, rest)| rest);
    key.split('/').next().unwrap_or(key)
}

/// The credentials for `registry` (anonymous when the file is missing or does not name it).
pub(crate) fn for_registry(file: &Path, registry: &str) -> Result<RegistryAuth, ImageError> {
    let bad = |message: String| ImageError::AuthFile {
        path: file.to_path_buf(),
        message,
    };
    let meta = match std::fs::metadata(file) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(RegistryAuth::Anonymous),
        Err(e) => return Err(bad(e.to_string())),
    };
    if !meta.is_file() {
        return Err(bad("not a regular file".into()));
    }
    if meta.uid() != nix::unistd::geteuid().as_raw() || meta.mode() & 0o077 != 0 {
        return Err(bad(format!(
            "must be root's and readable by root alone (it is uid {}, mode {:o}): it holds \
             registry passwords; chown root and chmod 600 it",
            meta.uid(),
            meta.mode() & 0o7777
        )));
    }
    let text = std::fs::read(file).map_err(|e| bad(e.to_string()))?;
    let config: ConfigFile =
        serde_json::from_slice(&text).map_err(|e| bad(format!("not a docker config.json: {e}")))?;
    let Some((key, entry)) = config
        .auths
        .iter()
        .find(|(k, _)| registry_of(k) == registry)
    else {
        return Ok(RegistryAuth::Anonymous);
    };
    match (&entry.auth, &entry.username, &entry.password) {
        (Some(auth), _, _) => {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(auth.trim())
                .ok()
                .and_then(|b| String::from_utf8(b).ok());
            match decoded.as_deref().and_then(|d| d.split_once(':')) {
                Some((user, password)) => Ok(RegistryAuth::Basic(user.into(), password.into())),
                None => Err(bad(format!(
                    "auths.{key:?}.auth: not the base64 of \"user:password\""
                ))),
            }
        }
        (None, Some(user), Some(password)) => {
            Ok(RegistryAuth::Basic(user.clone(), password.clone()))
        }
        _ => Err(bad(format!(
            "auths.{key:?}: has neither \"auth\" nor \"username\" and \"password\""
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn credentials_come_only_from_a_private_file() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("auth.json");
        assert!(matches!(
            for_registry(&f, "r.example").unwrap(),
            RegistryAuth::Anonymous
        ));
        let b64 = base64::engine::general_purpose::STANDARD.encode("ann:s3cret");
        std::fs::write(
            &f,
            format!(
                r#"{{"auths": {{"https://r.example:5000/v1/": {{"auth": "{b64}"}},
                   "other.example": {{"username": "bo", "password": "pw"}},
                   "broken.example": {{"auth": "bm9jb2xvbg=="}}}}}}"#
            ),
        )
        .unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = for_registry(&f, "r.example:5000").unwrap_err().to_string();
        assert!(e.contains("auth.json") && e.contains("chmod 600"), "{e}");
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        match for_registry(&f, "r.example:5000").unwrap() {
            RegistryAuth::Basic(u, p) => assert_eq!((u.as_str(), p.as_str()), ("ann", "s3cret")),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            for_registry(&f, "other.example").unwrap(),
            RegistryAuth::Basic(..)
        ));
        assert!(matches!(
            for_registry(&f, "elsewhere.example").unwrap(),
            RegistryAuth::Anonymous
        ));
        let e = for_registry(&f, "broken.example").unwrap_err().to_string();
        assert!(e.contains("auths.\"broken.example\".auth"), "{e}");
    }
}
