//! Engine integration tests over real sockets on 127.0.0.1, with tungstenite as an independent
//! client and a raw-TCP scripted peer for what no correct client would send.
//!
//! Every server here is started through `test_config()`, the one place the backend is chosen
//! (`C10M_TEST_IO`, see `support::io_backend`), so the suite runs unchanged under each.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use c10m_engine::proto::OpCode;
use c10m_engine::server::{self, Routes, ServerConfig, ServerHandle, apps};
use support::{connect, frame};
use tungstenite::protocol::frame::Frame;
use tungstenite::protocol::frame::coding::{Data, OpCode as TOpCode};
use tungstenite::{Bytes, Message};

type Ws = tungstenite::WebSocket<TcpStream>;

fn test_config() -> ServerConfig {
    ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        shards: 2,
        io: support::io_backend().parse().unwrap(),
        ..ServerConfig::default()
    }
}

fn start(config: ServerConfig) -> ServerHandle {
    let routes = Routes::new()
        .route("/echo", |_| Box::new(apps::Echo))
        .route("/pubsub", |_| Box::new(apps::PubSub));
    server::start(config, routes).unwrap()
}

/// A raw TCP peer that has completed the handshake.
fn raw(addr: SocketAddr, path: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n").unwrap();
    let head = read_head(&mut s);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    s
}

fn read_head(s: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8];
    while !head.ends_with(b"\r\n\r\n") {
        if s.read(&mut byte).unwrap() == 0 {
            break;
        }
        head.push(byte[0]);
    }
    String::from_utf8(head).unwrap()
}

/// Reads frames from a raw peer until a close frame; returns its code (1005 when empty) or
/// `None` if the TCP connection ended without one.
fn close_code(s: &mut TcpStream) -> Option<u16> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        while let Ok(Some((h, n))) = c10m_engine::proto::FrameHeader::parse(&buf) {
            let end = n + h.payload_len as usize;
            if buf.len() < end {
                break;
            }
            if h.opcode == OpCode::Close {
                let body = &buf[n..end];
                return Some(if body.len() >= 2 {
                    u16::from_be_bytes([body[0], body[1]])
                } else {
                    1005
                });
            }
            buf.drain(..end);
        }
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => return None,
            Ok(k) => buf.extend_from_slice(&chunk[..k]),
        }
    }
}

/// Waits (bounded) until the TCP connection is closed by the server.
fn wait_eof(s: &mut TcpStream) -> bool {
    let mut chunk = [0u8; 4096];
    loop {
        match s.read(&mut chunk) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

#[test]
fn echoes_text_and_binary() {
    let server = start(test_config());
    let mut ws = connect(server.local_addr(), "/echo");
    ws.send(Message::text("hello κόσμε")).unwrap();
    assert_eq!(ws.read().unwrap(), Message::text("hello κόσμε"));
    let big: Vec<u8> = (0..300_000u32).map(|i| i as u8).collect();
    ws.send(Message::binary(big.clone())).unwrap();
    assert_eq!(ws.read().unwrap(), Message::binary(big));
    ws.close(None).unwrap();
}

#[test]
fn a_backlog_of_large_echoes_arrives_whole_and_in_order() {
    // 200 x 20 KiB sent before reading anything: the replies back up behind the socket, queue
    // as separate chunks, and leave in multi-part writes (writev / sendmsg).
    let server = start(test_config());
    let mut ws = connect(server.local_addr(), "/echo");
    let message = |i: u32| -> Vec<u8> { (0..20_000u32).map(|j| (i * 7 + j) as u8).collect() };
    for i in 0..200 {
        ws.write(Message::binary(message(i))).unwrap();
    }
    ws.flush().unwrap();
    for i in 0..200 {
        assert_eq!(
            ws.read().unwrap(),
            Message::binary(message(i)),
            "message {i}"
        );
    }
    ws.close(None).unwrap();
}

#[test]
fn reassembles_fragments_with_pings_between() {
    let server = start(test_config());
    let mut ws = connect(server.local_addr(), "/echo");
    ws.write(Message::Frame(Frame::message(
        Bytes::from_static(b"frag"),
        TOpCode::Data(Data::Text),
        false,
    )))
    .unwrap();
    ws.write(Message::Ping(Bytes::from_static(b"p"))).unwrap();
    ws.write(Message::Frame(Frame::message(
        Bytes::from_static(b"mented"),
        TOpCode::Data(Data::Continue),
        true,
    )))
    .unwrap();
    ws.flush().unwrap();
    assert_eq!(ws.read().unwrap(), Message::Pong(Bytes::from_static(b"p")));
    assert_eq!(ws.read().unwrap(), Message::text("fragmented"));
}

#[test]
fn close_handshake_echoes_the_code() {
    let server = start(test_config());
    let mut ws = connect(server.local_addr(), "/echo");
    ws.close(Some(tungstenite::protocol::CloseFrame {
        code: 4001.into(),
        reason: "bye".into(),
    }))
    .unwrap();
    match ws.read() {
        Ok(Message::Close(Some(f))) => assert_eq!(u16::from(f.code), 4001),
        other => panic!("expected the close reply, got {other:?}"),
    }
}

#[test]
fn protocol_errors_close_with_their_codes() {
    let server = start(test_config());
    let addr = server.local_addr();
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        (
            "reserved bits",
            frame(OpCode::Text).rsv(0b010).payload("x").bytes(),
            1002,
        ),
        ("unknown opcode", support::raw_frame(5).bytes(), 1002),
        (
            "unmasked frame",
            frame(OpCode::Text).unmasked().payload("x").bytes(),
            1002,
        ),
        (
            "invalid utf-8",
            frame(OpCode::Text).payload(b"\xff\xfe").bytes(),
            1007,
        ),
        (
            "invalid close code",
            frame(OpCode::Close).close(1004, b"").bytes(),
            1002,
        ),
        (
            "long ping",
            frame(OpCode::Ping).payload([1u8; 126]).bytes(),
            1002,
        ),
    ];
    for (name, bytes, expected) in cases {
        let mut s = raw(addr, "/echo");
        s.write_all(&bytes).unwrap();
        assert_eq!(close_code(&mut s), Some(expected), "{name}");
        assert!(
            wait_eof(&mut s),
            "{name}: server keeps the TCP connection open"
        );
    }
    // Over the size limit.
    let small = start(ServerConfig {
        max_message_size: 1000,
        ..test_config()
    });
    let mut s = raw(small.local_addr(), "/echo");
    s.write_all(&frame(OpCode::Binary).payload(vec![0u8; 1001]).bytes())
        .unwrap();
    assert_eq!(close_code(&mut s), Some(1009));
}

#[test]
fn bad_http_requests_get_http_answers() {
    let server = start(test_config());
    let addr = server.local_addr();
    let ask = |request: &str| {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(request.as_bytes()).unwrap();
        read_head(&mut s)
    };
    let plain = ask("GET /echo HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(plain.starts_with("HTTP/1.1 426 "), "{plain}");
    assert!(plain.contains("Sec-WebSocket-Version: 13"));
    let v8 = ask(
        "GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\r\n",
    );
    assert!(v8.starts_with("HTTP/1.1 426 "), "{v8}");
    assert!(ask("GARBAGE\r\n\r\n").starts_with("HTTP/1.1 400 "));
    let unknown = ask(
        "GET /nope HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    );
    assert!(unknown.starts_with("HTTP/1.1 404 "), "{unknown}");
    let huge = format!(
        "GET /echo HTTP/1.1\r\nHost: x\r\nX-Pad: {}\r\n\r\n",
        "a".repeat(10_000)
    );
    assert!(ask(&huge).starts_with("HTTP/1.1 431 "));
    let failures: u64 = server
        .stats()
        .iter()
        .map(|s| s.handshake_failures.load(Relaxed))
        .sum();
    assert_eq!(failures, 5);
}

#[test]
fn rejected_origins_get_403() {
    let server = start(ServerConfig {
        allowed_origins: vec!["https://good.example".into()],
        ..test_config()
    });
    let mut s = TcpStream::connect(server.local_addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET /echo HTTP/1.1\r\nHost: x\r\nOrigin: https://evil.example\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n").unwrap();
    assert!(read_head(&mut s).starts_with("HTTP/1.1 403 "));
    // No Origin at all, or one that is not UTF-8: refused as well; the allowed one passes.
    let head = |origin: &[u8]| {
        let mut s = TcpStream::connect(server.local_addr()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut req = b"GET /echo HTTP/1.1\r\nHost: x\r\n".to_vec();
        req.extend_from_slice(origin);
        req.extend_from_slice(b"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n");
        s.write_all(&req).unwrap();
        read_head(&mut s)
    };
    assert!(head(b"").starts_with("HTTP/1.1 403 "), "no Origin");
    assert!(
        head(b"Origin: https://good.example\xff\r\n").starts_with("HTTP/1.1 403 "),
        "an Origin that is not UTF-8"
    );
    assert!(head(b"Origin: https://good.example\r\n").starts_with("HTTP/1.1 101 "));
}

#[test]
fn handshake_timeout_drops_a_slowloris() {
    let server = start(ServerConfig {
        handshake_timeout_ms: 300,
        ..test_config()
    });
    let mut s = TcpStream::connect(server.local_addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET /echo HTTP/1.1\r\nHost: x\r\n").unwrap();
    let started = Instant::now();
    assert!(wait_eof(&mut s));
    assert!(started.elapsed() < Duration::from_secs(5));
    let timeouts: u64 = server
        .stats()
        .iter()
        .map(|s| s.closed[server::Why::HandshakeTimeout.index()].load(Relaxed))
        .sum();
    assert_eq!(timeouts, 1);
}

#[test]
fn heartbeat_pings_then_closes_a_silent_client() {
    let server = start(ServerConfig {
        ping_interval_ms: 200,
        idle_timeout_ms: 600,
        timer_tick_ms: 20,
        ..test_config()
    });
    let mut s = raw(server.local_addr(), "/echo");
    // The raw peer never answers pings: it must see at least one ping, then a 1001 close.
    let mut buf = Vec::new();
    let mut chunk = [0u8; 256];
    let mut pings = 0;
    let code = loop {
        let n = s.read(&mut chunk).unwrap();
        assert!(n > 0, "closed without a close frame");
        buf.extend_from_slice(&chunk[..n]);
        let mut done = None;
        while let Ok(Some((h, len))) = c10m_engine::proto::FrameHeader::parse(&buf) {
            let end = len + h.payload_len as usize;
            if buf.len() < end {
                break;
            }
            match h.opcode {
                OpCode::Ping => pings += 1,
                OpCode::Close => done = Some(u16::from_be_bytes([buf[len], buf[len + 1]])),
                _ => {}
            }
            buf.drain(..end);
        }
        if let Some(code) = done {
            break code;
        }
    };
    assert!(pings >= 1);
    assert_eq!(code, 1001);
    assert!(wait_eof(&mut s));
    // A client that answers pings (tungstenite does) stays connected past the idle timeout.
    let mut ws = connect(server.local_addr(), "/echo");
    ws.get_mut()
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let until = Instant::now() + Duration::from_millis(1_500);
    while Instant::now() < until {
        match ws.read() {
            Ok(_) => {}
            Err(tungstenite::Error::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("healthy client dropped: {e}"),
        }
    }
    ws.get_mut()
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    ws.send(Message::text("still here")).unwrap();
    loop {
        match ws.read().unwrap() {
            Message::Text(t) => break assert_eq!(t.as_str(), "still here"),
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn topics_reach_subscribers_on_every_shard() {
    let server = start(ServerConfig {
        shards: 3,
        ..test_config()
    });
    let addr = server.local_addr();
    let mut subs: Vec<Ws> = (0..30)
        .map(|_| connect(addr, "/pubsub?topic=news"))
        .collect();
    let per_shard: Vec<u64> = server
        .stats()
        .iter()
        .map(|s| s.connections.load(Relaxed))
        .collect();
    assert!(
        per_shard.iter().filter(|&&n| n > 0).count() >= 2,
        "connections all on one shard: {per_shard:?}"
    );
    // One explicit subscription through the text protocol too.
    let mut late = connect(addr, "/pubsub");
    late.send(Message::text("sub news")).unwrap();
    assert_eq!(late.read().unwrap(), Message::text("ok sub news"));
    let mut publisher = connect(addr, "/pubsub");
    for i in 0..5 {
        publisher
            .send(Message::text(format!("pub news item-{i}")))
            .unwrap();
    }
    subs.push(late);
    for ws in &mut subs {
        for i in 0..5 {
            assert_eq!(
                ws.read().unwrap(),
                Message::text(format!("msg news item-{i}"))
            );
        }
    }
    // The publisher is not subscribed and gets nothing; an unknown command gets an error.
    publisher.send(Message::text("dance")).unwrap();
    assert!(matches!(publisher.read().unwrap(), Message::Text(t) if t.starts_with("err ")));
    // Unsubscribed connections stop receiving.
    subs[0].send(Message::text("unsub news")).unwrap();
    assert_eq!(subs[0].read().unwrap(), Message::text("ok unsub news"));
    publisher.send(Message::text("pub news last")).unwrap();
    assert_eq!(subs[1].read().unwrap(), Message::text("msg news last"));
    subs[0].send(Message::text("pub other ping")).unwrap();
    subs[0].send(Message::text("sub solo")).unwrap();
    assert_eq!(
        subs[0].read().unwrap(),
        Message::text("ok sub solo"),
        "got news after unsubscribing"
    );
}

/// A subscriber that never reads, and a publisher of `size`-byte messages: the subscriber must
/// be closed as a slow consumer, with its queue bounded.
fn slow_consumer(size: usize) {
    let server = start(ServerConfig {
        write_queue_limit: 64 << 10,
        shards: 1,
        ..test_config()
    });
    let addr = server.local_addr();
    // The slow consumer subscribes and never reads; its receive buffer is kept small.
    let slow = raw(addr, "/pubsub?topic=firehose");
    socket2::SockRef::from(&slow)
        .set_recv_buffer_size(4096)
        .unwrap();
    let mut publisher = connect(addr, "/pubsub");
    let payload = "x".repeat(size);
    let started = Instant::now();
    loop {
        publisher
            .send(Message::text(format!("pub firehose {payload}")))
            .unwrap();
        let closed = server.stats()[0].closed[server::Why::SlowConsumer.index()].load(Relaxed);
        if closed == 1 {
            break;
        }
        assert!(
            server.stats()[0].write_queue_bytes.load(Relaxed) < 1 << 20,
            "the queue grew past the limit without a close: {} bytes",
            server.stats()[0].write_queue_bytes.load(Relaxed)
        );
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "slow consumer never closed"
        );
    }
    assert!(server.stats()[0].write_queue_bytes.load(Relaxed) < 1 << 20);
    drop(slow);
}

#[test]
fn a_slow_consumer_is_closed_and_counted() {
    slow_consumer(16 << 10);
}

#[test]
fn a_slow_consumer_of_small_messages_is_closed_too() {
    // Each message fits the socket whole until one finds no room at all: nothing is written
    // short, yet the connection is backed up.
    slow_consumer(200);
}

#[test]
fn shutdown_closes_everyone_with_1001_and_returns() {
    let server = start(test_config());
    let mut clients: Vec<Ws> = (0..10)
        .map(|_| connect(server.local_addr(), "/echo"))
        .collect();
    server.shutdown();
    for ws in &mut clients {
        match ws.read() {
            Ok(Message::Close(Some(f))) => assert_eq!(u16::from(f.code), 1001),
            other => panic!("expected a 1001 close, got {other:?}"),
        }
        // tungstenite answers the close on the next write/flush.
        let _ = ws.flush();
    }
    let started = Instant::now();
    server.join().unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "drain waited for the deadline although every client answered"
    );
}

#[test]
fn metrics_endpoint_serves_prometheus_text() {
    let server = start(ServerConfig {
        metrics: Some("127.0.0.1:0".parse().unwrap()),
        ..test_config()
    });
    let mut ws = connect(server.local_addr(), "/echo");
    ws.send(Message::text("m")).unwrap();
    ws.read().unwrap();
    let mut s = TcpStream::connect(server.metrics_addr().unwrap()).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).unwrap();
    assert!(body.starts_with("HTTP/1.1 200 OK"));
    let opened: u64 = body
        .lines()
        .filter(|l| l.starts_with("c10m_opened_total{"))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(opened, 1);
    assert!(body.contains("c10m_closed_total{shard=\"0\",reason=\"slow_consumer\"} 0"));
    let mut h = TcpStream::connect(server.metrics_addr().unwrap()).unwrap();
    h.write_all(b"GET /health HTTP/1.1\r\n\r\n").unwrap();
    let mut health = String::new();
    h.read_to_string(&mut health).unwrap();
    assert!(health.ends_with("ok\n"));
}

#[test]
fn data_and_fin_in_one_burst_are_both_seen() {
    // A frame and the FIN arrive together: the short read of the frame must not hide the EOF.
    let server = start(test_config());
    for _ in 0..20 {
        let mut s = raw(server.local_addr(), "/echo");
        s.write_all(&frame(OpCode::Text).payload("last words").bytes())
            .unwrap();
        s.shutdown(std::net::Shutdown::Write).unwrap();
        assert!(
            wait_eof(&mut s),
            "server kept a half-closed connection open"
        );
    }
    let started = Instant::now();
    let reaped = || {
        server
            .stats()
            .iter()
            .map(|s| s.closed[server::Why::Io.index()].load(Relaxed))
            .sum::<u64>()
    };
    while reaped() < 20 {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "only {} of 20 reaped",
            reaped()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_binary_publish_with_invalid_utf8_reaches_subscribers_as_binary() {
    let server = start(test_config());
    let addr = server.local_addr();
    let mut sub = connect(addr, "/pubsub?topic=t");
    let mut other = connect(addr, "/pubsub?topic=t");
    let mut publisher = connect(addr, "/pubsub");
    // Subscriptions in place: a round trip on each.
    for ws in [&mut sub, &mut other, &mut publisher] {
        ws.send(Message::text("sub sync")).unwrap();
        assert_eq!(ws.read().unwrap(), Message::text("ok sub sync"));
    }
    let mut payload = b"pub t ".to_vec();
    payload.extend_from_slice(&[0xff, 0xfe, 0x00]);
    publisher.send(Message::binary(payload)).unwrap();
    publisher.send(Message::text("pub t fine")).unwrap();
    for ws in [&mut sub, &mut other] {
        // As text, tungstenite (like a browser) would fail the connection with 1007 here.
        assert_eq!(
            ws.read().unwrap(),
            Message::binary(b"msg t \xff\xfe\x00".to_vec())
        );
        assert_eq!(ws.read().unwrap(), Message::text("msg t fine"));
    }
    server.shutdown();
    server.join().unwrap();
}

#[test]
fn subscriptions_are_capped_per_connection_and_counted() {
    let server = start(ServerConfig {
        max_subscriptions_per_connection: 100,
        ..test_config()
    });
    let addr = server.local_addr();
    let mut ws = connect(addr, "/pubsub");
    for i in 0..100 {
        ws.send(Message::text(format!("sub t{i}"))).unwrap();
    }
    for i in 0..100 {
        assert_eq!(ws.read().unwrap(), Message::text(format!("ok sub t{i}")));
    }
    ws.send(Message::text("sub one-too-many")).unwrap();
    assert_eq!(
        ws.read().unwrap(),
        Message::text("err too many subscriptions")
    );
    // Still subscribed to what it had, still served.
    ws.send(Message::text("pub t42 hi")).unwrap();
    assert_eq!(ws.read().unwrap(), Message::text("msg t42 hi"));
    let refused: u64 = server
        .stats()
        .iter()
        .map(|s| s.subscriptions_refused.load(Relaxed))
        .sum();
    assert_eq!(refused, 1);
    server.shutdown();
    server.join().unwrap();
}

#[test]
fn plain_pages_are_served_on_the_websocket_port() {
    let routes = Routes::new().route("/echo", |_| Box::new(apps::Echo)).page(
        "/demo/",
        "text/html; charset=utf-8",
        "<h1>demo</h1>",
    );
    let server = server::start(test_config(), routes).unwrap();
    let addr = server.local_addr();
    let get = |request: &str| {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(request.as_bytes()).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    };
    let page = get("GET /demo/?room=a HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(page.starts_with("HTTP/1.1 200 OK\r\n"), "{page}");
    assert!(page.contains("Content-Type: text/html; charset=utf-8\r\n"));
    assert!(page.ends_with("\r\n\r\n<h1>demo</h1>"), "{page}");
    let head = get("HEAD /demo/ HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(
        head.starts_with("HTTP/1.1 200 OK\r\n") && head.ends_with("\r\n\r\n"),
        "{head}"
    );
    assert!(head.contains("Content-Length: 13\r\n"));
    let other = get("GET /nothing HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(
        other.starts_with("HTTP/1.1 426"),
        "not a page: still 426: {other}"
    );
    // The WebSocket routes are unchanged.
    let mut ws = connect(addr, "/echo");
    ws.send(Message::text("hi")).unwrap();
    assert_eq!(ws.read().unwrap(), Message::text("hi"));
    server.shutdown();
    server.join().unwrap();
}
