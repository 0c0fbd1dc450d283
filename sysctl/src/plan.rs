//! The plan for a target: every setting's current and recommended value and a verdict.

use std::fmt;

use crate::error::PlanError;
use crate::formula::MAX_TARGET;
use crate::host::Host;
use crate::memory;
use crate::num::{gib, thousands};
use crate::requirement::Requirement;
use crate::scope::Scope;
use crate::table::{self, Kind};
use crate::value::Value;

/// Whether a setting already serves the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The current value meets the formula.
    Ok,
    /// The current value falls short; `recommended` is what to set.
    Low,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            Verdict::Ok => "ok",
            Verdict::Low => "low",
        })
    }
}

/// One setting of a plan.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Check {
    /// `net.core.somaxconn`, or `nofile` for `RLIMIT_NOFILE`.
    pub key: String,
    /// How the setting is applied.
    pub kind: Kind,
    /// Where it takes effect.
    pub scope: Scope,
    /// What the host has.
    pub current: Value,
    /// What to set: the current value changed only where it falls short, so a value that is
    /// already better (higher, or for buffer sizes lower) is never made worse. Equal to
    /// `current` exactly when the verdict is [`Verdict::Ok`].
    pub recommended: Value,
    /// Ok or low.
    pub verdict: Verdict,
    /// Why the setting matters (the table's rationale).
    pub reason: String,
}

/// A host-scope setting of a plan read from inside a network namespace (a container): only the
/// host can see or change it, so it is reported as "set on the host" with what the target
/// needs, and it does not count towards [`Plan::is_ok`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct OnHost {
    /// `net.ipv4.tcp_mem`, `fs.file-max`...
    pub key: String,
    /// How the setting is applied.
    pub kind: Kind,
    /// What the target needs of it (displays as `>=2065536`).
    pub needs: Requirement,
    /// Why the setting matters (the table's rationale).
    pub reason: String,
}

/// What a plan row says in the verdict column of a setting set on the host.
pub const SET_ON_THE_HOST: &str = "set on the host";

/// The checks for one target, in table order. Its `Display` is the `c10m doctor` table.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Plan {
    /// Target connections.
    pub target: u64,
    /// `MemTotal`, KiB.
    pub mem_total_kb: u64,
    /// The most connections the RAM budget holds ([`memory::max_connections`]).
    pub max_connections: u64,
    /// Whether conntrack is loaded, so `nf_conntrack_max` (or a notrack rule) matters.
    pub conntrack_loaded: bool,
    /// One check per setting read.
    pub checks: Vec<Check>,
    /// Read from inside a network namespace: the host-scope settings, set on the host (see
    /// [`Host::on_host`]). Empty otherwise.
    pub on_host: Vec<OnHost>,
}

impl Plan {
    /// Whether every setting read is ok (those set on the host are not counted).
    pub fn is_ok(&self) -> bool {
        self.checks.iter().all(|c| c.verdict == Verdict::Ok)
    }

    /// The settings that are low.
    pub fn low(&self) -> impl Iterator<Item = &Check> {
        self.checks.iter().filter(|c| c.verdict == Verdict::Low)
    }

    /// The check of `key`, if it was read.
    pub fn check(&self, key: &str) -> Option<&Check> {
        self.checks.iter().find(|c| c.key == key)
    }

    /// Every row, checked or set on the host, in table order.
    pub fn rows(&self) -> Vec<Row<'_>> {
        let position = |key: &str| {
            table::settings()
                .ok()
                .and_then(|t| t.iter().position(|s| s.key == key))
                .unwrap_or(usize::MAX)
        };
        let mut rows: Vec<Row<'_>> = self
            .checks
            .iter()
            .map(Row::Check)
            .chain(self.on_host.iter().map(Row::OnHost))
            .collect();
        rows.sort_by_key(|r| position(r.key()));
        rows
    }
}

/// One row of a plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Row<'a> {
    /// A setting this reader checked.
    Check(&'a Check),
    /// A setting set on the host, seen from inside a network namespace.
    OnHost(&'a OnHost),
}

impl<'a> Row<'a> {
    /// The setting's key.
    pub fn key(&self) -> &'a str {
        match self {
            Row::Check(c) => &c.key,
            Row::OnHost(h) => &h.key,
        }
    }
}

/// Plans `target` connections on `host`.
///
/// Refuses a target of zero, one beyond what `fs.nr_open` can cover, and one whose sockets the
/// host's RAM cannot hold (the error names the maximum).
pub fn plan(target: u64, host: &Host) -> Result<Plan, PlanError> {
    if target == 0 {
        return Err(PlanError::ZeroTarget);
    }
    if target > MAX_TARGET {
        return Err(PlanError::TargetTooLarge {
            target,
            max: MAX_TARGET,
        });
    }
    let mem_total_kb = host.mem_total_kb();
    let max_connections = memory::max_connections(mem_total_kb);
    if target > max_connections {
        return Err(PlanError::NotEnoughMemory {
            target,
            max: max_connections,
            mem_total_kb,
        });
    }
    let checks = host
        .readings()
        .iter()
        .map(|r| {
            let s = r.setting;
            let recommended = s.formula.requirement(target, mem_total_kb).settle(&r.value);
            let verdict = if recommended == r.value {
                Verdict::Ok
            } else {
                Verdict::Low
            };
            Check {
                key: s.key.clone(),
                kind: s.kind,
                scope: s.scope,
                current: r.value.clone(),
                recommended,
                verdict,
                reason: s.rationale.clone(),
            }
        })
        .collect();
    let on_host = host
        .on_host()
        .iter()
        .map(|s| OnHost {
            key: s.key.clone(),
            kind: s.kind,
            needs: s.formula.requirement(target, mem_total_kb),
            reason: s.rationale.clone(),
        })
        .collect();
    Ok(Plan {
        target,
        mem_total_kb,
        max_connections,
        conntrack_loaded: host.conntrack_loaded(),
        checks,
        on_host,
    })
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let low = self.low().count();
        let inside = if self.on_host.is_empty() {
            String::new()
        } else {
            " inside a network namespace".to_owned()
        };
        let on_host = if self.on_host.is_empty() {
            String::new()
        } else {
            format!(", {} {SET_ON_THE_HOST}", self.on_host.len())
        };
        writeln!(
            f,
            "host check for {} connections{inside}: {} of {} settings low{on_host}; RAM {} holds \
             at most {} connections",
            thousands(self.target),
            low,
            self.checks.len(),
            gib(self.mem_total_kb),
            thousands(self.max_connections)
        )?;
        // Rows in table order: setting, current, recommended, verdict, why.
        let rows: Vec<([String; 4], &str)> = self
            .rows()
            .into_iter()
            .map(|row| match row {
                Row::Check(c) => (
                    [
                        c.key.clone(),
                        c.current.to_string(),
                        c.recommended.to_string(),
                        c.verdict.to_string(),
                    ],
                    c.reason.as_str(),
                ),
                Row::OnHost(h) => (
                    [
                        h.key.clone(),
                        "-".to_owned(),
                        h.needs.to_string(),
                        SET_ON_THE_HOST.to_owned(),
                    ],
                    h.reason.as_str(),
                ),
            })
            .collect();
        let header = ["setting", "current", "recommended", "verdict"];
        let width = |i: usize| {
            rows.iter()
                .map(|(cells, _)| cells[i].len())
                .chain([header[i].len()])
                .max()
                .unwrap_or(0)
        };
        let (w0, w1, w2, w3) = (width(0), width(1), width(2), width(3));
        writeln!(
            f,
            "{:<w0$}  {:<w1$}  {:<w2$}  {:<w3$}  why",
            header[0], header[1], header[2], header[3]
        )?;
        for ([key, current, recommended, verdict], reason) in &rows {
            writeln!(
                f,
                "{key:<w0$}  {current:<w1$}  {recommended:<w2$}  {verdict:<w3$}  {reason}"
            )?;
        }
        if self.on_host.is_empty() {
            if low > 0 {
                writeln!(
                    f,
                    "apply with: sudo scripts/tune.sh --connections {} (see docs/TUNING.md)",
                    self.target
                )?;
            }
            return Ok(());
        }
        if low > 0 {
            let scopes: Vec<&str> = [Scope::Netns, Scope::Session]
                .into_iter()
                .filter(|scope| self.low().any(|c| c.scope == *scope))
                .map(Scope::name)
                .collect();
            writeln!(
                f,
                "apply this namespace's own settings with: sudo scripts/tune.sh --connections {} \
                 --only {} (see docs/TUNING.md, containers)",
                self.target,
                scopes.join(",")
            )?;
        }
        writeln!(
            f,
            "the {} settings {SET_ON_THE_HOST} are checked and applied there: \
             sudo scripts/tune.sh --connections {} --only host",
            self.on_host.len(),
            self.target
        )
    }
}
