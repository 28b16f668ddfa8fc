//! `peapod pull`, `peapod images`, `peapod image prune`: modules from OCI registries, kept by
//! the daemon in its state dir.

use super::*;
use peapod::wire::{ImageList, ImageView, Pruned, PullRequest};

/// Pull a module from an OCI registry into the board's store (a tag is asked for again)
#[derive(clap::Args, Debug)]
pub(crate) struct Pull {
    /// oci://REGISTRY/REPO:TAG or oci://REGISTRY/REPO@sha256:DIGEST (the scheme may be left out)
    reference: String,
}

/// Push a module file to an OCI registry as a WASM artifact (no daemon: from a build machine too)
#[derive(clap::Args, Debug)]
pub(crate) struct Push {
    /// The .wasm file (a component or a core module)
    file: PathBuf,
    /// oci://REGISTRY/REPO:TAG (the scheme may be left out)
    reference: String,
}

impl Push {
    pub(crate) fn exec(self, config: Config) -> anyhow::Result<ExitCode> {
        let image = match reference(&self.reference) {
            Ok(i) => i,
            Err(code) => return Ok(code),
        };
        let pushed =
            runtime()?.block_on(peapod::images::push(&config, &self.file, &image.reference));
        Ok(match pushed {
            Ok(digest) => {
                outln!(
                    "pushed {} as oci://{}@{digest}",
                    self.file.display(),
                    image.reference
                );
                ExitCode::from(EXIT_OK)
            }
            Err(e) => {
                eprintln!("peapod: {e}");
                ExitCode::from(EXIT_FAILED)
            }
        })
    }
}

/// `oci://REF` or `REF`, checked as a spec's `module` is; exit 2 when it is not one.
fn reference(text: &str) -> Result<peapod::spec::Image, ExitCode> {
    peapod::spec::Image::reference(text).map_err(|e| {
        eprintln!("peapod: reference: {e}");
        ExitCode::from(EXIT_INVALID)
    })
}

/// List the modules pulled from registries: reference, digest, size and the pods that run them
#[derive(clap::Args, Debug)]
pub(crate) struct Images {
    /// Show the module layer's digest and media type too
    #[arg(long)]
    digests: bool,
}

/// Manage the modules pulled from registries
#[derive(clap::Args, Debug)]
pub(crate) struct Image {
    #[command(subcommand)]
    verb: ImageVerb,
}

#[derive(clap::Subcommand, Debug)]
enum ImageVerb {
    /// Remove every stored module no pod runs (root only)
    Prune,
    /// As `peapod images`
    #[command(alias = "list")]
    Ls(Images),
    /// As `peapod pull`
    Pull(Pull),
}

impl Pull {
    pub(crate) fn exec(self, config: Config) -> anyhow::Result<ExitCode> {
        // (The daemon checks the reference: a bad one is invalid input, exit 2, as here.)
        let client = Client::new(&config.socket);
        let req = PullRequest {
            reference: self.reference,
        };
        let r = runtime()?.block_on(client.json::<ImageView>(
            Method::POST,
            "/v1/images/pull",
            Some(&req),
        ));
        Ok(done(r, |v| {
            let p = v.pulled;
            outln!(
                "pulled oci://{} ({}, {}): module {}",
                p.reference,
                p.manifest,
                binary_size(p.size),
                p.module
            )
        }))
    }
}

impl Images {
    pub(crate) fn exec(self, config: Config) -> anyhow::Result<ExitCode> {
        let client = Client::new(&config.socket);
        let r = runtime()?.block_on(client.get::<ImageList>("/v1/images"));
        let now = peapod::wire::epoch_secs(std::time::SystemTime::now());
        Ok(done(r, |list| {
            let mut header = vec!["REFERENCE", "DIGEST", "SIZE", "PULLED", "PODS"];
            if self.digests {
                header.extend(["MODULE", "MEDIA TYPE"]);
            }
            let mut rows = vec![header.into_iter().map(String::from).collect::<Vec<_>>()];
            for i in list.images {
                let p = &i.pulled;
                let mut row = vec![
                    format!("oci://{}", p.reference),
                    short(&p.manifest),
                    binary_size(p.size),
                    format!("{} ago", age(now.saturating_sub(p.pulled_at))),
                    match (i.pods.is_empty(), i.kept_by.is_empty()) {
                        (true, true) => "-".into(),
                        (false, true) => i.pods.join(","),
                        (true, false) => format!("(kept by {})", i.kept_by.join(",")),
                        (false, false) => {
                            format!("{} (kept by {})", i.pods.join(","), i.kept_by.join(","))
                        }
                    },
                ];
                if self.digests {
                    row.extend([p.module.clone(), p.media_type.clone()]);
                }
                rows.push(row);
            }
            print_table(&rows);
        }))
    }
}

/// `sha256:0123456789ab`: enough of a digest to tell images apart, as `docker images` prints.
fn short(digest: &str) -> String {
    digest.chars().take("sha256:".len() + 12).collect()
}

impl Image {
    pub(crate) fn exec(self, config: Config) -> anyhow::Result<ExitCode> {
        match self.verb {
            ImageVerb::Ls(i) => i.exec(config),
            ImageVerb::Pull(p) => p.exec(config),
            ImageVerb::Prune => {
                let client = Client::new(&config.socket);
                let r = runtime()?.block_on(client.json::<Pruned>(
                    Method::POST,
                    "/v1/images/prune",
                    None::<&()>,
                ));
                Ok(done(r, |p| {
                    for i in &p.removed {
                        let p = &i.pulled;
                        outln!("removed oci://{} ({})", p.reference, short(&p.manifest));
                    }
                    outln!(
                        "{} image(s) removed, {} freed",
                        p.removed.len(),
                        binary_size(p.freed)
                    );
                }))
            }
        }
    }
}
