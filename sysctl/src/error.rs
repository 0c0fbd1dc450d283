//! Errors as data: what went wrong reading the host, the table, or planning a target.

use std::fmt;
use std::io;
use std::path::PathBuf;

use crate::memory;
use crate::num::{gib, thousands};

/// Reading the host failed. Nothing was changed: this crate only reads.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// A required `/proc` entry does not exist: not Linux, a kernel without the setting, or a
    /// kernel-global setting looked up from inside a network namespace (where it is hidden).
    Missing {
        /// The entry that was looked up, e.g. `/proc/sys/net/ipv4/tcp_mem`.
        path: PathBuf,
    },
    /// A `/proc` entry exists but reading it failed.
    Unreadable {
        /// The entry that was read.
        path: PathBuf,
        /// Why the read failed.
        kind: io::ErrorKind,
    },
    /// A `/proc` entry's text is not what the setting needs.
    Malformed {
        /// The entry that was read.
        path: PathBuf,
        /// Its text, trimmed.
        text: String,
        /// What was expected instead, e.g. `3 whole numbers`.
        expected: String,
    },
    /// `getrlimit(RLIMIT_NOFILE)` failed.
    Rlimit {
        /// The `errno` it set.
        errno: i32,
    },
    /// The embedded settings table (`sysctl/settings.tsv`) is malformed.
    Table(TableError),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Missing { path } if path.to_string_lossy().contains("sys/net/") => write!(
                f,
                "{} does not exist (a kernel without this setting, or a host-wide setting read \
                 from inside a network namespace, such as a container: there `--only netns` \
                 checks and applies only the namespace's own settings); nothing was changed",
                path.display()
            ),
            Error::Missing { path } => write!(
                f,
                "{} does not exist (not Linux, or a kernel without this setting); nothing was \
                 changed",
                path.display()
            ),
            Error::Unreadable { path, kind } => {
                write!(
                    f,
                    "cannot read {}: {kind}; nothing was changed",
                    path.display()
                )
            }
            Error::Malformed {
                path,
                text,
                expected,
            } => write!(
                f,
                "{} holds {text:?} where {expected} were expected; nothing was changed",
                path.display()
            ),
            Error::Rlimit { errno } => write!(
                f,
                "getrlimit(RLIMIT_NOFILE) failed: {}",
                io::Error::from_raw_os_error(*errno)
            ),
            Error::Table(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Table(e) => Some(e),
            _ => None,
        }
    }
}

impl From<TableError> for Error {
    fn from(e: TableError) -> Self {
        Error::Table(e)
    }
}

/// A line of the embedded `settings.tsv` that does not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableError {
    /// 1-based line number in `sysctl/settings.tsv`.
    pub line: usize,
    /// What is wrong with it.
    pub problem: TableProblem,
}

/// What is wrong with a line of `settings.tsv`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TableProblem {
    /// Not exactly five TAB-separated columns.
    Columns {
        /// How many columns the line has.
        found: usize,
    },
    /// The key is empty or holds characters a sysctl name never has.
    BadKey(String),
    /// The same key appears twice.
    DuplicateKey(String),
    /// The kind column is not `sysctl`, `conntrack` or `rlimit`.
    UnknownKind(String),
    /// The scope column is not `netns`, `host` or `session`.
    UnknownScope(String),
    /// The formula column names no formula in `formula.rs`.
    UnknownFormula(String),
    /// The rationale column is empty.
    NoRationale,
}

impl fmt::Display for TableError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sysctl/settings.tsv line {}: ", self.line)?;
        match &self.problem {
            TableProblem::Columns { found } => {
                write!(f, "{found} columns, expected 5 separated by TABs")
            }
            TableProblem::BadKey(k) => write!(f, "bad key {k:?}"),
            TableProblem::DuplicateKey(k) => write!(f, "key {k:?} appears twice"),
            TableProblem::UnknownKind(k) => {
                write!(f, "unknown kind {k:?} (sysctl, conntrack or rlimit)")
            }
            TableProblem::UnknownScope(s) => {
                write!(f, "unknown scope {s:?} (netns, host or session)")
            }
            TableProblem::UnknownFormula(n) => write!(f, "unknown formula {n:?}"),
            TableProblem::NoRationale => write!(f, "empty rationale"),
        }
    }
}

impl std::error::Error for TableError {}

/// A target number of connections that no host setting can serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PlanError {
    /// The target is zero.
    ZeroTarget,
    /// The target exceeds what the kernel can give one process (`fs.nr_open` tops out near 2^31
    /// descriptors and every connection may need two on one host).
    TargetTooLarge {
        /// The target asked for.
        target: u64,
        /// The largest target this crate plans for.
        max: u64,
    },
    /// The sockets of the target would not fit in this host's RAM budget
    /// (see [`memory`](crate::memory)).
    NotEnoughMemory {
        /// The target asked for.
        target: u64,
        /// The most connections the RAM budget holds.
        max: u64,
        /// `MemTotal` of the host, in KiB.
        mem_total_kb: u64,
    },
}

impl fmt::Display for PlanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PlanError::ZeroTarget => write!(f, "a target of 0 connections needs no tuning"),
            PlanError::TargetTooLarge { target, max } => write!(
                f,
                "{} connections is more than the kernel can give a process \
                 (fs.nr_open cannot exceed 2147483584 descriptors); at most {} can be planned",
                thousands(*target),
                thousands(*max)
            ),
            PlanError::NotEnoughMemory {
                target,
                max,
                mem_total_kb,
            } => write!(
                f,
                "{} connections need about {} ({} bytes each: {} sockets of ~{} bytes of kernel \
                 memory plus {} bytes of user space), but {}% of this host's {} RAM holds at most \
                 {} connections",
                thousands(*target),
                gib(memory::bytes_needed(*target) / 1024),
                memory::BYTES_PER_CONNECTION,
                memory::SOCKETS_PER_CONNECTION,
                memory::KERNEL_BYTES_PER_SOCKET,
                memory::USER_BYTES_PER_CONNECTION,
                memory::RAM_BUDGET_PERCENT,
                gib(*mem_total_kb),
                thousands(*max)
            ),
        }
    }
}

impl std::error::Error for PlanError {}

/// A `--only` list names a scope that does not exist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseScopeError {
    /// The word that is not a scope.
    pub text: String,
}

impl fmt::Display for ParseScopeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown scope {:?}: use netns, host, session or all (comma-separated)",
            self.text
        )
    }
}

impl std::error::Error for ParseScopeError {}
