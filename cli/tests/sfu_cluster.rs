//! SFU rooms across `c10m serve` nodes joined by a real Redis, with webrtc-rs participants (the
//! load generator's, `loadtest/src/sfu/client.rs`): two participants of one room on two nodes
//! receive each other's media through the room's one media node; when that node is killed, a
//! newcomer on the surviving node is not sent to the dead one (whose claim on the room's media
//! has expired) although a participant left behind still names it, and gets the room on its
//! own node. First joins of one room racing on two nodes get one media node. Every wait is for
//! an event under a deadline; none decides by a fixed sleep.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

#[path = "../../cluster/tests/support/redis.rs"]
mod redis_server;

use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use c10m_loadtest::sfu::client::{SfuClient, drive};
use redis_server::Redis;
use support::{KillOnDrop, spawn_serve};

const TTL_MS: u64 = 1_500;
const LIMIT: Duration = Duration::from_secs(20);

fn node(redis: &Redis) -> (KillOnDrop, SocketAddr) {
    let (process, addr, lines) = spawn_serve(
        "",
        &format!(
            "--listen 127.0.0.1:0 --shards 2 --sfu-udp 127.0.0.1:0 --broker {} --presence-ttl-ms {TTL_MS}",
            redis.url()
        ),
    );
    std::thread::spawn(move || for _ in lines {});
    (process, addr)
}

/// The node part of a participant id.
fn node_of(participant: &str) -> String {
    participant.split_once('-').unwrap().0.to_owned()
}

/// A signaling connection to `addr` for `room`.
fn signal(addr: SocketAddr, room: &str) -> tungstenite::WebSocket<TcpStream> {
    let stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(LIMIT)).unwrap();
    stream.set_nodelay(true).unwrap();
    let url = format!("ws://{addr}/signal/v1?room={room}");
    tungstenite::client(url, stream).unwrap().0
}

/// Reads until the join is answered; the participant id it was given.
fn joined(ws: &mut tungstenite::WebSocket<TcpStream>) -> String {
    loop {
        let tungstenite::Message::Text(t) = ws.read().unwrap() else {
            continue;
        };
        let v: serde_json::Value = serde_json::from_str(&t).unwrap();
        match v["type"].as_str() {
            Some("joined") => return v["id"].as_str().unwrap().to_owned(),
            Some("error") => panic!("join refused: {v}"),
            _ => {}
        }
    }
}

/// The rooms whose media claim is still in Redis.
fn held_claims(redis: &Redis, rooms: &[String]) -> Vec<String> {
    rooms
        .iter()
        .filter(|room| redis.query(&["EXISTS", &format!("c10m:p:sigm:{room}")]) != ["0"])
        .cloned()
        .collect()
}

/// Until when Redis keeps `node`'s claim on `room`'s media (ms since the epoch; the score of
/// its entry).
fn claimed_until(redis: &Redis, room: &str, node: &str) -> u64 {
    let key = format!("c10m:p:sigm:{room}");
    let score = redis.query(&["ZSCORE", &key, &format!("{node}\t")]);
    assert_eq!(score.len(), 1, "{node} does not hold {key}");
    score[0].parse::<f64>().unwrap() as u64
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Both publish until each has the other's tracks open and packets flowing.
fn exchange(a: &mut SfuClient, b: &mut SfuClient) -> bool {
    let (ta, tb) = (a.tracks_opened + 2, b.tracks_opened + 2);
    let (ra, rb) = (a.rtp_received + 20, b.rtp_received + 20);
    let deadline = Instant::now() + LIMIT;
    while Instant::now() < deadline {
        a.send_media();
        b.send_media();
        if drive(&mut [&mut *a, &mut *b], Duration::from_millis(20), |c| {
            c[0].tracks_opened >= ta
                && c[0].rtp_received >= ra
                && c[1].tracks_opened >= tb
                && c[1].rtp_received >= rb
        })
        .unwrap()
        {
            return true;
        }
    }
    false
}

#[test]
fn a_room_spans_nodes_and_outlives_its_media_node() {
    let redis = Redis::start();
    let (mut node_a, addr_a) = node(&redis);
    let (_node_b, addr_b) = node(&redis);

    // One participant on each node: the room's media is on A (its first participant's node),
    // and B's participant reaches it through A.
    let mut a = SfuClient::join(addr_a, "/signal/v1", "span", 0x1000).unwrap();
    let mut b = SfuClient::join(addr_b, "/signal/v1", "span", 0x2000).unwrap();
    assert_ne!(node_of(&a.id), node_of(&b.id), "one participant per node");
    assert!(
        drive(&mut [&mut a, &mut b], LIMIT, |c| c
            .iter()
            .all(|c| c.connected))
        .unwrap(),
        "not connected across nodes: a {} b {}, errors {:?} {:?}",
        a.connected,
        b.connected,
        a.errors,
        b.errors
    );
    assert!(
        exchange(&mut a, &mut b),
        "across nodes: a {} tracks {} packets, b {} tracks {} packets",
        a.tracks_opened,
        a.rtp_received,
        b.tracks_opened,
        b.rtp_received
    );

    // The media node dies. B's participant stays in the room, its entry naming A.
    let dead = node_of(&a.id);
    let until = claimed_until(&redis, "span", &dead);
    node_a.0.kill().unwrap();
    node_a.0.wait().unwrap();
    drop(a);
    // A's claim expires within the TTL (read from Redis, not assumed).
    assert!(
        until <= now_ms() + TTL_MS,
        "A's entry lives until {until}, more than a TTL from now"
    );
    while now_ms() <= until {
        std::thread::sleep(Duration::from_millis(until + 1 - now_ms()));
    }

    // A newcomer on B gets the room on B, not on the dead node the stayer's entry names.
    let mut c = SfuClient::join(addr_b, "/signal/v1", "span", 0x3000).unwrap();
    assert!(
        drive(&mut [&mut c], LIMIT, |c| c[0].connected).unwrap(),
        "the newcomer never connected (sent to the dead media node?): errors {:?}",
        c.errors
    );
    // The stayer, whose media died with A, joins again and meets the newcomer on B's SFU.
    b.leave();
    let mut b = SfuClient::join(addr_b, "/signal/v1", "span", 0x4000).unwrap();
    assert!(
        drive(&mut [&mut b, &mut c], LIMIT, |c| c
            .iter()
            .all(|c| c.connected))
        .unwrap(),
        "not connected after the media node died"
    );
    assert!(
        exchange(&mut b, &mut c),
        "after the media node died: b {} tracks {} packets, c {} tracks {} packets",
        b.tracks_opened,
        b.rtp_received,
        c.tracks_opened,
        c.rtp_received
    );
}

/// Rooms whose first two participants join at once, one on each node: without one claim on a
/// room's media, both nodes read an empty room and each takes it (two SFUs, participants that
/// never meet). Each participant's presence entry names the media node it was given.
#[test]
fn first_joins_racing_on_two_nodes_get_one_media_node() {
    const ROOMS: usize = 16;
    let redis = Redis::start();
    let (_node_a, addr_a) = node(&redis);
    let (_node_b, addr_b) = node(&redis);
    let rooms: Vec<String> = (0..ROOMS).map(|r| format!("race-{r}")).collect();
    let mut sockets: Vec<_> = rooms
        .iter()
        .flat_map(|room| [signal(addr_a, room), signal(addr_b, room)])
        .collect();
    // Every join written before any answer is read: each room's two joins reach their nodes
    // within microseconds of each other.
    for (i, ws) in sockets.iter_mut().enumerate() {
        let join = format!(
            r#"{{"type":"join","room":"{}","mode":"sfu"}}"#,
            rooms[i / 2]
        );
        ws.write(tungstenite::Message::text(join)).unwrap();
    }
    for ws in &mut sockets {
        ws.flush().unwrap();
    }
    let mut ids = Vec::new();
    for ws in &mut sockets {
        ids.push(joined(ws));
    }
    let mut split = Vec::new();
    let mut media_of = Vec::new();
    for (r, room) in rooms.iter().enumerate() {
        assert_ne!(
            node_of(&ids[2 * r]),
            node_of(&ids[2 * r + 1]),
            "one per node"
        );
        // Each entry is `participant\tsfu:MEDIA_NODE`.
        let entries = redis.query(&["ZRANGE", &format!("c10m:p:sig:{room}"), "0", "-1"]);
        assert_eq!(entries.len(), 2, "{room}: {entries:?}");
        let media: std::collections::BTreeSet<String> = entries
            .iter()
            .map(|e| e.split_once("\tsfu:").expect("an SFU entry").1.to_owned())
            .collect();
        if media.len() != 1 {
            split.push(format!("{room}: {media:?}"));
        }
        media_of.push(media.into_iter().next().unwrap());
    }
    assert!(
        split.is_empty(),
        "{} of {ROOMS} rooms given two media nodes: {split:?}",
        split.len()
    );
    // And each room's media node holds the room's claim.
    for (room, node) in rooms.iter().zip(&media_of) {
        let holder = redis.query(&["ZRANGE", &format!("c10m:p:sigm:{room}"), "0", "-1"]);
        assert_eq!(holder, [format!("{node}\t")], "{room}");
    }
    // Everyone leaves: each media node's room closes and lets its claim go (a claim left
    // behind would be refreshed while its node lives, and never expire).
    for mut ws in sockets {
        ws.close(None).unwrap();
        let _ = ws.flush();
    }
    let deadline = Instant::now() + LIMIT;
    while !held_claims(&redis, &rooms).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        held_claims(&redis, &rooms),
        Vec::<String>::new(),
        "claims still held after every participant left"
    );
}

/// Participants that leave the moment they have joined: each room opens on the node's SFU and
/// closes again within about a Redis round trip, while the node's claim on it is still being
/// written. No claim may outlive its room: once its TTL has passed, none is left.
#[test]
fn claims_of_rooms_closed_at_once_do_not_outlive_them() {
    const ROOMS: usize = 32;
    let redis = Redis::start();
    let (_node_a, addr_a) = node(&redis);
    let rooms: Vec<String> = (0..ROOMS).map(|r| format!("brief-{r}")).collect();
    for room in &rooms {
        let mut ws = signal(addr_a, room);
        let join = format!(r#"{{"type":"join","room":"{room}","mode":"sfu"}}"#);
        ws.send(tungstenite::Message::text(join)).unwrap();
        joined(&mut ws);
        ws.close(None).unwrap();
        let _ = ws.flush();
    }
    // Whatever was written last, a claim nobody refreshes expires within the TTL.
    let gone_by = now_ms() + 2 * TTL_MS;
    let deadline = Instant::now() + LIMIT;
    while (now_ms() < gone_by || !held_claims(&redis, &rooms).is_empty())
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        held_claims(&redis, &rooms),
        Vec::<String>::new(),
        "claims outlived their rooms"
    );
}
