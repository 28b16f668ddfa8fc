//! `peapod completion SHELL` and `peapod man`: generated from the CLI's own definitions, so they
//! never disagree with it (the .deb installs both, made by `scripts/deb`).

use std::path::PathBuf;
use std::process::ExitCode;

use super::{EXIT_OK, outln};
use anyhow::Context;

/// Print a shell completion script: `source <(peapod completion bash)`, or install it where
/// your shell looks (the .deb does for bash, zsh and fish)
#[derive(clap::Args, Debug)]
pub(super) struct Completion {
    shell: clap_complete::Shell,
}

impl Completion {
    pub(super) fn exec(self) -> anyhow::Result<ExitCode> {
        let mut out = Vec::new();
        clap_complete::generate(self.shell, &mut super::command(), "peapod", &mut out);
        super::write_out(format_args!("{}", String::from_utf8_lossy(&out)));
        Ok(ExitCode::from(EXIT_OK))
    }
}

/// Print the man page `peapod(1)`; with `--dir`, write it and one page per command
/// (`peapod-get(1)`, ...) there
#[derive(clap::Args, Debug)]
pub(super) struct Man {
    /// Write `peapod.1` and `peapod-COMMAND.1` into this directory
    #[arg(long)]
    dir: Option<PathBuf>,
}

impl Man {
    pub(super) fn exec(self) -> anyhow::Result<ExitCode> {
        let cmd = super::command();
        let Some(dir) = self.dir else {
            let mut out = Vec::new();
            clap_mangen::Man::new(cmd).render(&mut out)?;
            super::write_out(format_args!("{}", String::from_utf8_lossy(&out)));
            return Ok(ExitCode::from(EXIT_OK));
        };
        std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        clap_mangen::generate_to(cmd, &dir)
            .with_context(|| format!("write to {}", dir.display()))?;
        outln!("{}", dir.display());
        Ok(ExitCode::from(EXIT_OK))
    }
}
