//! `c10m-loadtest`: see `c10m-loadtest --help` and the crate docs.

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    c10m_loadtest::main_entry(&args)
}
