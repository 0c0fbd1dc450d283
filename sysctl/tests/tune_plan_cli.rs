//! The `c10m-tune-plan` binary that scripts/tune.sh reads: its line format and its refusals.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs;
use std::process::{Command, Output};

use common::{Scratch, fixture, in_a_netns};

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_c10m-tune-plan"))
        .args(args)
        .output()
        .unwrap()
}

fn on(snapshot: &str, args: &[&str]) -> Output {
    let root = fixture(snapshot);
    let mut all = vec!["--proc-root", root.to_str().unwrap()];
    all.extend_from_slice(args);
    run(&all)
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).unwrap()
}

#[test]
fn prints_one_five_column_line_per_setting() {
    let o = on("debian-default", &["--connections", "1000000"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    let lines: Vec<Vec<&str>> = out.lines().map(|l| l.split('\t').collect()).collect();
    assert_eq!(lines.len(), 15);
    for cols in &lines {
        assert_eq!(cols.len(), 5, "{cols:?}");
        assert!(cols[3] == "ok" || cols[3] == "low", "{cols:?}");
        assert_eq!(
            cols[3] == "ok",
            cols[1] == cols[2],
            "ok exactly when unchanged: {cols:?}"
        );
    }
    assert_eq!(
        &lines[3][..4],
        ["net.core.somaxconn", "65535", "4096", "low"]
    );
    assert_eq!(
        &lines[7][..4],
        [
            "net.ipv4.tcp_mem",
            "617091 822788 1234182",
            "287898 383866 575796",
            "low"
        ]
    );
    assert!(lines[3][4].starts_with("cap on every listen() backlog"));
}

#[test]
fn only_restricts_the_plan_to_scopes() {
    let o = on(
        "debian-default",
        &["--connections", "1000000", "--only", "netns,session"],
    );
    assert_eq!(o.status.code(), Some(0));
    let keys: Vec<String> = stdout(&o)
        .lines()
        .map(|l| l.split('\t').next().unwrap().to_owned())
        .collect();
    assert_eq!(
        keys,
        [
            "nofile",
            "net.core.somaxconn",
            "net.ipv4.tcp_max_syn_backlog",
            "net.ipv4.ip_local_port_range",
            "net.ipv4.tcp_rmem",
            "net.ipv4.tcp_wmem",
            "net.ipv4.tcp_tw_reuse",
            "net.ipv4.tcp_max_tw_buckets",
        ]
    );
}

#[test]
fn human_output_is_the_doctor_table_and_the_ceiling() {
    let o = on("debian-default", &["--connections", "1000000", "--human"]);
    assert_eq!(o.status.code(), Some(0));
    let out = stdout(&o);
    assert!(out.starts_with("host check for 1,000,000 connections: 13 of 15 settings low"));
    assert!(out.contains(
        "RLIMIT_NOFILE 20000 caps this process at about 19,990 connections; raise it with \
         `ulimit -n` / LimitNOFILE= (see scripts/tune.sh)"
    ));
}

/// (arguments, exit status, a phrase the message must hold)
const BAD: &[(&[&str], i32, &str)] = &[
    // Usage errors are clap's (as in `c10m` and `c10m-loadtest`), exit status 2.
    (
        &["--connections", "1000", "--bogus"],
        2,
        "unexpected argument '--bogus' found",
    ),
    (
        &["--connections", "lots"],
        2,
        "needs a whole number of connections, got \"lots\"",
    ),
    (&["--connections", "-5"], 2, "needs a whole number"),
    (&["--connections", "1e6"], 2, "needs a whole number"),
    (&["--connections", ""], 2, "needs a whole number"),
    (
        &["--connections"],
        2,
        "a value is required for '--connections <N>'",
    ),
    (
        &[],
        2,
        "required arguments were not provided:\n  --connections <N>",
    ),
    (
        &["--connections", "5", "--only", "net"],
        2,
        "unknown scope \"net\"",
    ),
    (
        &["--connections", "0"],
        1,
        "a target of 0 connections needs no tuning",
    ),
    (
        &["--connections", "99999999999999999999999"],
        2,
        "absurdly large",
    ),
    (
        &["--connections", "1073741281"],
        1,
        "at most 1,073,741,280 can be planned",
    ),
    (
        &["--connections", "2000000"],
        1,
        "holds at most 1,880,659 connections",
    ),
];

#[test]
fn bad_input_gives_a_clear_message_and_a_non_zero_exit() {
    for (args, code, phrase) in BAD {
        let o = on("debian-default", args);
        assert_eq!(o.status.code(), Some(*code), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(phrase), "{args:?}: {}", stderr(&o));
        assert!(stdout(&o).is_empty(), "{args:?} printed a plan");
    }
}

#[test]
fn a_missing_proc_entry_fails_naming_it() {
    let s = Scratch::of("debian-default", "cli-missing");
    let path = s.path().join("sys/vm/max_map_count");
    fs::remove_file(&path).unwrap();
    let o = run(&[
        "--proc-root",
        s.path().to_str().unwrap(),
        "--connections",
        "1000",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stdout(&o).is_empty());
    assert!(
        stderr(&o).contains(&format!("{} does not exist", path.display())),
        "{}",
        stderr(&o)
    );
}

#[test]
fn help_exits_zero() {
    let o = run(&["--help"]);
    assert_eq!(o.status.code(), Some(0));
    assert!(
        stdout(&o).contains("Usage: c10m-tune-plan [OPTIONS] --connections <N>"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn counts_take_the_one_grammar() {
    let plain = stdout(&on("debian-default", &["--connections", "1000000"]));
    for n in ["1m", "1_000_000", "1,000,000", "1000k"] {
        let o = on("debian-default", &["--connections", n]);
        assert_eq!(o.status.code(), Some(0), "{n}: {}", stderr(&o));
        assert_eq!(stdout(&o), plain, "{n}");
    }
}

#[test]
fn inside_a_network_namespace_host_rows_say_host() {
    let s = in_a_netns("debian-default", "cli-netns");
    let o = run(&[
        "--proc-root",
        s.path().to_str().unwrap(),
        "--connections",
        "1000000",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    let lines: Vec<Vec<&str>> = out.lines().map(|l| l.split('\t').collect()).collect();
    assert_eq!(lines.len(), 15, "every row, in table order");
    assert_eq!(lines[0][..4], ["fs.file-max", ">=2065536", "-", "host"]);
    assert_eq!(
        lines[7][..4],
        [
            "net.ipv4.tcp_mem",
            ">=617091 >=822788 >=1234182",
            "-",
            "host"
        ]
    );
    assert_eq!(
        &lines[3][..4],
        ["net.core.somaxconn", "65535", "4096", "low"]
    );
    let host_rows = lines.iter().filter(|cols| cols[3] == "host").count();
    assert_eq!(host_rows, 7);

    let o = run(&[
        "--proc-root",
        s.path().to_str().unwrap(),
        "--connections",
        "1000000",
        "--human",
    ]);
    assert_eq!(o.status.code(), Some(0));
    let out = stdout(&o);
    assert!(out.starts_with("host check for 1,000,000 connections inside a network namespace"));
    assert!(out.contains("set on the host"), "{out}");
    assert!(out.contains("--only netns"), "{out}");
}

#[test]
fn a_host_entry_missing_outside_a_namespace_names_only_netns() {
    let s = Scratch::of("debian-default", "cli-tcp-mem");
    fs::remove_file(s.path().join("sys/net/ipv4/tcp_mem")).unwrap();
    let o = run(&[
        "--proc-root",
        s.path().to_str().unwrap(),
        "--connections",
        "1000",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("`--only netns`"), "{}", stderr(&o));
}
