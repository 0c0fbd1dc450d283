//! Number formatting for messages people read.

/// `1990000` -> `"1,990,000"`.
pub(crate) fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// KiB -> `"23.5 GiB"` (one decimal).
pub(crate) fn gib(kib: u64) -> String {
    let tenths = u128::from(kib) * 10 / (1024 * 1024);
    format!("{}.{} GiB", tenths / 10, tenths % 10)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_groups_by_three() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(19_990), "19,990");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(thousands(u64::MAX), "18,446,744,073,709,551,615");
    }

    #[test]
    fn gib_has_one_decimal() {
        assert_eq!(gib(24_683_656), "23.5 GiB");
        assert_eq!(gib(1024 * 1024), "1.0 GiB");
        assert_eq!(gib(0), "0.0 GiB");
    }
}
