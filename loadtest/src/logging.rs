//! Log lines on stderr, through `tracing`: things the run's machinery could not do and carried
//! on without (a worker that could not be told the go time, one that could not be stopped).
//! The report, the progress line and the final error are output, not logs, and stay plain.
//! `RUST_LOG` filters (default `warn`); `--log-format json` writes one JSON object per line.

use std::io::IsTerminal as _;

use tracing_subscriber::EnvFilter;

use crate::cli::LogFormat;

/// Installs the subscriber for this process. A second call (tests running several entries in
/// one process) keeps the first.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
    // Colours only for a person at a terminal, not in a file a script keeps.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let installed = match format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    // Already installed: the first one stays, which is what a second call wants.
    drop(installed);
}
