//! The plan for a target: every setting's current and recommended value and a verdict.

use std::fmt;

use crate::error::PlanError;
use crate::formula::MAX_TARGET;
use crate::host::Host;
use crate::memory;
use crate::num::{gib, thousands};
use crate::scope::Scope;
use crate::table::Kind;
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
}

impl Plan {
    /// Whether every setting is ok.
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
    Ok(Plan {
        target,
        mem_total_kb,
        max_connections,
        conntrack_loaded: host.conntrack_loaded(),
        checks,
    })
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let low = self.low().count();
        writeln!(
            f,
            "host check for {} connections: {} of {} settings low; RAM {} holds at most {} \
             connections",
            thousands(self.target),
            low,
            self.checks.len(),
            gib(self.mem_total_kb),
            thousands(self.max_connections)
        )?;
        let header = ["setting", "current", "recommended", "verdict"];
        let width = |i: usize, cell: &dyn Fn(&Check) -> String| {
            self.checks
                .iter()
                .map(|c| cell(c).len())
                .chain([header[i].len()])
                .max()
                .unwrap_or(0)
        };
        let w0 = width(0, &|c| c.key.clone());
        let w1 = width(1, &|c| c.current.to_string());
        let w2 = width(2, &|c| c.recommended.to_string());
        let w3 = width(3, &|c| c.verdict.to_string());
        writeln!(
            f,
            "{:<w0$}  {:<w1$}  {:<w2$}  {:<w3$}  why",
            header[0], header[1], header[2], header[3]
        )?;
        for c in &self.checks {
            writeln!(
                f,
                "{:<w0$}  {:<w1$}  {:<w2$}  {:<w3$}  {}",
                c.key, c.current, c.recommended, c.verdict, c.reason
            )?;
        }
        if low > 0 {
            writeln!(
                f,
                "apply with: sudo scripts/tune.sh --connections {} (see docs/TUNING.md)",
                self.target
            )?;
        }
        Ok(())
    }
}
