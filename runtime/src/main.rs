//! The `peapod` command: a thin shell over the library, one file per subcommand.

mod commands;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = commands::Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PEAPOD_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    match commands::exec(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("peapod: {e:#}");
            ExitCode::from(commands::EXIT_RUNTIME)
        }
    }
}
