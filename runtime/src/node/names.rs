//! Which peapod pod is which cluster pod. A cluster pod's name is unique in its namespace and
//! may be a DNS subdomain of 253 characters; a peapod pod's is a DNS label unique on the board:
//! `NAMESPACE-NAME` when that is one, else its first characters and a hash of both. The pod's
//! labels ([`super::UID_LABEL`], ...) say which cluster pod it runs.

use crate::spec::is_dns1123_label;

/// The peapod pod that runs cluster pod `namespace/name`.
pub(super) fn pod_name(namespace: &str, name: &str) -> String {
    let plain = format!("{namespace}-{name}");
    if is_dns1123_label(&plain) {
        return plain;
    }
    let hash = crate::hash::sha256_hex(format!("{namespace}/{name}").as_bytes());
    let stem: String = plain
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .take(63 - 1 - 10)
        .collect();
    format!("{}-{}", stem.trim_end_matches('-'), &hash[..10])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_labels_and_stay_apart() {
        assert_eq!(pod_name("default", "web"), "default-web");
        let long = "a".repeat(80);
        let n = pod_name("default", &long);
        assert!(is_dns1123_label(&n), "{n}");
        assert_ne!(n, pod_name("default", &"a".repeat(81)));
        let dotted = pod_name("default", "web.v1");
        assert!(is_dns1123_label(&dotted), "{dotted}");
        assert_ne!(dotted, pod_name("default", "web-v1"));
    }
}
