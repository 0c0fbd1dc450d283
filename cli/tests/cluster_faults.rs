//! Faults across `c10m serve` processes joined by a real Redis: a node killed with SIGKILL
//! leaves presence and the user registry within their TTL (its entries' deadlines are read
//! from Redis: no timing in the assertion), and messages sent to its user meanwhile wait in the
//! user's inbox and arrive in order when the user reconnects to another node; Redis stalled
//! (SIGSTOP) is answered "unavailable" without hanging and loses nothing acknowledged.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

#[path = "../../cluster/tests/support/client.rs"]
mod client;
#[path = "../../cluster/tests/support/redis.rs"]
mod redis_server;

use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use client::{Ws, call, next};
use redis_server::Redis;
use serde_json::json;
use support::KillOnDrop;

const SECRET: &str = "fault-secret";
const TTL_MS: u64 = 1_500;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn node(redis: &Redis) -> (KillOnDrop, SocketAddr) {
    let (process, addr, lines) = support::spawn_serve(
        &format!("C10M_TOKEN_HS256_SECRET={SECRET}"),
        &format!(
            "--listen 127.0.0.1:0 --shards 2 --broker {} --presence-ttl-ms {TTL_MS}",
            redis.url()
        ),
    );
    std::thread::spawn(move || for _ in lines {});
    (process, addr)
}

fn connect(addr: SocketAddr, user: &str) -> (Ws, String) {
    let stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let url = format!(
        "ws://{addr}/connection/v1?token={}",
        client::token(SECRET.as_bytes(), user, 3600)
    );
    let (mut ws, _) = tungstenite::client(url, stream).unwrap();
    let connected = next(&mut ws);
    let client = connected["client"].as_str().unwrap().to_string();
    (ws, client)
}

fn present(ws: &mut Ws, n: u64) -> Vec<String> {
    let r = call(ws, json!({"id":n,"method":"presence","channel":"room"}));
    let mut users: Vec<String> = r["result"]["clients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["user"].as_str().unwrap().to_string())
        .collect();
    users.sort();
    users
}

/// The expiry Redis holds for a member of a sorted set (ms since the epoch).
fn deadline(redis: &Redis, key: &str, member_prefix: &str) -> Option<u64> {
    redis
        .query(&["ZRANGE", key, "0", "-1", "WITHSCORES"])
        .chunks(2)
        .find(|kv| kv[0].starts_with(member_prefix))
        .map(|kv| kv[1].parse::<f64>().unwrap() as u64)
}

#[test]
fn a_killed_nodes_entries_expire_within_their_ttl_and_its_users_mail_waits_for_them() {
    let redis = Redis::start();
    let (mut a, addr_a) = node(&redis);
    let (_b, addr_b) = node(&redis);
    let (mut alice, alice_client) = connect(addr_a, "alice");
    let (mut bob, _) = connect(addr_b, "bob");
    call(
        &mut alice,
        json!({"id":1,"method":"subscribe","channel":"room"}),
    );
    call(
        &mut bob,
        json!({"id":1,"method":"subscribe","channel":"room"}),
    );
    assert_eq!(present(&mut bob, 2), ["alice", "bob"]);
    let r = call(
        &mut bob,
        json!({"id":3,"method":"send","user":"alice","data":"while online"}),
    );
    assert_eq!(r["result"]["online"], true);
    assert_eq!(next(&mut alice)["data"], "while online");

    a.0.kill().unwrap();
    a.0.wait().unwrap();
    let killed = now_ms();
    // Nobody refreshes alice's entries any more: the deadlines Redis holds are at most one
    // TTL after the kill (they were set at the last refresh, a third of a TTL apart).
    let presence = deadline(&redis, "c10m:p:room", &alice_client).unwrap();
    assert!(
        presence <= killed + TTL_MS,
        "presence deadline {presence} vs kill {killed}"
    );
    let user = deadline(&redis, "c10m:u:alice", "").unwrap();
    assert!(
        user <= killed + TTL_MS,
        "user deadline {user} vs kill {killed}"
    );

    // Once past them, alice is gone from presence, and mail for her waits in her inbox.
    let wait = Instant::now() + Duration::from_secs(30);
    let mut n = 10;
    while present(&mut bob, n) != ["bob"] {
        assert!(Instant::now() < wait, "alice never left presence");
        n += 1;
    }
    let left_at = now_ms();
    assert!(left_at >= presence, "gone before her deadline?");
    let mut sent_offline = 0;
    let mut i = 0;
    while sent_offline < 3 {
        let r = call(
            &mut bob,
            json!({"id":100+i,"method":"send","user":"alice","data":i}),
        );
        i += 1;
        if r["result"]["online"] == false {
            sent_offline += 1;
        } else {
            // Her user entry had not expired yet: that message went nowhere (she is offline);
            // a sender learns it from `online: true` only while she is registered.
            assert!(
                now_ms() <= user + 1_000,
                "still online long after her deadline"
            );
        }
    }
    let (mut back, _) = connect(addr_b, "alice");
    let first = i - 3;
    for k in first..i {
        let m = next(&mut back);
        assert_eq!(
            (m["type"].as_str(), m["data"].as_u64()),
            (Some("message"), Some(k))
        );
    }
}

/// Redis stalls (SIGSTOP) under two nodes: publishes are answered "unavailable" (100) within
/// the client's response timeout instead of hanging, and connections stay open. A publish
/// answered 100 may still have happened (a stalled Redis runs it once it resumes), so the
/// client retries it with the same idempotency key: once Redis is back, every publish has
/// exactly one offset, and the subscriber on the other node gets each once, in order, no gap.
#[test]
fn a_stalled_redis_answers_unavailable_and_retries_with_a_key_lose_and_duplicate_nothing() {
    let redis = Redis::start();
    let (_a, addr_a) = node(&redis);
    let (_b, addr_b) = node(&redis);
    let (mut sub, _) = connect(addr_a, "reader");
    let (mut publisher, _) = connect(addr_b, "writer");
    let r = call(
        &mut sub,
        json!({"id":1,"method":"subscribe","channel":"feed"}),
    );
    assert_eq!(r["result"]["offset"], 0, "{r}");
    let mut id = 0u64;
    // Publish number `k` (its key), as many times as it takes, answered 100 meanwhile.
    let mut publish = |publisher: &mut Ws, k: u64, once: bool| -> Option<u64> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            id += 1;
            let r = call(
                publisher,
                json!({"id":id,"method":"publish","channel":"feed","data":k,
                       "idempotency_key":format!("p{k}")}),
            );
            match r["result"]["offset"].as_u64() {
                Some(offset) => return Some(offset),
                None => assert_eq!(r["error"]["code"], 100, "{r}"),
            }
            if once {
                return None;
            }
            assert!(Instant::now() < deadline, "Redis never came back");
        }
    };
    let mut offsets = Vec::new();
    for k in 1..=5 {
        offsets.push(publish(&mut publisher, k, false).unwrap());
    }
    redis.stall();
    for k in 6..=10 {
        assert_eq!(
            publish(&mut publisher, k, true),
            None,
            "a publish while Redis is stopped"
        );
    }
    redis.resume();
    // The same five again, with their keys, then five new ones.
    for k in 6..=15 {
        offsets.push(publish(&mut publisher, k, false).unwrap());
    }
    assert_eq!(offsets, (1..=15).collect::<Vec<u64>>(), "one offset each");
    // Another retry gets the same offset and publishes nothing.
    assert_eq!(publish(&mut publisher, 8, false), Some(8));
    // The subscriber (never disconnected) gets each publication once, in order.
    let mut received = Vec::new();
    while received.len() < 15 {
        let p = next(&mut sub);
        assert_eq!(p["type"], "pub", "{p}");
        assert_eq!(p["data"], p["offset"], "{p}");
        received.push(p["offset"].as_u64().unwrap());
    }
    assert_eq!(received, (1..=15).collect::<Vec<u64>>());
    let r = call(
        &mut sub,
        json!({"id":2,"method":"history","channel":"feed","limit":100}),
    );
    assert_eq!(r["result"]["offset"], 15, "nothing published after: {r}");
}
