//! The `peapod` command: a thin shell over the library, one file per subcommand.

mod commands;
mod logging;

use std::process::ExitCode;

use clap::FromArgMatches;

fn main() -> ExitCode {
    fewer_malloc_arenas();
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

/// At most one malloc arena per core, not glibc's eight: a daemon runs a thread per pod, each
/// thread that meets a busy arena gets one of its own, and each arena keeps what was freed in it.
/// 50 pods held 442 KiB a pod of anonymous memory with glibc's default, 386 with this (debug
/// build, `bench/daemon`). `MALLOC_ARENA_MAX` in the environment still decides when set.
fn fewer_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let cores = i32::try_from(cores).unwrap_or(i32::MAX);
        // SAFETY: mallopt changes one malloc setting; called first thing, on the main thread.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, cores);
        }
    }
}
