//! `c10m-tune-plan --connections N`: the plan scripts/tune.sh applies, one setting per line:
//!
//! ```text
//! key<TAB>recommended<TAB>current<TAB>verdict<TAB>reason
//! ```
//!
//! Values with several numbers are space-separated (`1024 65535`). The verdict is `ok`, `low`,
//! or, read from inside a network namespace (a container), `host` for a host-wide setting: its
//! current value is `-` and its recommended column says what N needs (`>=2065536`); it is set
//! on the host, never from the namespace. `--human` prints the `c10m doctor` table and the
//! process ceiling instead. Exit status: 0 with a plan (whatever the verdicts), 1 when the host
//! cannot be read or cannot hold N, 2 for bad usage.
//!
//! The command line is clap's (derive), as in `c10m` and `c10m-loadtest`: `--version`,
//! suggestions for mistyped flags, usage errors on stderr with exit status 2.

#![forbid(unsafe_code)]

use std::fmt;
use std::path::PathBuf;
use std::process::ExitCode;

use c10m_sysctl::{
    CountError, ParseScopeError, Probe, Row, Scopes, parse_count, plan, process_ceiling,
};
use clap::Parser;

/// Shown after `--help`.
const AFTER_HELP: &str = "\
Prints one line per setting: key<TAB>recommended<TAB>current<TAB>verdict<TAB>reason. The
verdict is ok, low, or host: a host-wide setting read from inside a network namespace (a
container), whose current value is - and whose recommended column says what N needs
(>=2065536); it is set on the host, never from the namespace.

Exit status: 0 with a plan (whatever the verdicts); 1 when the host cannot be read or cannot
hold N; 2 on bad usage.";

/// The kernel and session settings N connections need, read from this host, as
/// scripts/tune.sh applies them.
#[derive(Debug, Parser)]
#[command(
    name = "c10m-tune-plan",
    version,
    after_help = AFTER_HELP,
    // A flag given twice keeps its last value, as the hand-written parser did.
    args_override_self = true
)]
struct Cli {
    /// Target number of connections (1000000, 1_000_000, 1m, 250k; > 0)
    // `-5` is a value to refuse with the count grammar's message, not an unknown flag.
    #[arg(long, value_name = "N", value_parser = connections, allow_negative_numbers = true)]
    connections: u64,

    /// Read and plan only these scopes: netns, host, session (comma-separated) or all
    #[arg(long, value_name = "SCOPES", default_value = "all", value_parser = scopes)]
    only: Scopes,

    /// Read a captured /proc tree (DIR/meminfo, DIR/sys/..., DIR/self/limits)
    #[arg(long, value_name = "DIR")]
    proc_root: Option<PathBuf>,

    /// Print the `c10m doctor` table and the process ceiling instead of TAB-separated lines
    #[arg(long)]
    human: bool,
}

fn main() -> ExitCode {
    // --help and --version go to stdout (exit 0); usage errors to stderr (exit 2).
    let cli = Cli::parse();
    let probe = match &cli.proc_root {
        Some(root) => Probe::snapshot(root),
        None => Probe::live(),
    };
    let host = match probe.scopes(cli.only).read() {
        Ok(host) => host,
        Err(e) => {
            eprintln!("c10m-tune-plan: {e}");
            return ExitCode::FAILURE;
        }
    };
    let plan = match plan(cli.connections, &host) {
        Ok(plan) => plan,
        Err(e) => {
            eprintln!("c10m-tune-plan: refusing: {e}");
            return ExitCode::FAILURE;
        }
    };
    if cli.human {
        print!("{plan}");
        println!("{}", process_ceiling(&host));
    } else {
        for row in plan.rows() {
            match row {
                Row::Check(c) => println!(
                    "{}\t{}\t{}\t{}\t{}",
                    c.key, c.recommended, c.current, c.verdict, c.reason
                ),
                Row::OnHost(h) => println!("{}\t{}\t-\thost\t{}", h.key, h.needs, h.reason),
            }
        }
    }
    ExitCode::SUCCESS
}

/// A `--connections` value that is not a count; clap prints it after
/// "invalid value '...' for '--connections <N>': ".
#[derive(Debug)]
struct BadConnections {
    text: String,
    error: CountError,
}

impl fmt::Display for BadConnections {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.error {
            CountError::TooLarge(_) => write!(f, "absurdly large (2^64 or more)"),
            _ => write!(
                f,
                "needs a whole number of connections, got {:?} (examples: 1000000, \
                 1_000_000, 1m, 1.5k)",
                self.text
            ),
        }
    }
}

impl std::error::Error for BadConnections {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

/// The one count grammar ([`parse_count`]). Zero parses: the plan refuses it, saying why.
fn connections(text: &str) -> Result<u64, BadConnections> {
    parse_count(text).map_err(|error| BadConnections {
        text: text.to_owned(),
        error,
    })
}

fn scopes(text: &str) -> Result<Scopes, ParseScopeError> {
    text.parse()
}
