//! The report's arithmetic on synthetic runs.

use super::*;
use crate::collect::Collector;
use crate::sysmon::{Sample, Sampler, SockStat};

fn collector(seconds: Vec<Second>) -> Collector {
    // Clocks that show no host: the report uses the cores it is given.
    let clocks = Box::new(crate::clocks::fake::FakeClocks::default());
    let mut c = Collector::with_clocks(1, Sampler::new(Vec::new()), clocks, 0, true);
    c.timeline = seconds;
    c
}

fn build(options: &Options, totals: &Totals, col: &Collector) -> Report {
    Report::build(Inputs {
        options,
        layout: Layout {
            procs: 1,
            threads: 2,
        },
        totals,
        collector: col,
        elapsed_s: 3.0,
        warnings: Vec::new(),
        cores: 2,
        kill: None,
    })
}

#[test]
fn broadcast_missing_is_expected_minus_delivered() {
    let mut o = Options::new(ScenarioKind::Broadcast);
    o.connections = 10;
    o.publishers = 2;
    o.duration_ms = 2_000;
    let mut t = Totals::new().unwrap();
    let c = &mut t.counters;
    c.attempted = 12;
    c.connected = 12;
    c.established = 12;
    c.subscribers_at_go = 10;
    c.sent = 40; // 2 publishers x 20
    c.deliveries = 397;
    c.received = 397;
    c.received_in_drive = 390;
    c.missing = 3;
    c.subs_with_missing = 2;
    c.gap(1, 7, 1, 3);
    let r = build(&o, &t, &collector(Vec::new()));
    let b = r.broadcast.as_ref().unwrap();
    assert_eq!(
        (
            b.expected_deliveries,
            b.missing,
            b.missing_seen_by_subscribers
        ),
        (400, 3, 3)
    );
    assert_eq!(b.deliveries_per_s, 195.0);
    assert_eq!(r.messages.as_ref().unwrap().sent_per_s, 20.0);
    assert!(!r.ok);
    assert!(
        r.failures
            .iter()
            .any(|f| f.starts_with("broadcast: 3 missing")),
        "{:?}",
        r.failures
    );
    let text = text(&r);
    assert!(
        text.contains("gap: publisher 1 seq 7..7 (1 message(s)) missed by 3 subscriber(s)"),
        "{text}"
    );
}

#[test]
fn memory_per_connection_is_the_growth_over_the_open_count() {
    let o = Options::new(ScenarioKind::Idle);
    let t = Totals::new().unwrap();
    let mut col = collector(vec![Second {
        t: 4,
        open: 1_000,
        rss_bytes: 3_000_000,
        ..Second::default()
    }]);
    col.baseline = Sample {
        server_rss_bytes: 10_000_000,
        slab_bytes: 100_000_000,
        servers_alive: 1,
        ..Sample::default()
    };
    col.peak = Some((
        1_000,
        Sample {
            server_rss_bytes: 10_500_000,
            slab_bytes: 108_000_000,
            servers_alive: 1,
            sockstat: SockStat {
                tcp_inuse: 2_001,
                ..SockStat::default()
            },
        },
    ));
    let r = build(&o, &t, &col);
    let m = r.memory.as_ref().unwrap();
    assert_eq!(m.connections, 1_000);
    assert_eq!(m.server_bytes_per_connection, 500.0);
    assert_eq!(m.kernel_bytes_per_connection, 8_000.0);
    assert_eq!(m.loadgen_bytes_per_connection, 3_000.0);
    assert_eq!(m.tcp_sockets_in_use, 2_001);
    // Without a server pid there is no memory section.
    col.peak = Some((1_000, Sample::default()));
    assert!(build(&o, &t, &col).memory.is_none());
}

#[test]
fn saturation_is_counted_and_warned() {
    let o = Options::new(ScenarioKind::Echo);
    let t = Totals::new().unwrap();
    let second = |t, busiest, cpu, server, host| Second {
        t,
        busiest_proc_pct: busiest,
        cpu_pct: cpu,
        server_cpu_pct: server,
        host_cpu_pct: host,
        ..Second::default()
    };
    let mut col = collector(vec![
        second(0, 50.0, 100.0, 40.0, 200.0),
        second(1, 95.0, 190.0, 30.0, 200.0),
        second(2, 99.0, 198.0, 20.0, 200.0),
    ]);
    (col.loadgen_cpu_s, col.server_cpu_s) = (4.88, 0.9);
    let r = build(&o, &t, &col);
    assert_eq!(r.cpu.saturated_seconds, 2);
    assert_eq!(r.cpu.busiest_process_peak_pct, 99.0);
    assert!((r.cpu.loadgen_cpu_s - 4.88).abs() < 1e-9);
    assert!((r.cpu.server_cpu_s - 0.9).abs() < 1e-9);
    assert!(
        r.warnings
            .iter()
            .any(|w| w.contains("CPU-saturated in 2 of 3 seconds")),
        "{:?}",
        r.warnings
    );
    assert!(
        r.warnings.iter().any(|w| w.contains("compete for the CPU")),
        "{:?}",
        r.warnings
    );
    // 200% busy, of which 140% load generator and server: 60% was someone else's.
    assert!((r.cpu.others_peak_pct - 60.0).abs() < 1e-9);
    assert!(
        r.warnings
            .iter()
            .any(|w| w.contains("rest of the host used up to 60%")),
        "{:?}",
        r.warnings
    );
}

#[test]
fn a_clean_run_is_ok_and_failures_name_what_went_wrong() {
    let mut o = Options::new(ScenarioKind::Echo);
    o.connections = 5;
    let mut t = Totals::new().unwrap();
    t.counters.established = 5;
    t.counters.sent = 10;
    t.counters.received = 10;
    t.counters.echo_ok = 10;
    let r = build(&o, &t, &collector(Vec::new()));
    assert!(r.ok, "{:?}", r.failures);
    assert!(text(&r).ends_with("RESULT: OK\n"));
    t.counters.echo_mismatch = 1;
    t.counters.established = 4;
    t.counters.connect_failed = 1;
    t.errors.push("worker 1: boom".into());
    let r = build(&o, &t, &collector(Vec::new()));
    assert_eq!(
        r.failures,
        [
            "4 of 5 connections opened",
            "1 connect and 0 handshake failures",
            "1 echoes mismatched, 0 unanswered",
            "1 worker error(s)",
        ]
    );
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(json["ok"], false);
    assert_eq!(json["echo"]["mismatched"], 1);
    assert!(html(&r).contains("FAILED"));
}

#[test]
fn human_units() {
    assert_eq!(fmt_us(999), "999us");
    assert_eq!(fmt_us(1_250), "1.25ms");
    assert_eq!(fmt_us(3_400_000), "3.40s");
    assert_eq!(fmt_bytes(512), "512 B");
    assert_eq!(fmt_bytes(3_277), "3.2 KiB");
    assert_eq!(fmt_bytes(126_353_408), "120.5 MiB");
}

/// A failover run: 10 subscribers, 4 of them on the killed node, 2 publishers x 20 messages.
fn failover_run(protocol: Protocol, lost_by_dropped: u64, kill: &KillOutcome) -> Report {
    let mut o = Options::new(ScenarioKind::Failover);
    o.connections = 10;
    o.publishers = 2;
    o.protocol = protocol;
    o.kill_pid = Some(kill.pid);
    let mut t = Totals::new().unwrap();
    let c = &mut t.counters;
    (c.attempted, c.connected, c.established) = (12, 12, 12);
    (c.closed_by_us, c.subscribers_at_go, c.sent) = (12, 10, 40);
    (
        c.drops,
        c.subs_dropped,
        c.resubscribed,
        c.reconnect_attempts,
    ) = (4, 4, 4, 5);
    c.reconnect_failed = 1;
    c.lost_by_dropped = lost_by_dropped;
    c.missing = lost_by_dropped;
    c.deliveries = 400 - lost_by_dropped;
    t.hists.reconnect.record(80_000);
    Report::build(Inputs {
        options: &o,
        layout: Layout {
            procs: 1,
            threads: 1,
        },
        totals: &t,
        collector: &collector(Vec::new()),
        elapsed_s: 3.0,
        warnings: Vec::new(),
        cores: 2,
        kill: Some(kill),
    })
}

#[test]
fn failover_loss_is_the_protocol_s_on_pubsub_and_a_failure_on_v1() {
    let kill = KillOutcome {
        pid: 77,
        node: vec!["127.0.0.1:9001".into()],
        planned_s: 1.0,
        killed_after_s: Some(1.001),
        error: None,
    };
    let r = failover_run(Protocol::Pubsub, 30, &kill);
    let f = r.failover.as_ref().unwrap();
    assert_eq!((f.drops, f.resubscribed, f.gave_up), (4, 4, 0));
    assert_eq!((f.lost, f.lost_by_others, f.time_away.count), (30, 0, 1));
    assert!(r.ok, "{:?}", r.failures);
    assert!(
        r.warnings
            .iter()
            .any(|w| w.contains("missed 30 message(s)"))
    );
    let shown = text(&r);
    assert!(
        shown.contains("SIGKILL to pid 77 (node 127.0.0.1:9001)"),
        "{shown}"
    );
    assert!(
        shown.contains("subscribers dropped 4 (4 drop(s))  back 4"),
        "{shown}"
    );

    let r = failover_run(Protocol::V1, 30, &kill);
    assert_eq!(
        r.failures,
        ["broadcast: 30 missing, 0 duplicated, 0 reordered, 0 stale"]
    );
    assert!(failover_run(Protocol::V1, 0, &kill).ok);

    let missed = KillOutcome {
        killed_after_s: None,
        error: Some("the run ended before the kill time".into()),
        ..kill
    };
    let r = failover_run(Protocol::V1, 0, &missed);
    assert_eq!(
        r.failures,
        ["failover: pid 77 not killed: the run ended before the kill time"]
    );
    assert!(text(&r).contains("pid 77 NOT killed"));
}
