//! What the host has now: `MemTotal`, the settings of the table, and `RLIMIT_NOFILE`.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::error::Error;
use crate::rlimit::{self, Rlimit};
use crate::scope::Scopes;
use crate::table::{self, Kind, Setting};
use crate::value::Value;

/// One setting as read from the host.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Reading {
    /// The table row.
    pub setting: &'static Setting,
    /// Its current value (for `nofile`, the soft limit).
    pub value: Value,
}

/// A snapshot of the host's settings, read once. Only reads: nothing here changes the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    root: PathBuf,
    mem_total_kb: u64,
    nofile: Rlimit,
    readings: Vec<Reading>,
    conntrack_loaded: bool,
}

impl Host {
    /// Reads the live host: `/proc/meminfo`, every `/proc/sys` entry of the table and
    /// `getrlimit(RLIMIT_NOFILE)` of this process.
    ///
    /// A missing entry is [`Error::Missing`] naming its path; the conntrack entry is the one
    /// exception (absent while conntrack is not loaded, and then it needs no sizing).
    ///
    /// Inside a network namespace other than the host's (a container, `unshare -n`) the
    /// kernel-global network entries such as `net.ipv4.tcp_mem` are hidden, so this fails
    /// there; `Probe::live().scopes(Scopes::only(&[Scope::Netns, Scope::Session])).read()`
    /// reads what the namespace has.
    pub fn read() -> Result<Host, Error> {
        Probe::live().read()
    }

    /// Reads a captured `/proc` tree under `root`: `root/meminfo`, `root/sys/...` and the
    /// `Max open files` line of `root/self/limits`.
    pub fn from_snapshot(root: &Path) -> Result<Host, Error> {
        Probe::snapshot(root).read()
    }

    /// The proc root this was read from (`/proc` for the live host).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `MemTotal`, KiB.
    pub fn mem_total_kb(&self) -> u64 {
        self.mem_total_kb
    }

    /// `RLIMIT_NOFILE` of the process that read the host (or of the snapshot).
    pub fn nofile(&self) -> Rlimit {
        self.nofile
    }

    /// Whether `nf_conntrack_max` exists, i.e. conntrack is loaded (built in or as a module).
    /// Only meaningful when the read included the host scope.
    pub fn conntrack_loaded(&self) -> bool {
        self.conntrack_loaded
    }

    /// The settings read, in table order.
    pub fn readings(&self) -> &[Reading] {
        &self.readings
    }

    /// The current value of `key` (`net.core.somaxconn`, `nofile`), if it was read.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.readings
            .iter()
            .find(|r| r.setting.key == key)
            .map(|r| &r.value)
    }
}

/// Where and what to read. [`Host::read`] and [`Host::from_snapshot`] cover the usual cases;
/// a probe also restricts the read to some [`Scopes`] (inside `unshare -n` the host-wide
/// network settings are hidden, so only the `netns` ones can be read there).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    root: PathBuf,
    limits_from_file: bool,
    scopes: Scopes,
}

impl Probe {
    /// The live host: `/proc` and this process's `getrlimit`.
    pub fn live() -> Probe {
        Probe {
            root: PathBuf::from("/proc"),
            limits_from_file: false,
            scopes: Scopes::ALL,
        }
    }

    /// A captured `/proc` tree under `root`, `RLIMIT_NOFILE` taken from `root/self/limits`.
    pub fn snapshot(root: &Path) -> Probe {
        Probe {
            root: root.to_path_buf(),
            limits_from_file: true,
            scopes: Scopes::ALL,
        }
    }

    /// Reads only the settings in `scopes` (`MemTotal` and `RLIMIT_NOFILE` are always read).
    pub fn scopes(mut self, scopes: Scopes) -> Probe {
        self.scopes = scopes;
        self
    }

    /// Reads the host.
    pub fn read(&self) -> Result<Host, Error> {
        let mem_total_kb = self.mem_total_kb()?;
        let nofile = self.nofile()?;
        let conntrack_loaded = table::settings()?
            .iter()
            .filter(|s| s.kind == Kind::Conntrack)
            .filter_map(|s| s.proc_path())
            .any(|p| self.root.join(p).exists());
        let mut readings = Vec::new();
        for setting in table::settings()? {
            if !self.scopes.contains(setting.scope) {
                continue;
            }
            let value = match setting.proc_path() {
                None => Some(Value::single(nofile.soft)),
                Some(rel) => self.sysctl(setting, &self.root.join(rel))?,
            };
            if let Some(value) = value {
                readings.push(Reading { setting, value });
            }
        }
        Ok(Host {
            root: self.root.clone(),
            mem_total_kb,
            nofile,
            readings,
            conntrack_loaded,
        })
    }

    /// `Ok(None)` only for an absent conntrack entry.
    fn sysctl(&self, setting: &Setting, path: &Path) -> Result<Option<Value>, Error> {
        let text = match read(path) {
            Err(Error::Missing { .. }) if setting.kind == Kind::Conntrack => return Ok(None),
            other => other?,
        };
        let arity = setting.formula.arity();
        match Value::parse(&text) {
            Some(v) if v.components().len() == arity => Ok(Some(v)),
            _ => Err(Error::Malformed {
                path: path.to_path_buf(),
                text: text.trim().to_owned(),
                expected: if arity == 1 {
                    "1 whole number".to_owned()
                } else {
                    format!("{arity} whole numbers")
                },
            }),
        }
    }

    fn mem_total_kb(&self) -> Result<u64, Error> {
        let path = self.root.join("meminfo");
        let text = read(&path)?;
        let kb = text
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|rest| rest.trim().strip_suffix("kB"))
            .and_then(|n| n.trim().parse().ok());
        kb.ok_or_else(|| Error::Malformed {
            path,
            text: text.lines().next().unwrap_or("").to_owned(),
            expected: "a `MemTotal: <n> kB` line".to_owned(),
        })
    }

    fn nofile(&self) -> Result<Rlimit, Error> {
        if !self.limits_from_file {
            return rlimit::nofile_of_this_process();
        }
        let path = self.root.join("self/limits");
        let text = read(&path)?;
        rlimit::parse_limits(&text).ok_or_else(|| Error::Malformed {
            path,
            text: String::new(),
            expected: "a `Max open files <soft> <hard>` line".to_owned(),
        })
    }
}

fn read(path: &Path) -> Result<String, Error> {
    fs::read_to_string(path).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => Error::Missing {
            path: path.to_path_buf(),
        },
        kind => Error::Unreadable {
            path: path.to_path_buf(),
            kind,
        },
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::scope::Scope;

    #[test]
    fn the_live_host_reads_on_linux() {
        // The test host is Linux with every entry of the table present in its initial
        // network namespace (the suite is not run inside `unshare -n`).
        let host = Host::read().unwrap();
        assert!(host.mem_total_kb() > 0);
        let somaxconn = host.get("net.core.somaxconn").unwrap();
        let text = fs::read_to_string("/proc/sys/net/core/somaxconn").unwrap();
        assert_eq!(somaxconn.to_string(), text.trim());
        let nofile = host.get("nofile").unwrap();
        assert_eq!(nofile, &Value::single(host.nofile().soft));
    }

    #[test]
    fn a_probe_reads_only_its_scopes() {
        let host = Probe::live()
            .scopes(Scopes::only(&[Scope::Netns]))
            .read()
            .unwrap();
        assert!(!host.readings().is_empty());
        assert!(
            host.readings()
                .iter()
                .all(|r| r.setting.scope == Scope::Netns)
        );
        assert_eq!(host.get("fs.file-max"), None);
    }
}
