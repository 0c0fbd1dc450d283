//! A shard's state apart from its I/O loop and apps: connections and the write path, topics,
//! timers, the other shards' mailboxes. Everything here runs on the shard's thread; nothing is
//! locked.

use std::collections::HashMap;
use std::sync::Arc;

use super::app::{SendError, SharedFrame, Why};
use super::app_timer::AppTimers;
use super::config::ServerConfig;
use super::conn::{Answer, NO_TIMER, Phase};
use super::handle::Handle;
use super::id::ConnId;
use super::mailbox::Peer;
use super::metrics::ShardStats;
use super::timer::TimerWheel;
use super::topics::{Sub, Topics, fix_membership};
use super::udp::Udp;
use super::upgrade::Upgrade;
use super::write::{Io, Out};
use crate::proto::CloseCode;

/// Everything a shard owns except its poll, apps and read buffer.
pub struct Core {
    /// This shard's index.
    pub shard: u16,
    /// Connections and the write path.
    pub io: Io,
    /// Topic tables.
    pub topics: Topics,
    /// Connection timers.
    pub timers: TimerWheel,
    /// Timers applications set.
    pub app_timers: AppTimers,
    /// UDP sockets applications bound.
    pub udp: Udp,
    /// Connections whose deferred upgrade was answered this iteration: their requests are
    /// parsed again and answered by the shard.
    pub answered: Vec<usize>,
    /// Connections whose subscription waits for the broker's confirmation, by topic.
    pub pending: HashMap<Arc<str>, Vec<ConnId>>,
    /// The server from any thread: every shard's mailbox, this one's included, the topic
    /// registry and the broker.
    pub handle: Handle,
    /// Admission of new connections (per-source and process-wide limits).
    pub gate: super::admission::Gate,
    /// Settings.
    pub config: Arc<ServerConfig>,
    /// Protocol settings shared by every connection.
    pub proto: Arc<crate::proto::Config>,
    /// The protocol settings of each application's connections: `proto` with the application's
    /// own message limit ([`App::max_message_size`](super::App::max_message_size)).
    pub app_protos: Vec<Arc<crate::proto::Config>>,
    /// The shard clock, ms.
    pub now: u64,
    /// The application running the current callback.
    pub current_app: u8,
    /// Reused output buffer for control frames.
    pub scratch: Vec<u8>,
}

impl Core {
    /// Files the connection's next deadline in the wheel if it is earlier than its live entry.
    pub fn arm(&mut self, slot: usize) {
        let Some(conn) = self.io.conns.get_mut(slot) else {
            return;
        };
        let mut deadline = match &conn.phase {
            Phase::Handshake { deadline, .. } => Some(*deadline),
            Phase::Open(c) => c.poll_timeout(),
        };
        // A connection that is only flushing its last bytes gets the close timeout to do it.
        if conn.ending.is_some() {
            let flush_by = self.now + self.config.close_timeout_ms;
            deadline = Some(deadline.map_or(flush_by, |d| d.min(flush_by)));
        }
        if let Some(t) = deadline {
            let tick = self.timers.tick_of(t);
            if conn.timer_tick == NO_TIMER || super::timer::earlier(tick, conn.timer_tick) {
                conn.timer_tick = self.timers.schedule(slot as u32, t);
            }
        }
    }

    /// Delivers a shared frame to this shard's subscribers of `topic`; returns how many.
    pub fn publish_local(&mut self, topic: &str, frame: &SharedFrame) -> usize {
        let mut delivered = 0;
        for &Sub { slot, generation } in self.topics.subscribers(topic) {
            let slot = slot as usize;
            let ok = self.io.conns.get_mut(slot).and_then(|c| {
                let live = c.generation == generation && !c.dead;
                c.proto()
                    .filter(|p| live && p.can_send())
                    .map(|p| p.deflate())
            });
            if let Some(deflate) = ok {
                self.io.output(slot, Out::Shared(frame.bytes_for(deflate)));
                delivered += 1;
            }
        }
        ShardStats::add(&self.io.stats.messages_out, delivered as u64);
        delivered
    }

    /// Sends a shared frame to one connection of this shard.
    pub fn send_frame_local(&mut self, id: ConnId, frame: &SharedFrame) -> Result<(), SendError> {
        let slot = self.io.lookup(self.shard, id).ok_or(SendError::Gone)?;
        let conn = &mut self.io.conns[slot];
        let Some(deflate) = conn.proto().filter(|p| p.can_send()).map(|p| p.deflate()) else {
            return Err(SendError::Closing);
        };
        self.io.output(slot, Out::Shared(frame.bytes_for(deflate)));
        ShardStats::add(&self.io.stats.messages_out, 1);
        Ok(())
    }

    /// Starts the close handshake on a connection of this shard.
    pub fn close_local(
        &mut self,
        id: ConnId,
        code: CloseCode,
        reason: &str,
    ) -> Result<(), SendError> {
        let slot = self.io.lookup(self.shard, id).ok_or(SendError::Gone)?;
        let now = self.now;
        let conn = &mut self.io.conns[slot];
        let Some(proto) = conn.proto() else {
            self.io.kill(slot, Why::LocalClosed, code);
            return Ok(());
        };
        let mut out = std::mem::take(&mut self.scratch);
        out.clear();
        let result = proto.close(code, reason, &mut out, now);
        self.io.output(slot, Out::Slices(&[&out]));
        self.scratch = out;
        match result {
            Ok(()) => {
                self.arm(slot);
                Ok(())
            }
            Err(crate::proto::Error::Usage(_)) => Err(SendError::Closing),
            Err(_) => Err(SendError::Gone),
        }
    }

    /// Records the application's answer to a deferred upgrade; the shard applies it at the end
    /// of the iteration ([`Core::answered`]).
    pub fn answer(&mut self, id: ConnId, upgrade: Upgrade) -> Result<(), SendError> {
        if upgrade == Upgrade::Defer {
            return Ok(());
        }
        let slot = self.io.lookup(self.shard, id).ok_or(SendError::Gone)?;
        match &mut self.io.conns[slot].phase {
            Phase::Handshake { answer, .. } if matches!(answer, Answer::Waiting) => {
                *answer = Answer::Given(Box::new(upgrade));
                self.answered.push(slot);
                Ok(())
            }
            _ => Err(SendError::Closing),
        }
    }

    /// This shard's mailbox entry.
    pub fn me(&self) -> &Peer {
        &self.handle.shared.peers[usize::from(self.shard)]
    }

    /// Tells the process-wide registry (and through it the broker) which topics this shard
    /// gained or lost.
    pub fn sync_topics(&mut self) {
        let shared = &self.handle.shared;
        for (topic, gained) in self.topics.take_changes() {
            let broker = shared.broker.as_deref();
            if gained {
                shared.registry.add(&topic, self.shard, |t| {
                    if let Some(b) = broker {
                        b.subscribed(t);
                    }
                });
            } else {
                shared.registry.remove(&topic, self.shard, |t| {
                    if let Some(b) = broker {
                        b.unsubscribed(t);
                    }
                });
            }
        }
    }

    /// Whether the connection in `slot` is subscribed to `topic`.
    pub fn is_subscribed(&self, slot: usize, topic: &str) -> bool {
        self.io
            .conns
            .get(slot)
            .is_some_and(|c| self.topics.contains(topic, &c.topics))
    }

    /// Removes a dead connection's subscriptions.
    pub fn unsubscribe_all(&mut self, slot: usize) {
        let Some(conn) = self.io.conns.get_mut(slot) else {
            return;
        };
        let mut membership = std::mem::take(&mut conn.topics);
        let conns = &mut self.io.conns;
        self.topics.remove_all(&mut membership, |moved| {
            if let Some(c) = conns.get_mut(moved.slot as usize) {
                fix_membership(&mut c.topics, moved);
            }
        });
        self.sync_topics();
    }
}
