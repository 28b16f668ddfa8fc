//! Runtime settings: where pins and state live, and the host network pods attach to.
//!
//! Read from a TOML file (`/etc/peapod/peapod.toml` when it exists) and overridden by flags, so
//! tests and a second installation can run beside a real one with their own bridge and dirs.
//!
//! ```toml
//! run_dir = "/run/peapod"        # namespace pins: <run_dir>/netns/<pod>
//! state_dir = "/var/lib/peapod"  # IP leases
//! [network]
//! bridge = "peapod0"
//! subnet = "10.66.0.0/24"        # the bridge takes the first address, pods the rest
//! ```

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use ipnet::Ipv4Net;
use serde::Deserialize;

pub const DEFAULT_CONFIG: &str = "/etc/peapod/peapod.toml";
pub const DEFAULT_RUN_DIR: &str = "/run/peapod";
pub const DEFAULT_STATE_DIR: &str = "/var/lib/peapod";
pub const DEFAULT_BRIDGE: &str = "peapod0";
/// Clear of podman (10.88.0.0/16, and 10.89.x.0/24 for its extra networks), docker
/// (172.17.0.0/16 and up), k3s (10.42.0.0/16, 10.43.0.0/16) and common home LANs.
pub const DEFAULT_SUBNET: &str = "10.66.0.0/24";

/// Settings every command shares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub run_dir: PathBuf,
    pub state_dir: PathBuf,
    pub bridge: String,
    pub subnet: Ipv4Net,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            run_dir: DEFAULT_RUN_DIR.into(),
            state_dir: DEFAULT_STATE_DIR.into(),
            bridge: DEFAULT_BRIDGE.into(),
            subnet: DEFAULT_SUBNET.parse().expect("default subnet"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{}: cannot read config: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {message}", path.display())]
    Invalid { path: PathBuf, message: String },
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    run_dir: Option<PathBuf>,
    state_dir: Option<PathBuf>,
    #[serde(default)]
    network: RawNetwork,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawNetwork {
    bridge: Option<String>,
    subnet: Option<String>,
}

/// Values given on the command line; each wins over the file.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub run_dir: Option<PathBuf>,
    pub state_dir: Option<PathBuf>,
    pub bridge: Option<String>,
    pub subnet: Option<String>,
}

impl Config {
    /// Loads `file` (or the default file if it exists; defaults otherwise) and applies `overrides`.
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> Result<Config, ConfigError> {
        let (path, raw) = match file {
            Some(p) => (p.to_path_buf(), Some(read(p)?)),
            None if Path::new(DEFAULT_CONFIG).exists() => {
                let p = Path::new(DEFAULT_CONFIG);
                (p.to_path_buf(), Some(read(p)?))
            }
            None => (PathBuf::from("(command line)"), None),
        };
        let raw = match raw {
            Some(text) => toml::from_str::<RawConfig>(&text).map_err(|e| ConfigError::Invalid {
                path: path.clone(),
                message: e.to_string().trim().to_string(),
            })?,
            None => RawConfig::default(),
        };
        let d = Config::default();
        let invalid = |message: String| ConfigError::Invalid {
            path: path.clone(),
            message,
        };
        let subnet = match overrides.subnet.clone().or(raw.network.subnet) {
            None => d.subnet,
            Some(s) => parse_subnet(&s).map_err(|m| invalid(format!("network.subnet: {m}")))?,
        };
        let bridge = overrides
            .bridge
            .clone()
            .or(raw.network.bridge)
            .unwrap_or(d.bridge);
        if bridge.is_empty() || bridge.len() > 15 || bridge.contains(['/', ' ', ':']) {
            return Err(invalid(format!(
                "network.bridge: {bridge:?} is not a valid interface name (1-15 characters, no '/', ':' or space)"
            )));
        }
        Ok(Config {
            run_dir: overrides
                .run_dir
                .clone()
                .or(raw.run_dir)
                .unwrap_or(d.run_dir),
            state_dir: overrides
                .state_dir
                .clone()
                .or(raw.state_dir)
                .unwrap_or(d.state_dir),
            bridge,
            subnet,
        })
    }

    /// Directory of namespace pins: `<run_dir>/netns`.
    pub fn netns_dir(&self) -> PathBuf {
        self.run_dir.join("netns")
    }

    /// The pin of one pod's namespace.
    pub fn netns_path(&self, pod: &str) -> PathBuf {
        self.netns_dir().join(pod)
    }

    /// The bridge's own address, the pods' default gateway: the subnet's first host.
    pub fn gateway(&self) -> Ipv4Addr {
        self.subnet
            .hosts()
            .next()
            .expect("subnet has hosts (checked)")
    }
}

fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn parse_subnet(s: &str) -> Result<Ipv4Net, String> {
    let net: Ipv4Net = s
        .parse()
        .map_err(|_| format!("{s:?} is not an IPv4 subnet like \"10.66.0.0/24\""))?;
    if net.prefix_len() > 29 {
        return Err(format!(
            "{s:?} is too small: a /29 or larger is needed (gateway + pods)"
        ));
    }
    if net.network() != net.addr() {
        return Err(format!(
            "{s:?} has host bits set; did you mean \"{}\"?",
            net.trunc()
        ));
    }
    Ok(net)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_then_flags() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("peapod.toml");
        std::fs::write(
            &f,
            "state_dir = \"/tmp/s\"\n[network]\nbridge = \"br9\"\nsubnet = \"10.9.0.0/24\"\n",
        )
        .unwrap();
        let c = Config::load(
            Some(&f),
            &Overrides {
                bridge: Some("br7".into()),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(c.bridge, "br7");
        assert_eq!(c.state_dir, Path::new("/tmp/s"));
        assert_eq!(c.run_dir, Path::new(DEFAULT_RUN_DIR));
        assert_eq!(c.gateway(), Ipv4Addr::new(10, 9, 0, 1));
        assert_eq!(c.netns_path("p"), Path::new("/run/peapod/netns/p"));
    }

    #[test]
    fn bad_values_are_named() {
        let o = |s: &str| Overrides {
            subnet: Some(s.into()),
            ..Default::default()
        };
        let none = Some(Path::new("/nonexistent/peapod.toml"));
        assert!(matches!(
            Config::load(none, &Overrides::default()),
            Err(ConfigError::Read { .. })
        ));
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.toml");
        std::fs::write(&f, "").unwrap();
        for bad in ["10.0.0.0/30", "10.0.0.1/24", "nope"] {
            let e = Config::load(Some(&f), &o(bad)).unwrap_err().to_string();
            assert!(e.contains("network.subnet"), "{e}");
        }
        std::fs::write(&f, "[network]\nbrige = \"x\"\n").unwrap();
        let e = Config::load(Some(&f), &Overrides::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field `brige`"), "{e}");
    }
}
