//! The io_uring backend's provided buffers under large messages: many connections echoing
//! messages larger than a buffer, with the default buffers and with a ring far too small for
//! them. Receives then run out of buffers; each that does ends, waits its turn and is armed
//! again as buffers come back. Arming every one of them again at the end of each batch (a
//! re-arm storm) cost a failed receive per waiting connection per batch, so these tests bound
//! `recv_buffers_exhausted` by the messages echoed: a storm exceeds the bound many times over
//! whatever the timing, and a receive that waits its turn stays well inside it. Every echo is
//! checked byte for byte, which covers receives joined across adjacent buffers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use c10m_engine::server::{self, IoMode, Routes, ServerConfig, ServerHandle, apps};
use support::connect;
use tungstenite::Message as TMessage;

/// Operations a shard keeps armed while idle: the multishot accept, the eventfd read and the
/// poll on the epoll instance of parked connections.
const STANDING_OPS: u64 = 3;

fn config() -> ServerConfig {
    ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        shards: 1,
        io: IoMode::Uring,
        ..ServerConfig::default()
    }
}

fn start(config: ServerConfig) -> ServerHandle {
    server::start(
        config,
        Routes::new().route("/echo", |_| Box::new(apps::Echo)),
    )
    .unwrap()
}

fn gauge(server: &ServerHandle, get: impl Fn(&server::ShardStats) -> u64) -> u64 {
    server.stats().iter().map(|s| get(s)).sum()
}

/// Connection `c`'s message `i`: `size` bytes that differ between connections and messages.
fn message(c: usize, i: usize, size: usize) -> Vec<u8> {
    let seed = (c * 7919 + i * 104_729) as u32;
    (0..size as u32)
        .map(|k| (seed.wrapping_add(k.wrapping_mul(2_654_435_761)) >> 13) as u8)
        .collect()
}

/// `connections` clients each echo `messages` binary messages of `size(c, i)` bytes, keeping
/// `window` in flight, and check every echo; then close. Returns once all are done.
fn echo_all(
    server: &ServerHandle,
    connections: usize,
    messages: usize,
    window: usize,
    size: fn(usize, usize) -> usize,
) {
    let addr = server.local_addr();
    let clients: Vec<_> = (0..connections)
        .map(|c| {
            std::thread::spawn(move || {
                let mut ws = connect(addr, "/echo");
                for i in 0..window.min(messages) {
                    ws.send(TMessage::binary(message(c, i, size(c, i))))
                        .unwrap();
                }
                for i in 0..messages {
                    match ws.read().unwrap() {
                        TMessage::Binary(b) => {
                            assert!(
                                b[..] == message(c, i, size(c, i))[..],
                                "connection {c}: echo {i} differs"
                            )
                        }
                        other => panic!("connection {c}: unexpected {other:?}"),
                    }
                    if i + window < messages {
                        let next = i + window;
                        ws.send(TMessage::binary(message(c, next, size(c, next))))
                            .unwrap();
                    }
                }
                ws.close(None).unwrap();
                while ws.read().is_ok() {}
            })
        })
        .collect();
    for client in clients {
        client.join().unwrap();
    }
}

/// Waits (up to 10 s) until the connections are gone and only the standing operations are in
/// flight; returns whether that happened.
fn settled(server: &ServerHandle) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let done = gauge(server, |s| s.connections.load(Relaxed)) == 0
            && gauge(server, |s| s.io_in_flight.load(Relaxed)) == STANDING_OPS;
        if done || Instant::now() > deadline {
            return done;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn large_messages_from_many_connections_cost_no_rearm_storm() {
    // 128 connections, two 16 KiB messages in flight each (4 MiB), against the default
    // buffers (16 x 16 KiB to start with). A storm re-armed every waiting receive each batch
    // of ~16 messages: several failed receives per message here.
    let server = start(config());
    let (connections, messages) = (128, 24);
    echo_all(&server, connections, messages, 2, |_, _| 16 << 10);
    let echoed = gauge(&server, |s| s.messages_in.load(Relaxed));
    assert_eq!(echoed, (connections * messages) as u64);
    let exhausted = gauge(&server, |s| s.recv_buffers_exhausted.load(Relaxed));
    assert!(
        exhausted <= echoed,
        "{exhausted} receives ran out of buffers for {echoed} messages: a re-arm storm"
    );
    assert!(settled(&server), "operations or connections left behind");
}

#[test]
fn a_ring_far_too_small_runs_out_without_a_storm() {
    // Eight 4 KiB buffers for the whole shard and 64 connections sending 6-10 KiB messages:
    // the ring holds three or four of them at a time and runs out all the time. Each receive
    // that runs out must wait its turn rather than fail again at once; with a storm each batch
    // of three or four messages cost ~60 failed receives.
    let server = start(ServerConfig {
        ring_buffers: Some(8),
        ring_buffer_size: 4096,
        ..config()
    });
    let (connections, messages) = (64, 16);
    echo_all(&server, connections, messages, 1, |c, i| {
        6_000 + (c * 131 + i * 977) % 4096
    });
    let echoed = gauge(&server, |s| s.messages_in.load(Relaxed));
    assert_eq!(echoed, (connections * messages) as u64);
    let exhausted = gauge(&server, |s| s.recv_buffers_exhausted.load(Relaxed));
    assert!(
        exhausted > 0,
        "the ring never ran out: the test exercised nothing"
    );
    assert!(
        exhausted <= 4 * echoed,
        "{exhausted} receives ran out of buffers for {echoed} messages: a re-arm storm"
    );
    assert!(settled(&server), "operations or connections left behind");
}

#[test]
fn messages_across_buffer_boundaries_arrive_intact() {
    // Messages of every size from 1 byte to several buffers, from 24 connections into 4 KiB
    // buffers: receives cross from one buffer into the next all the time, and those whose
    // completions continue each other are processed as one run of bytes.
    let server = start(ServerConfig {
        ring_buffers: Some(32),
        ring_buffer_size: 4096,
        ..config()
    });
    echo_all(&server, 24, 40, 3, |c, i| {
        (c * 4099 + i * 2741) % 20_000 + 1
    });
    assert_eq!(gauge(&server, |s| s.messages_in.load(Relaxed)), 24 * 40);
    assert!(settled(&server), "operations or connections left behind");
}
