//! `c10m serve` serves the client protocol at /connection/v1 as users run it: tokens from the
//! environment (C10M_TOKEN_HS256_SECRET) checked at upgrade, and a publish reaching a
//! subscriber with its offset.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

#[path = "../../cluster/tests/support/client.rs"]
mod client;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use client::next;
use serde_json::json;
use tungstenite::Message;

#[test]
fn the_binary_serves_the_client_protocol_with_tokens_from_the_environment() {
    let (_server, addr, mut lines) = support::spawn_serve(
        "C10M_TOKEN_HS256_SECRET=s3cret",
        "--listen 127.0.0.1:0 --shards 2",
    );
    let banner = lines
        .find(|l| l.as_ref().is_ok_and(|l| l.contains("client protocol")))
        .unwrap()
        .unwrap();
    assert!(
        banner.contains("/connection/v1 (HS256 tokens, state in memory)"),
        "{banner}"
    );
    std::thread::spawn(move || for _ in lines {});

    let mut raw = TcpStream::connect(addr).unwrap();
    raw.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        raw,
        "GET /connection/v1 HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    .unwrap();
    let mut status = [0u8; 12];
    raw.read_exact(&mut status).unwrap();
    assert_eq!(&status, b"HTTP/1.1 401", "no token");

    let connect = |user: &str| {
        let stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let url = format!(
            "ws://{addr}/connection/v1?token={}",
            client::token(b"s3cret", user, 3600)
        );
        let (mut ws, _) = tungstenite::client(url, stream).unwrap();
        let connected = next(&mut ws);
        assert_eq!(connected["user"], user);
        ws
    };
    let mut sub = connect("reader");
    sub.send(Message::text(
        json!({"id":1,"method":"subscribe","channel":"c"}).to_string(),
    ))
    .unwrap();
    assert_eq!(next(&mut sub)["result"]["offset"], 0);
    let mut publisher = connect("writer");
    publisher
        .send(Message::text(
            json!({"id":1,"method":"publish","channel":"c","data":"hello"}).to_string(),
        ))
        .unwrap();
    assert_eq!(next(&mut publisher)["result"]["offset"], 1);
    let p = next(&mut sub);
    assert_eq!(
        (p["offset"].as_u64(), p["data"].as_str()),
        (Some(1), Some("hello"))
    );
}

/// `--protocol-ping-interval-ms` sets the interval clients are told in `connected` and the
/// pings they get.
#[test]
fn the_protocol_ping_interval_is_a_setting() {
    let (_server, addr, lines) = support::spawn_serve(
        "C10M_PROTOCOL_PING_INTERVAL_MS=300",
        "--listen 127.0.0.1:0 --shards 1",
    );
    std::thread::spawn(move || for _ in lines {});
    let stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let (mut ws, _) = tungstenite::client(format!("ws://{addr}/connection/v1"), stream).unwrap();
    let Message::Text(t) = ws.read().unwrap() else {
        panic!("no connected push");
    };
    let connected: serde_json::Value = serde_json::from_str(&t).unwrap();
    assert_eq!(connected["ping_ms"], 300, "{connected}");
    // Three pings: every 300 ms they take about a second; at the default 25 s, 75 s and the
    // read timeout fails the test.
    let mut pings = 0;
    while pings < 3 {
        if let Message::Text(t) = ws.read().unwrap() {
            let v: serde_json::Value = serde_json::from_str(&t).unwrap();
            assert_eq!(v["type"], "ping", "{v}");
            pings += 1;
        }
    }
}
