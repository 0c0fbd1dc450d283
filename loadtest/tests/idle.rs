//! `idle`: connections held with server heartbeats on all survive; when the server goes away,
//! the report says why they closed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use c10m_engine::server::ServerConfig;
use c10m_loadtest::cli::ScenarioKind;

#[test]
fn every_connection_survives_and_answers_pings() {
    // Pings every 200 ms; a connection silent for 700 ms (no pong) would be closed.
    let server = support::server_with(
        ServerConfig {
            ping_interval_ms: 200,
            idle_timeout_ms: 700,
            timer_tick_ms: 20,
            ..support::config()
        },
        None,
    );
    let mut o = support::options(ScenarioKind::Idle, server.local_addr(), 300);
    o.duration_ms = 2_000;
    let r = support::run(&o);
    support::assert_clean_connections(&r, 300);
    assert!(r.ok, "{:?}", r.failures);
    // Two seconds at one ping per 200 ms: several pings per connection, every one answered,
    // or the idle timeout would have closed it.
    assert!(
        r.connections.pings_answered >= 300 * 5,
        "{} pings",
        r.connections.pings_answered
    );
    support::stop(server);
}

#[test]
fn connections_closed_by_the_server_are_reported_with_its_close_code() {
    let server = support::server();
    let addr = server.local_addr();
    let mut o = support::options(ScenarioKind::Idle, addr, 200);
    o.duration_ms = 3_000;
    let stopper = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(1_500));
        server.shutdown(); // closes every connection with 1001
        server.join().unwrap();
    });
    let r = support::run(&o);
    stopper.join().unwrap();
    let c = &r.connections;
    assert_eq!((c.established, c.open_at_go), (200, 200), "{c:#?}");
    assert_eq!(
        (c.survived, c.closed_early, c.closed_by_us),
        (0, 200, 0),
        "{c:#?}"
    );
    assert_eq!(
        c.reasons.get("closed by server: 1001"),
        Some(&200),
        "{:?}",
        c.reasons
    );
    assert!(!r.ok);
    assert!(
        r.failures
            .iter()
            .any(|f| f == "200 connections closed early"),
        "{:?}",
        r.failures
    );
}
