//! `c10m serve --broker redis://...` as users run it: two server processes joined by a real
//! redis-server carry `/pubsub` across processes unchanged, and `/health` follows Redis going
//! away and coming back.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

#[path = "../../cluster/tests/support/redis.rs"]
mod redis_server;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use redis_server::Redis;
use support::{KillOnDrop, addr_after, spawn_serve};
use tungstenite::Message;

const WAIT: Duration = Duration::from_secs(20);

type Ws = tungstenite::WebSocket<TcpStream>;

struct Node {
    _process: KillOnDrop,
    ws: SocketAddr,
    metrics: SocketAddr,
}

fn node(redis: &Redis) -> Node {
    let (process, ws, mut lines) = spawn_serve(
        "",
        &format!(
            "--listen 127.0.0.1:0 --shards 2 --metrics 127.0.0.1:0 --broker {}",
            redis.url()
        ),
    );
    let mut metrics = None;
    let mut broker_line = None;
    for line in lines.by_ref() {
        let line = line.unwrap();
        if line.contains("/metrics") {
            metrics = Some(addr_after(&line, "http://"));
        }
        if line.contains("broker:") {
            broker_line = Some(line.clone());
        }
        if metrics.is_some() && broker_line.is_some() {
            break;
        }
    }
    assert!(broker_line.unwrap().contains("Redis at redis://"));
    std::thread::spawn(move || for _ in lines {});
    Node {
        _process: process,
        ws,
        metrics: metrics.unwrap(),
    }
}

fn client(addr: SocketAddr) -> Ws {
    support::connect(addr, "/pubsub")
}

fn text(ws: &mut Ws) -> String {
    loop {
        match ws.read().unwrap() {
            Message::Text(t) => return t.to_string(),
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("expected text, got {other:?}"),
        }
    }
}

fn get(addr: SocketAddr, path: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).unwrap();
    body
}

fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::yield_now();
    }
}

#[test]
fn two_processes_share_topics_through_redis_and_health_follows_redis() {
    let redis = Redis::start();
    let port = redis.port;
    let a = node(&redis);
    let b = node(&redis);
    let mut sub = client(a.ws);
    sub.send(Message::text("sub room")).unwrap();
    assert_eq!(text(&mut sub), "ok sub room");
    let mut publisher = client(b.ws);
    for i in 0..100 {
        publisher
            .send(Message::text(format!("pub room {i}")))
            .unwrap();
    }
    for i in 0..100 {
        assert_eq!(text(&mut sub), format!("msg room {i}"));
    }
    assert!(get(a.metrics, "/health").ends_with("ok\n"));
    let metrics = get(b.metrics, "/metrics");
    assert!(
        metrics.contains("c10m_broker_published_total 100"),
        "{metrics}"
    );

    drop(redis);
    eventually("a's /health to say degraded", || {
        get(a.metrics, "/health").contains("degraded")
    });
    let redis = Redis::start_on(port);
    eventually("a's /health to say ok again", || {
        get(a.metrics, "/health").ends_with("ok\n")
    });
    eventually("b's /health to say ok again", || {
        get(b.metrics, "/health").ends_with("ok\n")
    });
    publisher.send(Message::text("pub room after")).unwrap();
    assert_eq!(text(&mut sub), "msg room after");
    assert_eq!(redis.subscribers("room"), 1);
}

#[test]
fn an_unusable_broker_url_is_refused_at_start() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_c10m"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--broker",
            "http://nope",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--broker") && err.contains("redis://"),
        "{err}"
    );
}
