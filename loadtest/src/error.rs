//! The crate's one error type: what went wrong, as data.

use std::fmt;
use std::io;
use std::process::ExitStatus;

use crate::cli::UsageError;
use crate::hist::HistError;
use crate::plan::PlanError;

/// Everything that can stop a run.
#[non_exhaustive]
#[derive(Debug)]
pub enum Error {
    /// Bad flags (exit status 2).
    Usage(UsageError),
    /// The run cannot be laid out on this host.
    Plan(PlanError),
    /// An OS call failed.
    Io {
        /// What was being done.
        what: &'static str,
        /// The OS error.
        source: io::Error,
    },
    /// A histogram could not be created, merged or decoded.
    Hist(HistError),
    /// JSON could not be written or read.
    Json {
        /// What was being encoded or decoded.
        what: &'static str,
        /// The serde error.
        source: serde_json::Error,
    },
    /// A worker process failed.
    Worker {
        /// Its index.
        index: usize,
        /// How.
        problem: WorkerProblem,
    },
}

/// How a worker process failed.
#[non_exhaustive]
#[derive(Debug)]
pub enum WorkerProblem {
    /// It could not be started.
    Spawn(io::Error),
    /// It wrote a line that is not a report line.
    BadLine(serde_json::Error),
    /// It reported an error of its own (the text comes from the child).
    Reported(String),
    /// It exited before reporting its totals.
    Exited(Option<ExitStatus>),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Usage(e) => e.fmt(f),
            Error::Plan(e) => e.fmt(f),
            Error::Io { what, source } => write!(f, "{what}: {source}"),
            Error::Hist(e) => e.fmt(f),
            Error::Json { what, source } => write!(f, "{what}: {source}"),
            Error::Worker { index, problem } => match problem {
                WorkerProblem::Spawn(e) => write!(f, "worker {index}: cannot start: {e}"),
                WorkerProblem::BadLine(e) => {
                    write!(f, "worker {index}: unreadable report line: {e}")
                }
                WorkerProblem::Reported(text) => write!(f, "worker {index}: {text}"),
                WorkerProblem::Exited(Some(s)) => {
                    write!(
                        f,
                        "worker {index}: exited ({s}) before reporting its totals"
                    )
                }
                WorkerProblem::Exited(None) => {
                    write!(
                        f,
                        "worker {index}: ended its output before reporting its totals"
                    )
                }
            },
        }
    }
}

impl std::error::Error for Error {}

impl From<HistError> for Error {
    fn from(e: HistError) -> Self {
        Error::Hist(e)
    }
}

impl From<UsageError> for Error {
    fn from(e: UsageError) -> Self {
        Error::Usage(e)
    }
}

impl From<PlanError> for Error {
    fn from(e: PlanError) -> Self {
        Error::Plan(e)
    }
}

/// `map_err` helper: an I/O error while doing `what`.
pub fn io(what: &'static str) -> impl FnOnce(io::Error) -> Error {
    move |source| Error::Io { what, source }
}

/// `map_err` helper: a JSON error while doing `what`.
pub fn json(what: &'static str) -> impl FnOnce(serde_json::Error) -> Error {
    move |source| Error::Json { what, source }
}
