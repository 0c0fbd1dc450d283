//! The application API the layers above the engine stand on, exercised over real sockets under
//! the backend `C10M_TEST_IO` names: a handle used from another thread, deferred upgrades,
//! response headers, per-connection state, shard hooks and timers, UDP sockets on a shard, and
//! a broker through the seam.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use c10m_engine::proto::{CloseCode, Message};
use c10m_engine::server::{
    self, Accept, App, Broker, ConnId, Ctx, Datagram, Handle, Routes, ServerConfig, ServerHandle,
    SharedFrame, Subscribed, UdpId, Upgrade, UpgradeRequest,
};
use support::connect;
use tungstenite::Message as TMessage;

const WAIT: Duration = Duration::from_secs(10);

fn config(shards: usize) -> ServerConfig {
    ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        shards,
        io: support::io_backend().parse().unwrap(),
        drain_timeout_ms: 1_000,
        ..ServerConfig::default()
    }
}

fn text(ws: &mut tungstenite::WebSocket<TcpStream>) -> String {
    loop {
        match ws.read().unwrap() {
            TMessage::Text(t) => return t.to_string(),
            TMessage::Ping(_) | TMessage::Pong(_) => {}
            other => panic!("expected text, got {other:?}"),
        }
    }
}

/// Writes an upgrade request on a raw socket and returns the response head.
fn upgrade_raw(addr: SocketAddr, path: &str, extra: &str) -> (TcpStream, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    )
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8];
    while !head.ends_with(b"\r\n\r\n") {
        match s.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => break,
        }
    }
    (s, String::from_utf8(head).unwrap())
}

// ---------------------------------------------------------------- handle from another thread

/// Tells the test each connection's id as it opens.
struct Announce(Sender<ConnId>);

impl App for Announce {
    fn on_open(
        &mut self,
        _: &mut Ctx<'_>,
        id: ConnId,
        _: &c10m_engine::proto::handshake::Request<'_>,
    ) {
        self.0.send(id).unwrap();
    }
    fn on_message(&mut self, ctx: &mut Ctx<'_>, id: ConnId, message: Message<'_>) {
        if let Some(topic) = std::str::from_utf8(message.as_bytes())
            .ok()
            .and_then(|t| t.strip_prefix("sub "))
        {
            assert_eq!(
                ctx.subscribe(id, topic).unwrap(),
                Subscribed::Live,
                "no broker"
            );
            ctx.send_text(id, "subscribed").unwrap();
        }
    }
    fn on_post(&mut self, ctx: &mut Ctx<'_>, payload: Box<dyn std::any::Any + Send>) {
        let (id, text) = *payload.downcast::<(ConnId, String)>().unwrap();
        ctx.send_text(id, &format!("posted on shard {}: {text}", ctx.shard()))
            .unwrap();
    }
}

fn start_announce(shards: usize) -> (ServerHandle, Receiver<ConnId>) {
    let (tx, rx) = channel();
    let tx = Mutex::new(tx);
    let routes = Routes::new().route("/a", move |_| {
        Box::new(Announce(tx.lock().unwrap().clone()))
    });
    (server::start(config(shards), routes).unwrap(), rx)
}

#[test]
fn a_handle_sends_publishes_posts_and_closes_from_another_thread() {
    let (server, opened) = start_announce(2);
    let addr = server.local_addr();
    let mut a = connect(addr, "/a");
    let mut b = connect(addr, "/a");
    let ida = opened.recv_timeout(WAIT).unwrap();
    let idb = opened.recv_timeout(WAIT).unwrap();
    a.send(TMessage::text("sub news")).unwrap();
    b.send(TMessage::text("sub news")).unwrap();
    assert_eq!(text(&mut a), "subscribed");
    assert_eq!(text(&mut b), "subscribed");

    let handle = server.handle();
    let app = handle.app("/a").unwrap();
    assert!(handle.app("/nope").is_none());
    std::thread::spawn(move || {
        handle.send_text(ida, "to a").unwrap();
        handle.publish("news", &SharedFrame::text("to both"));
        handle
            .post(idb.shard(), app, Box::new((idb, "hello".to_string())))
            .unwrap();
        handle.close(ida, CloseCode(4000), "bye").unwrap();
    })
    .join()
    .unwrap();

    // Mail from one thread to one shard arrives in order.
    let mut got_a = vec![text(&mut a), text(&mut a)];
    got_a.sort();
    assert_eq!(got_a, ["to a", "to both"]);
    match a.read().unwrap() {
        TMessage::Close(Some(f)) => assert_eq!(u16::from(f.code), 4000),
        other => panic!("expected a close, got {other:?}"),
    }
    let mut got_b = vec![text(&mut b), text(&mut b)];
    got_b.sort();
    assert_eq!(
        got_b,
        [
            format!("posted on shard {}: hello", idb.shard()),
            "to both".to_string()
        ]
    );
    server.shutdown();
    server.join().unwrap();
}

#[test]
fn a_stale_id_is_dropped_not_misdelivered() {
    let (server, opened) = start_announce(1);
    let addr = server.local_addr();
    let first = connect(addr, "/a");
    let old = opened.recv_timeout(WAIT).unwrap();
    drop(first);
    // The slot is reused by the next connection, with a new generation.
    let mut second = loop {
        assert!(opened.try_iter().count() == 0);
        let ws = connect(addr, "/a");
        let id = opened.recv_timeout(WAIT).unwrap();
        if id.slot() == old.slot() {
            assert_ne!(id, old);
            break ws;
        }
    };
    let handle = server.handle();
    handle.send_text(old, "for the old one").unwrap();
    handle.publish("nobody", &SharedFrame::text("x"));
    second.send(TMessage::text("sub t")).unwrap();
    // Had the stale send been delivered, it would come first.
    assert_eq!(text(&mut second), "subscribed");
    server.shutdown();
    server.join().unwrap();
}

// ---------------------------------------------------------------- upgrades

/// Defers every upgrade and hands it to a "token checker" thread, which answers through the
/// handle: `?token=good` is accepted with a subprotocol and a cookie, others get 401;
/// `?token=never` is never answered.
struct Gate(Sender<(ConnId, String, Option<SocketAddr>)>);

impl App for Gate {
    fn on_upgrade(&mut self, _: &mut Ctx<'_>, up: &UpgradeRequest<'_>) -> Upgrade {
        let query = up.request().query().unwrap_or("").to_string();
        if query == "now" {
            return Upgrade::Accept(Accept::default().header("X-Now", "1"));
        }
        if query == "inject" {
            return Upgrade::Accept(Accept::default().header("X-Evil", "a\r\nSet-Cookie: x=1"));
        }
        self.0.send((up.id(), query, up.peer())).unwrap();
        Upgrade::Defer
    }
    fn on_open(
        &mut self,
        ctx: &mut Ctx<'_>,
        id: ConnId,
        req: &c10m_engine::proto::handshake::Request<'_>,
    ) {
        ctx.send_text(id, &format!("open {}", req.query().unwrap_or("")))
            .unwrap();
    }
    fn on_message(&mut self, ctx: &mut Ctx<'_>, id: ConnId, message: Message<'_>) {
        ctx.send(id, &message).unwrap();
    }
}

fn start_gate(
    handshake_timeout_ms: u64,
) -> (
    ServerHandle,
    std::thread::JoinHandle<Vec<Option<SocketAddr>>>,
) {
    let (tx, rx) = channel::<(ConnId, String, Option<SocketAddr>)>();
    let tx = Mutex::new(tx);
    let routes = Routes::new().route("/gate", move |_| Box::new(Gate(tx.lock().unwrap().clone())));
    let server = server::start(
        ServerConfig {
            handshake_timeout_ms,
            ..config(2)
        },
        routes,
    )
    .unwrap();
    let handle = server.handle();
    let checker = std::thread::spawn(move || {
        let mut peers = Vec::new();
        while let Ok((id, query, peer)) = rx.recv() {
            peers.push(peer);
            match query.as_str() {
                "token=good" => handle
                    .accept_upgrade(
                        id,
                        Accept::default()
                            .protocol("chat.v1")
                            .header("Set-Cookie", "session=abc; HttpOnly"),
                    )
                    .unwrap(),
                "token=never" => {}
                _ => handle.reject_upgrade(id, 401).unwrap(),
            }
        }
        peers
    });
    (server, checker)
}

#[test]
fn deferred_upgrades_are_answered_from_another_thread() {
    let (server, checker) = start_gate(10_000);
    let addr = server.local_addr();

    let (s, head) = upgrade_raw(
        addr,
        "/gate?token=good",
        "Sec-WebSocket-Protocol: chat.v1, chat.v0\r\n",
    );
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(
        head.contains("Sec-WebSocket-Protocol: chat.v1\r\n"),
        "{head}"
    );
    assert!(
        head.contains("Set-Cookie: session=abc; HttpOnly\r\n"),
        "{head}"
    );
    let mut ws = tungstenite::WebSocket::from_raw_socket(
        s.try_clone().unwrap(),
        tungstenite::protocol::Role::Client,
        None,
    );
    assert_eq!(text(&mut ws), "open token=good");
    ws.send(TMessage::text("echo me")).unwrap();
    assert_eq!(text(&mut ws), "echo me");

    let (mut bad, head) = upgrade_raw(addr, "/gate?token=bad", "");
    assert!(head.starts_with("HTTP/1.1 401"), "{head}");
    let mut rest = Vec::new();
    let _ = bad.read_to_end(&mut rest);

    let (_, head) = upgrade_raw(addr, "/gate?now", "");
    assert!(
        head.starts_with("HTTP/1.1 101") && head.contains("X-Now: 1\r\n"),
        "{head}"
    );

    let (_, head) = upgrade_raw(addr, "/gate?inject", "");
    assert!(
        head.starts_with("HTTP/1.1 500"),
        "a header with CR LF is refused: {head}"
    );
    assert!(!head.contains("Set-Cookie"), "{head}");

    s.shutdown(std::net::Shutdown::Both).unwrap();
    server.shutdown();
    server.join().unwrap();
    let peers = checker.join().unwrap();
    assert_eq!(peers.len(), 2);
    for p in peers {
        assert_eq!(p.unwrap().ip(), std::net::Ipv4Addr::LOCALHOST);
    }
}

#[test]
fn a_deferred_upgrade_never_answered_ends_at_the_handshake_timeout() {
    let (server, checker) = start_gate(300);
    let addr = server.local_addr();
    let (mut s, head) = upgrade_raw(addr, "/gate?token=never", "");
    // No answer: the server drops the connection when the handshake time is up.
    assert_eq!(head, "", "no HTTP answer for an upgrade never decided");
    let mut rest = Vec::new();
    assert_eq!(s.read_to_end(&mut rest).unwrap_or(0), 0);
    let timed_out: u64 = server
        .stats()
        .iter()
        .map(|s| s.closed[server::Why::HandshakeTimeout.index()].load(SeqCst))
        .sum();
    assert_eq!(timed_out, 1);
    server.shutdown();
    server.join().unwrap();
    checker.join().unwrap();
}

// ---------------------------------------------------------------- per-connection state

struct Counted(Arc<AtomicUsize>, u32);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_add(1, SeqCst);
    }
}

/// Counts each connection's messages in its state; reports the count on close.
struct Stateful {
    dropped: Arc<AtomicUsize>,
    on_close: Sender<u32>,
}

impl App for Stateful {
    fn on_open(
        &mut self,
        ctx: &mut Ctx<'_>,
        id: ConnId,
        _: &c10m_engine::proto::handshake::Request<'_>,
    ) {
        ctx.set_state(id, Counted(self.dropped.clone(), 0)).unwrap();
    }
    fn on_message(&mut self, ctx: &mut Ctx<'_>, id: ConnId, _: Message<'_>) {
        assert!(ctx.state::<String>(id).is_none(), "state of another type");
        let n = {
            let state = ctx.state::<Counted>(id).unwrap();
            state.1 += 1;
            state.1
        };
        assert_eq!(ctx.buffered(id), Some(0));
        ctx.send_text(id, &n.to_string()).unwrap();
    }
    fn on_close(&mut self, ctx: &mut Ctx<'_>, id: ConnId, _: server::Closed) {
        let n = ctx.state::<Counted>(id).map_or(u32::MAX, |s| s.1);
        self.on_close.send(n).unwrap();
    }
}

#[test]
fn per_connection_state_lives_as_long_as_the_connection() {
    let dropped = Arc::new(AtomicUsize::new(0));
    let (tx, closes) = channel();
    let tx = Mutex::new(tx);
    let d = dropped.clone();
    let routes = Routes::new().route("/s", move |_| {
        Box::new(Stateful {
            dropped: d.clone(),
            on_close: tx.lock().unwrap().clone(),
        })
    });
    let server = server::start(config(2), routes).unwrap();
    let addr = server.local_addr();
    let mut a = connect(addr, "/s");
    let mut b = connect(addr, "/s");
    for i in 1..=3 {
        a.send(TMessage::text("x")).unwrap();
        assert_eq!(text(&mut a), i.to_string());
    }
    b.send(TMessage::text("x")).unwrap();
    assert_eq!(text(&mut b), "1", "each connection has its own state");
    assert_eq!(dropped.load(SeqCst), 0);
    a.close(None).unwrap();
    while a.read().is_ok() {}
    assert_eq!(
        closes.recv_timeout(WAIT).unwrap(),
        3,
        "on_close reads the state"
    );
    // Dropped right after on_close, on the shard's thread.
    server.shutdown();
    server.join().unwrap();
    assert_eq!(closes.recv_timeout(WAIT).unwrap(), 1);
    assert_eq!(dropped.load(SeqCst), 2);
}

// ---------------------------------------------------------------- hooks, timers, UDP

/// Binds a UDP socket on start and echoes datagrams with a prefix; a timer fires once after
/// 20 ms, another is cancelled; reports to the test what happened, per shard.
struct Media {
    events: Sender<String>,
}

impl App for Media {
    fn on_start(&mut self, ctx: &mut Ctx<'_>) {
        let udp = ctx.bind_udp("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = ctx.udp_addr(udp).unwrap();
        ctx.set_timer(20, 7);
        let cancelled = ctx.set_timer(10, 99);
        assert!(ctx.cancel_timer(cancelled));
        self.events
            .send(format!("start {} {addr}", ctx.shard()))
            .unwrap();
    }
    fn on_timer(&mut self, ctx: &mut Ctx<'_>, token: u64) {
        self.events
            .send(format!("timer {} {token}", ctx.shard()))
            .unwrap();
    }
    fn on_datagrams(&mut self, ctx: &mut Ctx<'_>, socket: UdpId, datagrams: &[Datagram<'_>]) {
        for d in datagrams {
            let mut reply = b"echo:".to_vec();
            reply.extend_from_slice(d.data);
            ctx.send_datagram(socket, d.from, &reply).unwrap();
        }
    }
    fn on_message(&mut self, _: &mut Ctx<'_>, _: ConnId, _: Message<'_>) {}
    fn on_stop(&mut self, ctx: &mut Ctx<'_>) {
        let stats = ctx.udp_stats();
        self.events
            .send(format!(
                "stop {} {} {}",
                ctx.shard(),
                stats.received,
                stats.sent
            ))
            .unwrap();
    }
}

#[test]
fn shards_run_hooks_timers_and_udp_sockets() {
    let (tx, events) = channel();
    let tx = Mutex::new(tx);
    let routes = Routes::new().route("/m", move |_| {
        Box::new(Media {
            events: tx.lock().unwrap().clone(),
        })
    });
    let server = server::start(config(2), routes).unwrap();
    let mut udp_addrs = HashMap::new();
    let mut timers = Vec::new();
    while udp_addrs.len() < 2 || timers.len() < 2 {
        let e = events.recv_timeout(WAIT).unwrap();
        let words: Vec<&str> = e.split(' ').collect();
        match words[0] {
            "start" => {
                udp_addrs.insert(
                    words[1].to_string(),
                    words[2].parse::<SocketAddr>().unwrap(),
                );
            }
            "timer" => timers.push(e.clone()),
            _ => panic!("unexpected {e}"),
        }
    }
    timers.sort();
    assert_eq!(
        timers,
        ["timer 0 7", "timer 1 7"],
        "the cancelled timer never fires"
    );

    // 200 datagrams to each shard's socket, in bursts, every one echoed once.
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client.set_read_timeout(Some(WAIT)).unwrap();
    let per_shard = 200;
    let mut expected = std::collections::HashSet::new();
    for (shard, addr) in &udp_addrs {
        for i in 0..per_shard {
            let msg = format!("{shard}:{i}");
            client.send_to(msg.as_bytes(), addr).unwrap();
            expected.insert(format!("echo:{msg}"));
            if i % 20 == 19 {
                // Let the kernel's receive buffer drain now and then; UDP may drop otherwise.
                let mut buf = [0u8; 64];
                for _ in 0..20 {
                    let (n, from) = client.recv_from(&mut buf).unwrap();
                    assert_eq!(&from, addr);
                    assert!(expected.remove(std::str::from_utf8(&buf[..n]).unwrap()));
                }
            }
        }
    }
    assert!(expected.is_empty(), "left: {}", expected.len());
    server.shutdown();
    server.join().unwrap();
    let mut stops: Vec<String> = events
        .try_iter()
        .filter(|e| e.starts_with("stop"))
        .collect();
    stops.sort();
    assert_eq!(stops, ["stop 0 200 200", "stop 1 200 200"]);
}

// ---------------------------------------------------------------- the broker seam

/// A broker that records what it hears and "carries" publishes through a channel to a thread
/// that delivers them back, as a Redis subscriber would.
/// What the test broker carries to its thread: a publish, or (no frame) a subscription to
/// confirm.
type Outbox = Sender<(String, Option<SharedFrame>)>;

#[derive(Default)]
struct TestBroker {
    events: Mutex<Vec<String>>,
    outbox: Mutex<Option<Outbox>>,
}

impl Broker for TestBroker {
    fn attach(&self, handle: Handle) {
        let (tx, rx) = channel::<(String, Option<SharedFrame>)>();
        *self.outbox.lock().unwrap() = Some(tx);
        std::thread::spawn(move || {
            while let Ok((topic, frame)) = rx.recv() {
                match frame {
                    // What crossed the wire: the encoded bytes, checked on arrival.
                    Some(frame) => {
                        let frame = SharedFrame::from_encoded(frame.bytes().clone()).unwrap();
                        handle.deliver(&topic, &frame);
                    }
                    // The upstream subscription is in place.
                    None => handle.confirm(&topic),
                }
            }
        });
    }
    fn subscribed(&self, topic: &str) {
        self.events.lock().unwrap().push(format!("+{topic}"));
        let outbox = self.outbox.lock().unwrap();
        outbox
            .as_ref()
            .unwrap()
            .send((topic.to_string(), None))
            .unwrap();
    }
    fn unsubscribed(&self, topic: &str) {
        self.events.lock().unwrap().push(format!("-{topic}"));
    }
    fn publish(&self, topic: &str, frame: &SharedFrame) {
        self.events.lock().unwrap().push(format!("pub {topic}"));
        let outbox = self.outbox.lock().unwrap();
        outbox
            .as_ref()
            .unwrap()
            .send((topic.to_string(), Some(frame.clone())))
            .unwrap();
    }
}

#[test]
fn a_broker_hears_first_and_last_subscribers_and_carries_publishes() {
    let broker = Arc::new(TestBroker::default());
    let routes = Routes::new().route("/pubsub", |_| Box::new(server::apps::PubSub));
    let server =
        server::start_with_broker(config(2), routes, Some(broker.clone() as Arc<dyn Broker>))
            .unwrap();
    let addr = server.local_addr();
    // Enough subscribers that both shards have some.
    let mut subs: Vec<_> = (0..6).map(|_| connect(addr, "/pubsub?topic=t")).collect();
    let mut publisher = connect(addr, "/pubsub");
    // `ok sub` comes once a subscription is live everywhere (the first one in the process
    // waits for the broker), and after the query's subscription of the same connection.
    for s in &mut subs {
        s.send(TMessage::text("sub sync")).unwrap();
        assert_eq!(text(s), "ok sub sync");
    }
    publisher.send(TMessage::text("sub sync")).unwrap();
    assert_eq!(text(&mut publisher), "ok sub sync");
    for i in 0..50 {
        publisher
            .send(TMessage::text(format!("pub t m{i}")))
            .unwrap();
    }
    for s in &mut subs {
        for i in 0..50 {
            assert_eq!(text(s), format!("msg t m{i}"));
        }
    }
    let events = broker.events.lock().unwrap().clone();
    assert_eq!(
        events.iter().filter(|e| *e == "+t").count(),
        1,
        "{events:?}"
    );
    assert_eq!(
        events.iter().filter(|e| *e == "+sync").count(),
        1,
        "{events:?}"
    );
    assert_eq!(events.iter().filter(|e| *e == "pub t").count(), 50);
    assert!(!events.iter().any(|e| e.starts_with('-')), "{events:?}");

    // The last subscriber of `t` leaving, on whichever shard, is heard once.
    for mut s in subs {
        s.close(None).unwrap();
        while s.read().is_ok() {}
    }
    publisher.send(TMessage::text("sub sync2")).unwrap();
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let events = broker.events.lock().unwrap().clone();
        if events.iter().any(|e| e == "-t") {
            assert_eq!(
                events.iter().filter(|e| *e == "-t").count(),
                1,
                "{events:?}"
            );
            assert!(
                !events.iter().any(|e| e == "-sync"),
                "the publisher still has it"
            );
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no -t in {events:?}");
        std::thread::yield_now();
    }
    server.shutdown();
    server.join().unwrap();
}

#[test]
fn a_library_caller_gets_the_config_checked_at_start() {
    let bad = ServerConfig {
        max_frame_size: usize::MAX,
        ..config(1)
    };
    let err = server::start(bad, Routes::new()).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    assert!(err.to_string().contains("max_frame_size"), "{err}");
}
