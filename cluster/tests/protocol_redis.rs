//! The client protocol across nodes with its state in a real Redis: two engine servers in this
//! process, each with its own Redis broker and Redis backend, stand for two nodes. Clients on
//! one node see what clients on the other do: publications in offset order, recovery after
//! moving to the other node, presence, messages to users and their inboxes, and a Redis that
//! lost everything (new epoch) being told to recovering clients.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/client.rs"]
mod client;
#[path = "support/redis.rs"]
mod redis_server;

use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use c10m_cluster::token::Verifier;
use c10m_cluster::{RedisBackend, RedisBroker, RedisLimits, Service, Settings};
use c10m_engine::server::{self, Broker, Routes, ServerConfig, ServerHandle};
use client::{Ws, call, next};
use redis_server::Redis;
use serde_json::{Value, json};

const SECRET: &[u8] = b"cluster-secret";

struct Node {
    server: Option<ServerHandle>,
}

impl Node {
    fn start(redis: &Redis) -> Node {
        Node::start_on(&redis.url())
    }

    /// A node on one Redis URL or several separated by commas.
    fn start_on(url: &str) -> Node {
        let url = url.to_string();
        let broker = RedisBroker::new(&url).unwrap();
        let limits = RedisLimits {
            presence_ttl: Duration::from_secs(3),
            ..RedisLimits::default()
        };
        let backend = RedisBackend::new(&url, limits).unwrap();
        let service = Service::new(
            Settings::default(),
            Some(Verifier::hs256(SECRET).unwrap()),
            move |_| backend.clone(),
        );
        let config = ServerConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            shards: 2,
            drain_timeout_ms: 1_000,
            ..ServerConfig::default()
        };
        let routes = Routes::new().route("/connection/v1", service.app());
        let server =
            server::start_with_broker(config, routes, Some(broker as Arc<dyn Broker>)).unwrap();
        Node {
            server: Some(server),
        }
    }

    fn addr(&self) -> SocketAddr {
        self.server.as_ref().unwrap().local_addr()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown();
            let _ = s.join();
        }
    }
}

fn connect(addr: SocketAddr, user: &str) -> Ws {
    let stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let url = format!(
        "ws://{addr}/connection/v1?token={}",
        client::token(SECRET, user, 3600)
    );
    let (mut ws, _) = tungstenite::client(url, stream).unwrap();
    assert_eq!(next(&mut ws)["type"], "connected");
    ws
}

fn offsets(reply: &Value) -> Vec<u64> {
    reply["result"]["publications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["offset"].as_u64().unwrap())
        .collect()
}

#[test]
fn publications_cross_nodes_in_offset_order_and_recover_on_the_other_node() {
    let redis = Redis::start();
    let a = Node::start(&redis);
    let b = Node::start(&redis);
    let mut sub = connect(a.addr(), "reader");
    let r = call(
        &mut sub,
        json!({"id":1,"method":"subscribe","channel":"feed"}),
    );
    assert_eq!(r["result"]["offset"], 0, "{r}");
    let mut publisher = connect(b.addr(), "writer");
    for i in 1..=10u64 {
        let r = call(
            &mut publisher,
            json!({"id":i,"method":"publish","channel":"feed","data":{"i":i}}),
        );
        assert_eq!(r["result"]["offset"], i, "{r}");
    }
    let mut epoch = String::new();
    for i in 1..=10u64 {
        let p = next(&mut sub);
        assert_eq!(
            (p["offset"].as_u64(), p["data"]["i"].as_u64()),
            (Some(i), Some(i))
        );
        epoch = p["epoch"].as_str().unwrap().to_string();
    }
    drop(sub);
    for i in 11..=15u64 {
        call(
            &mut publisher,
            json!({"id":i,"method":"publish","channel":"feed","data":{"i":i}}),
        );
    }
    // Back on the other node, from offset 10.
    let mut back = connect(b.addr(), "reader");
    let r = call(
        &mut back,
        json!({"id":1,"method":"subscribe","channel":"feed","since":{"offset":10,"epoch":epoch}}),
    );
    assert_eq!(r["result"]["recovered"], true, "{r}");
    assert_eq!(offsets(&r), [11, 12, 13, 14, 15]);
    call(
        &mut publisher,
        json!({"id":16,"method":"publish","channel":"feed","data":{"i":16}}),
    );
    assert_eq!(next(&mut back)["offset"], 16);
    let r = call(
        &mut back,
        json!({"id":2,"method":"history","channel":"feed","limit":3}),
    );
    assert_eq!(offsets(&r), [1, 2, 3]);
}

/// A subscriber that saw a channel empty (offset 0) and left before its first publication
/// comes back with that position and gets everything published meanwhile.
#[test]
fn a_channel_seen_empty_is_recovered_from_offset_zero() {
    let redis = Redis::start();
    let a = Node::start(&redis);
    let b = Node::start(&redis);
    let mut sub = connect(a.addr(), "reader");
    let r = call(
        &mut sub,
        json!({"id":1,"method":"subscribe","channel":"fresh"}),
    );
    assert_eq!(r["result"]["offset"], 0, "{r}");
    let epoch = r["result"]["epoch"].as_str().unwrap().to_string();
    assert!(!epoch.is_empty(), "an empty channel has an epoch: {r}");
    drop(sub);
    let mut publisher = connect(b.addr(), "writer");
    for i in 1..=3u64 {
        call(
            &mut publisher,
            json!({"id":i,"method":"publish","channel":"fresh","data":i}),
        );
    }
    let mut back = connect(b.addr(), "reader");
    let r = call(
        &mut back,
        json!({"id":1,"method":"subscribe","channel":"fresh","since":{"offset":0,"epoch":epoch}}),
    );
    assert_eq!(r["result"]["recovered"], true, "{r}");
    assert_eq!(r["result"]["epoch"], epoch.as_str(), "{r}");
    assert_eq!(offsets(&r), [1, 2, 3]);
}

#[test]
fn presence_and_messages_to_users_span_nodes() {
    let redis = Redis::start();
    let a = Node::start(&redis);
    let b = Node::start(&redis);
    let mut ann = connect(a.addr(), "ann");
    let mut ben = connect(b.addr(), "ben");
    call(
        &mut ann,
        json!({"id":1,"method":"subscribe","channel":"room"}),
    );
    call(
        &mut ben,
        json!({"id":1,"method":"subscribe","channel":"room"}),
    );
    let r = call(
        &mut ann,
        json!({"id":2,"method":"presence","channel":"room"}),
    );
    let mut users: Vec<&str> = r["result"]["clients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["user"].as_str().unwrap())
        .collect();
    users.sort();
    assert_eq!(users, ["ann", "ben"], "{r}");

    let r = call(
        &mut ann,
        json!({"id":3,"method":"send","user":"ben","data":"psst"}),
    );
    assert_eq!(r["result"]["online"], true, "{r}");
    let m = next(&mut ben);
    assert_eq!(
        (m["type"].as_str(), m["data"].as_str()),
        (Some("message"), Some("psst"))
    );

    for i in 0..3 {
        let r = call(
            &mut ann,
            json!({"id":4+i,"method":"send","user":"cy","data":i}),
        );
        assert_eq!(r["result"]["online"], false);
    }
    let mut cy = connect(b.addr(), "cy");
    for i in 0..3 {
        assert_eq!(next(&mut cy)["data"], i);
    }
}

#[test]
fn a_redis_that_lost_its_data_is_a_new_epoch_for_recovering_clients() {
    let redis = Redis::start();
    let port = redis.port;
    let a = Node::start(&redis);
    let mut publisher = connect(a.addr(), "w");
    call(
        &mut publisher,
        json!({"id":1,"method":"publish","channel":"x","data":1}),
    );
    let r = call(
        &mut publisher,
        json!({"id":2,"method":"history","channel":"x"}),
    );
    let epoch = r["result"]["epoch"].as_str().unwrap().to_string();
    assert_eq!(r["result"]["offset"], 1);
    drop(redis);
    let _redis = Redis::start_on(port);
    // Commands may fail while the connection comes back; the client retries (code 100).
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut n = 3;
    loop {
        let r = call(
            &mut publisher,
            json!({"id":n,"method":"publish","channel":"x","data":2}),
        );
        n += 1;
        if r["result"]["offset"].is_u64() {
            break;
        }
        assert_eq!(r["error"]["code"], 100, "{r}");
        assert!(
            std::time::Instant::now() < deadline,
            "Redis never came back"
        );
    }
    let mut reader = connect(a.addr(), "r");
    let r = call(
        &mut reader,
        json!({"id":1,"method":"subscribe","channel":"x","since":{"offset":1,"epoch":epoch}}),
    );
    assert_eq!(r["result"]["recovered"], false, "{r}");
    assert_ne!(r["result"]["epoch"].as_str().unwrap(), epoch);
}

#[test]
fn channels_spread_over_two_redis_instances_and_still_reach_every_node() {
    let (r1, r2) = (Redis::start(), Redis::start());
    let urls = format!("{},{}", r1.url(), r2.url());
    let a = Node::start_on(&urls);
    let b = Node::start_on(&urls);
    let channels: Vec<String> = (0..16).map(|i| format!("ch{i}")).collect();
    let mut sub = connect(a.addr(), "reader");
    for (i, c) in channels.iter().enumerate() {
        let r = call(&mut sub, json!({"id":i,"method":"subscribe","channel":c}));
        assert_eq!(r["result"]["offset"], 0, "{r}");
    }
    let mut publisher = connect(b.addr(), "writer");
    for (i, c) in channels.iter().enumerate() {
        let r = call(
            &mut publisher,
            json!({"id":i,"method":"publish","channel":c,"data":i}),
        );
        assert_eq!(r["result"]["offset"], 1, "{r}");
    }
    let mut got: Vec<u64> = (0..channels.len())
        .map(|_| next(&mut sub)["data"].as_u64().unwrap())
        .collect();
    got.sort();
    assert_eq!(got, (0..16).collect::<Vec<u64>>());
    // Each instance carries some of the channels, and each channel is on exactly one.
    let on = |r: &Redis| {
        channels
            .iter()
            .filter(|c| r.subscribers(&format!("v1 {c}")) > 0)
            .count()
    };
    let (n1, n2) = (on(&r1), on(&r2));
    assert!(n1 > 0 && n2 > 0, "{n1} + {n2}");
    assert_eq!(n1 + n2, channels.len());
}
