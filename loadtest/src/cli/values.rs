//! Parsers for flag values: counts (`30000`, `30_000`, `30k`, `1m`), rates, durations (`10`,
//! `10s`, `500ms`, `2m`), pid lists.

use super::Problem;

/// A whole count; `k` multiplies by 1,000 and `m` by 1,000,000; `_` and `,` are ignored.
pub fn count(text: &str) -> Result<u64, Problem> {
    let clean: String = text.chars().filter(|c| *c != '_' && *c != ',').collect();
    let (digits, mult) = match clean.char_indices().last() {
        Some((i, 'k' | 'K')) => (&clean[..i], 1_000),
        Some((i, 'm' | 'M')) => (&clean[..i], 1_000_000),
        _ => (&clean[..], 1),
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(|| Problem::NotANumber(text.to_owned()))
}

/// A positive, finite rate (per second).
pub fn rate(text: &str) -> Result<f64, Problem> {
    match text.replace('_', "").parse::<f64>() {
        Ok(r) if r.is_finite() && r > 0.0 => Ok(r),
        _ => Err(Problem::NotANumber(text.to_owned())),
    }
}

/// A duration in milliseconds: a bare number is seconds; suffixes `ms`, `s`, `m`.
pub fn duration_ms(text: &str) -> Result<u64, Problem> {
    let bad = || Problem::NotADuration(text.to_owned());
    let (num, unit_ms) = if let Some(n) = text.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1_000.0)
    } else if let Some(n) = text.strip_suffix('m') {
        (n, 60_000.0)
    } else {
        (text, 1_000.0)
    };
    let v: f64 = num.parse().map_err(|_| bad())?;
    if !v.is_finite() || v < 0.0 {
        return Err(bad());
    }
    let ms = (v * unit_ms).round();
    if ms > u64::MAX as f64 / 2.0 {
        return Err(bad());
    }
    Ok(ms as u64)
}

/// Process ids, comma-separated.
pub fn pids(text: &str) -> Result<Vec<u32>, Problem> {
    let pids = text
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| {
            p.parse::<u32>()
                .map_err(|_| Problem::NotANumber(p.to_owned()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if pids.is_empty() {
        return Err(Problem::Empty);
    }
    Ok(pids)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts() {
        assert_eq!(count("30000"), Ok(30_000));
        assert_eq!(count("30_000"), Ok(30_000));
        assert_eq!(count("1,000,000"), Ok(1_000_000));
        assert_eq!(count("30k"), Ok(30_000));
        assert_eq!(count("2M"), Ok(2_000_000));
        for bad in ["", "k", "-1", "1.5k", "ten", "99999999999999999999m"] {
            assert_eq!(count(bad), Err(Problem::NotANumber(bad.into())), "{bad}");
        }
    }

    #[test]
    fn rates() {
        assert_eq!(rate("2.5"), Ok(2.5));
        assert_eq!(rate("10_000"), Ok(10_000.0));
        for bad in ["0", "-3", "inf", "NaN", "x"] {
            assert!(rate(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(duration_ms("10"), Ok(10_000));
        assert_eq!(duration_ms("10s"), Ok(10_000));
        assert_eq!(duration_ms("1.5s"), Ok(1_500));
        assert_eq!(duration_ms("250ms"), Ok(250));
        assert_eq!(duration_ms("2m"), Ok(120_000));
        assert_eq!(duration_ms("0"), Ok(0));
        for bad in ["", "s", "-1", "1h", "1e400"] {
            assert!(duration_ms(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn pid_lists() {
        assert_eq!(pids("1, 22,333"), Ok(vec![1, 22, 333]));
        assert_eq!(pids(","), Err(Problem::Empty));
        assert!(pids("1,x").is_err());
    }
}
