//! `RLIMIT_NOFILE`: read from this process with `getrlimit`, or from a captured
//! `/proc/<pid>/limits` file.

use crate::error::Error;

/// A resource limit; `u64::MAX` means unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rlimit {
    /// The soft limit: what the process gets now.
    pub soft: u64,
    /// The hard limit: the most an unprivileged process may raise its soft limit to.
    pub hard: u64,
}

/// `getrlimit(RLIMIT_NOFILE)` of this process.
#[allow(unsafe_code)]
pub(crate) fn nofile_of_this_process() -> Result<Rlimit, Error> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a live, properly aligned, writable `struct rlimit` owned by this frame for
    // the whole call, and RLIMIT_NOFILE is a valid resource; getrlimit(2) writes only that struct
    // and touches no other memory.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
    if rc != 0 {
        let errno = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
        return Err(Error::Rlimit { errno });
    }
    Ok(Rlimit {
        soft: infinity_as_max(lim.rlim_cur),
        hard: infinity_as_max(lim.rlim_max),
    })
}

fn infinity_as_max(v: libc::rlim_t) -> u64 {
    if v == libc::RLIM_INFINITY {
        u64::MAX
    } else {
        v
    }
}

/// The `Max open files` line of a `/proc/<pid>/limits` file:
/// `Max open files            20000                20000                files`.
pub(crate) fn parse_limits(text: &str) -> Option<Rlimit> {
    let rest = text
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))?;
    let mut words = rest.split_whitespace();
    let number = |w: Option<&str>| match w? {
        "unlimited" => Some(u64::MAX),
        n => n.parse().ok(),
    };
    let soft = number(words.next())?;
    let hard = number(words.next())?;
    Some(Rlimit { soft, hard })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const LIMITS: &str = "\
Limit                     Soft Limit           Hard Limit           Units     
Max cpu time              unlimited            unlimited            seconds   
Max open files            20000                20000                files     
Max locked memory         8388608              8388608              bytes     
";

    #[test]
    fn reads_max_open_files() {
        assert_eq!(
            parse_limits(LIMITS),
            Some(Rlimit {
                soft: 20_000,
                hard: 20_000
            })
        );
    }

    #[test]
    fn unlimited_and_missing_lines() {
        assert_eq!(
            parse_limits("Max open files  1024  unlimited  files\n"),
            Some(Rlimit {
                soft: 1024,
                hard: u64::MAX
            })
        );
        assert_eq!(
            parse_limits("Max cpu time unlimited unlimited seconds\n"),
            None
        );
        assert_eq!(parse_limits("Max open files  many  files\n"), None);
    }

    #[test]
    fn this_process_has_a_sane_nofile_limit() {
        let lim = nofile_of_this_process().unwrap();
        assert!(lim.soft >= 3, "stdin, stdout and stderr are open");
        assert!(lim.soft <= lim.hard);
        // The same numbers the kernel shows in /proc/self/limits.
        let text = std::fs::read_to_string("/proc/self/limits").unwrap();
        assert_eq!(parse_limits(&text), Some(lim));
    }
}
