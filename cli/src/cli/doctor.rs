//! `c10m doctor`: the host's limits against a target, from the same table scripts/tune.sh uses.

use std::process::ExitCode;

use c10m_sysctl::{Probe, Scopes, parse_count, plan, process_ceiling};
use clap::Args;

/// Shown after `c10m doctor --help`.
const AFTER_HELP: &str = "\
Inside a network namespace (a container, `unshare -n`) the kernel hides the host-wide
settings: they are listed as \"set on the host\" with what N needs of them, and only the
namespace's own settings and this process's RLIMIT_NOFILE decide the exit status.

Exit status: 0 when every setting checked is ok, 1 when some are low, 2 on bad input or when
/proc cannot be read. Apply a plan with scripts/tune.sh (docs/TUNING.md).";

/// `c10m doctor`'s options.
#[derive(Args, Debug, Clone)]
#[command(after_help = AFTER_HELP)]
pub struct DoctorArgs {
    /// Target number of concurrent connections (1000000, 1_000_000, 1m, 250k)
    #[arg(long, value_name = "N", default_value = "1000000", value_parser = parse_count)]
    pub connections: u64,

    /// Check only these scopes: netns, host, session (comma-separated) or all
    #[arg(long, value_name = "SCOPES", default_value = "all", value_parser = scopes)]
    pub only: Scopes,
}

fn scopes(text: &str) -> Result<Scopes, c10m_sysctl::ParseScopeError> {
    text.parse()
}

/// Runs the doctor: prints the plan and this process's ceiling.
pub fn run(args: &DoctorArgs) -> ExitCode {
    let host = match Probe::live().scopes(args.only).read() {
        Ok(h) => h,
        Err(e) => {
            tracing::error!(error = %e, "cannot read this host's limits");
            return ExitCode::from(2);
        }
    };
    let plan = match plan(args.connections, &host) {
        Ok(p) => p,
        Err(e) => {
            tracing::error!(connections = args.connections, error = %e, "no plan");
            return ExitCode::from(2);
        }
    };
    print!("{plan}");
    let ceiling = process_ceiling(&host);
    println!("\nthis process: {ceiling}");
    if plan.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
