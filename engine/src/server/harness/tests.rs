//! Shard behaviour on a hand-driven clock: heartbeats and idle closes, handshake deadlines,
//! deferred upgrades, application timers, the write path and slow consumers. Each test sets
//! the clock itself; none sleeps or depends on how fast the machine is.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};

use super::{Client, Harness};
use crate::proto::handshake::Request;
use crate::proto::{FrameHeader, Message, OpCode};
use crate::server::{
    Accept, App, ConnId, Ctx, ServerConfig, ShardStats, SharedFrame, Upgrade, UpgradeRequest, Why,
};

fn config() -> ServerConfig {
    ServerConfig {
        ping_interval_ms: 1_000,
        idle_timeout_ms: 3_000,
        close_timeout_ms: 500,
        handshake_timeout_ms: 2_000,
        timer_tick_ms: 100,
        ..ServerConfig::default()
    }
}

/// Frames a server wrote: (opcode, payload).
fn frames(mut bytes: &[u8]) -> Vec<(OpCode, Vec<u8>)> {
    let mut out = Vec::new();
    while let Ok(Some((h, n))) = FrameHeader::parse(bytes) {
        let end = n + h.payload_len as usize;
        assert!(bytes.len() >= end, "a partial frame");
        out.push((h.opcode, bytes[n..end].to_vec()));
        bytes = &bytes[end..];
    }
    assert!(bytes.is_empty(), "trailing bytes");
    out
}

/// A client frame, masked with a zero key (valid, and the payload reads as sent).
fn client_frame(op: OpCode, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0x80 | op as u8];
    assert!(payload.len() < 126);
    f.push(0x80 | payload.len() as u8);
    f.extend_from_slice(&[0, 0, 0, 0]);
    f.extend_from_slice(payload);
    f
}

fn closed(h: &Harness, why: Why) -> u64 {
    h.stat(|s: &ShardStats| &s.closed[why.index()])
}

/// Records what it is told; echoes.
#[derive(Default, Clone)]
struct Log(Arc<Mutex<Vec<String>>>);

impl Log {
    fn take(&self) -> Vec<String> {
        std::mem::take(&mut self.0.lock().unwrap())
    }
    fn push(&self, s: String) {
        self.0.lock().unwrap().push(s);
    }
}

struct Recorder(Log);

impl App for Recorder {
    fn on_message(&mut self, ctx: &mut Ctx<'_>, id: ConnId, message: Message<'_>) {
        let _ = ctx.send(id, &message);
    }
    fn on_close(&mut self, _: &mut Ctx<'_>, _: ConnId, closed: crate::server::Closed) {
        self.0
            .push(format!("close {:?} {}", closed.why, closed.code.0));
    }
    fn on_timer(&mut self, ctx: &mut Ctx<'_>, token: u64) {
        self.0.push(format!("timer {token} at {}", ctx.now_ms()));
    }
    fn on_start(&mut self, ctx: &mut Ctx<'_>) {
        ctx.set_timer(250, 1);
        let cancelled = ctx.set_timer(100, 2);
        ctx.cancel_timer(cancelled);
        ctx.set_timer(700, 3);
    }
}

fn recorder() -> (Harness, Log) {
    let log = Log::default();
    let l = log.clone();
    (
        Harness::new(config(), move || Box::new(Recorder(l.clone()))),
        log,
    )
}

#[test]
fn a_silent_client_is_pinged_then_closed_at_the_idle_timeout() {
    let (mut h, log) = recorder();
    let (mut c, _) = h.open();
    h.at(999);
    assert!(
        frames(&c.read_all()).is_empty(),
        "no ping before the interval"
    );
    h.at(1_000);
    assert_eq!(frames(&c.read_all()), [(OpCode::Ping, vec![])]);
    // Pings go on while the client says nothing; the idle timeout ends it.
    let mut pings = 1;
    for t in (1_100..3_000).step_by(100) {
        h.at(t);
        pings += frames(&c.read_all()).len();
    }
    assert!(pings >= 2, "{pings} pings");
    assert!(h.holds(&c));
    h.at(3_000);
    let out = frames(&c.read_all());
    let (op, payload) = out.last().unwrap();
    assert_eq!(*op, OpCode::Close);
    assert_eq!(u16::from_be_bytes([payload[0], payload[1]]), 1001);
    // A client silent that long is not waited for: the close frame is its last output.
    assert!(!h.holds(&c));
    assert!(c.closed());
    assert_eq!(closed(&h, Why::IdleTimeout), 1);
    assert!(log.take().contains(&"close IdleTimeout 1001".to_string()));
}

#[test]
fn a_pong_keeps_a_client_alive() {
    let (mut h, _) = recorder();
    let (mut c, _) = h.open();
    for t in (1_000..10_000).step_by(500) {
        h.at(t);
        for (op, payload) in frames(&c.read_all()) {
            assert_eq!(op, OpCode::Ping);
            c.write(&client_frame(OpCode::Pong, &payload));
        }
        h.pump(&c);
    }
    assert!(h.holds(&c), "answered every ping: still open at 10 s");
    assert_eq!(closed(&h, Why::IdleTimeout), 0);
}

#[test]
fn an_unfinished_handshake_ends_at_its_deadline() {
    let (mut h, log) = recorder();
    let mut c = h.connect();
    c.write(b"GET / HTTP/1.1\r\nHost: x\r\n");
    h.pump(&c);
    h.at(1_999);
    assert!(h.holds(&c));
    h.at(2_000);
    assert!(!h.holds(&c));
    assert!(c.closed());
    assert_eq!(closed(&h, Why::HandshakeTimeout), 1);
    assert!(
        !log.take().iter().any(|e| e.starts_with("close")),
        "never opened: no on_close"
    );
}

#[test]
fn app_timers_fire_at_their_deadline_and_cancelled_ones_never() {
    let (mut h, log) = recorder();
    h.at(249);
    assert!(log.take().is_empty());
    h.at(250);
    assert_eq!(log.take(), ["timer 1 at 250"]);
    h.at(10_000);
    assert_eq!(log.take(), ["timer 3 at 10000"]);
}

#[test]
fn output_gathered_in_an_iteration_arrives_whole_and_in_order() {
    let (mut h, _) = recorder();
    let (mut c, id) = h.open();
    let handle = h.shard.core.handle.clone();
    for i in 0..100 {
        handle.send_text(id, &format!("m{i}")).unwrap();
    }
    h.tick();
    let got: Vec<String> = frames(&c.read_all())
        .into_iter()
        .map(|(op, p)| {
            assert_eq!(op, OpCode::Text);
            String::from_utf8(p).unwrap()
        })
        .collect();
    assert_eq!(got, (0..100).map(|i| format!("m{i}")).collect::<Vec<_>>());
    // An echo goes out with the read that brought it.
    c.write(&client_frame(OpCode::Text, b"echo"));
    h.pump(&c);
    assert_eq!(frames(&c.read_all()), [(OpCode::Text, b"echo".to_vec())]);
}

#[test]
fn a_client_that_stops_reading_is_closed_as_a_slow_consumer() {
    let limit = 256 << 10;
    let mut h = Harness::new(
        ServerConfig {
            write_queue_limit: limit,
            ..config()
        },
        || Box::new(Recorder(Log::default())),
    );
    let (c, id) = h.open();
    let handle = h.shard.core.handle.clone();
    let frame = SharedFrame::binary(&[7u8; 16 << 10]);
    let mut sent = 0;
    let mut peak = 0;
    while h.holds(&c) {
        assert!(sent < 10_000, "never closed after {sent} messages");
        let _ = handle.send(id, &frame);
        sent += 1;
        h.tick();
        peak = peak.max(h.stat(|s: &ShardStats| &s.write_queue_bytes));
    }
    assert_eq!(closed(&h, Why::SlowConsumer), 1);
    // Bounded by the limit plus the message that crossed it.
    assert!(
        peak <= (limit + (16 << 10) + 16) as u64,
        "queued {peak} bytes"
    );
    assert_eq!(
        h.stat(|s: &ShardStats| &s.write_queue_bytes),
        0,
        "freed with the connection"
    );
}

/// Defers every upgrade; the test answers through the handle.
struct Deferring(Log);

impl App for Deferring {
    fn on_upgrade(&mut self, _: &mut Ctx<'_>, up: &UpgradeRequest<'_>) -> Upgrade {
        self.0.push(format!("asked {}", up.id().slot()));
        Upgrade::Defer
    }
    fn on_open(&mut self, _: &mut Ctx<'_>, id: ConnId, request: &Request<'_>) {
        self.0
            .push(format!("open {} {}", id.slot(), request.path()));
    }
    fn on_message(&mut self, _: &mut Ctx<'_>, _: ConnId, _: Message<'_>) {}
}

#[test]
fn a_deferred_upgrade_opens_when_answered_and_keeps_early_input() {
    let log = Log::default();
    let l = log.clone();
    let mut h = Harness::new(config(), move || Box::new(Deferring(l.clone())));
    let mut c = h.connect();
    let id = h.id(&c);
    // The request and, eagerly, a first frame.
    let mut input = super::UPGRADE.to_vec();
    input.extend_from_slice(&client_frame(OpCode::Ping, b"early"));
    c.write(&input);
    h.pump(&c);
    assert_eq!(log.take(), [format!("asked {}", c.slot)]);
    assert!(c.read_all().is_empty(), "no answer yet");
    h.at(1_000);
    let handle = h.shard.core.handle.clone();
    handle
        .accept_upgrade(id, Accept::default().header("X-Checked", "yes"))
        .unwrap();
    h.tick();
    let out = c.read_all();
    let text = String::from_utf8_lossy(&out);
    assert!(
        text.starts_with("HTTP/1.1 101") && text.contains("X-Checked: yes\r\n"),
        "{text}"
    );
    let head_end = text.find("\r\n\r\n").unwrap() + 4;
    assert_eq!(
        frames(&out[head_end..]),
        [(OpCode::Pong, b"early".to_vec())]
    );
    assert_eq!(log.take(), [format!("open {} /", c.slot)]);
    // A second answer is refused: the upgrade is done.
    handle.reject_upgrade(id, 401).unwrap();
    h.tick();
    assert!(h.holds(&c));
}

#[test]
fn a_deferred_upgrade_never_answered_ends_at_the_handshake_deadline() {
    let log = Log::default();
    let l = log.clone();
    let mut h = Harness::new(config(), move || Box::new(Deferring(l.clone())));
    let mut c = h.connect();
    c.write(super::UPGRADE);
    h.pump(&c);
    h.at(1_999);
    assert!(h.holds(&c));
    h.at(2_000);
    assert!(!h.holds(&c));
    assert!(c.read_all().is_empty(), "no HTTP answer was ever written");
    assert_eq!(closed(&h, Why::HandshakeTimeout), 1);
    assert_eq!(log.take().len(), 1, "asked once, never opened");
}

#[test]
fn a_deferred_upgrade_is_refused_with_the_apps_status() {
    let mut h = Harness::new(config(), || Box::new(Deferring(Log::default())));
    let mut c: Client = h.connect();
    let id = h.id(&c);
    c.write(super::UPGRADE);
    h.pump(&c);
    h.shard.core.handle.reject_upgrade(id, 403).unwrap();
    h.tick();
    let out = String::from_utf8(c.read_all()).unwrap();
    assert!(out.starts_with("HTTP/1.1 403"), "{out}");
    assert!(!h.holds(&c));
    assert_eq!(closed(&h, Why::HandshakeFailed), 1);
}

#[test]
fn a_connection_past_the_shard_limit_gets_503_and_is_counted() {
    let mut h = Harness::new(
        ServerConfig {
            max_connections_per_shard: 1,
            ..config()
        },
        || Box::new(Recorder(Log::default())),
    );
    let _first = h.connect();
    let mut refused = h.try_connect().err().expect("refused");
    let mut answer = String::new();
    use std::io::Read;
    refused.read_to_string(&mut answer).unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 503 Service Unavailable\r\n"),
        "{answer}"
    );
    assert_eq!(h.stat(|s: &ShardStats| &s.refused), 1);
    assert_eq!(
        h.stat(|s: &ShardStats| &s.connections),
        1,
        "no state kept for it"
    );
}

#[test]
fn past_the_handshake_rate_connections_get_503_until_the_bucket_refills() {
    let mut h = Harness::new(
        ServerConfig {
            max_handshakes_per_sec: 3,
            ..config()
        },
        || Box::new(Recorder(Log::default())),
    );
    h.at(1_000);
    let _kept: Vec<Client> = (0..3).map(|_| h.connect()).collect();
    let mut refused = h.try_connect().err().expect("refused");
    let mut answer = String::new();
    use std::io::Read;
    refused.read_to_string(&mut answer).unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 503 Service Unavailable\r\n"),
        "{answer}"
    );
    assert!(answer.contains("Retry-After: 1\r\n"), "{answer}");
    assert_eq!(h.stat(|s: &ShardStats| &s.refused_global_rate), 1);
    assert_eq!(h.stat(|s: &ShardStats| &s.connections), 3, "no state kept");
    // A third of a second later, one more token.
    h.at(1_333);
    assert!(h.try_connect().is_err());
    h.at(1_334);
    let _fourth = h.connect();
    assert!(h.try_connect().is_err());
    assert_eq!(h.stat(|s: &ShardStats| &s.refused_global_rate), 3);
}

/// A client data frame of any size, masked with a zero key.
fn client_fragment(fin: bool, op: OpCode, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![if fin { 0x80 } else { 0 } | op as u8];
    match payload.len() {
        n if n < 126 => f.push(0x80 | n as u8),
        n if n < 65_536 => {
            f.push(0x80 | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(0x80 | 127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    f.extend_from_slice(&[0, 0, 0, 0]);
    f.extend_from_slice(payload);
    f
}

#[test]
fn unfinished_messages_past_the_process_budget_close_with_1013_and_spare_the_others() {
    let log = Log::default();
    let l = log.clone();
    let mut h = Harness::new(
        ServerConfig {
            max_reassembly_bytes: 100_000,
            ..config()
        },
        move || Box::new(Recorder(l.clone())),
    );
    let held = |h: &Harness| h.stat(|s: &ShardStats| &s.partial_input_bytes);
    let mut clients: Vec<Client> = (0..4).map(|_| h.open().0).collect();
    // Three first fragments of 30,000 bytes fit in 100,000; the fourth does not.
    for c in &mut clients {
        c.write(&client_fragment(false, OpCode::Binary, &[1u8; 30_000]));
        h.pump(c);
    }
    h.tick();
    assert_eq!(held(&h), 90_000);
    let last = frames(&clients[3].read_all());
    let (op, payload) = last.last().expect("a close frame");
    assert_eq!(*op, OpCode::Close);
    assert_eq!(u16::from_be_bytes([payload[0], payload[1]]), 1013);
    assert!(!h.holds(&clients[3]));
    assert_eq!(closed(&h, Why::Overloaded), 1);
    assert_eq!(log.take(), ["close Overloaded 1013"]);
    // The others keep their messages: the first one finishes and gets it echoed whole.
    clients[0].write(&client_fragment(true, OpCode::Continuation, &[2u8; 30_000]));
    h.pump(&clients[0]);
    h.tick();
    let echoed = frames(&clients[0].read_all());
    assert_eq!(echoed.len(), 1);
    assert_eq!(echoed[0].1.len(), 60_000);
    assert_eq!(held(&h), 60_000, "a finished message gives its bytes back");
    // With room again, a new unfinished message is taken.
    clients[0].write(&client_fragment(false, OpCode::Text, b"abc"));
    h.pump(&clients[0]);
    assert!(held(&h) > 60_000);
    // Closing connections gives back what they held.
    for c in &mut clients[..3] {
        c.write(&client_frame(OpCode::Close, &1000u16.to_be_bytes()));
        h.pump(c);
    }
    h.tick();
    assert_eq!(held(&h), 0);
    assert_eq!(h.shard.core.handle.shared.partial_input.used(), 0);
}

/// Echoes, and takes messages of at most 1,000 bytes.
struct Small;

impl App for Small {
    fn max_message_size(&self) -> Option<usize> {
        Some(1_000)
    }
    fn on_message(&mut self, ctx: &mut Ctx<'_>, id: ConnId, message: Message<'_>) {
        let _ = ctx.send(id, &message);
    }
}

#[test]
fn an_apps_own_message_limit_closes_with_1009_past_it() {
    let mut h = Harness::new(config(), || Box::new(Small));
    let (mut c, _) = h.open();
    c.write(&client_fragment(true, OpCode::Binary, &[5u8; 1_000]));
    h.pump(&c);
    h.tick();
    assert_eq!(frames(&c.read_all()), [(OpCode::Binary, vec![5u8; 1_000])]);
    // Fragments adding up past it, each well under it.
    c.write(&client_fragment(false, OpCode::Binary, &[6u8; 600]));
    c.write(&client_fragment(true, OpCode::Continuation, &[6u8; 600]));
    h.pump(&c);
    h.tick();
    let out = frames(&c.read_all());
    let (op, payload) = out.last().expect("a close frame");
    assert_eq!(*op, OpCode::Close);
    assert_eq!(u16::from_be_bytes([payload[0], payload[1]]), 1009);
    // A frame announcing more is refused from its header, before its payload arrives.
    let (mut d, _) = h.open();
    let mut head = vec![0x82, 0x80 | 126];
    head.extend_from_slice(&2_000u16.to_be_bytes());
    head.extend_from_slice(&[0, 0, 0, 0]);
    d.write(&head);
    h.pump(&d);
    h.tick();
    let out = frames(&d.read_all());
    let (op, payload) = out.last().expect("a close frame");
    assert_eq!(*op, OpCode::Close);
    assert_eq!(u16::from_be_bytes([payload[0], payload[1]]), 1009);
}

#[test]
fn a_huge_announced_frame_reserves_memory_only_as_its_bytes_arrive() {
    let (mut h, _) = recorder();
    let (mut c, _) = h.open();
    // A masked binary frame announcing 16 MiB - 1, then 10 bytes of it.
    let len: u64 = (16 << 20) - 1;
    let mut head = vec![0x82, 0xFF];
    head.extend_from_slice(&len.to_be_bytes());
    head.extend_from_slice(&[0, 0, 0, 0]);
    head.extend_from_slice(&[7u8; 10]);
    c.write(&head);
    h.pump(&c);
    let slot = c.slot;
    let capacity = |h: &Harness| h.shard.core.io.conns[slot].rbuf.capacity();
    assert!(h.holds(&c));
    assert!(
        capacity(&h) <= 128 << 10,
        "reserved {} bytes for 24 received",
        capacity(&h)
    );
    // As bytes come, the buffer follows them, never far ahead.
    let mut sent = head.len();
    for _ in 0..20 {
        let chunk = vec![7u8; 100_000];
        c.write(&chunk);
        sent += chunk.len();
        h.pump(&c);
        let cap = capacity(&h);
        assert!(
            cap <= 2 * sent + (64 << 10),
            "{cap} reserved for {sent} received"
        );
    }
    assert!(h.holds(&c));
}

#[test]
fn a_full_mailbox_drops_data_mail_and_counts_it_but_never_control_mail() {
    let mut h = Harness::new(
        ServerConfig {
            mailbox_limit: 10,
            ..config()
        },
        || Box::new(Recorder(Log::default())),
    );
    let (mut c, id) = h.open();
    let handle = h.shard.core.handle.clone();
    for i in 0..100 {
        let _ = handle.send_text(id, &format!("m{i}"));
    }
    // A close is control mail: it goes through past the limit.
    handle
        .close(id, crate::proto::CloseCode(4000), "bye")
        .unwrap();
    h.tick();
    let got = frames(&c.read_all());
    let texts: Vec<_> = got.iter().filter(|(op, _)| *op == OpCode::Text).collect();
    assert_eq!(texts.len(), 10, "the first ten, then dropped");
    assert_eq!(texts[9].1, b"m9");
    assert_eq!(got.last().unwrap().0, OpCode::Close);
    assert_eq!(h.stat(|s: &ShardStats| &s.mail_dropped), 90);
}

#[test]
fn mail_is_read_with_a_budget_per_iteration() {
    let (mut h, _) = recorder();
    let (mut c, id) = h.open();
    let handle = h.shard.core.handle.clone();
    for i in 0..5_000 {
        handle.send_text(id, &format!("{i}")).unwrap();
    }
    h.tick();
    assert_eq!(frames(&c.read_all()).len(), 4096, "one iteration's budget");
    assert!(
        h.shard
            .core
            .me()
            .pending
            .load(std::sync::atomic::Ordering::Acquire),
        "woke itself"
    );
    h.tick();
    assert_eq!(
        frames(&c.read_all()).len(),
        5_000 - 4096,
        "the rest next iteration"
    );
}

#[test]
fn a_write_delay_gathers_deliveries_and_wakes_the_loop_for_them() {
    let mut h = Harness::new(
        ServerConfig {
            write_delay_ms: 50,
            ..config()
        },
        || Box::new(Recorder(Log::default())),
    );
    let (mut c, id) = h.open();
    let handle = h.shard.core.handle.clone();
    let start = h.shard.core.now;
    // Three deliveries 10 ms apart: none written before the first has waited 50 ms.
    for i in 0..3u8 {
        let _ = handle.send(id, &SharedFrame::binary(&[i]));
        h.at(start + 10 * u64::from(i));
        assert!(c.read_all().is_empty(), "written before the delay");
    }
    // The loop sleeps no longer than until they are due.
    assert_eq!(h.shard.core.io.flush_wait(start + 20), Some(30));
    h.at(start + 50);
    assert_eq!(
        frames(&c.read_all()),
        [
            (OpCode::Binary, vec![0]),
            (OpCode::Binary, vec![1]),
            (OpCode::Binary, vec![2])
        ]
    );
    assert_eq!(h.shard.core.io.flush_wait(start + 50), None, "nothing left");
    // A reply to the connection's own input does not wait.
    c.write(&client_frame(OpCode::Text, b"echo"));
    h.pump(&c);
    assert_eq!(frames(&c.read_all()), [(OpCode::Text, b"echo".to_vec())]);
}
