//! Address lists: source-address ranges (`127.0.0.2-127.0.0.254`), target lists with port
//! ranges (`127.0.0.1:9001-9004`), and the loopback policy.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use super::Problem;

/// Most addresses one list may expand to.
pub const MAX_LIST: usize = 65_536;

/// Whether an address is on this host's loopback (127.0.0.0/8 or ::1).
pub fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

/// Parses `A`, `A-B` (IPv4 only) or `A-N` (last octet), comma-separated.
pub fn parse_ips(text: &str) -> Result<Vec<IpAddr>, Problem> {
    let mut out = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            None => out.push(
                part.parse::<IpAddr>()
                    .map_err(|_| Problem::NotAnAddress(part.to_owned()))?,
            ),
            Some((a, b)) => {
                let first: Ipv4Addr = a.parse().map_err(|_| Problem::NotAnAddress(a.to_owned()))?;
                let last: Ipv4Addr = match b.parse::<Ipv4Addr>() {
                    Ok(ip) => ip,
                    Err(_) => {
                        // Short form: the last octet only.
                        let octet: u8 =
                            b.parse().map_err(|_| Problem::NotAnAddress(b.to_owned()))?;
                        let [x, y, z, _] = first.octets();
                        Ipv4Addr::new(x, y, z, octet)
                    }
                };
                let (lo, hi) = (u32::from(first), u32::from(last));
                if hi < lo {
                    return Err(Problem::BadRange(part.to_owned()));
                }
                if (hi - lo) as usize >= MAX_LIST || out.len() + (hi - lo) as usize >= MAX_LIST {
                    return Err(Problem::TooMany(MAX_LIST));
                }
                out.extend((lo..=hi).map(|n| IpAddr::V4(Ipv4Addr::from(n))));
            }
        }
    }
    if out.is_empty() {
        return Err(Problem::Empty);
    }
    Ok(out)
}

/// Parses `IP:PORT`, `IP:PORT-PORT` or `[IPv6]:PORT[-PORT]`, comma-separated.
pub fn parse_targets(text: &str) -> Result<Vec<SocketAddr>, Problem> {
    let mut out = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        if let Ok(addr) = part.parse::<SocketAddr>() {
            out.push(addr);
            continue;
        }
        let bad = || Problem::NotAnAddress(part.to_owned());
        let (host, ports) = part.rsplit_once(':').ok_or_else(bad)?;
        let (p1, p2) = ports.split_once('-').ok_or_else(bad)?;
        let ip: IpAddr = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse()
            .map_err(|_| bad())?;
        let (p1, p2): (u16, u16) = (
            p1.parse().map_err(|_| bad())?,
            p2.parse().map_err(|_| bad())?,
        );
        if p2 < p1 || p1 == 0 {
            return Err(Problem::BadRange(part.to_owned()));
        }
        if out.len() + usize::from(p2 - p1) >= MAX_LIST {
            return Err(Problem::TooMany(MAX_LIST));
        }
        out.extend((p1..=p2).map(|p| SocketAddr::new(ip, p)));
    }
    if out.is_empty() {
        return Err(Problem::Empty);
    }
    if let Some(a) = out.iter().find(|a| a.port() == 0) {
        return Err(Problem::NotAnAddress(a.to_string()));
    }
    Ok(out)
}

/// Refuses any non-loopback address unless `allow_remote`.
pub fn check_loopback(
    ips: impl IntoIterator<Item = IpAddr>,
    allow_remote: bool,
) -> Result<(), Problem> {
    if allow_remote {
        return Ok(());
    }
    match ips.into_iter().find(|ip| !is_loopback(*ip)) {
        Some(ip) => Err(Problem::NotLoopback(ip)),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn source_ranges() {
        let ips = parse_ips("127.0.0.2-127.0.0.254").unwrap();
        assert_eq!(ips.len(), 253);
        assert_eq!((ips[0], ips[252]), (v4("127.0.0.2"), v4("127.0.0.254")));
        assert_eq!(
            parse_ips("127.0.0.2-4").unwrap(),
            [v4("127.0.0.2"), v4("127.0.0.3"), v4("127.0.0.4")]
        );
        // Ranges cross octet boundaries.
        let ips = parse_ips("127.0.0.255-127.0.1.1").unwrap();
        assert_eq!(ips, [v4("127.0.0.255"), v4("127.0.1.0"), v4("127.0.1.1")]);
        assert_eq!(
            parse_ips(" 127.0.0.9 , ::1").unwrap(),
            [v4("127.0.0.9"), v4("::1")]
        );
    }

    #[test]
    fn bad_source_ranges() {
        assert_eq!(
            parse_ips("127.0.0.5-127.0.0.4"),
            Err(Problem::BadRange("127.0.0.5-127.0.0.4".into()))
        );
        assert_eq!(
            parse_ips("127.0.0.5-3"),
            Err(Problem::BadRange("127.0.0.5-3".into()))
        );
        assert_eq!(
            parse_ips("127.0.0.x"),
            Err(Problem::NotAnAddress("127.0.0.x".into()))
        );
        assert_eq!(
            parse_ips("127.0.0.1-999"),
            Err(Problem::NotAnAddress("999".into()))
        );
        assert_eq!(
            parse_ips("10.0.0.0-10.255.255.255"),
            Err(Problem::TooMany(MAX_LIST))
        );
        assert_eq!(parse_ips(","), Err(Problem::Empty));
    }

    #[test]
    fn targets_with_port_ranges() {
        let t = parse_targets("127.0.0.1:9001-9003,127.0.0.2:80").unwrap();
        let want: Vec<SocketAddr> = [
            "127.0.0.1:9001",
            "127.0.0.1:9002",
            "127.0.0.1:9003",
            "127.0.0.2:80",
        ]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
        assert_eq!(t, want);
        assert_eq!(parse_targets("[::1]:5-6").unwrap().len(), 2);
        assert!(parse_targets("127.0.0.1").is_err());
        assert!(parse_targets("localhost:80").is_err());
        assert!(parse_targets("127.0.0.1:0").is_err());
        assert_eq!(
            parse_targets("127.0.0.1:9-8"),
            Err(Problem::BadRange("127.0.0.1:9-8".into()))
        );
    }

    #[test]
    fn loopback_policy() {
        assert!(is_loopback(v4("127.255.0.1")));
        assert!(is_loopback(v4("::1")));
        assert!(is_loopback(v4("::ffff:127.0.0.1")));
        assert!(!is_loopback(v4("0.0.0.0")));
        assert!(!is_loopback(v4("10.0.0.1")));
        assert_eq!(
            check_loopback([v4("127.0.0.1"), v4("192.168.1.1")], false),
            Err(Problem::NotLoopback(v4("192.168.1.1")))
        );
        assert_eq!(check_loopback([v4("192.168.1.1")], true), Ok(()));
    }
}
