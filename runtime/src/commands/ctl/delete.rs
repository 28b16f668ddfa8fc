//! `peapod delete`.

use super::*;

/// Delete pods created with `apply`: their modules stop, their namespaces, IPs and logs are
/// freed. Name them (`NAME` or `pod/NAME`), or the spec files they came from (`-f`), or `--all`.
#[derive(clap::Args, Debug)]
pub(crate) struct Delete {
    /// Pods to delete
    #[arg(required_unless_present_any = ["files", "all"])]
    pods: Vec<String>,
    /// The pods these specs name (a file, a directory of them, or `-`), as `apply -f` reads them
    #[arg(short = 'f', long = "filename", conflicts_with = "all")]
    files: Vec<PathBuf>,
    /// Every pod applied through the API (the pods directory's belong to their files)
    #[arg(long, conflicts_with = "pods")]
    all: bool,
}

impl Delete {
    pub(crate) fn exec(self, config: Config) -> anyhow::Result<ExitCode> {
        let client = Client::new(&config.socket);
        let rt = runtime()?;
        let mut names: Vec<String> = Vec::new();
        for p in &self.pods {
            match pod_name(p.strip_prefix("pod/").unwrap_or(p)) {
                Ok(n) => names.push(n.to_string()),
                Err(code) => return Ok(code),
            }
        }
        let specs = match spec_texts(&self.files)? {
            Ok(specs) => specs,
            Err(code) => return Ok(code),
        };
        for (path, text) in specs {
            let parsed = text
                .map_err(|e| format!("{}: cannot read pod spec: {e}", path.display()))
                .and_then(|t| peapod::spec::PodSpec::parse(&path, &t).map_err(|e| e.to_string()));
            match parsed {
                Ok(spec) => names.push(spec.name),
                Err(e) => {
                    eprintln!("{e}");
                    return Ok(ExitCode::from(EXIT_INVALID));
                }
            }
        }
        if self.all {
            match rt.block_on(client.pods()) {
                Ok(list) => names.extend(
                    (list.pods.into_iter())
                        .filter(|p| p.source == "api" && p.status != "terminating")
                        .map(|p| p.name),
                ),
                Err(e) => return Ok(fail(e)),
            }
        }
        // The worst outcome decides the exit status.
        let mut worst = EXIT_OK;
        for pod in &names {
            match rt.block_on(client.delete(pod)) {
                Ok(_) => outln!("pod/{pod} deleted"),
                Err(e) => {
                    let missing = matches!(
                        e,
                        ClientError::Api {
                            status: StatusCode::NOT_FOUND,
                            ..
                        }
                    );
                    let code = report(e);
                    if missing {
                        hint_run(&config, pod);
                    }
                    if code == EXIT_RUNTIME {
                        return Ok(ExitCode::from(code));
                    }
                    worst = worst.max(code);
                }
            }
        }
        Ok(ExitCode::from(worst))
    }
}
