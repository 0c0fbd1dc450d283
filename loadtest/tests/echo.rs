//! `echo`: every echo is matched, exactly; fixed-rate mode sends exactly its schedule.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use c10m_loadtest::cli::{EchoMode, ScenarioKind};

#[test]
fn window_mode_matches_every_echo() {
    let server = support::server();
    let mut o = support::options(ScenarioKind::Echo, server.local_addr(), 200);
    o.echo = EchoMode::Window(4);
    o.size = 100;
    let r = support::run(&o);
    support::assert_clean_connections(&r, 200);
    let m = r.messages.as_ref().unwrap();
    let e = r.echo.as_ref().unwrap();
    assert!(m.sent >= 200 * 4, "{m:?}");
    assert_eq!(m.received, m.sent);
    assert_eq!((e.matched, e.mismatched, e.unanswered), (m.sent, 0, 0));
    assert_eq!(m.latency.count, m.sent);
    assert_eq!(m.bytes_sent, m.sent * 100);
    assert!(!m.corrected_for_coordinated_omission);
    assert!(r.ok, "{:?}", r.failures);
    support::stop(server);
}

#[test]
fn fixed_rate_mode_sends_exactly_the_schedule() {
    let server = support::server();
    let mut o = support::options(ScenarioKind::Echo, server.local_addr(), 50);
    o.echo = EchoMode::Rate(100.0); // every 10 ms, for 1 s: 100 per connection
    let r = support::run(&o);
    support::assert_clean_connections(&r, 50);
    let m = r.messages.as_ref().unwrap();
    let e = r.echo.as_ref().unwrap();
    assert_eq!((m.sent, m.received), (5_000, 5_000), "{m:?}");
    assert_eq!((e.matched, e.mismatched, e.unanswered), (5_000, 0, 0));
    assert!(m.corrected_for_coordinated_omission);
    assert_eq!(m.skipped_backpressure, 0);
    assert!(r.ok, "{:?}", r.failures);
    support::stop(server);
}

#[test]
fn a_server_that_answers_wrongly_is_caught() {
    // /pubsub answers "err unknown command" to every echo request: nothing matches.
    let server = support::server();
    let mut o = support::options(ScenarioKind::Echo, server.local_addr(), 10);
    o.path = "/pubsub".into();
    o.echo = EchoMode::Window(1);
    o.drain_ms = 500;
    let r = support::run(&o);
    let e = r.echo.as_ref().unwrap();
    assert_eq!(e.matched, 0);
    assert_eq!(e.mismatched, r.messages.as_ref().unwrap().received);
    assert!(e.mismatched >= 10);
    assert!(!r.ok);
    support::stop(server);
}
