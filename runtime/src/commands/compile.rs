//! `peapod compile`: precompile a module for a board on a fast machine.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

use super::{EXIT_INVALID, EXIT_OK};

/// Compile a .wasm (component or core module) ahead of time into a .cwasm that `peapod run` loads
/// without compiling. The .cwasm is for one target and this peapod's wasmtime version and engine
/// settings; others are refused with a clear error. It carries a checksum: a modified file is
/// refused too.
#[derive(clap::Args, Debug)]
pub(super) struct Compile {
    /// Target triple, e.g. aarch64-unknown-linux-gnu [default: this machine]
    #[arg(long)]
    target: Option<String>,
    /// Output file [default: the input with the extension .cwasm]
    #[arg(short, long)]
    output: Option<PathBuf>,
    /// The module to compile
    module: PathBuf,
}

impl Compile {
    pub(super) fn exec(self) -> anyhow::Result<ExitCode> {
        let bytes = std::fs::read(&self.module)
            .with_context(|| format!("cannot read {}", self.module.display()))?;
        let sealed = match peapod::wasm::executor::precompile(&bytes, self.target.as_deref()) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("{}: {e:#}", self.module.display());
                return Ok(ExitCode::from(EXIT_INVALID));
            }
        };
        let out = self
            .output
            .unwrap_or_else(|| self.module.with_extension("cwasm"));
        std::fs::write(&out, &sealed).with_context(|| format!("cannot write {}", out.display()))?;
        eprintln!(
            "{} -> {} ({} bytes, target {})",
            self.module.display(),
            out.display(),
            sealed.len(),
            self.target.as_deref().unwrap_or("host")
        );
        Ok(ExitCode::from(EXIT_OK))
    }
}
