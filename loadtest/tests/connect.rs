//! `connect`: exactly N connections open at a controlled rate; failures are counted by reason.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::SocketAddr;
use std::time::Instant;

use c10m_loadtest::cli::ScenarioKind;

#[test]
fn opens_exactly_n_connections_at_the_asked_rate() {
    let server = support::server();
    let mut o = support::options(ScenarioKind::Connect, server.local_addr(), 600);
    o.rate = 1_500.0; // 600 connections should take about 0.4 s
    o.duration_ms = 0;
    let started = Instant::now();
    let r = support::run(&o);
    let took = started.elapsed().as_secs_f64();
    support::assert_clean_connections(&r, 600);
    assert!(r.ok, "{:?}", r.failures);
    assert!(
        took >= 0.35,
        "600 connections at 1500/s took only {took:.2} s"
    );
    // The server counted the same handshakes.
    let opened: u64 = server
        .stats()
        .iter()
        .map(|s| s.opened.load(std::sync::atomic::Ordering::Relaxed))
        .sum();
    assert_eq!(opened, 600);
    support::stop(server);
}

#[test]
fn source_addresses_are_used_round_robin() {
    let server = support::server();
    let mut o = support::options(ScenarioKind::Connect, server.local_addr(), 300);
    o.sources = c10m_loadtest::cli::addrs::parse_ips("127.0.0.2-127.0.0.4").unwrap();
    o.duration_ms = 500;
    let r = support::run(&o);
    support::assert_clean_connections(&r, 300);
    assert_eq!(r.settings.source_addresses, 3);
    support::stop(server);
}

#[test]
fn refused_connections_are_counted_by_reason() {
    // A port with no listener.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let target = SocketAddr::from(([127, 0, 0, 1], port));
    let r = support::run(&support::options(ScenarioKind::Connect, target, 40));
    let c = &r.connections;
    assert_eq!((c.attempted, c.established, c.connect_failed), (40, 0, 40));
    assert_eq!(
        c.reasons.get("connect: connection refused"),
        Some(&40),
        "{:?}",
        c.reasons
    );
    assert!(!r.ok);
    assert_eq!(r.failures[0], "0 of 40 connections opened");
}

#[test]
fn refused_upgrades_are_handshake_failures() {
    let server = support::server();
    let mut o = support::options(ScenarioKind::Connect, server.local_addr(), 25);
    o.path = "/no-such-app".into();
    let r = support::run(&o);
    let c = &r.connections;
    assert_eq!(
        (c.connected, c.established, c.handshake_failed),
        (25, 0, 25)
    );
    assert_eq!(
        c.reasons.get("handshake: HTTP 404"),
        Some(&25),
        "{:?}",
        c.reasons
    );
    support::stop(server);
}
