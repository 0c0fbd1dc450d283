//! The `c10m` command: `c10m serve` and `c10m doctor` (the command line is in `cli/`).

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
