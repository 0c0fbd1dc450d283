//! Per-source limits over real loopback sockets, from several source addresses
//! (127.0.0.0/8 is all loopback): a source past its connections gets 429 and others do not
//! notice; a closed connection gives its place back; a source past its handshake rate gets
//! 429 with Retry-After; every refusal is counted and costs the server no connection.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use c10m_engine::server::{self, Routes, ServerConfig, ServerHandle, ShardStats, apps};
use socket2::{Domain, Socket, Type};

fn start(config: ServerConfig) -> ServerHandle {
    let config = ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        shards: 2,
        io: support::io_backend().parse().unwrap(),
        ..config
    };
    server::start(
        config,
        Routes::new().route("/echo", |_| Box::new(apps::Echo)),
    )
    .unwrap()
}

/// A TCP connection to `addr` from source address `src`.
fn connect_from(src: &str, addr: SocketAddr) -> TcpStream {
    let sock = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    let from: SocketAddr = format!("{src}:0").parse().unwrap();
    sock.bind(&from.into()).unwrap();
    sock.connect(&addr.into()).unwrap();
    let s: TcpStream = sock.into();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

/// The status line and headers the server answers an upgrade from `src` with; the stream
/// stays open when it was 101.
fn upgrade_from(src: &str, addr: SocketAddr) -> (String, TcpStream) {
    let mut s = connect_from(src, addr);
    // A refused connection may be closed before the request is written: the answer is
    // already waiting to be read.
    let _ = write!(
        s,
        "GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    let mut head = Vec::new();
    let mut byte = [0u8];
    while !head.ends_with(b"\r\n\r\n") {
        match s.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => break,
        }
    }
    (String::from_utf8(head).unwrap(), s)
}

fn total(server: &ServerHandle, get: impl Fn(&ShardStats) -> u64) -> u64 {
    server.stats().iter().map(|s| get(s)).sum()
}

#[test]
fn a_source_past_its_connections_gets_429_and_a_close_gives_its_place_back() {
    let server = start(ServerConfig {
        max_connections_per_source: 3,
        ..ServerConfig::default()
    });
    let addr = server.local_addr();
    let mut held: Vec<TcpStream> = (0..3)
        .map(|_| {
            let (head, s) = upgrade_from("127.0.0.2", addr);
            assert!(head.starts_with("HTTP/1.1 101"), "{head}");
            s
        })
        .collect();
    let (head, _) = upgrade_from("127.0.0.2", addr);
    assert!(
        head.starts_with("HTTP/1.1 429 Too Many Requests\r\n"),
        "{head}"
    );
    // Another source is not affected.
    let (head, _other) = upgrade_from("127.0.0.3", addr);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let refused = |s: &ShardStats| s.refused_source_connections.load(Relaxed);
    assert_eq!(total(&server, refused), 1);
    assert_eq!(
        total(&server, |s| s.connections.load(Relaxed)),
        4,
        "the refused one holds nothing"
    );
    // A close gives the place back once the server has seen it.
    drop(held.pop());
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (head, s) = upgrade_from("127.0.0.2", addr);
        if head.starts_with("HTTP/1.1 101") {
            held.push(s);
            break;
        }
        assert!(head.starts_with("HTTP/1.1 429"), "{head}");
        assert!(
            Instant::now() < deadline,
            "the closed connection's place never came back"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let (head, _) = upgrade_from("127.0.0.2", addr);
    assert!(head.starts_with("HTTP/1.1 429"), "{head}");
    let metrics = server.render_metrics();
    assert!(
        metrics.contains("# TYPE c10m_refused_source_connections_total counter"),
        "{metrics}"
    );
}

#[test]
fn a_source_past_its_handshake_rate_gets_429_with_retry_after() {
    let rate = 2;
    let server = start(ServerConfig {
        max_handshakes_per_source_per_sec: rate,
        ..ServerConfig::default()
    });
    let addr = server.local_addr();
    // Twenty attempts as fast as this machine makes them. However slow it is, the bucket
    // (a burst of `rate`, then `rate` a second) admits at most rate + rate x (seconds taken,
    // rounded up) of them.
    let began = Instant::now();
    let (mut admitted, mut refused) = (0u64, 0u64);
    let mut open = Vec::new();
    for _ in 0..20 {
        let (head, s) = upgrade_from("127.0.0.4", addr);
        if head.starts_with("HTTP/1.1 101") {
            admitted += 1;
            open.push(s);
        } else {
            assert!(
                head.starts_with("HTTP/1.1 429 Too Many Requests\r\n"),
                "{head}"
            );
            assert!(head.contains("Retry-After: 1\r\n"), "{head}");
            refused += 1;
        }
    }
    let seconds = began.elapsed().as_secs() + 1;
    assert!(
        admitted >= u64::from(rate),
        "the burst is admitted: {admitted}"
    );
    assert!(
        admitted <= u64::from(rate) * (1 + seconds),
        "{admitted} admitted in under {seconds} s"
    );
    assert_eq!(admitted + refused, 20);
    let counted = total(&server, |s| s.refused_source_rate.load(Relaxed));
    assert_eq!(counted, refused);
    // Other sources have their own bucket.
    let (head, _) = upgrade_from("127.0.0.5", addr);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
}
