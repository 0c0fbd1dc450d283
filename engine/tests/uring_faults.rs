//! Faults and edge cases under the io_uring backend: every provided buffer in use while a
//! slow application holds the shard, receives of many connections packed into shared buffers,
//! connections inside and past the registered file table, silent connections parked and woken
//! (and parked again after a pong) or closed while parked, a peer that resets while a send is
//! pending, and a shutdown with sends in flight. Each checks that nothing is lost or leaked:
//! every completion is accounted for (the `io_in_flight` gauge returns to the shard's three
//! standing operations: accept, the eventfd read and the parked-connection poll) and the
//! server keeps serving. EMFILE on accept is covered by `fd_exhaustion.rs`, which
//! `scripts/test.sh` also runs under io_uring.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use c10m_engine::proto::Message;
use c10m_engine::server::{
    self, App, ConnId, Ctx, IoMode, Routes, ServerConfig, ServerHandle, Why, apps,
};
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

/// Echo that takes its time: 2 ms per message, so data piles up in the kernel meanwhile.
struct SlowEcho;

impl App for SlowEcho {
    fn on_message(&mut self, ctx: &mut Ctx<'_>, id: ConnId, message: Message<'_>) {
        std::thread::sleep(Duration::from_millis(2));
        let _ = ctx.send(id, &message);
    }
}

fn start(config: ServerConfig) -> ServerHandle {
    let routes = Routes::new()
        .route("/echo", |_| Box::new(apps::Echo))
        .route("/slow", |_| Box::new(SlowEcho));
    server::start(config, routes).unwrap()
}

fn gauge(server: &ServerHandle, get: impl Fn(&server::ShardStats) -> u64) -> u64 {
    server.stats().iter().map(|s| get(s)).sum()
}

/// Sends a close frame and reads until the server's answer ends the connection.
fn close_cleanly(mut ws: tungstenite::WebSocket<TcpStream>) {
    ws.close(None).unwrap();
    while ws.read().is_ok() {}
}

/// Joins client threads, failing with the first that panicked.
fn join_all(clients: Vec<std::thread::JoinHandle<()>>) {
    for c in clients {
        c.join().unwrap();
    }
}

/// Waits up to 10 s for `cond`; returns whether it held.
fn eventually(mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    cond()
}

fn settled(server: &ServerHandle) -> bool {
    eventually(|| {
        gauge(server, |s| s.connections.load(Relaxed)) == 0
            && gauge(server, |s| s.io_in_flight.load(Relaxed)) == STANDING_OPS
            && gauge(server, |s| s.ring_files.load(Relaxed)) == 0
    })
}

#[test]
fn buffer_ring_exhaustion_loses_nothing() {
    // Two 4 KiB buffers for the whole shard, a slow application, and 32 connections sending
    // at once: receives run out of buffers again and again and must be re-armed each time.
    let server = start(ServerConfig {
        ring_buffers: Some(2),
        ring_buffer_size: 4096,
        ..config()
    });
    let addr = server.local_addr();
    let clients: Vec<_> = (0..32)
        .map(|c| {
            std::thread::spawn(move || {
                let mut ws = connect(addr, "/slow");
                for i in 0..20 {
                    let text = format!("{c}:{i}:{}", "x".repeat(3000));
                    ws.send(TMessage::text(text)).unwrap();
                }
                for i in 0..20 {
                    let expected = format!("{c}:{i}:{}", "x".repeat(3000));
                    match ws.read().unwrap() {
                        TMessage::Text(t) => assert_eq!(t.as_str(), expected),
                        other => panic!("connection {c}: unexpected {other:?}"),
                    }
                }
                close_cleanly(ws);
            })
        })
        .collect();
    join_all(clients);
    let exhausted = gauge(&server, |s| s.recv_buffers_exhausted.load(Relaxed));
    assert!(
        exhausted > 0,
        "the buffer ring never ran out: the test exercised nothing"
    );
    assert!(settled(&server), "operations or connections left behind");
    assert_eq!(gauge(&server, |s| s.messages_in.load(Relaxed)), 32 * 20);
}

/// Linux 6.12 added incremental consumption of provided buffers.
fn kernel_has_incremental_buffers() -> bool {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    let mut parts = release
        .trim()
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse::<u32>().unwrap_or(0));
    (parts.next().unwrap(), parts.next().unwrap_or(0)) >= (6, 12)
}

#[test]
fn receives_packed_into_one_buffer_stay_apart() {
    // 48 connections sending small messages of changing sizes at once into eight 4 KiB
    // buffers: with incremental consumption, receives of different connections land one behind
    // the other in the same buffer, and each must get exactly its own bytes back.
    let server = start(ServerConfig {
        ring_buffers: Some(8),
        ring_buffer_size: 4096,
        ..config()
    });
    assert_eq!(
        server.backend().contains("consumed incrementally"),
        kernel_has_incremental_buffers(),
        "incremental consumption does not match the kernel: {}",
        server.backend()
    );
    let addr = server.local_addr();
    let message = |c: usize, i: usize| -> Vec<u8> {
        (0..(c * 37 + i * 13) % 700 + 1)
            .map(|k| (c * 131 + i * 7 + k) as u8)
            .collect()
    };
    let clients: Vec<_> = (0..48)
        .map(|c| {
            std::thread::spawn(move || {
                let mut ws = connect(addr, "/echo");
                for round in 0..10 {
                    for i in round * 10..round * 10 + 10 {
                        ws.send(TMessage::binary(message(c, i))).unwrap();
                    }
                    for i in round * 10..round * 10 + 10 {
                        match ws.read().unwrap() {
                            TMessage::Binary(b) => assert_eq!(&b[..], &message(c, i)[..]),
                            other => panic!("connection {c}: unexpected {other:?}"),
                        }
                    }
                }
                close_cleanly(ws);
            })
        })
        .collect();
    join_all(clients);
    assert!(settled(&server), "operations or connections left behind");
    assert_eq!(gauge(&server, |s| s.messages_in.load(Relaxed)), 48 * 100);
    // Without incremental consumption (before Linux 6.12) each receive has a buffer of its
    // own and the echoes above are the whole check.
    if server.backend().contains("consumed incrementally") {
        let shared = gauge(&server, |s| s.recv_buffers_shared.load(Relaxed));
        assert!(shared > 0, "no receive shared a buffer: nothing was packed");
    }
}

#[test]
fn connections_inside_and_past_the_file_table_churn_without_crossing() {
    // A registered file table of 4 slots: connections that talk in the first slots are named
    // by table index, the rest by descriptor. Waves of connections open, echo and close, so
    // slots and descriptor numbers are reused while earlier sockets are still closing; every
    // echo must come back on its own connection.
    let server = start(ServerConfig {
        ring_files: Some(4),
        ..config()
    });
    assert!(
        server.backend().contains(" 4 registered file slots"),
        "the file table is not registered: {}",
        server.backend()
    );
    let addr = server.local_addr();
    let mut most_in_table = 0;
    for wave in 0..6 {
        // Each client reports its echoes done, then waits, open, until the table was looked at.
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let mut go = Vec::new();
        let clients: Vec<_> = (0..12)
            .map(|c| {
                let done = done_tx.clone();
                let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
                go.push(go_tx);
                std::thread::spawn(move || {
                    let mut ws = connect(addr, "/echo");
                    for i in 0..20 {
                        let text = format!("wave {wave} connection {c} message {i}");
                        ws.send(TMessage::text(text.clone())).unwrap();
                        match ws.read().unwrap() {
                            TMessage::Text(t) => assert_eq!(t.as_str(), text),
                            other => panic!("connection {c}: unexpected {other:?}"),
                        }
                    }
                    done.send(()).unwrap();
                    let _ = go_rx.recv();
                    close_cleanly(ws);
                })
            })
            .collect();
        let all_echoed = (0..12).all(|_| done_rx.recv_timeout(Duration::from_secs(30)).is_ok());
        let in_table = gauge(&server, |s| s.ring_files.load(Relaxed));
        drop(go);
        join_all(clients);
        assert!(all_echoed, "wave {wave}: a client did not finish");
        most_in_table = most_in_table.max(in_table);
    }
    assert!(
        most_in_table > 0,
        "no talking connection was put in the table"
    );
    assert!(settled(&server), "operations or connections left behind");
    assert_eq!(gauge(&server, |s| s.messages_in.load(Relaxed)), 6 * 12 * 20);
    assert_eq!(gauge(&server, |s| s.ring_errors.load(Relaxed)), 0);
}

#[test]
fn silent_connections_are_parked_and_wake_on_input() {
    // Parking every 50 ms: connections that go quiet trade their armed receive for a poll,
    // and whatever comes next (a message, a close, a FIN) must still be read.
    let server = start(ServerConfig {
        ring_park_ms: 50,
        ..config()
    });
    let addr = server.local_addr();
    let parked = |server: &ServerHandle| gauge(server, |s| s.recv_parked.load(Relaxed));
    let mut clients: Vec<_> = (0..20).map(|_| connect(addr, "/echo")).collect();
    for round in 0..3 {
        assert!(
            eventually(|| parked(&server) == 20),
            "round {round}: {} of 20 silent connections parked",
            parked(&server)
        );
        // (From round 1: connections that talked were in the table before they were parked.)
        assert!(
            eventually(|| gauge(&server, |s| s.ring_files.load(Relaxed)) == 0),
            "round {round}: parked connections left in the file table"
        );
        for (c, ws) in clients.iter_mut().enumerate() {
            let text = format!("round {round} connection {c}");
            ws.send(TMessage::text(text.clone())).unwrap();
            match ws.read().unwrap() {
                TMessage::Text(t) => assert_eq!(t.as_str(), text),
                other => panic!("connection {c}: unexpected {other:?}"),
            }
        }
    }
    assert!(eventually(|| parked(&server) == 20), "not parked again");
    // Connections that talked had a multishot receive, which only a cancel parks.
    assert!(gauge(&server, |s| s.recv_cancels.load(Relaxed)) >= 20);
    // Half close with a close frame while parked, the rest just go away (FIN).
    for (c, mut ws) in clients.drain(..).enumerate() {
        if c % 2 == 0 {
            ws.close(None).unwrap();
            loop {
                match ws.read() {
                    Ok(TMessage::Close(_)) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        }
    }
    assert!(settled(&server), "operations or connections left behind");
    assert_eq!(parked(&server), 0, "the parked gauge did not return to 0");
    assert_eq!(gauge(&server, |s| s.messages_in.load(Relaxed)), 60);
    let normal = Why::PeerClosed.index();
    assert_eq!(
        gauge(&server, |s| s.closed[normal].load(Relaxed)),
        10,
        "the close handshakes of parked connections"
    );
}

#[test]
fn a_parked_connection_woken_by_a_pong_is_parked_again_at_once() {
    // Pings every 150 ms; sweeps only every 20 s, so within this test only the immediate
    // re-parking can bring a connection back to parking after its pong woke it.
    let server = start(ServerConfig {
        ring_park_ms: 20_000,
        ping_interval_ms: 150,
        ..config()
    });
    let addr = server.local_addr();
    let parked = |server: &ServerHandle| gauge(server, |s| s.recv_parked.load(Relaxed));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let pings: Vec<_> = (0..10)
        .map(|_| std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0)))
        .collect();
    let clients: Vec<_> = pings
        .iter()
        .map(|count| {
            let (stop, count) = (stop.clone(), count.clone());
            std::thread::spawn(move || {
                let mut ws = connect(addr, "/echo");
                ws.get_ref()
                    .set_read_timeout(Some(Duration::from_millis(20)))
                    .unwrap();
                while !stop.load(Relaxed) {
                    match ws.read() {
                        // tungstenite queues the pong; it leaves with the next read or flush.
                        Ok(TMessage::Ping(_)) => {
                            count.fetch_add(1, Relaxed);
                        }
                        Ok(other) => panic!("unexpected {other:?}"),
                        Err(tungstenite::Error::Io(e))
                            if e.kind() == std::io::ErrorKind::WouldBlock
                                || e.kind() == std::io::ErrorKind::TimedOut =>
                        {
                            let _ = ws.flush();
                        }
                        Err(e) => panic!("{e}"),
                    }
                }
            })
        })
        .collect();
    // Wait for the event, not for a time: every client has answered three pings (each pong
    // woke its connection from parking), however slowly this machine runs.
    let deadline = Instant::now() + Duration::from_secs(60);
    while pings.iter().any(|p| p.load(Relaxed) < 3) {
        assert!(
            Instant::now() < deadline,
            "pings did not reach every client"
        );
        std::thread::yield_now();
    }
    // Their last pong (the client flushes it on its next read) woke them; each must be parked
    // again without a sweep.
    assert!(
        eventually(|| parked(&server) == 10),
        "{} of 10 connections parked again after their pongs",
        parked(&server)
    );
    // Their handshakes and pongs came on single-shot receives: parked with no cancel.
    assert_eq!(gauge(&server, |s| s.recv_cancels.load(Relaxed)), 0);
    stop.store(true, Relaxed);
    join_all(clients);
    assert!(settled(&server), "operations or connections left behind");
}

#[test]
fn parked_connections_the_server_gives_up_on_are_reaped() {
    // Clients that complete the handshake and then never read or answer: the server parks
    // them, closes them for idleness (1001), and when no close comes back within the close
    // timeout, drops them while they are still parked.
    let server = start(ServerConfig {
        ring_park_ms: 50,
        ping_interval_ms: 0,
        idle_timeout_ms: 600,
        close_timeout_ms: 300,
        ..config()
    });
    let addr = server.local_addr();
    let parked = |server: &ServerHandle| gauge(server, |s| s.recv_parked.load(Relaxed));
    let clients: Vec<_> = (0..10).map(|_| connect(addr, "/echo")).collect();
    assert!(
        eventually(|| parked(&server) == 10),
        "{} of 10 silent connections parked",
        parked(&server)
    );
    assert!(settled(&server), "operations or connections left behind");
    assert_eq!(parked(&server), 0, "the parked gauge did not return to 0");
    let idle = Why::IdleTimeout.index();
    let local = Why::LocalClosed.index();
    assert_eq!(
        gauge(&server, |s| s.closed[idle].load(Relaxed)
            + s.closed[local].load(Relaxed)),
        10,
        "closed by the server"
    );
    drop(clients);
}

#[test]
fn a_peer_reset_during_a_pending_send_is_survived() {
    let server = start(ServerConfig {
        max_message_size: 64 << 20,
        max_frame_size: 64 << 20,
        write_queue_limit: 128 << 20,
        ..config()
    });
    let addr = server.local_addr();
    // A 32 MiB echo to a client that never reads: more than loopback's socket buffers hold,
    // so the server's send stays pending in the kernel.
    let mut ws = connect(addr, "/echo");
    ws.send(TMessage::binary(vec![7u8; 32 << 20])).unwrap();
    assert!(
        eventually(|| gauge(&server, |s| s.io_in_flight.load(Relaxed)) > STANDING_OPS + 1),
        "no send became pending"
    );
    let stream = ws.get_ref();
    socket2::SockRef::from(stream)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(ws); // RST
    assert!(settled(&server), "operations or connections left behind");
    assert_eq!(
        gauge(&server, |s| s.closed[Why::Io.index()].load(Relaxed)),
        1
    );
    // Still serving.
    let mut ws = connect(addr, "/echo");
    ws.send(TMessage::text("after")).unwrap();
    assert_eq!(ws.read().unwrap(), TMessage::text("after"));
}

#[test]
fn shutdown_with_sends_in_flight_completes_every_operation() {
    let server = start(ServerConfig {
        max_message_size: 64 << 20,
        max_frame_size: 64 << 20,
        write_queue_limit: 128 << 20,
        drain_timeout_ms: 300,
        // The idle connections keep their receives armed (not parked), so the shutdown has
        // them to wait for.
        ring_park_ms: 0,
        ..config()
    });
    let addr = server.local_addr();
    let mut stuck = connect(addr, "/echo");
    stuck.send(TMessage::binary(vec![1u8; 32 << 20])).unwrap();
    let mut idle: Vec<TcpStream> = (0..50)
        .map(|_| {
            let mut s = TcpStream::connect(addr).unwrap();
            s.write_all(b"GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n").unwrap();
            s
        })
        .collect();
    assert!(
        eventually(|| gauge(&server, |s| s.io_in_flight.load(Relaxed)) > STANDING_OPS + 50),
        "the receives and the pending send were not all armed"
    );
    server.shutdown();
    // join() fails if any operation was still in flight after the shutdown grace period.
    server.join().unwrap();
    // Every connection was closed by the server.
    for s in &mut idle {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 4096];
        loop {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    }
    drop(stuck);
}
