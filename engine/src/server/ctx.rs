//! [`Ctx`]: what an application callback can do on its shard: send, close, topics, posts.

use std::any::Any;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use super::app::{SendError, SharedFrame};
use super::app_timer::{Due, TimerId};
use super::broker::Subscribed;
use super::core::Core;
use super::handle::{AppId, Handle};
use super::id::ConnId;
use super::mailbox::Mail;
use super::metrics::ShardStats;
use super::topics::{Sub, fix_membership};
use super::udp::{UdpError, UdpId, UdpStats};
use super::upgrade::{Accept, Upgrade};
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
        self.core.handle.shards()
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
        if proto.deflate().is_some() {
            // Compressed (when worth it) into a buffer of its own.
            let mut frame = Vec::new();
            proto
                .send_frame(op, true, payload, &mut frame)
                .map_err(|_| SendError::Closing)?;
            core.io.output(slot, Out::Slices(&[&frame]));
            ShardStats::add(&core.io.stats.messages_out, 1);
            return Ok(());
        }
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

    /// Subscribes a connection of this shard to `topic`. With a broker, the first subscription
    /// to a topic in the process is [`Subscribed::Pending`] until the broker confirms it
    /// upstream ([`App::on_subscribed`](super::App::on_subscribed) then); later ones are
    /// [`Subscribed::Live`] at once, as every subscription is without a broker.
    pub fn subscribe(&mut self, id: ConnId, topic: &str) -> Result<Subscribed, SendError> {
        let core = &mut *self.core;
        let slot = core.io.lookup(core.shard, id).ok_or(SendError::Gone)?;
        let conn = &mut core.io.conns[slot];
        let sub = Sub {
            slot: slot as u32,
            generation: conn.generation,
        };
        let limits = (
            core.config.max_subscriptions_per_connection,
            core.config.max_topics_per_shard,
        );
        match core.topics.subscribe(topic, sub, &mut conn.topics, limits) {
            Ok(true) => {}
            Ok(false) => return Ok(Subscribed::Already),
            Err(_) => {
                ShardStats::add(&core.io.stats.subscriptions_refused, 1);
                return Err(SendError::Limit);
            }
        }
        core.sync_topics();
        if core.handle.shared.registry.is_live(topic) {
            return Ok(Subscribed::Live);
        }
        core.pending.entry(Arc::from(topic)).or_default().push(id);
        Ok(Subscribed::Pending)
    }

    /// Unsubscribes; `Ok(false)` if it was not subscribed.
    pub fn unsubscribe(&mut self, id: ConnId, topic: &str) -> Result<bool, SendError> {
        let core = &mut *self.core;
        let slot = core.io.lookup(core.shard, id).ok_or(SendError::Gone)?;
        let conns = &mut core.io.conns;
        let mut membership = std::mem::take(&mut conns[slot].topics);
        let result = core.topics.unsubscribe(topic, &mut membership);
        conns[slot].topics = membership;
        let unsubscribed = match result {
            None => false,
            Some(moved) => {
                if let Some(mv) = moved {
                    if let Some(c) = conns.get_mut(mv.slot as usize) {
                        fix_membership(&mut c.topics, mv);
                    }
                }
                true
            }
        };
        core.sync_topics();
        Ok(unsubscribed)
    }

    /// Publishes a frame to every subscriber of `topic` in the process (and, through a broker,
    /// in every process). Without a broker it is delivered here at once and posted to each
    /// other shard that has subscribers as one message; returns this shard's deliveries. With a
    /// broker it goes to the broker, which delivers it back (to this shard too) in the order it
    /// gives every process; returns 0.
    pub fn publish(&mut self, topic: &str, frame: &SharedFrame) -> usize {
        let core = &mut *self.core;
        if let Some(broker) = &core.handle.shared.broker {
            broker.publish(topic, frame);
            return 0;
        }
        let delivered = core.publish_local(topic, frame);
        if core.handle.shards() > 1 {
            let shards = core.handle.shared.registry.shards(topic);
            let mut name: Option<Arc<str>> = None;
            for shard in shards.iter().filter(|&s| s != core.shard) {
                let topic = name.get_or_insert_with(|| Arc::from(topic)).clone();
                let frame = frame.clone();
                core.handle.shared.peers[usize::from(shard)].send(Mail::Publish { topic, frame });
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
            .handle
            .shared
            .peers
            .get(usize::from(shard))
            .ok_or(SendError::Gone)?;
        peer.send(mail);
        Ok(())
    }

    /// Sends a shared frame to every open connection of this application on this shard (a
    /// heartbeat, a shard-wide notice); returns how many. Costs a pass over the shard's
    /// connections: for periodic work, not per message.
    pub fn send_all(&mut self, frame: &SharedFrame) -> usize {
        let core = &mut *self.core;
        let app = core.current_app;
        let targets: Vec<(usize, Option<crate::proto::deflate::Deflate>)> = core
            .io
            .conns
            .iter_mut()
            .filter_map(|(slot, c)| {
                let mine = c.app == app && !c.dead;
                let proto = c.proto().filter(|p| mine && p.can_send())?;
                Some((slot, proto.deflate()))
            })
            .collect();
        for &(slot, deflate) in &targets {
            core.io.output(slot, Out::Shared(frame.bytes_for(deflate)));
        }
        ShardStats::add(&core.io.stats.messages_out, targets.len() as u64);
        targets.len()
    }

    /// Open connections on this shard.
    pub fn connections(&self) -> usize {
        self.core.io.conns.len()
    }

    /// The server, for other threads: clone it into a broker, a runtime task, a test.
    pub fn handle(&self) -> Handle {
        self.core.handle.clone()
    }

    /// The application running this callback, for [`Handle::post`].
    pub fn app_id(&self) -> AppId {
        AppId(self.core.current_app)
    }

    /// Bytes queued for a connection of this shard that the socket has not taken yet (not
    /// counting a send the kernel is carrying out). An application that keeps this low (by
    /// skipping or coalescing updates) never reaches the slow-consumer close at the
    /// write-queue limit. `None` for a connection of another shard or one that is gone.
    pub fn buffered(&self, id: ConnId) -> Option<usize> {
        let slot = self.core.io.lookup(self.core.shard, id)?;
        Some(self.core.io.conns[slot].queued())
    }

    /// Keeps `state` for a connection of this shard, replacing any earlier state; it is
    /// dropped when the connection ends (after `on_close`, which can still read it).
    pub fn set_state<T: Any>(&mut self, id: ConnId, state: T) -> Result<(), SendError> {
        let slot = self
            .core
            .io
            .lookup(self.core.shard, id)
            .ok_or(SendError::Gone)?;
        self.core.io.conns[slot].state = Some(Box::new(Box::new(state)));
        Ok(())
    }

    /// The connection's state, if it has state of type `T`. Also valid in `on_close`.
    pub fn state<T: Any>(&mut self, id: ConnId) -> Option<&mut T> {
        let conn = self.conn_any(id)?;
        conn.state.as_mut()?.downcast_mut::<T>()
    }

    /// Takes the connection's state out, if it is of type `T`.
    pub fn take_state<T: Any>(&mut self, id: ConnId) -> Option<T> {
        let conn = self.conn_any(id)?;
        if !conn.state.as_ref()?.is::<T>() {
            return None;
        }
        let boxed = conn.state.take()?;
        (*boxed).downcast::<T>().ok().map(|b| *b)
    }

    /// The slot of `id` even while it is being reaped (so `on_close` can read its state).
    fn conn_any(&mut self, id: ConnId) -> Option<&mut super::conn::Conn> {
        if id.shard() != self.core.shard {
            return None;
        }
        let conn = self.core.io.conns.get_mut(id.slot() as usize)?;
        (conn.generation == id.generation()).then_some(conn)
    }

    /// Accepts an upgrade this app deferred; the shard answers it at the end of the current
    /// callback round. For a connection of another shard, the answer is mailed there.
    pub fn accept_upgrade(&mut self, id: ConnId, accept: Accept) -> Result<(), SendError> {
        self.answer(id, Upgrade::Accept(accept))
    }

    /// Refuses an upgrade this app deferred, with an HTTP status.
    pub fn reject_upgrade(&mut self, id: ConnId, status: u16) -> Result<(), SendError> {
        self.answer(id, Upgrade::Reject(status))
    }

    fn answer(&mut self, id: ConnId, upgrade: Upgrade) -> Result<(), SendError> {
        if id.shard() != self.core.shard {
            return self.post_mail(id.shard(), Mail::Answer { id, upgrade });
        }
        self.core.answer(id, upgrade)
    }

    /// Schedules [`App::on_timer`](super::App::on_timer) with `token` on this shard, `after_ms`
    /// from now (rounded to the shard's loop: it fires at the end of the first iteration past
    /// its deadline).
    pub fn set_timer(&mut self, after_ms: u64, token: u64) -> TimerId {
        let deadline = self.core.now.saturating_add(after_ms);
        let app = self.core.current_app;
        self.core.app_timers.set(deadline, Due { app, token })
    }

    /// Cancels a timer; false if it already fired or was cancelled.
    pub fn cancel_timer(&mut self, id: TimerId) -> bool {
        self.core.app_timers.cancel(id)
    }

    /// Binds a UDP socket on this shard for this app: its datagrams arrive at
    /// [`App::on_datagrams`](super::App::on_datagrams) on this shard.
    pub fn bind_udp(&mut self, addr: SocketAddr) -> io::Result<UdpId> {
        let app = self.core.current_app;
        self.core.udp.bind(addr, app)
    }

    /// A UDP socket's local address.
    pub fn udp_addr(&self, socket: UdpId) -> Option<SocketAddr> {
        self.core.udp.local_addr(socket)
    }

    /// Queues a datagram; the shard sends its datagrams in batches at the end of the
    /// iteration. A full socket buffer drops datagrams (counted), as UDP does.
    pub fn send_datagram(
        &mut self,
        socket: UdpId,
        to: SocketAddr,
        data: &[u8],
    ) -> Result<(), UdpError> {
        self.core.udp.send(socket, to, data)
    }

    /// Closes a UDP socket; datagrams still queued for it are dropped.
    pub fn close_udp(&mut self, socket: UdpId) -> bool {
        self.core.udp.close(socket)
    }

    /// This shard's UDP counters.
    pub fn udp_stats(&self) -> UdpStats {
        self.core.udp.stats
    }
}
