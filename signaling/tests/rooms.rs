//! Rooms on one node (two shards, in-memory membership) over real sockets: join, the
//! participant list and ICE servers, join and leave events, offer/answer/candidate relay by id
//! across shards, and bad input answered with clear errors.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::TcpStream;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use c10m_cluster::{Backend, Limits as MemoryLimits, Memory};
use c10m_engine::server::{self, Broker, Handle, Routes, ServerConfig, ServerHandle, SharedFrame};
use c10m_signaling::{IceConfig, Limits, Signaling};
use serde_json::{Value, json};
use tungstenite::Message;

type Ws = tungstenite::WebSocket<TcpStream>;

fn start(limits: Limits) -> ServerHandle {
    start_with(limits, None)
}

fn start_with(limits: Limits, broker: Option<Arc<dyn Broker>>) -> ServerHandle {
    let ice = IceConfig {
        stun: vec!["stun:127.0.0.1:3478".into()],
        turn: vec!["turn:127.0.0.1:3478?transport=udp".into()],
        turn_secret: Some("turn-secret".into()),
        turn_ttl_secs: 600,
    };
    let signaling = Signaling::new(limits, ice, |handle| {
        Arc::new(Memory::new(handle, MemoryLimits::default())) as Arc<dyn Backend>
    });
    let config = ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        shards: 2,
        drain_timeout_ms: 1_000,
        ..ServerConfig::default()
    };
    let routes = Routes::new().route("/signal/v1", signaling.app());
    server::start_with_broker(config, routes, broker).unwrap()
}

fn client(server: &ServerHandle) -> Ws {
    let addr = server.local_addr();
    let stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    tungstenite::client(format!("ws://{addr}/signal/v1"), stream)
        .unwrap()
        .0
}

fn next(ws: &mut Ws) -> Value {
    loop {
        if let Message::Text(t) = ws.read().unwrap() {
            return serde_json::from_str(&t).unwrap();
        }
    }
}

fn send(ws: &mut Ws, v: Value) {
    ws.send(Message::text(v.to_string())).unwrap();
}

/// Joins `room`; returns (my id, the others already there). Skips our own joined event.
fn join(ws: &mut Ws, room: &str) -> (String, Vec<String>) {
    send(ws, json!({"type":"join","room":room}));
    let joined = next(ws);
    assert_eq!(joined["type"], "joined", "{joined}");
    let me = joined["id"].as_str().unwrap().to_string();
    let others = joined["participants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    let own = next(ws);
    assert_eq!(
        (own["type"].as_str(), own["id"].as_str()),
        (Some("participant-joined"), Some(me.as_str()))
    );
    (me, others)
}

#[test]
fn participants_see_each_other_and_relay_offers_answers_and_candidates() {
    let server = start(Limits::default());
    let (mut a, mut b, mut c) = (client(&server), client(&server), client(&server));
    let (ida, others) = join(&mut a, "room1");
    assert!(others.is_empty());
    let (idb, others) = join(&mut b, "room1");
    assert_eq!(others, std::slice::from_ref(&ida));
    assert_eq!(next(&mut a), json!({"type":"participant-joined","id":idb}));
    let (idc, mut others) = join(&mut c, "room1");
    others.sort();
    let mut expected = vec![ida.clone(), idb.clone()];
    expected.sort();
    assert_eq!(others, expected);
    for ws in [&mut a, &mut b] {
        assert_eq!(next(ws), json!({"type":"participant-joined","id":idc}));
    }

    send(&mut a, json!({"type":"offer","to":idb,"sdp":"v=0 offer"}));
    assert_eq!(
        next(&mut b),
        json!({"type":"offer","from":ida,"sdp":"v=0 offer"})
    );
    send(&mut b, json!({"type":"answer","to":ida,"sdp":"v=0 answer"}));
    assert_eq!(
        next(&mut a),
        json!({"type":"answer","from":idb,"sdp":"v=0 answer"})
    );
    for i in 0..20 {
        send(
            &mut c,
            json!({"type":"candidate","to":ida,"candidate":{"n":i}}),
        );
    }
    for i in 0..20 {
        assert_eq!(next(&mut a)["candidate"]["n"], i, "candidates in order");
    }

    send(&mut c, json!({"type":"leave"}));
    assert_eq!(next(&mut c), json!({"type":"left"}));
    for ws in [&mut a, &mut b] {
        assert_eq!(next(ws), json!({"type":"participant-left","id":idc}));
    }
    // A closed connection leaves too.
    drop(b);
    assert_eq!(next(&mut a), json!({"type":"participant-left","id":idb}));
}

#[test]
fn joiners_get_ice_servers_with_turn_credentials() {
    let server = start(Limits::default());
    let mut a = client(&server);
    send(&mut a, json!({"type":"join","room":"r"}));
    let joined = next(&mut a);
    let ice = &joined["ice_servers"];
    assert_eq!(ice[0]["urls"][0], "stun:127.0.0.1:3478");
    let username = ice[1]["username"].as_str().unwrap();
    let (expiry, id) = username.split_once(':').unwrap();
    assert_eq!(id, joined["id"].as_str().unwrap());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let expiry: u64 = expiry.parse().unwrap();
    assert!(expiry > now && expiry <= now + 601, "{expiry} vs {now}");
    let (_, expected) = c10m_signaling::turn_credentials("turn-secret", id, expiry);
    assert_eq!(ice[1]["credential"], expected);
}

#[test]
fn bad_input_gets_clear_errors_and_rooms_have_a_limit() {
    let server = start(Limits {
        max_participants: 2,
        max_message: 1024,
        max_errors: 8,
    });
    let mut a = client(&server);
    let err = |ws: &mut Ws| next(ws)["code"].as_u64().unwrap();
    send(&mut a, json!({"type":"offer","to":"x","sdp":""}));
    assert_eq!(err(&mut a), 6, "relay before joining");
    a.send(Message::text("not json")).unwrap();
    assert_eq!(err(&mut a), 1);
    send(&mut a, json!({"type":"dance"}));
    assert_eq!(err(&mut a), 2);
    send(&mut a, json!({"type":"join","room":""}));
    assert_eq!(err(&mut a), 4);
    let (ida, _) = join(&mut a, "small");
    send(&mut a, json!({"type":"join","room":"other"}));
    assert_eq!(err(&mut a), 5);
    send(&mut a, json!({"type":"offer","to":"nobody","sdp":""}));
    assert_eq!(err(&mut a), 7, "an absent participant");
    // A simulcast layer request outside SFU mode.
    send(&mut a, json!({"type":"layer","publisher":"x","rid":"h"}));
    assert_eq!(err(&mut a), 10);
    let mut b = client(&server);
    let (idb, _) = join(&mut b, "small");
    assert_eq!(next(&mut a)["id"], idb);
    let mut c = client(&server);
    send(&mut c, json!({"type":"join","room":"small"}));
    assert_eq!(err(&mut c), 3, "room full");
    // A participant of another room cannot be reached.
    let (_, _) = join(&mut c, "elsewhere");
    send(&mut c, json!({"type":"offer","to":ida,"sdp":""}));
    assert_eq!(err(&mut c), 7);
    send(
        &mut c,
        json!({"type":"offer","to":idb,"sdp":"x".repeat(2000)}),
    );
    assert_eq!(err(&mut c), 8, "too large");
    // Past four times the limit: not buffered, the connection closed with 1009.
    let mut d = client(&server);
    d.send(Message::text("y".repeat(4 * 1024 + 1))).unwrap();
    let code = loop {
        match d.read() {
            Ok(Message::Close(Some(f))) => break u16::from(f.code),
            Ok(_) => {}
            Err(e) => panic!("{e}"),
        }
    };
    assert_eq!(code, 1009);
    // Past the error budget: closed with 3501.
    let code = loop {
        c.send(Message::text("{")).unwrap();
        match c.read() {
            Ok(Message::Close(Some(f))) => break u16::from(f.code),
            Ok(_) => {}
            Err(e) => panic!("{e}"),
        }
    };
    assert_eq!(code, 3501);
}

/// A broker that carries publishes back at once but confirms a subscription only when the
/// test says so, as Redis does once its SUBSCRIBE is answered.
#[derive(Default)]
struct GatedBroker {
    handle: Mutex<Option<Handle>>,
    waiting: Mutex<Vec<String>>,
}

impl GatedBroker {
    /// Waits (bounded) until the topics waiting for confirmation satisfy `ready`.
    fn until_waiting(&self, ready: impl Fn(&[String]) -> bool) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let waiting = self.waiting.lock().unwrap().clone();
            if ready(&waiting) {
                return;
            }
            assert!(std::time::Instant::now() < deadline, "{waiting:?}");
            std::thread::yield_now();
        }
    }

    fn confirm_all(&self) {
        let handle = self.handle.lock().unwrap().clone().unwrap();
        for topic in std::mem::take(&mut *self.waiting.lock().unwrap()) {
            handle.confirm(&topic);
        }
    }
}

impl Broker for GatedBroker {
    fn attach(&self, handle: Handle) {
        *self.handle.lock().unwrap() = Some(handle);
    }
    fn subscribed(&self, topic: &str) {
        self.waiting.lock().unwrap().push(topic.to_owned());
    }
    fn unsubscribed(&self, _: &str) {}
    fn publish(&self, topic: &str, frame: &SharedFrame) {
        let handle = self.handle.lock().unwrap().clone().unwrap();
        handle.deliver(topic, frame);
    }
}

/// Nothing arrives within `wait` (the read times out).
fn silent(ws: &mut Ws, wait: Duration) -> bool {
    ws.get_mut().set_read_timeout(Some(wait)).unwrap();
    let quiet = match ws.read() {
        Err(tungstenite::Error::Io(e)) => matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
        other => panic!("expected nothing, got {other:?}"),
    };
    ws.get_mut()
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    quiet
}

/// With a broker, `joined` waits until the broker carries the joiner's topics: what another
/// node sends the joiner as soon as it hears of it (an SFU's answer, a peer's offer) would
/// otherwise be published before Redis is subscribed to its topic, and lost.
#[test]
fn a_join_is_announced_once_the_broker_carries_the_joiners_topics() {
    let broker = Arc::new(GatedBroker::default());
    let server = start_with(Limits::default(), Some(broker.clone() as Arc<dyn Broker>));
    let mut a = client(&server);
    send(&mut a, json!({"type":"join","room":"gate"}));
    // The join waits for its two topics; nothing is said until the broker confirms them.
    broker.until_waiting(|w| {
        w.iter().any(|t| t == "sig gate") && w.iter().any(|t| t.starts_with("sigp "))
    });
    assert!(silent(&mut a, Duration::from_millis(300)));
    broker.confirm_all();
    let joined = next(&mut a);
    assert_eq!(joined["type"], "joined", "{joined}");
    let me = joined["id"].as_str().unwrap().to_owned();
    assert_eq!(joined["participants"], json!([]));
    assert_eq!(next(&mut a)["id"], me.as_str());
    // A second joiner's own topic is new again: it waits too, and the first hears of it
    // only once it is announced.
    let mut b = client(&server);
    send(&mut b, json!({"type":"join","room":"gate"}));
    broker.until_waiting(|w| w.iter().any(|t| t.starts_with("sigp ")));
    assert!(silent(&mut b, Duration::from_millis(300)));
    assert!(silent(&mut a, Duration::from_millis(1)));
    broker.confirm_all();
    let joined = next(&mut b);
    assert_eq!(joined["participants"], json!([me]), "{joined}");
    let them = joined["id"].as_str().unwrap().to_owned();
    assert_eq!(next(&mut b)["id"], them.as_str());
    let event = next(&mut a);
    assert_eq!(
        (event["type"].as_str(), event["id"].as_str()),
        (Some("participant-joined"), Some(them.as_str()))
    );
    server.shutdown();
    server.join().unwrap();
}
