//! [`Ctx`]: what an application callback can do on its shard: send, close, topics, posts.

use std::any::Any;
use std::sync::Arc;

use super::app::{SendError, SharedFrame};
use super::core::Core;
use super::id::ConnId;
use super::mailbox::Mail;
use super::metrics::ShardStats;
use super::topics::{Sub, fix_membership};
use super::write::Out;
use crate::proto::{CloseCode, Message, OpCode};

/// What an application callback can do. Valid only during the callback.
pub struct Ctx<'a> {
    pub(crate) core: &'a mut Core,
}

impl std::fmt::Debug for Ctx<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ctx")
            .field("shard", &self.core.shard)
            .field("connections", &self.core.io.conns.len())
            .finish()
    }
}

impl Ctx<'_> {
    /// This shard's index.
    pub fn shard(&self) -> u16 {
        self.core.shard
    }

    /// How many shards the server runs.
    pub fn shards(&self) -> u16 {
        self.core.peers.len() as u16
    }

    /// The shard clock in milliseconds (monotonic, from server start).
    pub fn now_ms(&self) -> u64 {
        self.core.now
    }

    /// Sends a message. To a connection of another shard it is encoded once and posted there
    /// (delivery is then asynchronous and a stale id is dropped silently).
    pub fn send(&mut self, id: ConnId, message: &Message<'_>) -> Result<(), SendError> {
        let op = if message.is_text() {
            OpCode::Text
        } else {
            OpCode::Binary
        };
        self.send_op(id, op, message.as_bytes())
    }

    /// Sends a text message.
    pub fn send_text(&mut self, id: ConnId, text: &str) -> Result<(), SendError> {
        self.send_op(id, OpCode::Text, text.as_bytes())
    }

    /// Sends a binary message.
    pub fn send_binary(&mut self, id: ConnId, data: &[u8]) -> Result<(), SendError> {
        self.send_op(id, OpCode::Binary, data)
    }

    fn send_op(&mut self, id: ConnId, op: OpCode, payload: &[u8]) -> Result<(), SendError> {
        let core = &mut *self.core;
        if id.shard() != core.shard {
            let frame = if op == OpCode::Text {
                SharedFrame::text_parts(&[payload])
            } else {
                SharedFrame::binary(payload)
            };
            return self.post_mail(id.shard(), Mail::Send { id, frame });
        }
        let slot = core.io.lookup(core.shard, id).ok_or(SendError::Gone)?;
        let proto = core.io.conns[slot].proto().ok_or(SendError::Closing)?;
        let header = proto
            .data_header(op, true, payload.len())
            .map_err(|_| SendError::Closing)?;
        core.io.output(slot, Out::Slices(&[&header, payload]));
        ShardStats::add(&core.io.stats.messages_out, 1);
        Ok(())
    }

    /// Sends a frame encoded once with [`SharedFrame`]; it is queued by reference.
    pub fn send_frame(&mut self, id: ConnId, frame: &SharedFrame) -> Result<(), SendError> {
        if id.shard() != self.core.shard {
            return self.post_mail(
                id.shard(),
                Mail::Send {
                    id,
                    frame: frame.clone(),
                },
            );
        }
        self.core.send_frame_local(id, frame)
    }

    /// Starts the close handshake with `code` and `reason`.
    pub fn close(&mut self, id: ConnId, code: CloseCode, reason: &str) -> Result<(), SendError> {
        if id.shard() != self.core.shard {
            return self.post_mail(
                id.shard(),
                Mail::Close {
                    id,
                    code,
                    reason: reason.to_owned(),
                },
            );
        }
        self.core.close_local(id, code, reason)
    }

    /// Subscribes a connection of this shard to `topic`; `Ok(false)` if it already was.
    pub fn subscribe(&mut self, id: ConnId, topic: &str) -> Result<bool, SendError> {
        let core = &mut *self.core;
        let slot = core.io.lookup(core.shard, id).ok_or(SendError::Gone)?;
        let conn = &mut core.io.conns[slot];
        let sub = Sub {
            slot: slot as u32,
            generation: conn.generation,
        };
        Ok(core.topics.subscribe(topic, sub, &mut conn.topics))
    }

    /// Unsubscribes; `Ok(false)` if it was not subscribed.
    pub fn unsubscribe(&mut self, id: ConnId, topic: &str) -> Result<bool, SendError> {
        let core = &mut *self.core;
        let slot = core.io.lookup(core.shard, id).ok_or(SendError::Gone)?;
        let conns = &mut core.io.conns;
        let mut membership = std::mem::take(&mut conns[slot].topics);
        let result = core.topics.unsubscribe(topic, &mut membership);
        conns[slot].topics = membership;
        match result {
            None => Ok(false),
            Some(moved) => {
                if let Some(mv) = moved {
                    if let Some(c) = conns.get_mut(mv.slot as usize) {
                        fix_membership(&mut c.topics, mv);
                    }
                }
                Ok(true)
            }
        }
    }

    /// Publishes a frame to every subscriber of `topic` on every shard: delivered here at once,
    /// and posted to each other shard as one message. Returns this shard's deliveries.
    pub fn publish(&mut self, topic: &str, frame: &SharedFrame) -> usize {
        let core = &mut *self.core;
        let delivered = core.publish_local(topic, frame);
        if core.peers.len() > 1 {
            let name: Arc<str> = Arc::from(topic);
            for (i, peer) in core.peers.iter().enumerate() {
                if i != usize::from(core.shard) {
                    peer.send(Mail::Publish {
                        topic: name.clone(),
                        frame: frame.clone(),
                    });
                }
            }
        }
        delivered
    }

    /// Hands `payload` to this same application on shard `shard` (its `on_post`).
    pub fn post(&mut self, shard: u16, payload: Box<dyn Any + Send>) -> Result<(), SendError> {
        let app = self.core.current_app;
        self.post_mail(shard, Mail::Post { app, payload })
    }

    fn post_mail(&mut self, shard: u16, mail: Mail) -> Result<(), SendError> {
        let peer = self
            .core
            .peers
            .get(usize::from(shard))
            .ok_or(SendError::Gone)?;
        peer.send(mail);
        Ok(())
    }

    /// Open connections on this shard.
    pub fn connections(&self) -> usize {
        self.core.io.conns.len()
    }
}
