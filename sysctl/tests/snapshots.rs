//! Plans computed on captured /proc snapshots (tests/fixtures/): sizes, verdicts, refusals.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::fs;

use c10m_sysctl::{
    Error, Host, Plan, PlanError, Probe, Row, SET_ON_THE_HOST, Scope, Scopes, Value, Verdict, plan,
    process_ceiling,
};
use common::{Scratch, fixture, in_a_netns};

fn host(name: &str) -> Host {
    Host::from_snapshot(&fixture(name)).unwrap()
}

fn verdicts(plan: &Plan) -> BTreeMap<&str, Verdict> {
    plan.checks
        .iter()
        .map(|c| (c.key.as_str(), c.verdict))
        .collect()
}

fn recommended(plan: &Plan, key: &str) -> String {
    plan.check(key).unwrap().recommended.to_string()
}

fn current(plan: &Plan, key: &str) -> String {
    plan.check(key).unwrap().current.to_string()
}

const ALL_KEYS: [&str; 15] = [
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
];

#[test]
fn the_captured_host_reads_as_captured() {
    let h = host("debian-default");
    assert_eq!(h.mem_total_kb(), 24_683_656);
    assert_eq!(h.nofile().soft, 20_000);
    assert_eq!(h.nofile().hard, 20_000);
    assert!(h.conntrack_loaded());
    assert_eq!(
        h.get("net.ipv4.tcp_mem"),
        Some(&Value::new(vec![287_898, 383_866, 575_796]))
    );
    let keys: Vec<&str> = h
        .readings()
        .iter()
        .map(|r| r.setting.key.as_str())
        .collect();
    assert_eq!(keys, ALL_KEYS);
}

#[test]
fn a_default_host_is_low_on_almost_everything_for_a_million() {
    let p = plan(1_000_000, &host("debian-default")).unwrap();
    let ok: Vec<&str> = verdicts(&p)
        .into_iter()
        .filter(|(_, v)| *v == Verdict::Ok)
        .map(|(k, _)| k)
        .collect();
    // file-max (2,466,174) already covers 2 × 1M + 65,536; tcp_wmem is already small.
    assert_eq!(ok, ["fs.file-max", "net.ipv4.tcp_wmem"]);
    assert_eq!(p.low().count(), 13);
    assert!(!p.is_ok());

    assert_eq!(recommended(&p, "fs.file-max"), "2466174", "never lowered");
    assert_eq!(recommended(&p, "fs.nr_open"), "2001024");
    assert_eq!(recommended(&p, "nofile"), "2001024");
    assert_eq!(recommended(&p, "net.core.somaxconn"), "65535");
    assert_eq!(recommended(&p, "net.ipv4.tcp_max_syn_backlog"), "65535");
    assert_eq!(recommended(&p, "net.core.netdev_max_backlog"), "16384");
    assert_eq!(
        recommended(&p, "net.ipv4.ip_local_port_range"),
        "1024 65535"
    );
    // Pressure capped by RAM: max may take a fifth of 24683656 KiB = 1,234,182 pages.
    assert_eq!(recommended(&p, "net.ipv4.tcp_mem"), "617091 822788 1234182");
    assert_eq!(recommended(&p, "net.ipv4.tcp_rmem"), "4096 16384 33554432");
    assert_eq!(recommended(&p, "net.ipv4.tcp_tw_reuse"), "1");
    assert_eq!(recommended(&p, "net.ipv4.tcp_max_orphans"), "1000000");
    assert_eq!(recommended(&p, "net.ipv4.tcp_max_tw_buckets"), "1000000");
    assert_eq!(recommended(&p, "net.netfilter.nf_conntrack_max"), "2000000");
    assert_eq!(recommended(&p, "vm.max_map_count"), "262144");
}

#[test]
fn a_default_host_already_holds_a_hundred_thousand_except_fds_and_constants() {
    let p = plan(100_000, &host("debian-default")).unwrap();
    let v = verdicts(&p);
    // Sized from N and already big enough at 100k:
    for key in [
        "fs.file-max",
        "fs.nr_open",
        "net.ipv4.tcp_mem",
        "net.ipv4.tcp_max_orphans",
        "net.ipv4.tcp_max_tw_buckets",
        "net.netfilter.nf_conntrack_max",
    ] {
        assert_eq!(v[key], Verdict::Ok, "{key}");
        assert_eq!(recommended(&p, key), current(&p, key), "{key} kept");
    }
    // 20,000 descriptors cannot hold 2 × 100k + 1024.
    assert_eq!(v["nofile"], Verdict::Low);
    assert_eq!(recommended(&p, "nofile"), "201024");
    // Constants do not depend on N.
    assert_eq!(v["net.core.somaxconn"], Verdict::Low);
}

#[test]
fn a_tuned_host_is_ok_and_nothing_is_lowered() {
    let tuned = host("tuned");
    let p = plan(1_000_000, &tuned).unwrap();
    assert!(p.is_ok(), "{p}");
    // A much smaller target keeps every higher value: the plan never lowers.
    let small = plan(1000, &tuned).unwrap();
    assert!(small.is_ok());
    for c in &small.checks {
        assert_eq!(c.recommended, c.current, "{}", c.key);
    }
}

#[test]
fn a_tuned_host_is_low_again_for_a_bigger_target() {
    let p = plan(1_500_000, &host("tuned")).unwrap();
    let low: Vec<&str> = p.low().map(|c| c.key.as_str()).collect();
    assert_eq!(
        low,
        [
            "fs.file-max",
            "fs.nr_open",
            "nofile",
            "net.ipv4.tcp_max_orphans",
            "net.ipv4.tcp_max_tw_buckets",
            "net.netfilter.nf_conntrack_max",
        ]
    );
    assert_eq!(recommended(&p, "fs.file-max"), "3065536");
    // tcp_mem is already at its RAM cap, so a bigger N asks for no more.
    assert_eq!(p.check("net.ipv4.tcp_mem").unwrap().verdict, Verdict::Ok);
}

#[test]
fn ram_refusal_names_the_maximum() {
    let h = host("debian-default");
    // 24683656 KiB × 1024 × 80% / 10,752 bytes per connection = 1,880,659.
    assert!(plan(1_880_659, &h).is_ok());
    let err = plan(1_880_660, &h).unwrap_err();
    assert_eq!(
        err,
        PlanError::NotEnoughMemory {
            target: 1_880_660,
            max: 1_880_659,
            mem_total_kb: 24_683_656
        }
    );
    let msg = err.to_string();
    assert!(msg.contains("at most 1,880,659 connections"), "{msg}");
    assert!(msg.contains("23.5 GiB"), "{msg}");

    let small = host("small-vm");
    let err = plan(200_000, &small).unwrap_err();
    assert_eq!(
        err,
        PlanError::NotEnoughMemory {
            target: 200_000,
            max: 153_467,
            mem_total_kb: 2_014_256
        }
    );
}

#[test]
fn zero_and_absurd_targets_are_refused() {
    let h = host("tuned");
    assert_eq!(plan(0, &h), Err(PlanError::ZeroTarget));
    assert_eq!(
        plan(u64::MAX, &h),
        Err(PlanError::TargetTooLarge {
            target: u64::MAX,
            max: 1_073_741_280
        })
    );
}

#[test]
fn without_conntrack_there_is_no_conntrack_row() {
    let h = host("small-vm");
    assert!(!h.conntrack_loaded());
    let p = plan(100_000, &h).unwrap();
    assert!(!p.conntrack_loaded);
    assert!(p.check("net.netfilter.nf_conntrack_max").is_none());
    assert_eq!(p.checks.len(), 14);
    // Small RAM caps tcp_mem: 2014256 KiB = 503,564 pages; pressure <= 503564 × 2 / 15.
    assert_eq!(recommended(&p, "net.ipv4.tcp_mem"), "50355 67141 100711");
}

#[test]
fn the_ceiling_names_the_real_limit() {
    let c = process_ceiling(&host("debian-default"));
    assert_eq!(c.connections, 19_990);
    assert!(c.holds(19_990));
    assert!(!c.holds(19_991));
    assert_eq!(
        c.to_string(),
        "RLIMIT_NOFILE 20000 caps this process at about 19,990 connections; raise it with \
         `ulimit -n` / LimitNOFILE= (see scripts/tune.sh); the hard limit is also 20000, so \
         raising it needs root (CAP_SYS_RESOURCE)"
    );
    let vm = process_ceiling(&host("small-vm"));
    assert_eq!(vm.connections, 1014);
    assert!(
        vm.to_string()
            .ends_with("the hard limit is 524288, so `ulimit -n 524288` needs no privilege"),
        "{vm}"
    );
}

#[test]
fn a_missing_entry_is_an_error_naming_its_path() {
    let s = Scratch::of("debian-default", "missing");
    let path = s.path().join("sys/net/ipv4/tcp_mem");
    fs::remove_file(&path).unwrap();
    let err = Host::from_snapshot(s.path()).unwrap_err();
    assert_eq!(err, Error::Missing { path: path.clone() });
    assert!(
        err.to_string()
            .contains("sys/net/ipv4/tcp_mem does not exist")
    );
    assert!(err.to_string().contains("`--only netns`"), "{err}");
    // Only some of the entries a network namespace hides are missing: not a namespace.
    assert!(
        Probe::snapshot(s.path())
            .scopes(Scopes::ALL)
            .read()
            .is_err()
    );
    // Reading only the network-namespace settings does not need it (as inside `unshare -n`).
    let netns = Probe::snapshot(s.path())
        .scopes(Scopes::only(&[Scope::Netns]))
        .read()
        .unwrap();
    assert!(netns.get("net.core.somaxconn").is_some());
    assert!(netns.get("net.ipv4.tcp_mem").is_none());
}

#[test]
fn missing_meminfo_or_limits_are_errors_too() {
    let s = Scratch::of("debian-default", "nomem");
    fs::remove_file(s.path().join("meminfo")).unwrap();
    assert_eq!(
        Host::from_snapshot(s.path()),
        Err(Error::Missing {
            path: s.path().join("meminfo")
        })
    );
    let s = Scratch::of("debian-default", "nolimits");
    fs::remove_file(s.path().join("self/limits")).unwrap();
    assert_eq!(
        Host::from_snapshot(s.path()),
        Err(Error::Missing {
            path: s.path().join("self/limits")
        })
    );
}

#[test]
fn a_malformed_entry_says_what_was_expected() {
    let s = Scratch::of("debian-default", "malformed");
    let path = s.path().join("sys/net/ipv4/tcp_mem");
    fs::write(&path, "287898\t383866\n").unwrap();
    assert_eq!(
        Host::from_snapshot(s.path()),
        Err(Error::Malformed {
            path,
            text: "287898\t383866".into(),
            expected: "3 whole numbers".into()
        })
    );
    let path = s.path().join("sys/net/core/somaxconn");
    fs::write(s.path().join("sys/net/ipv4/tcp_mem"), "1 2 3\n").unwrap();
    fs::write(&path, "lots\n").unwrap();
    assert_eq!(
        Host::from_snapshot(s.path()),
        Err(Error::Malformed {
            path,
            text: "lots".into(),
            expected: "1 whole number".into()
        })
    );
}

#[test]
fn the_doctor_table_is_aligned_and_complete() {
    let p = plan(1_000_000, &host("debian-default")).unwrap();
    let text = p.to_string();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0],
        "host check for 1,000,000 connections: 13 of 15 settings low; RAM 23.5 GiB holds at \
         most 1,880,659 connections"
    );
    assert!(lines[1].starts_with("setting "));
    let rows = &lines[2..2 + ALL_KEYS.len()];
    let col = |line: &str, word: &str| line.find(word).unwrap();
    let current_at = col(lines[1], "current");
    let verdict_at = col(lines[1], "verdict");
    for (row, key) in rows.iter().zip(ALL_KEYS) {
        assert!(row.starts_with(key), "{row}");
        let c = p.check(key).unwrap();
        assert_eq!(
            &row[current_at..current_at + c.current.to_string().len()],
            c.current.to_string()
        );
        let verdict = c.verdict.to_string();
        assert_eq!(
            &row[verdict_at..verdict_at + verdict.len()],
            verdict,
            "{row}"
        );
        assert!(row.ends_with(&c.reason));
    }
    assert_eq!(
        lines[2 + ALL_KEYS.len()],
        "apply with: sudo scripts/tune.sh --connections 1000000 (see docs/TUNING.md)"
    );
}

const HOST_KEYS: [&str; 7] = [
    "fs.file-max",
    "fs.nr_open",
    "net.core.netdev_max_backlog",
    "net.ipv4.tcp_mem",
    "net.ipv4.tcp_max_orphans",
    "net.netfilter.nf_conntrack_max",
    "vm.max_map_count",
];

#[test]
fn inside_a_network_namespace_host_settings_are_set_on_the_host() {
    let s = in_a_netns("debian-default", "netns");
    let h = Host::from_snapshot(s.path()).unwrap();
    assert!(h.in_network_namespace());
    let on_host: Vec<&str> = h.on_host().iter().map(|s| s.key.as_str()).collect();
    assert_eq!(on_host, HOST_KEYS);
    // fs.* and vm.* are readable in a namespace, but they are the machine's: not read.
    assert_eq!(h.get("fs.file-max"), None);
    assert_eq!(h.readings().len(), 8);
    assert!(h.readings().iter().all(|r| r.setting.scope != Scope::Host));

    let p = plan(100_000, &h).unwrap();
    assert_eq!(p.checks.len(), 8);
    let needs = |key: &str| {
        let row = p.on_host.iter().find(|o| o.key == key).unwrap();
        row.needs.to_string()
    };
    assert_eq!(needs("fs.file-max"), ">=265536");
    assert_eq!(needs("net.ipv4.tcp_mem"), ">=75000 >=100000 >=150000");
    assert_eq!(needs("vm.max_map_count"), ">=262144");
    // The verdict follows the namespace's own settings and the process limit only.
    assert_eq!(
        p.low().map(|c| c.key.as_str()).collect::<Vec<_>>(),
        [
            "nofile",
            "net.core.somaxconn",
            "net.ipv4.tcp_max_syn_backlog",
            "net.ipv4.ip_local_port_range",
            "net.ipv4.tcp_rmem",
            "net.ipv4.tcp_tw_reuse"
        ]
    );
    let keys: Vec<&str> = p.rows().iter().map(|r| r.key()).collect();
    assert_eq!(keys, ALL_KEYS, "rows in table order");
    assert!(matches!(p.rows()[0], Row::OnHost(_)));
}

#[test]
fn a_tuned_namespace_is_ok_whatever_the_host_has() {
    let s = in_a_netns("tuned", "netns-tuned");
    let p = plan(1_000_000, &Host::from_snapshot(s.path()).unwrap()).unwrap();
    assert!(p.is_ok(), "{p}");
    assert_eq!(p.on_host.len(), HOST_KEYS.len());
    // The host is not asked for: only the host scope gives nothing to check here.
    let only_host = Probe::snapshot(s.path())
        .scopes(Scopes::only(&[Scope::Host]))
        .read()
        .unwrap();
    let p = plan(1_000_000, &only_host).unwrap();
    assert!(p.checks.is_empty());
    assert_eq!(p.on_host.len(), HOST_KEYS.len());
    // Without the host scope nothing is listed as set on the host.
    let netns = Probe::snapshot(s.path())
        .scopes(Scopes::only(&[Scope::Netns]))
        .read()
        .unwrap();
    assert!(!netns.in_network_namespace());
    assert!(netns.on_host().is_empty());
}

#[test]
fn the_doctor_table_inside_a_namespace_says_set_on_the_host() {
    let s = in_a_netns("debian-default", "netns-table");
    let p = plan(100_000, &Host::from_snapshot(s.path()).unwrap()).unwrap();
    let text = p.to_string();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0],
        "host check for 100,000 connections inside a network namespace: 6 of 8 settings low, \
         7 set on the host; RAM 23.5 GiB holds at most 1,880,659 connections"
    );
    let verdict_at = lines[1].find("verdict").unwrap();
    for (row, key) in lines[2..2 + ALL_KEYS.len()].iter().zip(ALL_KEYS) {
        assert!(row.starts_with(key), "{row}");
        let verdict = &row[verdict_at..];
        assert_eq!(
            HOST_KEYS.contains(&key),
            verdict.starts_with(SET_ON_THE_HOST),
            "{row}"
        );
    }
    assert_eq!(
        &lines[2 + ALL_KEYS.len()..],
        [
            "apply this namespace's own settings with: sudo scripts/tune.sh --connections 100000 \
             --only netns,session (see docs/TUNING.md, containers)",
            "the 7 settings set on the host are checked and applied there: sudo scripts/tune.sh \
             --connections 100000 --only host"
        ]
    );
}
