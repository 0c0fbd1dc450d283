//! Built-in applications: `/echo` and `/pubsub`.
//!
//! ## The `/pubsub` protocol
//!
//! Text commands, one per message (binary messages are parsed the same way):
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

use super::{App, ConnId, Ctx, SharedFrame};
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

impl App for PubSub {
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
                let frame = SharedFrame::text_parts(&[b"msg ", topic, b" ", payload]);
                let topic = std::str::from_utf8(topic).unwrap_or_default();
                ctx.publish(topic, &frame);
            }
            b"sub" | b"unsub" => {
                if !valid_topic(rest) {
                    let _ = ctx.send_text(id, "err invalid topic");
                    return;
                }
                let topic = std::str::from_utf8(rest).unwrap_or_default();
                let ok = if command == b"sub" {
                    ctx.subscribe(id, topic)
                } else {
                    ctx.unsubscribe(id, topic)
                };
                if ok.is_ok() {
                    let verb = if command == b"sub" { "sub" } else { "unsub" };
                    let _ = ctx.send_text(id, &format!("ok {verb} {topic}"));
                }
            }
            _ => {
                let _ = ctx.send_text(id, "err unknown command (sub, unsub, pub)");
            }
        }
    }
}
