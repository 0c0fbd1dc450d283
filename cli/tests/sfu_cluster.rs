//! SFU rooms across `c10m serve` nodes joined by a real Redis, with webrtc-rs participants (the
//! load generator's, `loadtest/src/sfu/client.rs`): two participants of one room on two nodes
//! receive each other's media through the room's one media node; when that node is killed, a
//! newcomer on the surviving node is not sent to the dead one (whose entry in the nodes'
//! presence has expired) although a participant left behind still names it, and gets the room
//! on its own node. Every wait is for an event under a deadline; none decides by a fixed sleep.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

#[path = "../../cluster/tests/support/redis.rs"]
mod redis_server;

use std::io::{BufRead, BufReader, Write};
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

/// Until when Redis keeps `node` among the live nodes (ms since the epoch; the entry's score).
fn live_until(redis: &Redis, node: &str) -> u64 {
    let mut s = TcpStream::connect(("127.0.0.1", redis.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let key = "c10m:p:sig:nodes";
    let member = format!("{node}\t");
    let mut cmd = String::from("*3\r\n$6\r\nZSCORE\r\n");
    for a in [key, member.as_str()] {
        cmd.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    s.write_all(cmd.as_bytes()).unwrap();
    let mut r = BufReader::new(s);
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    assert!(
        line.starts_with('$') && line != "$-1\r\n",
        "{node} is not in {key}"
    );
    line.clear();
    r.read_line(&mut line).unwrap();
    line.trim_end().parse::<f64>().unwrap() as u64
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
    let until = live_until(&redis, &dead);
    node_a.0.kill().unwrap();
    node_a.0.wait().unwrap();
    drop(a);
    // A's entry among the live nodes expires within the TTL (read from Redis, not assumed).
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
