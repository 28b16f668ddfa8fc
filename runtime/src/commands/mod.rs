//! Subcommands and the options they share.

mod compile;
mod ctl;
mod daemon;
mod generate;
mod new;
mod run;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use peapod::config::{Config, Overrides};

/// Every container's last run exited 0 (or the pod was stopped on request).
pub(crate) const EXIT_OK: u8 = 0;
/// A container's last run failed (non-zero exit or trap).
pub(crate) const EXIT_FAILED: u8 = 1;
/// Bad input: a pod spec or config that does not validate. Nothing was created.
pub(crate) const EXIT_INVALID: u8 = 2;
/// The runtime failed (kernel, files, permissions). What was created was removed.
pub(crate) const EXIT_RUNTIME: u8 = 3;

/// Writes a line to standard output as a Unix tool does: when the reader has gone (`peapod ps |
/// head -1`) the command ends quietly with status 0; any other failure (`> /dev/full`) is said
/// once, and the status is [`EXIT_RUNTIME`]. Never a panic.
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::commands::write_out(format_args!("{}\n", format_args!($($arg)*)))
    };
}
pub(crate) use outln;

/// Writes `args` to standard output and flushes it; see [`outln`].
pub(crate) fn write_out(args: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_fmt(args).and_then(|()| out.flush()) {
        write_failed(&e);
    }
}

/// Ends the process after a failed write to standard output (see [`outln`]).
pub(crate) fn write_failed(e: &std::io::Error) -> ! {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        std::process::exit(i32::from(EXIT_OK));
    }
    eprintln!("peapod: cannot write to standard output: {e}");
    std::process::exit(i32::from(EXIT_RUNTIME));
}

/// The heading of the options every command takes, apart from the command's own.
const GLOBAL: &str = "Global options (also PEAPOD_* variables and the config file)";

/// Kubernetes-style pods of WebAssembly containers for small ARM boards.
#[derive(Parser, Debug)]
#[command(name = "peapod", version)]
pub(crate) struct Cli {
    /// Runtime config file [default: /etc/peapod/peapod.toml if it exists]
    #[arg(long, global = true, env = "PEAPOD_CONFIG", help_heading = GLOBAL)]
    config: Option<PathBuf>,
    /// Where namespace pins live (<run-dir>/netns/<pod>) [default: /run/peapod]
    #[arg(long, global = true, env = "PEAPOD_RUN_DIR", help_heading = GLOBAL)]
    run_dir: Option<PathBuf>,
    /// Where IP leases are kept [default: /var/lib/peapod]
    #[arg(long, global = true, env = "PEAPOD_STATE_DIR", help_heading = GLOBAL)]
    state_dir: Option<PathBuf>,
    /// Host bridge pods attach to [default: peapod0]
    #[arg(long, global = true, env = "PEAPOD_BRIDGE", help_heading = GLOBAL)]
    bridge: Option<String>,
    /// IPv4 subnet of the bridge [default: 10.66.0.0/22]
    #[arg(long, global = true, env = "PEAPOD_SUBNET", help_heading = GLOBAL)]
    subnet: Option<String>,
    /// Pods reach addresses outside the host, masqueraded (network.egress) [default: true]
    #[arg(long, global = true, env = "PEAPOD_EGRESS", value_name = "BOOL", help_heading = GLOBAL)]
    egress: Option<bool>,
    /// The daemon's API socket [default: <run-dir>/peapod.sock]
    #[arg(long, global = true, env = "PEAPOD_SOCKET", help_heading = GLOBAL)]
    socket: Option<PathBuf>,
    /// Pod specs the daemon keeps running [default: /etc/peapod/pods]
    #[arg(long, global = true, env = "PEAPOD_PODS_DIR", help_heading = GLOBAL)]
    pods_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    Run(run::Run),
    Compile(compile::Compile),
    New(new::New),
    Daemon(daemon::Daemon),
    Apply(ctl::Apply),
    Get(ctl::Get),
    Describe(ctl::Describe),
    Events(ctl::Events),
    Ps(ctl::Ps),
    Top(ctl::Top),
    Inspect(ctl::Inspect),
    Logs(ctl::Logs),
    Restart(ctl::Restart),
    Delete(ctl::Delete),
    Pull(ctl::Pull),
    Push(ctl::Push),
    Images(ctl::Images),
    Image(ctl::Image),
    Rollout(ctl::Rollout),
    Completion(generate::Completion),
    Man(generate::Man),
    /// (podman's and docker's words: a tip to `delete`)
    #[command(hide = true)]
    Stop(Tip),
    #[command(hide = true)]
    Rm(Tip),
}

/// The options only the daemon and `run` use (they make sandboxes): the verbs that talk to the
/// daemon still accept them (one environment may serve both) but leave them out of their help.
const SANDBOX_ONLY: [&str; 4] = ["bridge", "subnet", "egress", "pods_dir"];

/// The verbs that make no sandbox (they talk to the daemon, or to a registry).
const CLIENT_VERBS: [&str; 15] = [
    "apply", "get", "describe", "events", "ps", "top", "inspect", "logs", "restart", "delete",
    "pull", "images", "image", "rollout", "push",
];

/// The CLI's definition as it parses and as its help, completions and man pages show it:
/// [`Cli`]'s, with the [`SANDBOX_ONLY`] options hidden from the [`CLIENT_VERBS`]' help. (Each
/// of those verbs gets its own hidden copy of the global option before the command is built,
/// so the global one is not propagated to it; the value still reaches [`Cli`].)
pub(crate) fn command() -> clap::Command {
    let mut cmd = <Cli as clap::CommandFactory>::command();
    let hidden: Vec<clap::Arg> = (cmd.get_arguments())
        .filter(|a| SANDBOX_ONLY.contains(&a.get_id().as_str()))
        .map(|a| a.clone().hide(true))
        .collect();
    assert_eq!(hidden.len(), SANDBOX_ONLY.len(), "every one is an option");
    for verb in CLIENT_VERBS {
        cmd = cmd.mut_subcommand(verb, |sub| {
            hidden.iter().fold(sub, |sub, a| sub.arg(a.clone()))
        });
    }
    cmd
}

/// A verb of another tool: says which of peapod's to use.
#[derive(clap::Args, Debug)]
struct Tip {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    args: Vec<String>,
}

impl Cli {
    fn config(&self) -> Result<Config, peapod::config::ConfigError> {
        Config::load(
            self.config.as_deref(),
            &Overrides {
                run_dir: self.run_dir.clone(),
                state_dir: self.state_dir.clone(),
                bridge: self.bridge.clone(),
                subnet: self.subnet.clone(),
                egress: self.egress,
                socket: self.socket.clone(),
                pods_dir: self.pods_dir.clone(),
            },
        )
    }
}

/// Loads the config (exit 2 if it is invalid), sets up logging, runs the command.
pub(crate) fn exec(cli: Cli) -> anyhow::Result<ExitCode> {
    let config = match cli.config() {
        Ok(c) => c,
        Err(e) => {
            crate::logging::init("info");
            eprintln!("{e}");
            return Ok(ExitCode::from(EXIT_INVALID));
        }
    };
    crate::logging::init(&config.log_level);
    match cli.command {
        Command::Run(r) => r.exec(config),
        Command::Compile(c) => c.exec(),
        Command::New(c) => c.exec(),
        Command::Daemon(d) => d.exec(config),
        Command::Apply(c) => c.exec(config),
        Command::Get(c) => c.exec(config),
        Command::Describe(c) => c.exec(config),
        Command::Events(c) => c.exec(config),
        Command::Ps(c) => c.exec(config),
        Command::Top(c) => c.exec(config),
        Command::Inspect(c) => c.exec(config),
        Command::Logs(c) => c.exec(config),
        Command::Restart(c) => c.exec(config),
        Command::Delete(c) => c.exec(config),
        Command::Pull(c) => c.exec(config),
        Command::Push(c) => c.exec(config),
        Command::Images(c) => c.exec(config),
        Command::Image(c) => c.exec(config),
        Command::Rollout(c) => c.exec(config),
        Command::Completion(c) => c.exec(),
        Command::Man(c) => c.exec(),
        Command::Stop(_) | Command::Rm(_) => {
            eprintln!(
                "peapod: no such command: `peapod delete POD` stops a pod and frees its namespace, \
                 IP and logs; `peapod restart POD/CONTAINER` restarts one container in place"
            );
            Ok(ExitCode::from(EXIT_INVALID))
        }
    }
}
