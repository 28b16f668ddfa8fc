//! `peapod apply`.

use super::*;

/// Create or update pods from spec files (each re-created when its spec or modules changed).
#[derive(clap::Args, Debug)]
pub(crate) struct Apply {
    /// A pod spec (TOML); a directory: every *.toml in it; `-` reads one spec from standard
    /// input (its module paths are relative to the current directory). May be repeated.
    #[arg(short = 'f', long = "filename", required = true)]
    files: Vec<PathBuf>,
}

impl Apply {
    pub(crate) fn exec(self, config: Config) -> anyhow::Result<ExitCode> {
        // Every spec named, in order: a directory's *.toml sorted; `-` is standard input.
        let mut specs: Vec<(PathBuf, std::io::Result<String>)> = Vec::new();
        for f in &self.files {
            if f.as_os_str() == "-" {
                let mut text = String::new();
                let r = std::io::Read::read_to_string(&mut std::io::stdin(), &mut text);
                let source = std::env::current_dir()
                    .context("current directory")?
                    .join("(stdin)");
                specs.push((source, r.map(|_| text)));
            } else if f.is_dir() {
                let paths = match peapod::spec::toml_files(f) {
                    Ok(paths) => paths,
                    Err(e) => {
                        eprintln!("{}: {e}", f.display());
                        return Ok(ExitCode::from(EXIT_INVALID));
                    }
                };
                if paths.is_empty() {
                    eprintln!("{}: no *.toml pod specs in this directory", f.display());
                    return Ok(ExitCode::from(EXIT_INVALID));
                }
                for p in paths {
                    let text = std::fs::read_to_string(&p);
                    specs.push((p, text));
                }
            } else {
                specs.push((f.clone(), std::fs::read_to_string(f)));
            }
        }
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
