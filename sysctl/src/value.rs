//! A setting's value: the whole numbers a `/proc/sys` entry holds.

use std::fmt;

/// The numbers of one setting, in the order `/proc/sys` prints them: one (`net.core.somaxconn`),
/// two (`net.ipv4.ip_local_port_range`) or three (`net.ipv4.tcp_mem`). `u64::MAX` stands for an
/// unlimited rlimit.
///
/// Displays as the numbers separated by single spaces, the form `sysctl -w` and
/// `/etc/sysctl.d` accept; `/proc/sys` prints TABs instead, and reading it back gives the same
/// `Value`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Value(Vec<u64>);

impl Value {
    /// A value of these components.
    pub fn new(components: Vec<u64>) -> Value {
        Value(components)
    }

    /// A one-number value.
    pub fn single(n: u64) -> Value {
        Value(vec![n])
    }

    /// The numbers, in `/proc/sys` order.
    pub fn components(&self) -> &[u64] {
        &self.0
    }

    /// Parses whitespace-separated whole numbers (TABs, spaces, a trailing newline).
    /// `None` for empty text or anything that is not a whole number.
    pub(crate) fn parse(text: &str) -> Option<Value> {
        let parts: Option<Vec<u64>> = text.split_whitespace().map(|w| w.parse().ok()).collect();
        parts.filter(|p| !p.is_empty()).map(Value)
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = String::new();
        for (i, n) in self.0.iter().enumerate() {
            if i > 0 {
                out.push(' ');
            }
            if *n == u64::MAX {
                out.push_str("unlimited");
            } else {
                out.push_str(&n.to_string());
            }
        }
        // `pad` so that table columns can be aligned with `{:<w$}`.
        f.pad(&out)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn parses_proc_sys_text_with_tabs_and_newline() {
        let v = Value::parse("287898\t383866\t575796\n").unwrap();
        assert_eq!(v.components(), &[287_898, 383_866, 575_796]);
        assert_eq!(v.to_string(), "287898 383866 575796");
    }

    #[test]
    fn spaces_and_tabs_read_the_same() {
        assert_eq!(Value::parse("1024 65535"), Value::parse("1024\t65535\n"));
    }

    #[test]
    fn rejects_empty_and_non_numbers() {
        assert_eq!(Value::parse(""), None);
        assert_eq!(Value::parse("\n"), None);
        assert_eq!(Value::parse("4096 x"), None);
        assert_eq!(Value::parse("-1"), None);
    }

    #[test]
    fn unlimited_displays_as_a_word_and_pads() {
        assert_eq!(Value::single(u64::MAX).to_string(), "unlimited");
        assert_eq!(format!("{:<6}|", Value::single(42)), "42    |");
    }
}
