//! `c10m-tune-plan`'s command line on clap: suggestions, `--version`, the one count grammar, and
//! the plan it prints, byte for byte the library's plan in the line format scripts/tune.sh reads.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::{Command, Output};

use c10m_sysctl::{Probe, Row, Scopes, plan, process_ceiling};
use common::{fixture, in_a_netns};

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_c10m-tune-plan"))
        .args(args)
        .output()
        .unwrap()
}

fn on(root: &Path, args: &[&str]) -> Output {
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

/// What the binary must print for `--connections n --only scopes`, written from the library:
/// the contract scripts/tune.sh and scripts/test-tune.sh parse.
fn expected(root: &Path, n: u64, scopes: Scopes, human: bool) -> String {
    let host = Probe::snapshot(root).scopes(scopes).read().unwrap();
    let plan = plan(n, &host).unwrap();
    if human {
        return format!("{plan}{}\n", process_ceiling(&host));
    }
    plan.rows()
        .iter()
        .map(|row| match row {
            Row::Check(c) => format!(
                "{}\t{}\t{}\t{}\t{}\n",
                c.key, c.recommended, c.current, c.verdict, c.reason
            ),
            Row::OnHost(h) => format!("{}\t{}\t-\thost\t{}\n", h.key, h.needs, h.reason),
        })
        .collect()
}

#[test]
fn a_mistyped_flag_exits_2_with_a_suggestion() {
    let root = fixture("debian-default");
    for (typo, meant) in [
        ("--conections", "--connections"),
        ("--humna", "--human"),
        ("--proc-rot", "--proc-root"),
    ] {
        let o = on(&root, &["--connections", "1m", typo]);
        assert_eq!(o.status.code(), Some(2), "{typo}: {}", stderr(&o));
        let err = stderr(&o);
        assert!(
            err.contains(&format!("unexpected argument '{typo}'")),
            "{err}"
        );
        assert!(
            err.contains(&format!("a similar argument exists: '{meant}'")),
            "{err}"
        );
        assert!(stdout(&o).is_empty(), "{typo} printed a plan");
    }
}

#[test]
fn version_prints_the_name_and_version_and_needs_no_target() {
    for flag in ["--version", "-V"] {
        let o = run(&[flag]);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        assert_eq!(
            stdout(&o),
            format!("c10m-tune-plan {}\n", env!("CARGO_PKG_VERSION"))
        );
    }
}

#[test]
fn help_lists_every_flag_and_the_exit_status() {
    for flag in ["--help", "-h"] {
        let o = run(&[flag]);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        let help = stdout(&o);
        for option in [
            "--connections <N>",
            "--only <SCOPES>",
            "--proc-root <DIR>",
            "--human",
            "--version",
        ] {
            assert!(help.contains(option), "{option}: {help}");
        }
        assert!(help.contains("[default: all]"), "{help}");
        assert!(help.contains("Exit status: 0 with a plan"), "{help}");
    }
}

#[test]
fn counts_in_the_one_grammar_are_accepted() {
    let root = fixture("debian-default");
    for (text, n) in [
        ("1m", 1_000_000),
        ("20k", 20_000),
        ("1.5k", 1_500),
        ("250_000", 250_000),
    ] {
        let o = on(&root, &["--connections", text]);
        assert_eq!(o.status.code(), Some(0), "{text}: {}", stderr(&o));
        assert_eq!(stdout(&o), expected(&root, n, Scopes::ALL, false), "{text}");
    }
    // clap's `--flag=value` form says the same.
    let o = on(&root, &["--connections=1m"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stdout(&o), expected(&root, 1_000_000, Scopes::ALL, false));
}

#[test]
fn a_flag_given_twice_keeps_its_last_value() {
    let root = fixture("debian-default");
    let o = on(
        &root,
        &[
            "--connections",
            "5",
            "--human",
            "--connections",
            "1m",
            "--human",
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stdout(&o), expected(&root, 1_000_000, Scopes::ALL, true));
}

#[test]
fn a_flag_where_the_count_should_be_is_a_missing_value() {
    let o = on(&fixture("debian-default"), &["--connections", "--human"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("a value is required for '--connections <N>'"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn the_plan_is_the_librarys_in_the_documented_format() {
    let netns = in_a_netns("debian-default", "args-netns");
    let roots = [
        fixture("debian-default"),
        fixture("small-vm"),
        fixture("tuned"),
        netns.path().to_path_buf(),
    ];
    let scopes = ["all", "netns", "host", "session", "netns,session"];
    for root in &roots {
        for only in scopes {
            let set: Scopes = only.parse().unwrap();
            for human in [false, true] {
                let mut args = vec!["--connections", "100000", "--only", only];
                if human {
                    args.push("--human");
                }
                let o = on(root, &args);
                assert_eq!(
                    o.status.code(),
                    Some(0),
                    "{} {args:?}: {}",
                    root.display(),
                    stderr(&o)
                );
                assert_eq!(
                    stdout(&o),
                    expected(root, 100_000, set, human),
                    "{} {args:?}",
                    root.display()
                );
                assert!(stderr(&o).is_empty(), "{}", stderr(&o));
            }
        }
    }
}
