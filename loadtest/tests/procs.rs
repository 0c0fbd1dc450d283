//! Past one process: the binary spawns worker processes, merges their histograms (V2 over
//! JSON lines) and counts, and reports exactly as one process would.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::PathBuf;
use std::process::Command;

use c10m_loadtest::cli::ScenarioKind;
use c10m_loadtest::counters::Gap;

fn exe() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_c10m-loadtest"))
}

#[test]
fn three_worker_processes_report_one_merged_run_as_json() {
    let server = support::server();
    let addr = server.local_addr().to_string();
    let out = Command::new(exe())
        .args([
            "echo",
            "--target",
            &addr,
            "-n",
            "300",
            "--procs",
            "3",
            "--threads",
            "1",
        ])
        .args(["--window", "2", "--duration", "1", "--json", "--quiet"])
        .args(["--source-ips", "127.0.0.2-127.0.0.5", "--rate", "20000"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{:?}\n{stderr}", out.status);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["settings"]["procs"], 3);
    assert_eq!(v["connections"]["established"], 300);
    assert_eq!(v["connections"]["survived"], 300);
    assert_eq!(v["handshake_latency"]["count"], 300, "merged histograms");
    let sent = v["messages"]["sent"].as_u64().unwrap();
    assert!(sent >= 600);
    assert_eq!(v["messages"]["received"], sent);
    assert_eq!(v["echo"]["matched"], sent);
    assert_eq!(v["echo"]["mismatched"], 0);
    assert_eq!(v["messages"]["latency"]["count"], sent);
    let timeline = v["timeline"].as_array().unwrap();
    let per_second: u64 = timeline
        .iter()
        .map(|s| s["established"].as_u64().unwrap())
        .sum();
    assert_eq!(
        per_second, 300,
        "per-second counts from three processes add up"
    );
    assert_eq!(v["ok"], true);
    assert!(stderr.contains("RESULT: OK"), "{stderr}");
    support::stop(server);
}

#[test]
fn a_gap_is_exact_across_processes() {
    // Publishers and subscribers in different worker processes; one subscriber process can
    // only know how many messages were sent from the end markers.
    let server = support::server();
    let mut o = support::options(ScenarioKind::Broadcast, server.local_addr(), 200);
    o.publishers = 2;
    o.publish_rate = 50.0;
    o.procs = 2;
    o.threads = 1;
    o.worker_exe = Some(exe());
    let r = support::run(&o);
    support::assert_clean_connections(&r, 202);
    let b = r.broadcast.as_ref().unwrap();
    assert_eq!((b.published, b.deliveries, b.missing), (100, 100 * 200, 0));
    assert_eq!(b.gaps, Vec::<Gap>::new());
    assert!(r.ok, "{:?}", r.failures);
    support::stop(server);
}

#[test]
fn bad_usage_exits_2_and_remote_targets_are_refused() {
    let out = Command::new(exe())
        .args(["echo", "--target", "192.0.2.1:80"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a loopback address"));
    let out = Command::new(exe()).args(["flood"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = Command::new(exe()).args(["--help"]).output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("Usage: c10m-loadtest"));
}

#[test]
fn html_report_is_self_contained() {
    let server = support::server();
    let dir = std::env::temp_dir().join(format!("c10m-lt-html-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let html = dir.join("r.html");
    let addr = server.local_addr().to_string();
    let status = Command::new(exe())
        .args([
            "connect",
            "--target",
            &addr,
            "-n",
            "50",
            "--duration",
            "1.2",
            "--quiet",
        ])
        .arg("--html")
        .arg(&html)
        .arg("--server-pid")
        .arg(std::process::id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
    let text = std::fs::read_to_string(&html).unwrap();
    assert!(text.starts_with("<!DOCTYPE html>"));
    assert!(text.matches("<svg").count() >= 5, "charts");
    assert!(!text.contains("<script") && !text.contains("src=") && !text.contains("href="));
    assert!(text.contains("bytes/connection"), "server memory sampled");
    std::fs::remove_dir_all(&dir).unwrap();
    support::stop(server);
}
