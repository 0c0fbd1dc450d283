//! docs/TUNING.md explains every setting of the table, and the figures it quotes from the
//! crate's constants are the constants.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use c10m_sysctl::{formula, memory, settings};

fn tuning_md() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/TUNING.md");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn every_setting_of_the_table_has_a_row_in_the_doc() {
    let doc = tuning_md();
    for s in settings().unwrap() {
        let row = format!("| `{}`", s.key);
        let line = doc.lines().find(|l| l.starts_with(&row));
        let line = line.unwrap_or_else(|| panic!("docs/TUNING.md has no table row for {}", s.key));
        assert!(
            line.contains(&format!("| {} |", s.scope)),
            "docs/TUNING.md gives {} another scope than {}",
            s.key,
            s.scope
        );
    }
}

#[test]
fn the_doc_quotes_the_constants_in_force() {
    let doc = tuning_md();
    let quoted = [
        (memory::BYTES_PER_CONNECTION, "budgeted 10,752 bytes each"),
        (
            memory::KERNEL_BYTES_PER_SOCKET,
            "two sockets of 4,352 bytes",
        ),
        (
            memory::USER_BYTES_PER_CONNECTION,
            "a 2,048-byte user-space budget",
        ),
        (memory::RAM_BUDGET_PERCENT, "fit in 80% of `MemTotal`"),
        (formula::FD_MARGIN_HOST, "≥ 2N + 65,536"),
        (formula::FD_MARGIN_PROCESS, "≥ 2N + 1,024"),
        (formula::MAP_COUNT, "≥ 262144"),
        (formula::NETDEV_BACKLOG, "≥ 16384"),
        (formula::BACKLOG, "≥ 65535"),
        (formula::MAX_TARGET, "A target above 1,073,741,280"),
    ];
    for (value, phrase) in quoted {
        let digits: String = phrase.chars().filter(char::is_ascii_digit).collect();
        assert!(
            digits.contains(&value.to_string()),
            "{phrase:?} does not state {value}"
        );
        assert!(doc.contains(phrase), "docs/TUNING.md lacks {phrase:?}");
    }
}
