//! What the host has now: `MemTotal`, the settings of the table, and `RLIMIT_NOFILE`.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::error::Error;
use crate::rlimit::{self, Rlimit};
use crate::scope::{Scope, Scopes};
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
    on_host: Vec<&'static Setting>,
    conntrack_loaded: bool,
}

impl Host {
    /// Reads the live host: `/proc/meminfo`, every `/proc/sys` entry of the table and
    /// `getrlimit(RLIMIT_NOFILE)` of this process.
    ///
    /// A missing entry is [`Error::Missing`] naming its path; the conntrack entry is the one
    /// exception (absent while conntrack is not loaded, and then it needs no sizing).
    ///
    /// Inside a network namespace other than the host's (a container, `unshare -n`) the kernel
    /// hides the kernel-global network entries (`net.ipv4.tcp_mem`...). When every one of them
    /// is hidden the read is taken as seen from such a namespace: the host-scope settings are
    /// not read but listed by [`Host::on_host`], since only the host can check or change them
    /// (see [`Probe::read`]).
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

    /// Whether this was read from inside a network namespace other than the host's (a
    /// container, `unshare -n`): the kernel hid the host-wide network settings.
    pub fn in_network_namespace(&self) -> bool {
        !self.on_host.is_empty()
    }

    /// The host-scope settings of the probed scopes that were not read because they were read
    /// from inside a network namespace: they are set on the host, in table order. Empty
    /// otherwise.
    pub fn on_host(&self) -> &[&'static Setting] {
        &self.on_host
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
/// a probe also restricts the read to some [`Scopes`] (`--only netns` reads just what a
/// network namespace owns).
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
    ///
    /// When the host scope is probed and every host-scope `net.*` entry the kernel always has
    /// (`netdev_max_backlog`, `tcp_mem`, `tcp_max_orphans`) is missing while the rest of
    /// `/proc/sys/net` is there, the reader is inside a network namespace other than the
    /// host's: the host-scope settings are then skipped and listed by [`Host::on_host`] (a
    /// privileged container could still write `fs.*` or `vm.*`, but that would change the
    /// whole machine). Only some of them missing is [`Error::Missing`] as usual.
    pub fn read(&self) -> Result<Host, Error> {
        let mem_total_kb = self.mem_total_kb()?;
        let nofile = self.nofile()?;
        let settings = table::settings()?;
        let conntrack_loaded = settings
            .iter()
            .filter(|s| s.kind == Kind::Conntrack)
            .filter_map(|s| s.proc_path())
            .any(|p| self.root.join(p).exists());
        let in_netns = self.scopes.contains(Scope::Host) && self.sees_a_network_namespace(settings);
        let mut readings = Vec::new();
        let mut on_host = Vec::new();
        for setting in settings {
            if !self.scopes.contains(setting.scope) {
                continue;
            }
            if in_netns && setting.scope == Scope::Host {
                if setting.kind != Kind::Conntrack || conntrack_loaded {
                    on_host.push(setting);
                }
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
            on_host,
            conntrack_loaded,
        })
    }

    /// Whether the kernel hides every host-wide network entry it always has, as it does inside
    /// a network namespace other than the host's, while it shows the namespace's own.
    fn sees_a_network_namespace(&self, settings: &[Setting]) -> bool {
        let paths = |scope: Scope| {
            settings
                .iter()
                .filter(move |s| s.scope == scope && s.kind == Kind::Sysctl)
                .filter(|s| s.key.starts_with("net."))
                .filter_map(|s| s.proc_path())
        };
        let mut hidden = paths(Scope::Host).peekable();
        hidden.peek().is_some()
            && hidden.all(|p| !self.root.join(p).exists())
            && paths(Scope::Netns).all(|p| self.root.join(p).exists())
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

    #[test]
    fn the_live_host_reads_on_linux() {
        // The test host is Linux; in its initial network namespace every entry of the table is
        // present, in another one (a container) the host-scope rows are listed as on the host.
        let host = Host::read().unwrap();
        assert!(host.mem_total_kb() > 0);
        let somaxconn = host.get("net.core.somaxconn").unwrap();
        let text = fs::read_to_string("/proc/sys/net/core/somaxconn").unwrap();
        assert_eq!(somaxconn.to_string(), text.trim());
        let nofile = host.get("nofile").unwrap();
        assert_eq!(nofile, &Value::single(host.nofile().soft));
        // Outside a container the kernel shows tcp_mem; inside one it hides it.
        let hidden = !Path::new("/proc/sys/net/ipv4/tcp_mem").exists();
        assert_eq!(host.in_network_namespace(), hidden);
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
