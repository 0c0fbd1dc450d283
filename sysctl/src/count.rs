//! One grammar for counts people type on a command line, in a TOML file or in an environment
//! variable: `1000000`, `1_000_000`, `1,000,000`, `1m`, `1.5k`, `20K`, `2g` (k = 10^3,
//! m = 10^6, g = 10^9; decimal, because these count connections and messages, not bytes).

use std::fmt;

/// Why a count did not parse.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CountError {
    /// Nothing was given.
    Empty,
    /// Not a number in this grammar.
    Invalid(String),
    /// A fraction left after the suffix (`1.0001k` is 1000.1).
    NotWhole(String),
    /// Past `u64::MAX`.
    TooLarge(String),
}

impl fmt::Display for CountError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CountError::Empty => write!(f, "empty count"),
            CountError::Invalid(s) => write!(
                f,
                "'{s}' is not a count (examples: 1000000, 1_000_000, 1m, 1.5k, 2g)"
            ),
            CountError::NotWhole(s) => write!(f, "'{s}' is not a whole number"),
            CountError::TooLarge(s) => write!(f, "'{s}' is too large"),
        }
    }
}

impl std::error::Error for CountError {}

/// Parses a count: digits with optional `_` or `,` separators, an optional fraction, and an
/// optional suffix `k`, `m` or `g` (either case).
pub fn parse_count(text: &str) -> Result<u64, CountError> {
    let s = text.trim();
    if s.is_empty() {
        return Err(CountError::Empty);
    }
    let invalid = || CountError::Invalid(text.to_owned());
    let (digits, scale) = match s.as_bytes()[s.len() - 1].to_ascii_lowercase() {
        b'k' => (&s[..s.len() - 1], 1_000u64),
        b'm' => (&s[..s.len() - 1], 1_000_000),
        b'g' => (&s[..s.len() - 1], 1_000_000_000),
        _ => (s, 1),
    };
    let cleaned: String = digits.chars().filter(|c| *c != '_' && *c != ',').collect();
    let (whole, frac) = cleaned.split_once('.').unwrap_or((&cleaned, ""));
    let all_digits = |p: &str| p.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() || !all_digits(whole) || !all_digits(frac) || digits.starts_with(['_', ','])
    {
        return Err(invalid());
    }
    let too_large = || CountError::TooLarge(text.to_owned());
    let whole: u64 = whole.parse().map_err(|_| too_large())?;
    let mut value = whole.checked_mul(scale).ok_or_else(too_large)?;
    if !frac.is_empty() {
        // The fraction times the scale must be whole: 1.5k = 1500, 1.0001k is refused.
        let frac_scale = 10u64.checked_pow(frac.len() as u32).ok_or_else(invalid)?;
        let frac_value: u64 = frac.parse().map_err(|_| invalid())?;
        let scaled = u128::from(frac_value) * u128::from(scale);
        if scaled % u128::from(frac_scale) != 0 {
            return Err(CountError::NotWhole(text.to_owned()));
        }
        let add = u64::try_from(scaled / u128::from(frac_scale)).map_err(|_| too_large())?;
        value = value.checked_add(add).ok_or_else(too_large)?;
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_and_separated_digits() {
        assert_eq!(parse_count("1000000"), Ok(1_000_000));
        assert_eq!(parse_count("1_000_000"), Ok(1_000_000));
        assert_eq!(parse_count("1,000,000"), Ok(1_000_000));
        assert_eq!(parse_count(" 42 "), Ok(42));
        assert_eq!(parse_count("0"), Ok(0));
    }

    #[test]
    fn suffixes_are_decimal() {
        assert_eq!(parse_count("1m"), Ok(1_000_000));
        assert_eq!(parse_count("1M"), Ok(1_000_000));
        assert_eq!(parse_count("20k"), Ok(20_000));
        assert_eq!(parse_count("1.5k"), Ok(1_500));
        assert_eq!(parse_count("2g"), Ok(2_000_000_000));
        assert_eq!(parse_count("0.25m"), Ok(250_000));
    }

    #[test]
    fn bad_counts_say_why() {
        assert_eq!(parse_count(""), Err(CountError::Empty));
        assert!(matches!(parse_count("abc"), Err(CountError::Invalid(_))));
        assert!(matches!(parse_count("-1"), Err(CountError::Invalid(_))));
        assert!(matches!(parse_count("k"), Err(CountError::Invalid(_))));
        assert!(matches!(parse_count("_1"), Err(CountError::Invalid(_))));
        assert!(matches!(parse_count("1.2.3"), Err(CountError::Invalid(_))));
        assert!(matches!(
            parse_count("1.0001k"),
            Err(CountError::NotWhole(_))
        ));
        assert!(matches!(parse_count("1.5"), Err(CountError::NotWhole(_))));
        assert!(matches!(
            parse_count("99999999999999999999"),
            Err(CountError::TooLarge(_))
        ));
        assert!(matches!(
            parse_count("20000000000g"),
            Err(CountError::TooLarge(_))
        ));
        assert_eq!(parse_count("18446744073709551615"), Ok(u64::MAX));
    }
}
