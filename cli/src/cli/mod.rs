//! The command line of `c10m`, on clap (derive): `c10m serve` and `c10m doctor`, and the log
//! options both take.

mod doctor;
mod log;
mod serve;

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

pub use doctor::DoctorArgs;
pub use log::LogArgs;
pub use serve::ServeArgs;

/// Shown after `c10m --help`.
const AFTER_HELP: &str = "\
c10m serve --help lists every server setting; c10m doctor --help the host check.

Exit status: 0 on success; 1 when the server cannot start or stops on an error, or when the
doctor finds a setting low; 2 on bad usage or settings the engine cannot run with.";

/// c10m: a sharded WebSocket engine for millions of connections per host.
#[derive(Debug, Parser)]
#[command(
    name = "c10m",
    version,
    propagate_version = true,
    after_help = AFTER_HELP,
    arg_required_else_help = true,
    // A flag given twice keeps its last value, as the hand-written parser did.
    args_override_self = true
)]
pub struct Cli {
    #[command(flatten)]
    pub log: LogArgs,

    #[command(subcommand)]
    pub command: Command,
}

/// What to run.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the WebSocket server (apps: /echo, /pubsub)
    Serve(Box<ServeArgs>),
    /// Check this host's limits for a target connection count
    Doctor(DoctorArgs),
}

/// Parses the command line (clap prints usage errors and exits 2), starts logging and runs the
/// command.
pub fn main() -> ExitCode {
    let matches = command().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    log::init(&cli.log);
    match cli.command {
        Command::Serve(args) => serve::run(&args),
        Command::Doctor(args) => doctor::run(&args),
    }
}

/// The clap command, with each server setting's default taken from `ServerConfig::default()`
/// (written once, in the engine) shown in its help.
pub fn command() -> clap::Command {
    Cli::command().mut_subcommand("serve", serve::with_defaults)
}

/// Reports a usage error the way clap reports its own (`error: ...` on stderr, exit status 2):
/// it is the command's answer to its input, not a log line.
fn usage_error(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {msg}\n\nFor more information, try '--help'.");
    ExitCode::from(2)
}
