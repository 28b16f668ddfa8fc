//! Settings from the environment (`env` in the pod spec) and secrets from files (a `secret`
//! volume): each error names the variable or the file, and never shows a secret's content.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use crate::{Error, Result};

/// Variable `var`; an error when it is unset or empty.
pub fn env(var: &str) -> Result<String> {
    match std::env::var(var) {
        Ok(v) if !v.trim().is_empty() => Ok(v),
        Ok(_) => Err(problem(var, "is empty")),
        Err(std::env::VarError::NotPresent) => {
            Err(problem(var, "is not set (set it in the container's `env`)"))
        }
        Err(std::env::VarError::NotUnicode(_)) => Err(problem(var, "is not UTF-8")),
    }
}

/// Variable `var`, or `default` when it is unset or empty.
pub fn env_or(var: &str, default: &str) -> String {
    env(var).unwrap_or_else(|_| default.to_string())
}

/// Variable `var` parsed as a `T` (a number, an address, ...), or `default` when unset.
pub fn parse_or<T>(var: &str, default: T) -> Result<T>
where
    T: FromStr,
    T::Err: std::fmt::Display,
{
    match std::env::var(var) {
        Err(_) => Ok(default),
        Ok(v) if v.trim().is_empty() => Ok(default),
        Ok(v) => v
            .trim()
            .parse()
            .map_err(|e| problem(var, &format!("{v:?}: {e}"))),
    }
}

/// Variable `var` as a duration (`250ms`, `10s`, `5m`, `1h 30m`), or `default` when unset.
pub fn duration_or(var: &str, default: Duration) -> Result<Duration> {
    match std::env::var(var) {
        Err(_) => Ok(default),
        Ok(v) if v.trim().is_empty() => Ok(default),
        Ok(v) => humantime::parse_duration(v.trim())
            .map_err(|e| problem(var, &format!("{v:?} is not a duration like 10s or 5m: {e}"))),
    }
}

/// Variable `var` as a request, `METHOD /path` (e.g. `GET /kv`), or `default` when unset:
/// (method upper-case, path).
pub fn request_or(var: &str, default: &str) -> Result<(String, String)> {
    let v = env_or(var, default);
    match v.split_whitespace().collect::<Vec<_>>()[..] {
        [m, p] if p.starts_with('/') => Ok((m.to_ascii_uppercase(), p.to_string())),
        _ => Err(problem(var, &format!("{v:?} is not `METHOD /path`"))),
    }
}

/// Variable `var` as a list split at commas (blank items dropped); empty when unset.
pub fn list(var: &str) -> Vec<String> {
    std::env::var(var)
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// Settings from the file that variable `var` names (e.g. `CONFIG_FILE=/etc/backup/backup.conf`,
/// a `files` volume), when it is set: `KEY = value` lines (`#` comments; a key is read upper-case,
/// so `interval = 5s` sets `INTERVAL`). A variable already in the environment wins over the
/// file. Returns the file read; an error names the file and line.
pub fn load_file(var: &str) -> Result<Option<String>> {
    let Ok(path) = std::env::var(var) else {
        return Ok(None);
    };
    if path.trim().is_empty() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&path).map_err(|source| Error::File {
        path: path.clone().into(),
        source,
    })?;
    let mut set = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            return Err(Error::Config {
                var: format!("{path}:{}", i + 1),
                why: format!("{line:?} is not `KEY = value`"),
            });
        };
        let key = k.trim().to_ascii_uppercase();
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(Error::Config {
                var: format!("{path}:{}", i + 1),
                why: format!("{:?} is not a setting's name", k.trim()),
            });
        }
        set.push((key, v.trim().to_string()));
    }
    for (k, v) in set {
        if std::env::var_os(&k).is_none() {
            set_var(&k, &v);
        }
    }
    Ok(Some(path))
}

/// Sets a variable of this process's environment.
fn set_var(key: &str, value: &str) {
    // SAFETY: a wasm32-wasip2 guest has one thread: nothing reads the environment meanwhile.
    unsafe { std::env::set_var(key, value) }
}

/// The secret in file `path` (a `secret` volume's file), its trailing newline cut. An empty
/// file is an error: a sidecar must not run with an empty token.
pub fn secret(path: impl AsRef<Path>) -> Result<String> {
    let path = path.as_ref();
    let text = std::fs::read_to_string(path).map_err(|source| Error::File {
        path: path.to_path_buf(),
        source,
    })?;
    let value = text.trim_end_matches(['\r', '\n']);
    if value.trim().is_empty() {
        return Err(Error::File {
            path: path.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, "the secret is empty"),
        });
    }
    Ok(value.to_string())
}

/// The secret in the file that variable `var` names (e.g. `TOKEN_FILE=/secrets/token`).
pub fn secret_from(var: &str) -> Result<String> {
    secret(env(var)?)
}

fn problem(var: &str, why: &str) -> Error {
    Error::Config {
        var: var.to_string(),
        why: why.to_string(),
    }
}
