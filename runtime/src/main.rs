//! The `peapod` command: a thin shell over the library, one file per subcommand.

mod commands;
mod logging;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = commands::Cli::parse();
    match commands::exec(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("peapod: {e:#}");
            ExitCode::from(commands::EXIT_RUNTIME)
        }
    }
}
