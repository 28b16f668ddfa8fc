//! `peapod new sidecar NAME`: a new sidecar crate from the template (`guests/template`), on the
//! SDK and the harness of a peapod source tree, that builds, passes its test and runs next to
//! the demo app.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;

use super::{EXIT_INVALID, EXIT_OK, outln};

/// Make a new sidecar (a wasm32-wasip2 guest on the sidecar SDK, with a harness test and a pod
/// file that runs it next to the demo app): `new sidecar NAME`
#[derive(clap::Args, Debug)]
pub(super) struct New {
    /// What to make
    #[arg(value_parser = ["sidecar"])]
    kind: String,
    /// Its name: a crate, binary and container name (a-z, 0-9 and '-')
    name: String,
    /// The directory to make [default: ./NAME]
    #[arg(long)]
    dir: Option<PathBuf>,
    /// A peapod source tree, for the SDK and the harness [default: the one the current
    /// directory is in]
    #[arg(long)]
    peapod: Option<PathBuf>,
}

/// The template's files: (path in the new crate, text). `{{name}}` and the paths are filled in.
const FILES: &[(&str, &str)] = &[
    (
        "Cargo.toml",
        include_str!("../../../guests/template/Cargo.toml.in"),
    ),
    (
        "src/main.rs",
        include_str!("../../../guests/template/main.rs.in"),
    ),
    (
        "tests/sidecar.rs",
        include_str!("../../../guests/template/test.rs.in"),
    ),
    (
        "pod.toml",
        include_str!("../../../guests/template/pod.toml.in"),
    ),
    (
        "README.md",
        include_str!("../../../guests/template/README.md.in"),
    ),
    (".gitignore", "/target\n"),
];

impl New {
    pub(super) fn exec(self) -> anyhow::Result<ExitCode> {
        if !peapod::spec::is_dns1123_label(&self.name) {
            eprintln!(
                "peapod: {:?} is not a sidecar name: 1-63 characters of a-z, 0-9 and '-', \
                 starting and ending with a letter or digit",
                self.name
            );
            return Ok(ExitCode::from(EXIT_INVALID));
        }
        let root = match self.peapod.clone().map(Ok).unwrap_or_else(find_source) {
            Ok(r) if r.join("guests/sdk/Cargo.toml").is_file() => r
                .canonicalize()
                .with_context(|| format!("{}", r.display()))?,
            Ok(r) => {
                eprintln!(
                    "peapod: --peapod {}: not a peapod source tree (no guests/sdk/Cargo.toml)",
                    r.display()
                );
                return Ok(ExitCode::from(EXIT_INVALID));
            }
            Err(why) => {
                eprintln!("peapod: {why}");
                return Ok(ExitCode::from(EXIT_INVALID));
            }
        };
        let dir = self
            .dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(&self.name));
        if dir.exists() {
            eprintln!(
                "peapod: {} exists already: name a new directory (--dir)",
                dir.display()
            );
            return Ok(ExitCode::from(EXIT_INVALID));
        }
        let fill = |text: &str| {
            text.replace("{{name}}", &self.name)
                .replace("{{sdk}}", &root.join("guests/sdk").display().to_string())
                .replace(
                    "{{harness}}",
                    &root.join("guests/harness").display().to_string(),
                )
                .replace(
                    "{{kv_server}}",
                    &root
                        .join("target/guests/kv-server.wasm")
                        .display()
                        .to_string(),
                )
        };
        // Written beside it, then renamed into place: all of it or nothing.
        let parent = match dir.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let tmp = parent.join(format!(".{}.peapod-new-{}", self.name, std::process::id()));
        // The source tree's lock file, so the new crate builds on the crates peapod was
        // tested with (and reuses their builds); cargo adds what it lacks.
        let lock = root.join("Cargo.lock");
        let written = write_all(&tmp, |text| fill(text))
            .and_then(|()| match lock.is_file() {
                true => std::fs::copy(&lock, tmp.join("Cargo.lock"))
                    .map(drop)
                    .with_context(|| format!("{}", lock.display())),
                false => Ok(()),
            })
            .and_then(|()| {
                std::fs::rename(&tmp, &dir).with_context(|| format!("{}", dir.display()))
            });
        if let Err(e) = written {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e);
        }
        outln!("{}", dir.display());
        eprintln!(
            "made sidecar {:?} in {}: `cargo test` there runs it in the harness; \
             `cargo build --release --target wasm32-wasip2 --target-dir target/wasm`, then \
             `sudo peapod run pod.toml` runs it next to the demo app",
            self.name,
            dir.display()
        );
        Ok(ExitCode::from(EXIT_OK))
    }
}

/// The template's files, filled, under `dir` (made here).
fn write_all(dir: &Path, fill: impl Fn(&str) -> String) -> anyhow::Result<()> {
    for (path, text) in FILES {
        let to = dir.join(path);
        if let Some(d) = to.parent() {
            std::fs::create_dir_all(d).with_context(|| format!("{}", d.display()))?;
        }
        std::fs::write(&to, fill(text)).with_context(|| format!("{}", to.display()))?;
    }
    Ok(())
}

/// The peapod source tree the current directory is in.
fn find_source() -> Result<PathBuf, String> {
    let here = std::env::current_dir().map_err(|e| format!("current directory: {e}"))?;
    let mut at: Option<&Path> = Some(&here);
    while let Some(dir) = at {
        if dir.join("guests/sdk/Cargo.toml").is_file() {
            return Ok(dir.to_path_buf());
        }
        at = dir.parent();
    }
    Err(format!(
        "{} is not inside a peapod source tree: give one with --peapod PATH (the SDK and the \
         test harness come from it)",
        here.display()
    ))
}
