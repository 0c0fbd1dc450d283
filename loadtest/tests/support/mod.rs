//! Shared by the integration tests: an in-process c10m server on loopback (port 0) and
//! options aimed at it.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;

use c10m_engine::server::{self, App, Routes, ServerConfig, ServerHandle, apps};
use c10m_loadtest::cli::{Options, ScenarioKind};
use c10m_loadtest::report::Report;

/// A server with `/echo` and `/pubsub`, plus `/tamper` served by `tamper` when given.
pub fn server_with(config: ServerConfig, tamper: Option<fn(u16) -> Box<dyn App>>) -> ServerHandle {
    let mut routes = Routes::new()
        .route("/echo", |_| Box::new(apps::Echo))
        .route("/pubsub", |_| Box::new(apps::PubSub));
    if let Some(f) = tamper {
        routes = routes.route("/tamper", f);
    }
    server::start(config, routes).unwrap()
}

/// Loopback, port 0, two shards.
pub fn config() -> ServerConfig {
    ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        shards: 2,
        ..ServerConfig::default()
    }
}

/// The default server.
pub fn server() -> ServerHandle {
    server_with(config(), None)
}

/// Options for `scenario` against `addr`: quiet, fast ramp, short phases.
pub fn options(scenario: ScenarioKind, addr: SocketAddr, n: u64) -> Options {
    let mut o = Options::new(scenario);
    o.targets = vec![addr];
    o.connections = n;
    o.rate = 20_000.0;
    o.quiet = true;
    o.duration_ms = 1_000;
    o.drain_ms = 3_000;
    o.threads = 2;
    o
}

/// Runs in this process.
pub fn run(o: &Options) -> Report {
    c10m_loadtest::run(o).unwrap()
}

/// Stops a server and waits for it.
pub fn stop(handle: ServerHandle) {
    handle.shutdown();
    handle.join().unwrap();
}

/// Asserts that exactly `n` connections opened, were held and were closed by the load generator.
pub fn assert_clean_connections(r: &Report, n: u64) {
    let c = &r.connections;
    assert_eq!(
        (c.requested, c.attempted, c.connected, c.established),
        (n, n, n, n),
        "{c:#?}"
    );
    assert_eq!(
        (c.connect_failed, c.handshake_failed, c.closed_early),
        (0, 0, 0),
        "{c:#?}"
    );
    assert_eq!(
        (c.open_at_go, c.survived, c.closed_by_us),
        (n, n, n),
        "{c:#?}"
    );
    assert_eq!(
        c.reasons.get("closed by load generator"),
        Some(&n),
        "{:?}",
        c.reasons
    );
    assert_eq!(r.connect_latency.count, n);
    assert_eq!(r.handshake_latency.count, n);
    // The per-second timeline adds up to the totals.
    assert_eq!(r.timeline.iter().map(|s| s.established).sum::<u64>(), n);
    assert_eq!(r.connections.peak_open, n);
    assert!(r.errors.is_empty(), "{:?}", r.errors);
}
