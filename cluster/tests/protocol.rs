//! The client protocol (`/connection/v1`) on one node with the in-memory backend, over real
//! sockets: tokens at upgrade, publish and subscribe with offsets, recovery after a
//! reconnect, presence, messages to users and their inboxes, token refresh and expiry, and
//! bad input answered without harm.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use c10m_cluster::token::{Verifier, now_secs};
use c10m_cluster::{Limits, Memory, Service, Settings};
use c10m_engine::server::{self, Routes, ServerConfig, ServerHandle};
use serde_json::{Value, json};
use tungstenite::Message;

const SECRET: &[u8] = b"test-secret";
#[path = "support/client.rs"]
mod client;

use client::{Ws, next};

fn token(user: &str, expires_in: i64) -> String {
    client::token(SECRET, user, expires_in)
}

fn start(settings: Settings) -> ServerHandle {
    let service = Service::new(settings, Some(Verifier::hs256(SECRET).unwrap()), |handle| {
        Arc::new(Memory::new(handle, Limits::default()))
    });
    let config = ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        shards: 2,
        drain_timeout_ms: 1_000,
        ..ServerConfig::default()
    };
    server::start(config, Routes::new().route("/connection/v1", service.app())).unwrap()
}

/// The HTTP status line of an upgrade with `query`.
fn upgrade_status(addr: SocketAddr, query: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET /connection/v1{query} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    .unwrap();
    let mut head = vec![0u8; 12];
    s.read_exact(&mut head).unwrap();
    String::from_utf8(head).unwrap()
}

/// A connected client of `user`, with its `connected` push read.
fn connect(addr: SocketAddr, user: &str) -> (Ws, Value) {
    let stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let url = format!("ws://{addr}/connection/v1?token={}", token(user, 3600));
    let (mut ws, response) = tungstenite::client(url, stream).unwrap();
    assert_eq!(response.status(), 101);
    let connected = next(&mut ws);
    assert_eq!(connected["type"], "connected");
    (ws, connected)
}

/// Sends a command and returns its reply (pushes before it are collected into `pushes`).
fn call(ws: &mut Ws, cmd: Value, pushes: &mut Vec<Value>) -> Value {
    let id = cmd["id"].as_u64().unwrap();
    ws.send(Message::text(cmd.to_string())).unwrap();
    loop {
        let v = next(ws);
        if v["id"].as_u64() == Some(id) {
            return v;
        }
        pushes.push(v);
    }
}

#[test]
fn tokens_are_checked_at_upgrade() {
    let server = start(Settings::default());
    let addr = server.local_addr();
    assert_eq!(upgrade_status(addr, ""), "HTTP/1.1 401");
    assert_eq!(upgrade_status(addr, "?token=garbage"), "HTTP/1.1 401");
    assert_eq!(
        upgrade_status(addr, &format!("?token={}", token("al", -10))),
        "HTTP/1.1 401"
    );
    assert_eq!(
        upgrade_status(addr, &format!("?token={}", token("", 3600))),
        "HTTP/1.1 403"
    );
    let (_, connected) = connect(addr, "alice");
    assert_eq!(connected["user"], "alice");
    assert_eq!(connected["version"], 1);
    assert!(connected["client"].as_str().unwrap().len() > 4);
}

#[test]
fn publications_carry_offsets_and_reach_every_subscriber() {
    let server = start(Settings::default());
    let addr = server.local_addr();
    let mut subs: Vec<Ws> = (0..4).map(|i| connect(addr, &format!("u{i}")).0).collect();
    let mut pushes = Vec::new();
    for (i, ws) in subs.iter_mut().enumerate() {
        let r = call(
            ws,
            json!({"id":1,"method":"subscribe","channel":"news"}),
            &mut pushes,
        );
        assert_eq!(r["result"]["offset"], 0, "sub {i}: {r}");
        assert_eq!(r["result"]["recovered"], true);
    }
    let (mut publisher, _) = connect(addr, "pub");
    for i in 1..=20u64 {
        let r = call(
            &mut publisher,
            json!({"id":i,"method":"publish","channel":"news","data":{"n":i}}),
            &mut pushes,
        );
        assert_eq!(r["result"]["offset"], i);
    }
    for ws in &mut subs {
        for i in 1..=20u64 {
            let p = next(ws);
            assert_eq!(p["type"], "pub");
            assert_eq!(p["channel"], "news");
            assert_eq!(p["offset"], i);
            assert_eq!(p["data"]["n"], i);
        }
    }
}

#[test]
fn a_reconnecting_subscriber_recovers_what_it_missed_without_gap_or_duplicate() {
    let server = start(Settings::default());
    let addr = server.local_addr();
    let (mut publisher, _) = connect(addr, "pub");
    let mut pushes = Vec::new();
    let (mut sub, _) = connect(addr, "reader");
    call(
        &mut sub,
        json!({"id":1,"method":"subscribe","channel":"c"}),
        &mut pushes,
    );
    for i in 1..=3 {
        call(
            &mut publisher,
            json!({"id":i,"method":"publish","channel":"c","data":i}),
            &mut pushes,
        );
    }
    let mut last = None;
    for _ in 0..3 {
        let p = next(&mut sub);
        last = Some((
            p["offset"].as_u64().unwrap(),
            p["epoch"].as_str().unwrap().to_string(),
        ));
    }
    let (offset, epoch) = last.unwrap();
    assert_eq!(offset, 3);
    drop(sub);
    for i in 4..=8 {
        call(
            &mut publisher,
            json!({"id":i,"method":"publish","channel":"c","data":i}),
            &mut pushes,
        );
    }
    let (mut back, _) = connect(addr, "reader");
    let r = call(
        &mut back,
        json!({"id":9,"method":"subscribe","channel":"c","since":{"offset":offset,"epoch":epoch}}),
        &mut pushes,
    );
    assert_eq!(r["result"]["recovered"], true, "{r}");
    let got: Vec<u64> = r["result"]["publications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["offset"].as_u64().unwrap())
        .collect();
    assert_eq!(got, [4, 5, 6, 7, 8]);
    call(
        &mut publisher,
        json!({"id":10,"method":"publish","channel":"c","data":9}),
        &mut pushes,
    );
    assert_eq!(next(&mut back)["offset"], 9, "live again, no gap");
    // Another epoch (history lost) cannot be bridged: the client is told.
    let (mut other, _) = connect(addr, "reader2");
    let r = call(
        &mut other,
        json!({"id":1,"method":"subscribe","channel":"c","since":{"offset":2,"epoch":"gone"}}),
        &mut pushes,
    );
    assert_eq!(r["result"]["recovered"], false);
    assert_eq!(r["result"]["offset"], 9);
}

/// An unsubscribe that overtakes its subscribe: both are answered, the subscribe with
/// "unsubscribed" (10), and the channel delivers nothing afterwards.
#[test]
fn a_subscribe_overtaken_by_its_unsubscribe_is_still_answered() {
    let server = start(Settings::default());
    let (mut ws, _) = connect(server.local_addr(), "ann");
    for round in 0..20u64 {
        let (sub, unsub) = (2 * round + 1, 2 * round + 2);
        // Both in one write: the unsubscribe is read before the history read answers.
        ws.write(Message::text(
            json!({"id":sub,"method":"subscribe","channel":"c"}).to_string(),
        ))
        .unwrap();
        ws.send(Message::text(
            json!({"id":unsub,"method":"unsubscribe","channel":"c"}).to_string(),
        ))
        .unwrap();
        let (mut sub_reply, mut unsub_reply) = (None, None);
        while sub_reply.is_none() || unsub_reply.is_none() {
            let v = next(&mut ws);
            match v["id"].as_u64() {
                Some(id) if id == sub => sub_reply = Some(v),
                Some(id) if id == unsub => unsub_reply = Some(v),
                _ => panic!("unexpected {v}"),
            }
        }
        assert_eq!(unsub_reply.unwrap()["result"], json!({}));
        // Either the history read came back first (a normal reply) or it was overtaken.
        let r = sub_reply.unwrap();
        assert!(
            r["result"]["offset"].is_u64() || r["error"]["code"] == 10,
            "{r}"
        );
    }
    // Forty commands, none of them counted as errors: the connection is still open and
    // nothing is delivered on the channel it left.
    let (mut publisher, _) = connect(server.local_addr(), "bob");
    let mut pushes = Vec::new();
    call(
        &mut publisher,
        json!({"id":1,"method":"publish","channel":"c","data":1}),
        &mut pushes,
    );
    let r = call(
        &mut ws,
        json!({"id":100,"method":"presence","channel":"c"}),
        &mut pushes,
    );
    assert_eq!(r["result"]["clients"], json!([]), "{r}");
    assert!(pushes.is_empty(), "{pushes:?}");
}

#[test]
fn a_publish_retried_with_its_idempotency_key_happens_once() {
    let server = start(Settings::default());
    let (mut sub, _) = connect(server.local_addr(), "reader");
    let (mut publisher, _) = connect(server.local_addr(), "writer");
    let mut pushes = Vec::new();
    call(
        &mut sub,
        json!({"id":1,"method":"subscribe","channel":"c"}),
        &mut pushes,
    );
    let publish = |ws: &mut Ws, id: u64, key: &str, data: u64, pushes: &mut Vec<Value>| {
        call(
            ws,
            json!({"id":id,"method":"publish","channel":"c","data":data,"idempotency_key":key}),
            pushes,
        )
    };
    assert_eq!(
        publish(&mut publisher, 1, "a", 1, &mut pushes)["result"]["offset"],
        1
    );
    assert_eq!(
        publish(&mut publisher, 2, "b", 2, &mut pushes)["result"]["offset"],
        2
    );
    assert_eq!(
        publish(&mut publisher, 3, "a", 1, &mut pushes)["result"]["offset"],
        1
    );
    // Keys are per channel: another channel's "a" is another publish.
    let other = call(
        &mut publisher,
        json!({"id":4,"method":"publish","channel":"d","data":0,"idempotency_key":"a"}),
        &mut pushes,
    );
    assert_eq!(other["result"]["offset"], 1);
    let bad = publish(&mut publisher, 5, "", 9, &mut pushes);
    assert_eq!(bad["error"]["code"], 1, "{bad}");
    // The subscriber got two publications, then the history shows nothing more.
    let r = call(
        &mut sub,
        json!({"id":2,"method":"history","channel":"c"}),
        &mut pushes,
    );
    assert_eq!(r["result"]["offset"], 2, "{r}");
    let offsets: Vec<u64> = pushes
        .iter()
        .filter(|p| p["channel"] == "c")
        .map(|p| p["offset"].as_u64().unwrap())
        .collect();
    assert_eq!(offsets, [1, 2]);
}

#[test]
fn presence_lists_subscribers_and_forgets_leavers() {
    let server = start(Settings::default());
    let addr = server.local_addr();
    let mut pushes = Vec::new();
    let (mut a, ca) = connect(addr, "ann");
    let (mut b, _) = connect(addr, "ben");
    call(
        &mut a,
        json!({"id":1,"method":"subscribe","channel":"room"}),
        &mut pushes,
    );
    call(
        &mut b,
        json!({"id":1,"method":"subscribe","channel":"room"}),
        &mut pushes,
    );
    let r = call(
        &mut a,
        json!({"id":2,"method":"presence","channel":"room"}),
        &mut pushes,
    );
    let mut users: Vec<&str> = r["result"]["clients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["user"].as_str().unwrap())
        .collect();
    users.sort();
    assert_eq!(users, ["ann", "ben"]);
    b.close(None).unwrap();
    while b.read().is_ok() {}
    let r = loop {
        let r = call(
            &mut a,
            json!({"id":3,"method":"presence","channel":"room"}),
            &mut pushes,
        );
        if r["result"]["clients"].as_array().unwrap().len() == 1 {
            break r;
        }
    };
    assert_eq!(r["result"]["clients"][0]["client"], ca["client"]);
}

#[test]
fn messages_to_users_arrive_online_or_wait_in_their_inbox_in_order() {
    let server = start(Settings::default());
    let addr = server.local_addr();
    let mut pushes = Vec::new();
    let (mut sender, _) = connect(addr, "sender");
    let (mut bob1, _) = connect(addr, "bob");
    let (mut bob2, _) = connect(addr, "bob");
    let r = call(
        &mut sender,
        json!({"id":1,"method":"send","user":"bob","data":"hi"}),
        &mut pushes,
    );
    assert_eq!(r["result"]["online"], true);
    for b in [&mut bob1, &mut bob2] {
        let m = next(b);
        assert_eq!(
            (m["type"].as_str(), m["data"].as_str()),
            (Some("message"), Some("hi"))
        );
    }
    for i in 0..3 {
        let r = call(
            &mut sender,
            json!({"id":2+i,"method":"send","user":"carol","data":i}),
            &mut pushes,
        );
        assert_eq!(r["result"]["online"], false);
    }
    let (mut carol, _) = connect(addr, "carol");
    for i in 0..3 {
        let m = next(&mut carol);
        assert_eq!(m["type"], "message");
        assert_eq!(m["data"], i);
    }
}

#[test]
fn a_refreshed_token_keeps_a_connection_and_an_expired_one_closes_it() {
    let server = start(Settings::default());
    let addr = server.local_addr();
    let mut pushes = Vec::new();
    let stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let url = format!("ws://{addr}/connection/v1?token={}", token("dan", 2));
    let (mut short, _) = tungstenite::client(url, stream).unwrap();
    assert_eq!(next(&mut short)["type"], "connected");
    let r = call(
        &mut short,
        json!({"id":1,"method":"refresh","token":token("eve", 3600)}),
        &mut pushes,
    );
    assert_eq!(r["error"]["code"], 9, "another user's token is refused");
    // No refresh: closed with 3500 when the token expires (the read waits for it).
    let code = loop {
        match short.read() {
            Ok(Message::Close(Some(f))) => break u16::from(f.code),
            Ok(_) => {}
            Err(e) => panic!("no close frame: {e}"),
        }
    };
    assert_eq!(code, 3500);

    let stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let url = format!("ws://{addr}/connection/v1?token={}", token("dan", 2));
    let (mut kept, _) = tungstenite::client(url, stream).unwrap();
    assert_eq!(next(&mut kept)["type"], "connected");
    let r = call(
        &mut kept,
        json!({"id":1,"method":"refresh","token":token("dan", 3600)}),
        &mut pushes,
    );
    assert!(
        r["result"]["expires"].as_u64().unwrap() > now_secs() + 3000,
        "{r}"
    );
    // Past the first token's expiry, still served.
    let deadline = now_secs() + 3;
    let mut n = 2;
    while now_secs() <= deadline {
        let r = call(
            &mut kept,
            json!({"id":n,"method":"presence","channel":"x"}),
            &mut pushes,
        );
        assert!(r["result"].is_object(), "{r}");
        n += 1;
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn bad_commands_get_error_replies_and_too_many_close_the_connection() {
    let server = start(Settings {
        max_subscriptions: 2,
        max_data: 16,
        max_errors: 10,
        ..Settings::default()
    });
    let addr = server.local_addr();
    let (mut ws, _) = connect(addr, "mallory");
    let mut pushes = Vec::new();
    let long = "x".repeat(300);
    for (cmd, code) in [
        (json!({"id":1,"method":"nope"}), 2),
        (json!({"id":2,"method":"subscribe"}), 3),
        (json!({"id":3,"method":"subscribe","channel":long}), 4),
        (json!({"id":4,"method":"subscribe","channel":"a b"}), 4),
        (
            json!({"id":5,"method":"publish","channel":"a","data":"0123456789abcdefXX"}),
            8,
        ),
        (json!({"id":6,"method":"unsubscribe","channel":"never"}), 6),
    ] {
        let r = call(&mut ws, cmd.clone(), &mut pushes);
        assert_eq!(r["error"]["code"], code, "{cmd} -> {r}");
    }
    call(
        &mut ws,
        json!({"id":7,"method":"subscribe","channel":"a"}),
        &mut pushes,
    );
    call(
        &mut ws,
        json!({"id":8,"method":"subscribe","channel":"b"}),
        &mut pushes,
    );
    let r = call(
        &mut ws,
        json!({"id":9,"method":"subscribe","channel":"c"}),
        &mut pushes,
    );
    assert_eq!(r["error"]["code"], 7, "too many subscriptions");
    let r = call(
        &mut ws,
        json!({"id":10,"method":"subscribe","channel":"a"}),
        &mut pushes,
    );
    assert_eq!(r["error"]["code"], 5, "already subscribed");
    // Not JSON at all: code 1, no id to repeat.
    ws.send(Message::text("{{{")).unwrap();
    assert_eq!(next(&mut ws)["error"]["code"], 1);
    ws.send(Message::binary(vec![0xff, 0xfe])).unwrap();
    assert_eq!(next(&mut ws)["error"]["code"], 1);
    // Past max_errors (10): closed with 3501, do not reconnect.
    let code = loop {
        ws.send(Message::text("nonsense")).unwrap();
        match ws.read() {
            Ok(Message::Close(Some(f))) => break u16::from(f.code),
            Ok(_) => {}
            Err(e) => panic!("{e}"),
        }
    };
    assert_eq!(code, 3501);
}
