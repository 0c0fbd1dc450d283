//! Log lines on stderr, through `tracing`: human-readable by default, one JSON object per line
//! with `--log-format json`. The start-up banner `c10m serve` prints (`listening on ws://...`)
//! and the doctor's table are the commands' output, on stdout, not logs: scripts read them.
//!
//! The level: `--log-level` (or `C10M_LOG_LEVEL`), else `RUST_LOG`, else `info`; either takes
//! an `EnvFilter` directive such as `debug` or `c10m_engine=debug,warn`. Logging starts before
//! the `--config` file is read (its errors are logged), so these two are flags and variables
//! only, not TOML keys.

use std::io::IsTerminal;

use clap::{Args, ValueEnum};
use tracing_subscriber::EnvFilter;

/// How log lines are written on stderr.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One readable line per event.
    #[default]
    Human,
    /// One JSON object per line.
    Json,
}

/// The log options, taken by every command.
#[derive(Args, Debug, Clone, Default)]
pub struct LogArgs {
    /// Log lines on stderr: human or json
    #[arg(
        long,
        global = true,
        value_enum,
        default_value_t,
        env = "C10M_LOG_FORMAT",
        value_name = "FORMAT"
    )]
    pub log_format: LogFormat,

    /// Which log lines: a level (error, warn, info, debug, trace) or RUST_LOG-style directives
    /// [default: RUST_LOG, else info]
    #[arg(
        long,
        global = true,
        env = "C10M_LOG_LEVEL",
        value_name = "FILTER",
        value_parser = filter
    )]
    pub log_level: Option<String>,
}

/// Checks a `--log-level` filter when the command line is parsed, so a bad one is a usage error.
fn filter(text: &str) -> Result<String, tracing_subscriber::filter::ParseError> {
    EnvFilter::try_new(text).map(|_| text.to_owned())
}

/// Installs the subscriber for this process (`RUST_LOG` that does not parse counts as unset).
pub fn init(args: &LogArgs) {
    let filter = match &args.log_level {
        Some(text) => EnvFilter::try_new(text).unwrap_or_else(|_| EnvFilter::new("info")),
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colours for a terminal only, not for a log file or a pipe.
        .with_ansi(std::io::stderr().is_terminal());
    let installed = match args.log_format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    // Already installed (a second call) keeps the first, which is what it wants.
    drop(installed);
}
