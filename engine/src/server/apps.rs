//! Built-in applications: `/echo` and `/pubsub`.
//!
//! ## The `/pubsub` protocol
//!
//! Text commands, one per message (binary messages are parsed the same way, and a binary `pub`
//! is relayed to subscribers as a binary message):
//!
//! | client sends              | effect                                                     |
//! |---------------------------|------------------------------------------------------------|
//! | `sub <topic>`             | subscribe; answer `ok sub <topic>`                          |
//! | `unsub <topic>`           | unsubscribe; answer `ok unsub <topic>`                      |
//! | `pub <topic> <payload>`   | every subscriber, on every shard, gets `msg <topic> <payload>` |
//!
//! Topics are 1-128 bytes without spaces. A malformed command is answered `err <reason>`. The
//! query string may subscribe at once: `/pubsub?topic=a&topic=b`. The published frame is
//! encoded once and shared by every recipient.
//!
//! With a broker (several processes), `ok sub <topic>` comes once the subscription is live in
//! every process: at once when the process already had the topic, else when the broker has
//! confirmed it upstream. A subscription from the query string is not confirmed: a client that
//! must know when it is live everywhere subscribes with `sub`.

use super::{App, ConnId, Ctx, SendError, SharedFrame, Subscribed};
use crate::proto::Message;
use crate::proto::handshake::Request;

/// Echoes every message back to its sender.
#[derive(Debug, Default)]
pub struct Echo;

impl App for Echo {
    fn on_message(&mut self, ctx: &mut Ctx<'_>, id: ConnId, message: Message<'_>) {
        let _ = ctx.send(id, &message);
    }
}

/// The topic broker of `/pubsub`.
#[derive(Debug, Default)]
pub struct PubSub;

/// Longest topic name.
pub const MAX_TOPIC: usize = 128;

fn valid_topic(t: &[u8]) -> bool {
    !t.is_empty() && t.len() <= MAX_TOPIC && !t.contains(&b' ') && std::str::from_utf8(t).is_ok()
}

/// A connection's `sub` commands waiting for the broker's confirmation (its state; only while
/// one waits).
#[derive(Debug, Default)]
struct Waiting(Vec<String>);

/// The largest `/pubsub` message: 64 KiB, as Centrifugo's default (uWebSockets' is 16 KiB).
pub const PUBSUB_MAX_MESSAGE: usize = 64 << 10;

impl App for PubSub {
    fn max_message_size(&self) -> Option<usize> {
        Some(PUBSUB_MAX_MESSAGE)
    }

    fn on_subscribed(&mut self, ctx: &mut Ctx<'_>, id: ConnId, topic: &str) {
        let Some(waiting) = ctx.state::<Waiting>(id) else {
            return;
        };
        let Some(i) = waiting.0.iter().position(|t| t == topic) else {
            return;
        };
        waiting.0.swap_remove(i);
        if waiting.0.is_empty() {
            let _ = ctx.take_state::<Waiting>(id);
        }
        let _ = ctx.send_text(id, &format!("ok sub {topic}"));
    }

    fn on_open(&mut self, ctx: &mut Ctx<'_>, id: ConnId, request: &Request<'_>) {
        for pair in request.query().unwrap_or("").split('&') {
            if let Some(topic) = pair.strip_prefix("topic=") {
                if valid_topic(topic.as_bytes()) {
                    let _ = ctx.subscribe(id, topic);
                }
            }
        }
    }

    fn on_message(&mut self, ctx: &mut Ctx<'_>, id: ConnId, message: Message<'_>) {
        let bytes = message.as_bytes();
        let (command, rest) = match bytes.iter().position(|&b| b == b' ') {
            Some(i) => (&bytes[..i], &bytes[i + 1..]),
            None => (bytes, &[][..]),
        };
        match command {
            b"pub" => {
                let (topic, payload) = match rest.iter().position(|&b| b == b' ') {
                    Some(i) => (&rest[..i], &rest[i + 1..]),
                    None => (rest, &[][..]),
                };
                if !valid_topic(topic) {
                    let _ = ctx.send_text(id, "err invalid topic");
                    return;
                }
                // A text message was checked to be UTF-8 by the protocol core; a binary one may
                // not be, so it is relayed as binary (as text, browsers would close with 1007
                // and one client could empty a topic).
                let parts: [&[u8]; 4] = [b"msg ", topic, b" ", payload];
                let frame = if message.is_text() {
                    SharedFrame::text_parts(&parts)
                } else {
                    SharedFrame::binary_parts(&parts)
                };
                let topic = std::str::from_utf8(topic).unwrap_or_default();
                ctx.publish(topic, &frame);
            }
            b"sub" | b"unsub" => {
                if !valid_topic(rest) {
                    let _ = ctx.send_text(id, "err invalid topic");
                    return;
                }
                let topic = std::str::from_utf8(rest).unwrap_or_default();
                if command == b"sub" {
                    // Answered once the subscription is live everywhere: at once, or when the
                    // broker confirms it (on_subscribed).
                    match ctx.subscribe(id, topic) {
                        Ok(Subscribed::Live | Subscribed::Already) => {
                            let _ = ctx.send_text(id, &format!("ok sub {topic}"));
                        }
                        Ok(Subscribed::Pending) => {
                            if ctx.state::<Waiting>(id).is_none() {
                                let _ = ctx.set_state(id, Waiting::default());
                            }
                            if let Some(w) = ctx.state::<Waiting>(id) {
                                w.0.push(topic.to_owned());
                            }
                        }
                        Err(SendError::Limit) => {
                            let _ = ctx.send_text(id, "err too many subscriptions");
                        }
                        Err(_) => {}
                    }
                } else if ctx.unsubscribe(id, topic).is_ok() {
                    let _ = ctx.send_text(id, &format!("ok unsub {topic}"));
                }
            }
            _ => {
                let _ = ctx.send_text(id, "err unknown command (sub, unsub, pub)");
            }
        }
    }
}
