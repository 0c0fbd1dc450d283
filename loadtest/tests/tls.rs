//! wss:// (`--tls`): echo and broadcast through rustls on both sides, alone and with
//! permessage-deflate, verified against the server's self-signed certificate (made by rcgen at
//! test time); a certificate the client does not trust fails every handshake.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::PathBuf;
use std::sync::atomic::Ordering;

use c10m_engine::server::{ServerConfig, ServerHandle};
use c10m_loadtest::cli::{EchoMode, Options, ScenarioKind};
use c10m_loadtest::plan::TlsPlan;

/// A server for `localhost` with `deflate` as asked; returns it and its certificate's file.
fn server(name: &str, deflate: bool) -> (ServerHandle, PathBuf) {
    let made = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let dir = std::env::temp_dir().join(format!("c10m-lt-tls-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, made.cert.pem()).unwrap();
    std::fs::write(&key, made.signing_key.serialize_pem()).unwrap();
    let config = ServerConfig {
        tls_cert: Some(cert.clone()),
        tls_key: Some(key),
        deflate,
        ..support::config()
    };
    (support::server_with(config, None), cert)
}

fn verified(cert: PathBuf) -> Option<TlsPlan> {
    Some(TlsPlan {
        ca: Some(cert),
        server_name: Some("localhost".into()),
    })
}

fn echo(server: &ServerHandle, tls: Option<TlsPlan>, deflate: bool) -> Options {
    let mut o = support::options(ScenarioKind::Echo, server.local_addr(), 50);
    o.echo = EchoMode::Window(4);
    o.size = 3_000;
    o.tls = tls;
    o.deflate = deflate;
    o
}

#[test]
fn echo_over_wss_matches_every_message() {
    let (server, cert) = server("echo", false);
    let r = support::run(&echo(&server, verified(cert), false));
    support::assert_clean_connections(&r, 50);
    let m = r.messages.as_ref().unwrap();
    let e = r.echo.as_ref().unwrap();
    assert!(m.sent >= 50 * 4, "{m:?}");
    assert_eq!((e.matched, e.mismatched, e.unanswered), (m.sent, 0, 0));
    assert!(r.ok, "{:?}", r.failures);
    support::stop(server);
}

#[test]
fn echo_over_wss_with_deflate_and_an_unverified_certificate() {
    let (server, _) = server("deflate", true);
    let tls = Some(TlsPlan {
        ca: None,
        server_name: None,
    });
    let r = support::run(&echo(&server, tls, true));
    support::assert_clean_connections(&r, 50);
    let m = r.messages.as_ref().unwrap();
    let e = r.echo.as_ref().unwrap();
    assert_eq!((e.matched, e.mismatched, e.unanswered), (m.sent, 0, 0));
    // The payloads compress: the server read far fewer bytes than the messages it echoed.
    let bytes_in: u64 = server
        .stats()
        .iter()
        .map(|s| s.bytes_in.load(Ordering::Relaxed))
        .sum();
    assert!(
        bytes_in < m.sent * 3_000 / 2,
        "{bytes_in} bytes read for {} messages",
        m.sent
    );
    assert!(r.ok, "{:?}", r.failures);
    support::stop(server);
}

#[test]
fn broadcast_over_wss_delivers_every_message_once_in_order() {
    let (server, cert) = server("broadcast", false);
    let mut o = support::options(ScenarioKind::Broadcast, server.local_addr(), 100);
    o.publishers = 2;
    o.publish_rate = 50.0;
    o.tls = verified(cert);
    let r = support::run(&o);
    support::assert_clean_connections(&r, 102);
    let b = r.broadcast.as_ref().unwrap();
    assert!(b.published >= 2 * 40, "{b:#?}");
    assert_eq!(b.deliveries, b.published * 100);
    assert_eq!((b.missing, b.duplicates, b.reordered), (0, 0, 0));
    assert!(r.ok, "{:?}", r.failures);
    support::stop(server);
}

#[test]
fn an_untrusted_certificate_fails_every_handshake() {
    let (server, _) = server("untrusted", false);
    // Trust a different self-signed certificate.
    let (_other, other_cert) = server_pair_file("untrusted-ca");
    let mut o = echo(&server, verified(other_cert), false);
    o.connections = 10;
    o.drain_ms = 500;
    let r = support::run(&o);
    let c = &r.connections;
    assert_eq!((c.established, c.handshake_failed), (0, 10), "{c:#?}");
    // The reason carries rustls' verdict, not only "invalid data".
    let reasons: Vec<&String> = c.reasons.keys().collect();
    assert!(
        c.reasons
            .iter()
            .any(|(why, n)| why.contains("certificate") && *n == 10),
        "{reasons:?}"
    );
    assert!(!r.ok);
    support::stop(server);
}

/// A certificate file nobody serves.
fn server_pair_file(name: &str) -> ((), PathBuf) {
    let made = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let file = std::env::temp_dir().join(format!("c10m-lt-tls-{}-{name}.pem", std::process::id()));
    std::fs::write(&file, made.cert.pem()).unwrap();
    ((), file)
}
