//! wss:// end to end: the engine with a certificate made by rcgen at test time, and an
//! independent client (tungstenite for WebSocket over a rustls client stream), under the
//! backend `C10M_TEST_IO` names (scripts/test.sh runs this file under each).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use c10m_engine::server::{self, Routes, ServerConfig, ServerHandle, apps};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};
use tungstenite::Message;

type Tls = StreamOwned<ClientConnection, TcpStream>;
type Wss = tungstenite::WebSocket<Tls>;

/// A certificate for `localhost` and its key, as PEM, and the certificate as DER for a
/// client's trust store.
struct Pair {
    cert_pem: String,
    key_pem: String,
    der: CertificateDer<'static>,
}

fn pair() -> Pair {
    let made = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    Pair {
        cert_pem: made.cert.pem(),
        key_pem: made.signing_key.serialize_pem(),
        der: made.cert.der().clone(),
    }
}

/// A fresh directory for this test's files.
fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("c10m-tls-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Writes `pair` as `cert.pem` and `key.pem` in `dir`.
fn write(dir: &Path, pair: &Pair) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, &pair.cert_pem).unwrap();
    std::fs::write(&key, &pair.key_pem).unwrap();
    (cert, key)
}

fn config(cert: &Path, key: &Path) -> ServerConfig {
    ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        shards: 2,
        io: support::io_backend().parse().unwrap(),
        tls_cert: Some(cert.to_owned()),
        tls_key: Some(key.to_owned()),
        ..ServerConfig::default()
    }
}

fn start(config: ServerConfig) -> std::io::Result<ServerHandle> {
    let routes = Routes::new()
        .route("/echo", |_| Box::new(apps::Echo))
        .route("/pubsub", |_| Box::new(apps::PubSub));
    server::start(config, routes)
}

/// A TLS client trusting only `trusted`, offering ALPN `http/1.1`, its handshake done.
fn tls_connect(addr: SocketAddr, trusted: &CertificateDer<'static>) -> std::io::Result<Tls> {
    let mut roots = RootCertStore::empty();
    roots.add(trusted.clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let name = ServerName::try_from("localhost").unwrap();
    let conn = ClientConnection::new(Arc::new(config), name).unwrap();
    let sock = TcpStream::connect(addr)?;
    sock.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut tls = StreamOwned::new(conn, sock);
    while tls.conn.is_handshaking() {
        tls.conn.complete_io(&mut tls.sock)?;
    }
    Ok(tls)
}

/// A wss:// WebSocket on `path`.
fn wss(addr: SocketAddr, trusted: &CertificateDer<'static>, path: &str) -> Wss {
    let tls = tls_connect(addr, trusted).unwrap();
    assert_eq!(tls.conn.alpn_protocol(), Some(&b"http/1.1"[..]));
    let url = format!("wss://localhost:{}{path}", addr.port());
    let (ws, response) = tungstenite::client(url, tls).unwrap();
    assert_eq!(response.status(), 101);
    ws
}

fn read_text(ws: &mut Wss) -> String {
    loop {
        match ws.read().unwrap() {
            Message::Text(t) => return t.to_string(),
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("expected text, got {other:?}"),
        }
    }
}

#[test]
fn echo_over_wss_with_an_independent_client() {
    let p = pair();
    let d = dir("echo");
    let (cert, key) = write(&d, &p);
    let server = start(config(&cert, &key)).unwrap();
    let mut ws = wss(server.local_addr(), &p.der, "/echo");
    ws.send(Message::text("hello over TLS")).unwrap();
    assert_eq!(read_text(&mut ws), "hello over TLS");
    // Larger than a TLS record (16 KiB) and than a read: many records each way.
    let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    ws.send(Message::binary(big.clone())).unwrap();
    match ws.read().unwrap() {
        Message::Binary(b) => assert!(b[..] == big[..], "the echo differs"),
        other => panic!("expected binary, got {other:?}"),
    }
    ws.close(None).unwrap();
    loop {
        match ws.read() {
            Ok(_) => {}
            Err(tungstenite::Error::ConnectionClosed) => break,
            Err(e) => panic!("close handshake over TLS failed: {e}"),
        }
    }
    server.shutdown();
    server.join().unwrap();
}

#[test]
fn publish_reaches_every_wss_subscriber() {
    let p = pair();
    let d = dir("fanout");
    let (cert, key) = write(&d, &p);
    let server = start(config(&cert, &key)).unwrap();
    let addr = server.local_addr();
    let mut subs: Vec<Wss> = (0..4).map(|_| wss(addr, &p.der, "/pubsub")).collect();
    for ws in &mut subs {
        ws.send(Message::text("sub news")).unwrap();
        assert_eq!(read_text(ws), "ok sub news");
    }
    let mut publisher = wss(addr, &p.der, "/pubsub");
    let payload = "x".repeat(20_000);
    publisher
        .send(Message::text(format!("pub news {payload}")))
        .unwrap();
    publisher.send(Message::text("pub news second")).unwrap();
    for ws in &mut subs {
        assert_eq!(read_text(ws), format!("msg news {payload}"));
        assert_eq!(read_text(ws), "msg news second");
    }
    server.shutdown();
    server.join().unwrap();
}

#[test]
fn a_plain_http_request_on_the_tls_port_gets_no_websocket() {
    let p = pair();
    let d = dir("plain");
    let (cert, key) = write(&d, &p);
    let server = start(config(&cert, &key)).unwrap();
    let mut s = TcpStream::connect(server.local_addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n").unwrap();
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => break,
            Err(e) => panic!("the server neither answered nor closed: {e}"),
        }
    }
    assert!(!got.starts_with(b"HTTP/1.1 101"), "upgraded without TLS");
    // What comes back is a TLS alert record (content type 21), if anything.
    assert!(got.is_empty() || got[0] == 21, "not a TLS alert: {got:?}");
    server.shutdown();
    server.join().unwrap();
}

#[test]
fn reload_serves_the_new_certificate_and_keeps_open_connections() {
    let (old, new) = (pair(), pair());
    let d = dir("reload");
    let (cert, key) = write(&d, &old);
    let server = start(config(&cert, &key)).unwrap();
    let addr = server.local_addr();
    let mut before = wss(addr, &old.der, "/echo");
    before.send(Message::text("one")).unwrap();
    assert_eq!(read_text(&mut before), "one");

    write(&d, &new);
    assert!(server.reload_tls().unwrap(), "the server speaks TLS");
    // New handshakes get the new certificate: a client trusting only the old one refuses it.
    assert!(
        tls_connect(addr, &old.der).is_err(),
        "old certificate still served"
    );
    let mut after = wss(addr, &new.der, "/echo");
    after.send(Message::text("two")).unwrap();
    assert_eq!(read_text(&mut after), "two");
    // The connection made before the reload is still open and working.
    before.send(Message::text("still here")).unwrap();
    assert_eq!(read_text(&mut before), "still here");

    // A bad file on reload keeps the pair in use.
    std::fs::write(&key, "not a key").unwrap();
    let err = server.reload_tls().unwrap_err();
    assert!(err.to_string().contains("no PEM private key"), "{err}");
    let mut again = wss(addr, &new.der, "/echo");
    again.send(Message::text("three")).unwrap();
    assert_eq!(read_text(&mut again), "three");
    server.shutdown();
    server.join().unwrap();
}

#[test]
fn unusable_files_are_refused_at_start_with_the_reason() {
    let (a, b) = (pair(), pair());
    let d = dir("errors");
    let (cert, key) = write(&d, &a);
    let missing = d.join("missing.pem");
    let e = start(config(&missing, &key)).unwrap_err();
    assert!(e.to_string().contains("cannot read tls_cert"), "{e}");
    assert!(e.to_string().contains("missing.pem"), "{e}");
    let e = start(config(&cert, &missing)).unwrap_err();
    assert!(e.to_string().contains("cannot read tls_key"), "{e}");
    // The key of another certificate.
    let other_key = d.join("other-key.pem");
    std::fs::write(&other_key, &b.key_pem).unwrap();
    let e = start(config(&cert, &other_key)).unwrap_err();
    assert!(e.to_string().contains("does not match"), "{e}");
    // Files swapped: a key where the certificate should be.
    let e = start(config(&key, &cert)).unwrap_err();
    assert!(e.to_string().contains("no PEM certificate"), "{e}");
    // Only one of the two.
    let mut c = config(&cert, &key);
    c.tls_key = None;
    let e = start(c).unwrap_err();
    assert!(
        e.to_string().contains("tls_cert is given without tls_key"),
        "{e}"
    );
}
