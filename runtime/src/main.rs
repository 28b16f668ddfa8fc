//! The `peapod` command: a thin shell over the library, one file per subcommand.

mod commands;
mod logging;

use std::process::ExitCode;

use clap::FromArgMatches;

fn main() -> ExitCode {
    let matches = commands::command().get_matches();
    let cli = commands::Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    match commands::exec(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("peapod: {e:#}");
            ExitCode::from(commands::EXIT_RUNTIME)
        }
    }
}
