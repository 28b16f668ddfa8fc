//! `peapod apply`.

use super::*;

/// Create or update pods from spec files (each re-created when its spec or modules changed).
#[derive(clap::Args, Debug)]
pub(crate) struct Apply {
    /// A pod spec (TOML, or a Kubernetes Pod manifest in YAML or JSON); a directory: every
    /// *.toml, *.yaml and *.yml in it and its subdirectories; `-` reads one
    /// spec from standard input (its module paths are relative to the current directory). May
    /// be repeated.
    #[arg(short = 'f', long = "filename", required = true)]
    files: Vec<PathBuf>,
    /// Directories are read recursively (always: accepted for kubectl's habit)
    #[arg(short = 'R', long)]
    recursive: bool,
}

impl Apply {
    pub(crate) fn exec(self, config: Config) -> anyhow::Result<ExitCode> {
        let specs = match spec_texts(&self.files)? {
            Ok(specs) => specs,
            Err(code) => return Ok(code),
        };
        let client = Client::new(&config.socket);
        let rt = runtime()?;
        // The worst outcome decides the exit status (invalid input over a refusal over none).
        let mut worst = EXIT_OK;
        for (path, text) in specs {
            let code = match text {
                Err(e) => {
                    eprintln!("{}: cannot read pod spec: {e}", path.display());
                    EXIT_INVALID
                }
                Ok(text) => {
                    let source = std::path::absolute(&path).context("absolute path")?;
                    let req = peapod::wire::ApplyRequest { source, spec: text };
                    match rt.block_on(client.apply(&req)) {
                        Ok(a) => {
                            let ip = ip_or_dash(a.pod.ip);
                            outln!("pod/{} {} (ip {ip})", a.pod.name, a.action);
                            EXIT_OK
                        }
                        Err(e) => match report(e) {
                            // No daemon: the other specs would fail the same way.
                            EXIT_RUNTIME => return Ok(ExitCode::from(EXIT_RUNTIME)),
                            code => code,
                        },
                    }
                }
            };
            worst = worst.max(code);
        }
        Ok(ExitCode::from(worst))
    }
}
