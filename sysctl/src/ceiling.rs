//! The real ceiling of one process: how many connections its `RLIMIT_NOFILE` lets it hold.

use std::fmt;

use crate::host::Host;
use crate::num::thousands;

/// Descriptors a server process keeps besides connections: listeners, epoll instances,
/// eventfds/timerfds, stdio and a log file.
pub const RESERVED_FDS: u64 = 10;

/// The most connections one process can hold under its current `RLIMIT_NOFILE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Ceiling {
    /// The soft `RLIMIT_NOFILE` (`u64::MAX` when unlimited).
    pub soft: u64,
    /// The hard `RLIMIT_NOFILE` (`u64::MAX` when unlimited).
    pub hard: u64,
    /// `soft - RESERVED_FDS`: the connections the process can hold.
    pub connections: u64,
}

impl Ceiling {
    /// Whether the process can hold `target` connections.
    pub fn holds(&self, target: u64) -> bool {
        self.connections >= target
    }
}

/// The ceiling `host`'s `RLIMIT_NOFILE` puts on the process that read it.
pub fn process_ceiling(host: &Host) -> Ceiling {
    let nofile = host.nofile();
    Ceiling {
        soft: nofile.soft,
        hard: nofile.hard,
        connections: nofile.soft.saturating_sub(RESERVED_FDS),
    }
}

impl fmt::Display for Ceiling {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.soft == u64::MAX {
            return write!(
                f,
                "RLIMIT_NOFILE is unlimited: it does not cap this process"
            );
        }
        write!(
            f,
            "RLIMIT_NOFILE {} caps this process at about {} connections; raise it with \
             `ulimit -n` / LimitNOFILE= (see scripts/tune.sh)",
            self.soft,
            thousands(self.connections)
        )?;
        if self.hard > self.soft {
            let hard = if self.hard == u64::MAX {
                "unlimited".to_owned()
            } else {
                self.hard.to_string()
            };
            write!(
                f,
                "; the hard limit is {hard}, so `ulimit -n {hard}` needs no privilege"
            )?;
        } else {
            write!(
                f,
                "; the hard limit is also {}, so raising it needs root (CAP_SYS_RESOURCE)",
                self.soft
            )?;
        }
        Ok(())
    }
}
