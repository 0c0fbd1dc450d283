//! The settings table, `sysctl/settings.tsv`, embedded at build time: the one source of truth
//! for which settings matter, how each is sized and why.

use std::path::PathBuf;
use std::sync::OnceLock;

use crate::error::{TableError, TableProblem};
use crate::formula::Formula;
use crate::scope::Scope;

/// The text of `sysctl/settings.tsv`, as compiled in.
pub const TABLE: &str = include_str!("../settings.tsv");

/// How a setting is read and applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A `/proc/sys` entry that must exist.
    Sysctl,
    /// A `/proc/sys` entry that exists only while conntrack is loaded; skipped when absent.
    Conntrack,
    /// `RLIMIT_NOFILE` (the soft limit of the reading process).
    Rlimit,
}

/// One row of the table.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Setting {
    /// The name `sysctl` prints (`net.core.somaxconn`), or `nofile`.
    pub key: String,
    /// How it is read and applied.
    pub kind: Kind,
    /// Where it takes effect.
    pub scope: Scope,
    /// How it is sized.
    pub formula: Formula,
    /// Why it matters, in one line.
    pub rationale: String,
}

impl Setting {
    /// Where the setting lives under the proc root (`sys/net/core/somaxconn`);
    /// `None` for an rlimit.
    pub fn proc_path(&self) -> Option<PathBuf> {
        match self.kind {
            Kind::Rlimit => None,
            Kind::Sysctl | Kind::Conntrack => {
                Some(PathBuf::from("sys").join(self.key.replace('.', "/")))
            }
        }
    }
}

/// The parsed table, in file order (the order scripts/tune.sh applies it in).
pub fn settings() -> Result<&'static [Setting], TableError> {
    static PARSED: OnceLock<Result<Vec<Setting>, TableError>> = OnceLock::new();
    match PARSED.get_or_init(|| parse(TABLE)) {
        Ok(rows) => Ok(rows),
        Err(e) => Err(e.clone()),
    }
}

/// Parses table text: `#` comments and blank lines are skipped.
pub(crate) fn parse(text: &str) -> Result<Vec<Setting>, TableError> {
    let mut rows: Vec<Setting> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let fail = |problem| TableError {
            line: i + 1,
            problem,
        };
        let row = parse_row(line).map_err(fail)?;
        if rows.iter().any(|r| r.key == row.key) {
            return Err(fail(TableProblem::DuplicateKey(row.key)));
        }
        rows.push(row);
    }
    Ok(rows)
}

fn parse_row(line: &str) -> Result<Setting, TableProblem> {
    let cols: Vec<&str> = line.split('\t').collect();
    let [key, kind, scope, formula, rationale] = cols[..] else {
        return Err(TableProblem::Columns { found: cols.len() });
    };
    let key_ok = !key.is_empty()
        && !key.starts_with('.')
        && !key.ends_with('.')
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if !key_ok {
        return Err(TableProblem::BadKey(key.to_owned()));
    }
    let kind = match kind {
        "sysctl" => Kind::Sysctl,
        "conntrack" => Kind::Conntrack,
        "rlimit" => Kind::Rlimit,
        other => return Err(TableProblem::UnknownKind(other.to_owned())),
    };
    let scope = scope
        .parse()
        .map_err(|_| TableProblem::UnknownScope(scope.to_owned()))?;
    let formula = Formula::from_name(formula)
        .ok_or_else(|| TableProblem::UnknownFormula(formula.to_owned()))?;
    if rationale.trim().is_empty() {
        return Err(TableProblem::NoRationale);
    }
    Ok(Setting {
        key: key.to_owned(),
        kind,
        scope,
        formula,
        rationale: rationale.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_embedded_table_parses_and_covers_the_issue() {
        let rows = settings().unwrap();
        let keys: Vec<&str> = rows.iter().map(|r| r.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "fs.file-max",
                "fs.nr_open",
                "nofile",
                "net.core.somaxconn",
                "net.ipv4.tcp_max_syn_backlog",
                "net.core.netdev_max_backlog",
                "net.ipv4.ip_local_port_range",
                "net.ipv4.tcp_mem",
                "net.ipv4.tcp_rmem",
                "net.ipv4.tcp_wmem",
                "net.ipv4.tcp_tw_reuse",
                "net.ipv4.tcp_max_orphans",
                "net.ipv4.tcp_max_tw_buckets",
                "net.netfilter.nf_conntrack_max",
                "vm.max_map_count",
            ]
        );
    }

    #[test]
    fn nr_open_is_applied_before_nofile() {
        let rows = settings().unwrap();
        let at = |k: &str| rows.iter().position(|r| r.key == k).unwrap();
        assert!(at("fs.nr_open") < at("nofile"));
    }

    #[test]
    fn proc_paths_follow_the_key() {
        let rows = settings().unwrap();
        let somaxconn = rows.iter().find(|r| r.key == "net.core.somaxconn").unwrap();
        assert_eq!(
            somaxconn.proc_path(),
            Some(PathBuf::from("sys/net/core/somaxconn"))
        );
        let nofile = rows.iter().find(|r| r.key == "nofile").unwrap();
        assert_eq!(nofile.proc_path(), None);
    }

    #[test]
    fn rationales_hold_no_tab_so_tune_plan_lines_stay_five_columns() {
        for row in settings().unwrap() {
            assert!(!row.rationale.contains('\t'), "{}", row.key);
        }
    }

    #[test]
    fn malformed_rows_are_reported_with_their_line() {
        let bad = |text: &str| parse(text).unwrap_err();
        assert_eq!(
            bad("# c\nfs.file-max\tsysctl\thost\tfds_host\n"),
            TableError {
                line: 2,
                problem: TableProblem::Columns { found: 4 }
            }
        );
        assert_eq!(
            bad("a.b\tsysctlx\thost\tfds_host\twhy").problem,
            TableProblem::UnknownKind("sysctlx".into())
        );
        assert_eq!(
            bad("a.b\tsysctl\tplanet\tfds_host\twhy").problem,
            TableProblem::UnknownScope("planet".into())
        );
        assert_eq!(
            bad("a.b\tsysctl\thost\tmagic\twhy").problem,
            TableProblem::UnknownFormula("magic".into())
        );
        assert_eq!(
            bad("a.b\tsysctl\thost\tbacklog\t ").problem,
            TableProblem::NoRationale
        );
        assert_eq!(
            bad("a/b\tsysctl\thost\tbacklog\twhy").problem,
            TableProblem::BadKey("a/b".into())
        );
        assert_eq!(
            bad("a.b\tsysctl\thost\tbacklog\twhy\na.b\tsysctl\thost\tbacklog\twhy"),
            TableError {
                line: 2,
                problem: TableProblem::DuplicateKey("a.b".into())
            }
        );
    }
}
