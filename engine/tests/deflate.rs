//! permessage-deflate (RFC 7692): the core's rules on joined pairs and scripted frames, and the
//! server's negotiation and shared compressed frames over loopback (under the backend
//! `C10M_TEST_IO` names).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use c10m_engine::proto::deflate::{self, Deflate};
use c10m_engine::proto::{Config, Connection, Error, OpCode, ProtocolError};
use c10m_engine::server::{self, Routes, ServerConfig, ServerHandle, apps};
use support::{Ev, Pair, close_code_in, drain, frame};

const ON: Option<Deflate> = Some(Deflate { window_bits: 15 });

fn pair(config: Config) -> Pair {
    let mut p = Pair::new(config);
    p.client.set_deflate(ON);
    p.server.set_deflate(ON);
    p
}

#[test]
fn compressed_messages_cross_both_ways() {
    let mut p = pair(Config::default());
    let text = "hello hello hello hello hello hello ".repeat(100);
    p.client.send_text(&text, &mut p.to_server).unwrap();
    // On the wire: RSV1 set, far smaller than the text.
    assert_eq!(p.to_server[0] & 0x40, 0x40);
    assert!(p.to_server.len() < text.len() / 5, "{}", p.to_server.len());
    let (events, err) = p.server_reads();
    assert_eq!(
        (events, err.is_none()),
        (vec![Ev::Text(text.clone())], true)
    );
    p.server
        .send_binary(text.as_bytes(), &mut p.to_client)
        .unwrap();
    let (events, err) = p.client_reads();
    assert!(err.is_none());
    assert_eq!(events, vec![Ev::Binary(text.into_bytes())]);
}

#[test]
fn a_fragmented_compressed_message_with_pings_between() {
    let mut p = pair(Config::default());
    let text = "fragment ".repeat(500);
    let mut z = Vec::new();
    deflate::compress(text.as_bytes(), 15, &mut z);
    let (a, b) = z.split_at(z.len() / 2);
    p.to_server
        .extend(frame(OpCode::Text).fin(false).rsv(0b100).payload(a).bytes());
    p.to_server
        .extend(frame(OpCode::Ping).payload(b"p").bytes());
    p.to_server
        .extend(frame(OpCode::Continuation).payload(b).bytes());
    let (events, err) = p.server_reads();
    assert!(err.is_none(), "{err:?}");
    assert_eq!(events, vec![Ev::Ping(b"p".to_vec()), Ev::Text(text)]);
}

#[test]
fn rsv1_where_it_means_nothing_is_a_protocol_error() {
    let cases = [
        // Not negotiated.
        (None, frame(OpCode::Text).rsv(0b100).payload(b"x")),
        // On a control frame.
        (ON, frame(OpCode::Ping).rsv(0b100)),
        // On a continuation.
        (ON, frame(OpCode::Continuation).rsv(0b100)),
        // RSV2 and RSV3 stay reserved.
        (ON, frame(OpCode::Text).rsv(0b010).payload(b"x")),
    ];
    for (deflate, f) in cases {
        let mut p = Pair::new(Config::default());
        p.server.set_deflate(deflate);
        if deflate.is_some() {
            p.to_server
                .extend(frame(OpCode::Text).fin(false).rsv(0b100).bytes());
        }
        p.to_server.extend(f.bytes());
        let (_, err) = p.server_reads();
        assert!(
            matches!(err, Some(Error::Protocol(ProtocolError::ReservedBits(_)))),
            "{f:?}: {err:?}"
        );
        assert_eq!(close_code_in(&p.to_client), Some(1002));
    }
}

#[test]
fn a_decompression_bomb_closes_with_1009_and_garbage_with_1002() {
    let mut p = pair(Config {
        max_message_size: 1 << 20,
        ..Config::default()
    });
    // 64 MiB of zeros in a few hundred KiB: refused at 1 MiB of output.
    let mut z = Vec::new();
    deflate::compress(&vec![0; 64 << 20], 15, &mut z);
    assert!(z.len() < 1 << 20);
    p.to_server
        .extend(frame(OpCode::Binary).rsv(0b100).payload(&z).bytes());
    let (events, err) = p.server_reads();
    assert!(events.is_empty());
    assert!(matches!(err, Some(Error::Capacity(_))), "{err:?}");
    assert_eq!(close_code_in(&p.to_client), Some(1009));

    let mut p = pair(Config::default());
    p.to_server.extend(
        frame(OpCode::Text)
            .rsv(0b100)
            .payload(b"\xff\xfe\xfd\xfc")
            .bytes(),
    );
    let (_, err) = p.server_reads();
    assert!(
        matches!(
            err,
            Some(Error::Protocol(ProtocolError::InvalidCompressedData))
        ),
        "{err:?}"
    );
    assert_eq!(close_code_in(&p.to_client), Some(1002));
}

#[test]
fn an_idle_connection_holds_nothing_for_compression() {
    // No context between messages: a connection keeps no buffer once a message is read.
    let mut p = pair(Config::default());
    for _ in 0..3 {
        p.client
            .send_text(&"abc".repeat(1000), &mut p.to_server)
            .unwrap();
        let (events, _) = p.server_reads();
        assert_eq!(events.len(), 1);
        assert_eq!(p.server.held(), 0);
        assert!(!p.server.is_reassembling());
    }
    // The same connection size as without deflate: the agreement is a byte in the struct.
    assert!(std::mem::size_of::<Connection>() <= 64);
}

// The server, over loopback.

fn start(deflate: bool) -> ServerHandle {
    let config = ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        shards: 2,
        io: support::io_backend().parse().unwrap(),
        deflate,
        ..ServerConfig::default()
    };
    let routes = Routes::new()
        .route("/echo", |_| Box::new(apps::Echo))
        .route("/pubsub", |_| Box::new(apps::PubSub));
    server::start(config, routes).unwrap()
}

/// A client handshake offering `extensions`: the socket, the response head and what the
/// client agreed to.
fn client(addr: SocketAddr, path: &str, extensions: Option<&str>) -> (TcpStream, Connection) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let offer = extensions
        .map(|e| format!("Sec-WebSocket-Extensions: {e}\r\n"))
        .unwrap_or_default();
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{offer}\r\n").unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut byte).unwrap(), 1);
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let answer = head
        .lines()
        .find_map(|l| l.strip_prefix("Sec-WebSocket-Extensions: "));
    let mut conn = Connection::client(Arc::new(Config::default()), 9, 0);
    conn.set_deflate(deflate::client_accepts(answer.map(str::as_bytes)).unwrap());
    (s, conn)
}

/// Reads until one message arrives; returns it and whether its first frame had RSV1.
fn next(s: &mut TcpStream, conn: &mut Connection) -> (Ev, bool) {
    let mut input = Vec::new();
    let mut chunk = [0u8; 65536];
    loop {
        let rsv1 = input.first().is_some_and(|b| b & 0x40 != 0);
        let mut out = Vec::new();
        let (events, err) = drain(conn, &mut input.clone(), &mut out, 0);
        assert!(err.is_none(), "{err:?}");
        if let Some(ev) = events.into_iter().next() {
            return (ev, rsv1);
        }
        let n = s.read(&mut chunk).unwrap();
        assert!(n > 0, "closed");
        input.extend_from_slice(&chunk[..n]);
    }
}

fn send(s: &mut TcpStream, conn: &mut Connection, text: &str) {
    let mut out = Vec::new();
    conn.send_text(text, &mut out).unwrap();
    s.write_all(&out).unwrap();
}

#[test]
fn the_server_negotiates_only_when_on_and_offered() {
    let on = start(true);
    let (_, c) = client(
        on.local_addr(),
        "/echo",
        Some("permessage-deflate; client_max_window_bits"),
    );
    assert_eq!(c.deflate(), ON);
    let (_, c) = client(on.local_addr(), "/echo", None);
    assert_eq!(c.deflate(), None);
    let (_, c) = client(on.local_addr(), "/echo", Some("permessage-deflate; bogus"));
    assert_eq!(c.deflate(), None, "a malformed offer is declined");
    let off = start(false);
    let (_, c) = client(off.local_addr(), "/echo", Some("permessage-deflate"));
    assert_eq!(c.deflate(), None, "off by default");
}

#[test]
fn echo_is_compressed_both_ways() {
    let server = start(true);
    let (mut s, mut c) = client(server.local_addr(), "/echo", Some(&deflate::client_offer()));
    let text = "compress me please ".repeat(200);
    send(&mut s, &mut c, &text);
    let (ev, rsv1) = next(&mut s, &mut c);
    assert_eq!(ev, Ev::Text(text));
    assert!(rsv1, "the echo came back compressed");
}

#[test]
fn a_publish_reaches_compressing_and_plain_subscribers_alike() {
    let server = start(true);
    let offer = deflate::client_offer();
    let (mut z, mut zc) = client(server.local_addr(), "/pubsub", Some(&offer));
    let (mut p, mut pc) = client(server.local_addr(), "/pubsub", None);
    for (s, c) in [(&mut z, &mut zc), (&mut p, &mut pc)] {
        send(s, c, "sub t");
        assert_eq!(next(s, c).0, Ev::Text("ok sub t".into()));
    }
    let body = "a published message, long enough to shrink ".repeat(20);
    let (mut publisher, mut pubc) = client(server.local_addr(), "/pubsub", None);
    send(&mut publisher, &mut pubc, &format!("pub t {body}"));
    let want = Ev::Text(format!("msg t {body}"));
    let (ev, rsv1) = next(&mut z, &mut zc);
    assert_eq!((ev, rsv1), (want.clone(), true));
    let (ev, rsv1) = next(&mut p, &mut pc);
    assert_eq!((ev, rsv1), (want, false));
}

#[test]
fn deflate_paths_compress_only_those_paths() {
    let config = ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        shards: 1,
        io: support::io_backend().parse().unwrap(),
        deflate_paths: vec!["/pubsub".into()],
        ..ServerConfig::default()
    };
    let routes = Routes::new()
        .route("/echo", |_| Box::new(apps::Echo))
        .route("/pubsub", |_| Box::new(apps::PubSub));
    let server = server::start(config, routes).unwrap();
    let offer = deflate::client_offer();
    let (_, c) = client(server.local_addr(), "/pubsub?topic=a", Some(&offer));
    assert_eq!(
        c.deflate(),
        ON,
        "a listed path negotiates (the query is not part of it)"
    );
    let (_, c) = client(server.local_addr(), "/echo", Some(&offer));
    assert_eq!(c.deflate(), None, "a path not listed does not");
}

#[test]
fn a_deflate_path_must_be_a_path() {
    for bad in ["pubsub", "/pubsub?x=1", ""] {
        let config = ServerConfig {
            deflate_paths: vec![bad.into()],
            ..ServerConfig::default()
        };
        let err = config.validate().unwrap_err().to_string();
        assert!(err.starts_with("deflate_paths:"), "{bad:?}: {err}");
    }
}
