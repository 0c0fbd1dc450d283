//! The command line as a user meets it: the binary's exit status and what it prints.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Output};

fn loadtest(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_c10m-loadtest"))
        .args(args)
        .output()
        .unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_mistyped_flag_exits_2_with_a_suggestion() {
    let out = loadtest(&["idle", "--conections", "1m"]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("unexpected argument '--conections'"), "{err}");
    assert!(
        err.contains("similar argument exists: '--connections'"),
        "{err}"
    );
    let out = loadtest(&["ide"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("similar subcommand exists: 'idle'"));
}

#[test]
fn counts_use_the_project_grammar_and_limits_still_hold() {
    // 11m is read as 11,000,000, past the 10,000,000 limit.
    let out = loadtest(&["idle", "--connections", "11m"]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("--connections: 11000000 is outside 1..=10000000"),
        "{err}"
    );
    assert!(err.contains("Usage: c10m-loadtest idle"), "{err}");
    let out = loadtest(&["idle", "-n", "1_0x"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("is not a count"), "{}", stderr(&out));
}

#[test]
fn version_and_help_exit_0_on_stdout() {
    let out = loadtest(&["--version"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        text.trim(),
        format!("c10m-loadtest {}", env!("CARGO_PKG_VERSION"))
    );
    let out = loadtest(&["echo", "--help"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("--msg-rate") && text.contains("Exit status"),
        "{text}"
    );
}

#[test]
fn no_arguments_prints_the_help_and_exits_2() {
    let out = loadtest(&[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("Scenarios:"), "{}", stderr(&out));
}

/// The command lines `scripts/*.sh` run (their variables filled in) still parse.
#[test]
fn the_scripts_command_lines_parse() {
    use c10m_loadtest::cli::{self, Command};
    let common = "--target 127.0.0.1:9001 --procs 1 --threads 1 --server-pid 1 --json --quiet";
    for line in [
        // bench-backends.sh, bench-engine.sh
        "echo -n 100 --size 20 --window 16 --duration 5",
        "echo -n 1000 --size 125 --window 4 --duration 5",
        "echo -n 500 --size 16384 --window 1 --duration 5",
        "echo -n 1000 --size 125 --msg-rate 100 --duration 5",
        "broadcast -n 1000 --publishers 3 --publish-rate 200 --duration 5",
        "idle -n 15000 --source-ips 127.0.0.2-127.0.0.5 --rate 20000 --duration 3s",
        // idle-memory.sh
        "idle -n 100000 --source-ips 127.0.0.2-127.0.0.5 --rate 20000 --duration 40s --path /echo",
        // scale-test.sh
        "idle --connections 1000000 --rate 10000 --duration 60 --source-ips 127.0.0.2-127.0.0.254 \
         --html /tmp/r.html --ramp-timeout 130",
    ] {
        let args = line.split_whitespace().chain(common.split_whitespace());
        match cli::parse(args) {
            Ok(Command::Run(_)) => {}
            other => panic!("{line}: {other:?}"),
        }
    }
}

#[test]
fn tls_needs_a_trust_choice_and_a_readable_ca() {
    let out = loadtest(&["echo", "--tls"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--tls-insecure"), "{}", stderr(&out));
    let out = loadtest(&["echo", "--tls", "--tls-insecure", "--tls-ca", "x.pem"]);
    assert_eq!(out.status.code(), Some(2));
    // Refused before any connection: the file is named.
    let out = loadtest(&[
        "echo",
        "--tls",
        "--tls-ca",
        "/nonexistent/ca.pem",
        "--connections",
        "1",
    ]);
    assert!(!out.status.success());
    let text = stderr(&out);
    assert!(
        text.contains("/nonexistent/ca.pem") && !text.contains("RESULT"),
        "{text}"
    );
}
