//! Pod labels (`[pod] labels = { app = "web" }`) and the selectors that pick pods by them
//! (`-l app=web,tier!=db,canary`), as Kubernetes writes both; and the DNS-1123 label that
//! names pods, containers and volumes.

use std::collections::BTreeMap;

/// Is `s` a DNS-1123 label (what Kubernetes requires of pod and container names)?
pub fn is_dns1123_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// Why a label key or value is refused, or `None` if it is fine. A key is `[PREFIX/]NAME`: NAME
/// 1-63 characters of a-z, A-Z, 0-9, `-`, `_`, `.`, starting and ending with a letter or digit;
/// PREFIX a DNS subdomain of at most 253 characters.
pub fn key_problem(key: &str) -> Option<String> {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix {
        let ok = !p.is_empty() && p.len() <= 253 && p.split('.').all(is_dns1123_label);
        if !ok {
            return Some(format!(
                "label key {key:?}: its prefix must be a DNS subdomain (e.g. example.com/)"
            ));
        }
    }
    if name.is_empty() || name.len() > 63 || !name_chars(name) {
        return Some(format!(
            "label key {key:?}: a name of 1-63 characters of a-z, A-Z, 0-9, '-', '_' and '.', \
             starting and ending with a letter or digit (an optional DNS prefix and '/' before it)"
        ));
    }
    None
}

/// Why a label value is refused: at most 63 characters, empty or as a key's name.
pub fn value_problem(key: &str, value: &str) -> Option<String> {
    (value.len() > 63 || !(value.is_empty() || name_chars(value))).then(|| {
        format!(
            "label {key:?}: value {value:?} must be empty or 1-63 characters of a-z, A-Z, 0-9, \
             '-', '_' and '.', starting and ending with a letter or digit"
        )
    })
}

fn name_chars(s: &str) -> bool {
    let b = s.as_bytes();
    b.first().is_some_and(u8::is_ascii_alphanumeric)
        && b.last().is_some_and(u8::is_ascii_alphanumeric)
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

/// One requirement of a selector.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    Exists(String),
    Missing(String),
}

/// A label selector: requirements joined by commas, all of which a pod's labels must meet
/// (`app=web`, `app==web`, `tier!=db`, `canary`, `!canary`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Selector(Vec<Requirement>);

impl Selector {
    /// Parses `text`; an error names the requirement that is not one.
    pub fn parse(text: &str) -> Result<Selector, String> {
        let mut reqs = Vec::new();
        for part in text.split(',').map(str::trim) {
            let req = if let Some((k, v)) = part.split_once("!=") {
                Requirement::NotEquals(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
                Requirement::Equals(k.trim().into(), v.trim().into())
            } else if let Some(k) = part.strip_prefix('!') {
                Requirement::Missing(k.trim().into())
            } else {
                Requirement::Exists(part.into())
            };
            let (key, value) = match &req {
                Requirement::Equals(k, v) | Requirement::NotEquals(k, v) => (k, Some(v)),
                Requirement::Exists(k) | Requirement::Missing(k) => (k, None),
            };
            if let Some(p) = key_problem(key) {
                return Err(format!("selector {part:?}: {p}"));
            }
            if let Some(p) = value.and_then(|v| value_problem(key, v)) {
                return Err(format!("selector {part:?}: {p}"));
            }
            reqs.push(req);
        }
        Ok(Selector(reqs))
    }

    /// Whether `labels` meet every requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.0.iter().all(|r| match r {
            Requirement::Equals(k, v) => labels.get(k) == Some(v),
            Requirement::NotEquals(k, v) => labels.get(k) != Some(v),
            Requirement::Exists(k) => labels.contains_key(k),
            Requirement::Missing(k) => !labels.contains_key(k),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_values_as_kubernetes_has_them() {
        for ok in ["app", "app.kubernetes.io/name", "a_b-c.d", "A1"] {
            assert_eq!(key_problem(ok), None, "{ok}");
        }
        for bad in [
            "",
            "-app",
            "app-",
            "a b",
            "/app",
            "Bad_Prefix!/x",
            &"a".repeat(64),
        ] {
            assert!(key_problem(bad).is_some(), "{bad:?}");
        }
        assert_eq!(value_problem("k", ""), None);
        assert_eq!(value_problem("k", "web-1"), None);
        assert!(value_problem("k", "web 1").is_some());
        assert!(value_problem("k", &"v".repeat(64)).is_some());
    }

    #[test]
    fn selectors_pick_as_kubectl_does() {
        let labels: BTreeMap<String, String> = [("app", "web"), ("tier", "front")]
            .map(|(k, v)| (k.into(), v.into()))
            .into();
        let m = |s: &str| Selector::parse(s).unwrap().matches(&labels);
        assert!(m("app=web"));
        assert!(m("app==web,tier"));
        assert!(m("app=web,tier!=db,!canary"));
        assert!(!m("app=db"));
        assert!(!m("canary"));
        assert!(!m("app=web,tier=back"));
        assert!(!m("tier!=front"));
        let e = Selector::parse("app=web,=x").unwrap_err();
        assert!(e.contains("\"=x\""), "{e}");
        assert!(Selector::parse("app=a b").is_err());
    }
}
