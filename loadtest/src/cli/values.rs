//! Parsers for flag values: counts in the project's one grammar (`30000`, `30_000`, `30k`, `1m`,
//! `1.5k`; [`c10m_sysctl::parse_count`]), rates, durations (`10`, `10s`, `500ms`, `2m`), pid
//! lists. clap calls them and shows their [`Problem`] after the flag's name.

use super::Problem;

/// A whole count: `1000000`, `1_000_000`, `1,000,000`, `1m`, `20k`, `1.5k`, `2g`.
pub fn count(text: &str) -> Result<u64, Problem> {
    c10m_sysctl::parse_count(text).map_err(Problem::Count)
}

/// A positive, finite rate (per second): a count (`20k`, `10_000`) or a decimal (`2.5`).
pub fn rate(text: &str) -> Result<f64, Problem> {
    let r = match c10m_sysctl::parse_count(text) {
        Ok(n) => n as f64,
        Err(_) => text
            .trim()
            .parse::<f64>()
            .map_err(|_| Problem::NotARate(text.to_owned()))?,
    };
    if r.is_finite() && r > 0.0 {
        Ok(r)
    } else {
        Err(Problem::NotARate(text.to_owned()))
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

/// One process id.
pub fn pid(text: &str) -> Result<u32, Problem> {
    text.trim()
        .parse::<u32>()
        .map_err(|_| Problem::NotANumber(text.to_owned()))
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
    fn counts_follow_the_project_grammar() {
        assert_eq!(count("30000"), Ok(30_000));
        assert_eq!(count("30_000"), Ok(30_000));
        assert_eq!(count("1,000,000"), Ok(1_000_000));
        assert_eq!(count("30k"), Ok(30_000));
        assert_eq!(count("2M"), Ok(2_000_000));
        assert_eq!(count("1.5k"), Ok(1_500));
        for bad in ["", "k", "-1", "1.0001k", "ten", "99999999999999999999m"] {
            assert!(
                matches!(count(bad), Err(Problem::Count(_))),
                "{bad}: {:?}",
                count(bad)
            );
        }
    }

    #[test]
    fn rates() {
        assert_eq!(rate("2.5"), Ok(2.5));
        assert_eq!(rate("10_000"), Ok(10_000.0));
        assert_eq!(rate("20k"), Ok(20_000.0));
        assert_eq!(rate("0.001"), Ok(0.001));
        for bad in ["0", "-3", "inf", "NaN", "x", ""] {
            assert_eq!(rate(bad), Err(Problem::NotARate(bad.into())), "{bad}");
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
