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

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use c10m_sysctl::{CountError, Probe, Row, Scopes, parse_count, plan, process_ceiling};

const USAGE: &str = "\
usage: c10m-tune-plan --connections N [--only SCOPES] [--proc-root DIR] [--human]

  --connections N   target number of connections (1000000, 1_000_000, 1m, 250k; > 0)
  --only SCOPES     read and plan only these scopes: netns, host, session (comma-separated) or all
  --proc-root DIR   read a captured /proc tree (DIR/meminfo, DIR/sys/..., DIR/self/limits)
  --human           print the `c10m doctor` table instead of TAB-separated lines
";

/// The command line, parsed.
struct Args {
    connections: u64,
    scopes: Scopes,
    proc_root: Option<PathBuf>,
    human: bool,
}

fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(Some(args)) => args,
        Ok(None) => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(msg) => {
            eprintln!("c10m-tune-plan: {msg}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let probe = match &args.proc_root {
        Some(root) => Probe::snapshot(root),
        None => Probe::live(),
    };
    let host = match probe.scopes(args.scopes).read() {
        Ok(host) => host,
        Err(e) => {
            eprintln!("c10m-tune-plan: {e}");
            return ExitCode::FAILURE;
        }
    };
    let plan = match plan(args.connections, &host) {
        Ok(plan) => plan,
        Err(e) => {
            eprintln!("c10m-tune-plan: refusing: {e}");
            return ExitCode::FAILURE;
        }
    };
    if args.human {
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

/// `Ok(None)` for `--help`.
fn parse_args(mut argv: impl Iterator<Item = String>) -> Result<Option<Args>, String> {
    let mut connections = None;
    let mut scopes = Scopes::ALL;
    let mut proc_root = None;
    let mut human = false;
    while let Some(arg) = argv.next() {
        let mut value = |flag: &str| argv.next().ok_or(format!("{flag} needs a value"));
        match arg.as_str() {
            "--connections" => connections = Some(parse_connections(&value("--connections")?)?),
            "--only" => scopes = value("--only")?.parse().map_err(|e| format!("{e}"))?,
            "--proc-root" => proc_root = Some(PathBuf::from(value("--proc-root")?)),
            "--human" => human = true,
            "-h" | "--help" => return Ok(None),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    let connections = connections.ok_or("--connections N is required")?;
    Ok(Some(Args {
        connections,
        scopes,
        proc_root,
        human,
    }))
}

fn parse_connections(text: &str) -> Result<u64, String> {
    match parse_count(text) {
        Ok(n) => Ok(n),
        Err(CountError::TooLarge(_)) => Err(format!("--connections {text} is absurdly large")),
        Err(_) => Err(format!(
            "--connections needs a whole number of connections, got {text:?} (examples: \
             1000000, 1_000_000, 1m, 1.5k)"
        )),
    }
}
