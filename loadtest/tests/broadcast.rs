//! `broadcast`: every message delivered once and in order to every subscriber; a server that
//! drops, duplicates or reorders one message on purpose is caught, exactly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use c10m_engine::proto::Message;
use c10m_engine::proto::handshake::Request;
use c10m_engine::server::{App, ConnId, Ctx, SharedFrame};
use c10m_loadtest::cli::{Options, ScenarioKind};
use c10m_loadtest::counters::Gap;
use c10m_loadtest::payload::{Published, parse_payload};
use c10m_loadtest::report::Report;

/// What the tampering relay does to publisher 0's message number `SEQ`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mischief {
    Drop,
    Duplicate,
    /// Held back and published right after the next one.
    Delay,
}

const SEQ: u64 = 5;

/// `/pubsub` with one deliberate fault: relays `pub T P` as `msg T P` to the topic's
/// subscribers (subscribed with `?topic=`), except for publisher 0's message `SEQ`.
struct Tamper {
    mischief: Mischief,
    held: Option<SharedFrame>,
}

impl App for Tamper {
    fn on_open(&mut self, ctx: &mut Ctx<'_>, id: ConnId, request: &Request<'_>) {
        for pair in request.query().unwrap_or("").split('&') {
            if let Some(topic) = pair.strip_prefix("topic=") {
                let _ = ctx.subscribe(id, topic);
            }
        }
    }

    fn on_message(&mut self, ctx: &mut Ctx<'_>, _id: ConnId, message: Message<'_>) {
        let text = std::str::from_utf8(message.as_bytes()).unwrap();
        let rest = text.strip_prefix("pub ").unwrap();
        let (topic, payload) = rest.split_once(' ').unwrap();
        let frame = SharedFrame::text(&format!("msg {topic} {payload}"));
        let target = matches!(
            parse_payload(payload.as_bytes()),
            Some(Published::Data {
                publisher: 0,
                seq: SEQ,
                ..
            })
        );
        let after_target = matches!(
            parse_payload(payload.as_bytes()),
            Some(Published::Data { publisher: 0, seq, .. }) if seq == SEQ + 1
        );
        match (target, self.mischief) {
            (true, Mischief::Drop) => {}
            (true, Mischief::Duplicate) => {
                ctx.publish(topic, &frame);
                ctx.publish(topic, &frame);
            }
            (true, Mischief::Delay) => self.held = Some(frame),
            (false, _) => {
                ctx.publish(topic, &frame);
                if after_target {
                    if let Some(held) = self.held.take() {
                        ctx.publish(topic, &held);
                    }
                }
            }
        }
    }
}

/// Every 10 ms for 1 s: 100 messages per publisher, enough for a missing number to leave the
/// subscribers' 64-number window before the end.
const PER_PUBLISHER: u64 = 100;

fn broadcast_options(addr: std::net::SocketAddr, subscribers: u64, publishers: u32) -> Options {
    let mut o = support::options(ScenarioKind::Broadcast, addr, subscribers);
    o.publishers = publishers;
    o.publish_rate = PER_PUBLISHER as f64;
    o.size = 48;
    o
}

fn assert_all_open(r: &Report, subscribers: u64, publishers: u64) {
    support::assert_clean_connections(r, subscribers + publishers);
    let b = r.broadcast.as_ref().unwrap();
    assert_eq!((b.subscribers, b.publishers), (subscribers, publishers));
    assert_eq!(b.published, PER_PUBLISHER * publishers, "{b:#?}");
    assert_eq!(b.expected_deliveries, b.published * subscribers);
    assert_eq!(b.subscribers_incomplete, 0, "every end marker arrived");
}

#[test]
fn every_message_reaches_every_subscriber_once_and_in_order() {
    let server = support::server();
    let r = support::run(&broadcast_options(server.local_addr(), 300, 3));
    assert_all_open(&r, 300, 3);
    let b = r.broadcast.as_ref().unwrap();
    assert_eq!(b.deliveries, 3 * PER_PUBLISHER * 300);
    assert_eq!((b.missing, b.missing_seen_by_subscribers), (0, 0));
    assert_eq!((b.duplicates, b.reordered, b.stale), (0, 0, 0));
    assert!(b.gaps.is_empty());
    let m = r.messages.as_ref().unwrap();
    assert_eq!(m.latency.count, b.deliveries);
    assert!(m.corrected_for_coordinated_omission);
    assert!(r.ok, "{:?}", r.failures);
    support::stop(server);
}

fn tampered(mischief: Mischief, subscribers: u64) -> Report {
    let factory: fn(u16) -> Box<dyn App> = match mischief {
        Mischief::Drop => |_| {
            Box::new(Tamper {
                mischief: Mischief::Drop,
                held: None,
            })
        },
        Mischief::Duplicate => |_| {
            Box::new(Tamper {
                mischief: Mischief::Duplicate,
                held: None,
            })
        },
        Mischief::Delay => |_| {
            Box::new(Tamper {
                mischief: Mischief::Delay,
                held: None,
            })
        },
    };
    let server = support::server_with(support::config(), Some(factory));
    let mut o = broadcast_options(server.local_addr(), subscribers, 2);
    o.path = "/tamper".into();
    let r = support::run(&o);
    support::stop(server);
    r
}

#[test]
fn a_dropped_message_is_reported_as_exactly_that_gap() {
    let r = tampered(Mischief::Drop, 120);
    assert_all_open(&r, 120, 2);
    let b = r.broadcast.as_ref().unwrap();
    assert_eq!(b.deliveries, 2 * PER_PUBLISHER * 120 - 120);
    assert_eq!((b.missing, b.missing_seen_by_subscribers), (120, 120));
    assert_eq!(
        (b.subscribers_with_missing, b.max_missing_per_subscriber),
        (120, 1)
    );
    assert_eq!((b.duplicates, b.reordered, b.stale), (0, 0, 0));
    assert_eq!(
        b.gaps,
        [Gap {
            publisher: 0,
            first_seq: SEQ,
            len: 1,
            subscribers: 120
        }]
    );
    assert!(!r.ok);
    assert_eq!(
        r.failures,
        ["broadcast: 120 missing, 0 duplicated, 0 reordered, 0 stale"]
    );
}

#[test]
fn a_duplicated_message_is_reported_per_subscriber() {
    let r = tampered(Mischief::Duplicate, 80);
    assert_all_open(&r, 80, 2);
    let b = r.broadcast.as_ref().unwrap();
    assert_eq!((b.deliveries, b.missing), (2 * PER_PUBLISHER * 80, 0));
    assert_eq!((b.duplicates, b.subscribers_with_duplicates), (80, 80));
    assert_eq!((b.reordered, b.stale), (0, 0));
    assert!(b.gaps.is_empty());
    assert!(!r.ok);
}

#[test]
fn a_reordered_message_is_reported_and_not_counted_missing() {
    let r = tampered(Mischief::Delay, 80);
    assert_all_open(&r, 80, 2);
    let b = r.broadcast.as_ref().unwrap();
    assert_eq!((b.deliveries, b.missing), (2 * PER_PUBLISHER * 80, 0));
    assert_eq!((b.reordered, b.subscribers_with_reordering), (80, 80));
    assert_eq!(b.duplicates, 0);
    assert!(
        b.gaps.is_empty(),
        "a late arrival fills its gap: {:?}",
        b.gaps
    );
    assert!(!r.ok);
}
