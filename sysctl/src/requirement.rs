//! What a formula asks of a setting, and the value that meets it without making anything worse.

use std::fmt;

use crate::value::Value;

/// What one number of a setting must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// At least this much; a larger value is kept (tune.sh never lowers it).
    AtLeast(u64),
    /// At most this much; a smaller value is kept (for buffer sizes, where less pins less memory).
    AtMost(u64),
    /// Exactly this value (a mode switch such as `tcp_tw_reuse`).
    Exactly(u64),
    /// No requirement: whatever the host has is kept.
    Keep,
}

impl Rule {
    fn settle(self, current: u64) -> u64 {
        match self {
            Rule::AtLeast(n) => current.max(n),
            Rule::AtMost(n) => current.min(n),
            Rule::Exactly(n) => n,
            Rule::Keep => current,
        }
    }
}

/// What a formula asks of a whole setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requirement {
    /// Each number obeys the rule at its position.
    Each(Vec<Rule>),
    /// A `lo hi` range must span at least `ports` numbers (`hi - lo + 1`); a narrower one is
    /// replaced by `replacement`, a wide enough one is kept wherever it sits.
    Span {
        /// How many numbers the range must hold.
        ports: u64,
        /// The range to use when the current one is too narrow.
        replacement: [u64; 2],
    },
}

impl Requirement {
    /// The value to set: `current`, changed only where it falls short of the requirement.
    ///
    /// Equal to `current` exactly when the setting already meets the requirement, so this is
    /// both the verdict and the value scripts/tune.sh writes. Numbers past the end of the rules
    /// are kept as they are.
    pub fn settle(&self, current: &Value) -> Value {
        match self {
            Requirement::Each(rules) => {
                let settled = current
                    .components()
                    .iter()
                    .enumerate()
                    .map(|(i, &n)| rules.get(i).copied().unwrap_or(Rule::Keep).settle(n))
                    .collect();
                Value::new(settled)
            }
            Requirement::Span { ports, replacement } => match current.components() {
                [lo, hi] if hi >= lo && hi - lo + 1 >= *ports => current.clone(),
                _ => Value::new(replacement.to_vec()),
            },
        }
    }
}

/// What the requirement asks, for a setting whose current value this reader cannot see (one
/// set on the host, seen from a container): `>=65535`, `>=617091 >=822788 >=1234182`,
/// `<=4096 <=16384 any`, `1`, `a range of >=64512 ports`.
impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = match self {
            Requirement::Each(rules) => rules
                .iter()
                .map(|rule| match rule {
                    Rule::AtLeast(n) => format!(">={n}"),
                    Rule::AtMost(n) => format!("<={n}"),
                    Rule::Exactly(n) => n.to_string(),
                    Rule::Keep => "any".to_owned(),
                })
                .collect::<Vec<_>>()
                .join(" "),
            Requirement::Span { ports, .. } => format!("a range of >={ports} ports"),
        };
        // `pad` so that table columns can be aligned with `{:<w$}`.
        f.pad(&text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(n: &[u64]) -> Value {
        Value::new(n.to_vec())
    }

    #[test]
    fn at_least_raises_but_never_lowers() {
        let r = Requirement::Each(vec![Rule::AtLeast(65_535)]);
        assert_eq!(r.settle(&v(&[4096])), v(&[65_535]));
        assert_eq!(r.settle(&v(&[65_535])), v(&[65_535]));
        assert_eq!(r.settle(&v(&[200_000])), v(&[200_000]));
    }

    #[test]
    fn at_most_lowers_but_never_raises() {
        let r = Requirement::Each(vec![Rule::AtMost(4096), Rule::AtMost(16_384), Rule::Keep]);
        assert_eq!(
            r.settle(&v(&[4096, 131_072, 33_554_432])),
            v(&[4096, 16_384, 33_554_432])
        );
        assert_eq!(
            r.settle(&v(&[2048, 8192, 65_536])),
            v(&[2048, 8192, 65_536])
        );
    }

    #[test]
    fn exactly_sets_the_mode() {
        let r = Requirement::Each(vec![Rule::Exactly(1)]);
        assert_eq!(r.settle(&v(&[2])), v(&[1]));
        assert_eq!(r.settle(&v(&[0])), v(&[1]));
        assert_eq!(r.settle(&v(&[1])), v(&[1]));
    }

    #[test]
    fn each_component_is_settled_on_its_own() {
        let r = Requirement::Each(vec![
            Rule::AtLeast(10),
            Rule::AtLeast(20),
            Rule::AtLeast(30),
        ]);
        assert_eq!(r.settle(&v(&[15, 5, 30])), v(&[15, 20, 30]));
    }

    #[test]
    fn span_keeps_a_wide_range_and_replaces_a_narrow_one() {
        let r = Requirement::Span {
            ports: 64_512,
            replacement: [1024, 65_535],
        };
        assert_eq!(r.settle(&v(&[32_768, 60_999])), v(&[1024, 65_535]));
        assert_eq!(r.settle(&v(&[1024, 65_535])), v(&[1024, 65_535]));
        assert_eq!(r.settle(&v(&[1000, 65_535])), v(&[1000, 65_535]));
        // Inverted or malformed ranges are replaced.
        assert_eq!(r.settle(&v(&[65_535, 1024])), v(&[1024, 65_535]));
        assert_eq!(r.settle(&v(&[1024])), v(&[1024, 65_535]));
    }

    #[test]
    fn displays_what_it_asks() {
        let r = Requirement::Each(vec![Rule::AtLeast(10), Rule::AtLeast(20)]);
        assert_eq!(r.to_string(), ">=10 >=20");
        let r = Requirement::Each(vec![Rule::AtMost(4096), Rule::Keep, Rule::Exactly(1)]);
        assert_eq!(format!("{r:<16}|"), "<=4096 any 1    |");
        let r = Requirement::Span {
            ports: 64_512,
            replacement: [1024, 65_535],
        };
        assert_eq!(r.to_string(), "a range of >=64512 ports");
    }
}
