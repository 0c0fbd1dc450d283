//! A shard's state and the [`Ctx`] handed to applications: sending, closing, topics, and posts
//! to other shards. Everything here runs on the shard's thread; nothing is locked.

use std::any::Any;
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;

use bytes::Bytes;
use slab::Slab;

use super::app::{SendError, SharedFrame, Why};
use super::config::ServerConfig;
use super::conn::{Conn, NO_TIMER, Phase};
use super::id::ConnId;
use super::metrics::ShardStats;
use super::timer::TimerWheel;
use super::topics::{Sub, Topics, fix_membership};
use super::uring::sends::{Sent, UringIo};
use crate::proto::{CloseCode, Message, OpCode};

/// Messages between shards. A publish is one message per shard, whatever the subscriber count.
pub enum Mail {
    /// Deliver an encoded frame to this shard's subscribers of `topic`.
    Publish {
        /// Topic name.
        topic: Arc<str>,
        /// The frame, shared with every other shard.
        frame: SharedFrame,
    },
    /// Deliver a frame to one connection of this shard.
    Send {
        /// Recipient.
        id: ConnId,
        /// The frame.
        frame: SharedFrame,
    },
    /// Close one connection of this shard.
    Close {
        /// Which.
        id: ConnId,
        /// Close code.
        code: CloseCode,
        /// Reason text.
        reason: String,
    },
    /// Hand `payload` to application `app` on this shard.
    Post {
        /// Application index.
        app: u8,
        /// Anything.
        payload: Box<dyn Any + Send>,
    },
    /// Stop accepting, close every connection with 1001, and exit after the drain.
    Shutdown,
}

/// What wakes a sleeping shard.
#[derive(Debug)]
pub enum Waker {
    /// Its epoll (through mio).
    Mio(mio::Waker),
    /// An eventfd its ring keeps a read pending on.
    EventFd(nix::sys::eventfd::EventFd),
}

impl Waker {
    fn wake(&self) {
        match self {
            Waker::Mio(w) => {
                let _ = w.wake();
            }
            Waker::EventFd(fd) => {
                let _ = fd.write(1);
            }
        }
    }
}

/// How to reach a shard from any thread.
pub struct Peer {
    /// Its mailbox.
    pub tx: Sender<Mail>,
    /// Wakes its poll or ring.
    pub waker: Waker,
    /// A wake is already pending: further mail needs no extra syscall.
    pub pending: AtomicBool,
}

impl Peer {
    /// Posts `mail` and wakes the shard unless a wake is already pending.
    pub fn send(&self, mail: Mail) {
        if self.tx.send(mail).is_ok() && !self.pending.swap(true, Ordering::AcqRel) {
            self.waker.wake();
        }
    }
}

/// Output for one connection: borrowed slices (copied only if they must wait) or a shared frame
/// (queued by reference).
pub enum Out<'a> {
    /// Header and payload, written together with one writev.
    Slices(&'a [&'a [u8]]),
    /// An encoded frame shared with other connections.
    Shared(&'a Bytes),
}

/// Writes as much of `data` as the socket takes; returns how much that was.
fn write_some(w: &mut impl Write, data: &[u8]) -> io::Result<usize> {
    let mut done = 0;
    while done < data.len() {
        match w.write(&data[done..]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// Connection storage and the write path.
pub struct Io {
    /// The connections.
    pub conns: Slab<Conn>,
    /// Generation counter per slot, bumped on every reuse.
    pub generations: Vec<u16>,
    /// Output for the connection whose input is being processed, written once at the end.
    pub cork: Vec<u8>,
    /// That connection.
    pub corked: Option<usize>,
    /// Counters.
    pub stats: Arc<ShardStats>,
    /// Write-queue limit in bytes.
    pub limit: usize,
    /// Slots to reap at the end of the iteration.
    pub dead: Vec<usize>,
    /// Slots with output gathered this iteration, written by [`Io::flush_dirty`].
    pub dirty: Vec<usize>,
    /// Under io_uring: sends in flight and entries waiting for submission. `None` under epoll,
    /// where output is written with syscalls at once.
    pub uring: Option<UringIo>,
}

/// Gathered output past this size is written at once rather than at the end of the iteration.
const FLUSH_AT: usize = 64 << 10;
/// io_uring: corks up to this size are copied into a send of their own size rather than moved.
const COPIED_SEND_MAX: usize = 4 << 10;

impl Io {
    /// The slot of a live connection with this id on this shard.
    pub fn lookup(&self, shard: u16, id: ConnId) -> Option<usize> {
        if id.shard() != shard {
            return None;
        }
        self.live(id.slot(), id.generation())
    }

    /// `slot` if it still holds the connection of `generation` and that connection is not
    /// ending at once (dead).
    pub fn live(&self, slot: u32, generation: u16) -> Option<usize> {
        let slot = slot as usize;
        let conn = self.conns.get(slot)?;
        (conn.generation == generation && !conn.dead).then_some(slot)
    }

    /// Writes `out` to `slot`: into the cork when it is the connection being processed, else
    /// into its write queue, to be written with the other output of this loop iteration in one
    /// writev (a burst of publishes costs each subscriber one syscall, not one per message).
    /// A connection whose earlier output the socket already refused is a slow consumer once its
    /// queue is past the limit: it is closed instead.
    pub fn output(&mut self, slot: usize, out: Out<'_>) {
        if self.corked == Some(slot) {
            match out {
                Out::Slices(parts) => parts.iter().for_each(|p| self.cork.extend_from_slice(p)),
                Out::Shared(b) => self.cork.extend_from_slice(b),
            }
            return;
        }
        let Some(conn) = self.conns.get_mut(slot) else {
            return;
        };
        if conn.dead {
            return;
        }
        // Backed up: the socket refused output (epoll: a short write; io_uring: a short send,
        // or a send the kernel has held for a whole round).
        let backed_up = conn.backlogged
            || (conn.sending
                && self
                    .uring
                    .as_ref()
                    .is_some_and(|r| r.stalled(conn.send_key)));
        if backed_up && conn.queued() > self.limit {
            self.kill(slot, Why::SlowConsumer, CloseCode::POLICY);
            return;
        }
        let wq = conn.wq.get_or_insert_with(Box::default);
        let was_empty = wq.is_empty();
        let added: usize = match out {
            Out::Slices(parts) => parts
                .iter()
                .map(|p| {
                    wq.push_slice(p);
                    p.len()
                })
                .sum(),
            Out::Shared(b) => {
                wq.push_bytes(b.clone());
                b.len()
            }
        };
        let pending = wq.len();
        ShardStats::add(&self.stats.write_queue_bytes, added as u64);
        if conn.backlogged {
            // The writable event will flush it.
            return;
        }
        if was_empty {
            self.dirty.push(slot);
        }
        if pending >= FLUSH_AT {
            self.drain(slot);
        }
    }

    /// Writes the output gathered this iteration for every connection that has some.
    pub fn flush_dirty(&mut self) {
        let mut dirty = std::mem::take(&mut self.dirty);
        for slot in dirty.drain(..) {
            if self
                .conns
                .get(slot)
                .is_some_and(|c| !c.backlogged && !c.sending && c.queued() > 0)
            {
                self.drain(slot);
            }
        }
        self.dirty = dirty;
    }

    /// Writes the cork to the connection it belongs to and resets it.
    pub fn flush_cork(&mut self) {
        let Some(slot) = self.corked.take() else {
            return;
        };
        if self.cork.is_empty() {
            return;
        }
        if self.uring.is_some() && self.send_cork_ring(slot) {
            return;
        }
        let cork = std::mem::take(&mut self.cork);
        match self.conns.get_mut(slot) {
            // epoll, nothing queued ahead of it: write straight from the cork, queue only the
            // rest.
            Some(conn) if self.uring.is_none() && !conn.dead && conn.queued() == 0 => {
                match write_some(&mut conn.sock, &cork) {
                    Ok(written) => {
                        ShardStats::add(&self.stats.bytes_out, written as u64);
                        if written < cork.len() {
                            conn.wq
                                .get_or_insert_with(Box::default)
                                .push_slice(&cork[written..]);
                            conn.backlogged = true;
                            ShardStats::add(
                                &self.stats.write_queue_bytes,
                                (cork.len() - written) as u64,
                            );
                        }
                    }
                    Err(_) => self.kill(slot, Why::Io, CloseCode(1006)),
                }
            }
            _ => self.output(slot, Out::Slices(&[&cork])),
        }
        self.cork = cork;
        self.cork.clear();
        // A huge echo must not pin its buffer forever.
        if self.cork.capacity() > 1 << 20 {
            self.cork = Vec::with_capacity(64 << 10);
        }
    }

    /// io_uring: when nothing is ahead of it, the cork's bytes become the send itself and this
    /// returns true; otherwise the caller queues them. A small cork is copied into a buffer of
    /// its own size, so the memory held by sends in flight follows their bytes (a burst of
    /// handshake answers does not hold a cork-sized buffer each); a large one moves whole, and
    /// a spare buffer takes its place.
    fn send_cork_ring(&mut self, slot: usize) -> bool {
        let (Some(conn), Some(ring)) = (self.conns.get_mut(slot), self.uring.as_mut()) else {
            return false;
        };
        if conn.dead || conn.has_output() {
            return false;
        }
        let cork = if self.cork.len() <= COPIED_SEND_MAX {
            let copy = self.cork.clone();
            self.cork.clear();
            copy
        } else {
            std::mem::replace(&mut self.cork, ring.spare_buffer())
        };
        conn.sending = true;
        let fd = conn.sock.as_raw_fd();
        conn.send_key = ring.send(slot as u32, conn.generation, fd, cork, Vec::new());
        true
    }

    /// io_uring: hands the queue to the kernel unless a send is already in flight (its
    /// completion comes back here).
    fn drain_ring(&mut self, slot: usize) {
        let (Some(conn), Some(ring)) = (self.conns.get_mut(slot), self.uring.as_mut()) else {
            return;
        };
        if conn.dead || conn.sending {
            return;
        }
        if let Some(wq) = conn.wq.as_mut().filter(|q| !q.is_empty()) {
            let chunks = wq.take_chunks(super::writeq::MAX_IOV);
            let taken: usize = chunks.iter().map(|c| c.len()).sum();
            ShardStats::sub(&self.stats.write_queue_bytes, taken as u64);
            conn.sending = true;
            let fd = conn.sock.as_raw_fd();
            conn.send_key = ring.send(slot as u32, conn.generation, fd, Vec::new(), chunks);
            return;
        }
        conn.wq = None;
        conn.backlogged = false;
        if let Some((why, code)) = conn.ending {
            self.kill(slot, why, code);
        }
    }

    /// io_uring: a send's completion. A short send goes on from where it stopped; a finished
    /// one lets the queue move, or ends a connection that was only waiting for its output.
    pub fn on_sent(&mut self, key: usize, result: i32) {
        let Some(sent) = self.uring.as_mut().map(|ring| ring.complete(key, result)) else {
            return;
        };
        match sent {
            Sent::Stale => {}
            Sent::Partial {
                slot,
                generation,
                written,
            } => {
                ShardStats::add(&self.stats.bytes_out, written as u64);
                let live = self.live(slot, generation);
                let Some(ring) = self.uring.as_mut() else {
                    return;
                };
                if let Some(live) = live {
                    self.conns[live].backlogged = true;
                    ring.resume(key);
                    return;
                }
                // Gone or dying (its descriptor may soon name another socket): drop the rest.
                ring.release(key);
                if let Some(c) = self.conns.get_mut(slot as usize) {
                    if c.generation == generation {
                        c.sending = false;
                    }
                }
            }
            Sent::Done {
                slot,
                generation,
                written,
                failed,
            } => {
                ShardStats::add(&self.stats.bytes_out, written as u64);
                let slot = slot as usize;
                let Some(c) = self.conns.get_mut(slot) else {
                    return;
                };
                if c.generation != generation {
                    return;
                }
                c.sending = false;
                if failed {
                    self.kill(slot, Why::Io, CloseCode(1006));
                } else {
                    self.drain_ring(slot);
                }
            }
        }
    }

    /// Tries to drain `slot`'s write queue (on a writable event). Frees the queue once empty and
    /// finishes a connection that was only waiting for its output.
    pub fn drain(&mut self, slot: usize) {
        if self.uring.is_some() {
            self.drain_ring(slot);
            return;
        }
        let Some(conn) = self.conns.get_mut(slot) else {
            return;
        };
        if conn.dead {
            return;
        }
        if let Some(wq) = conn.wq.as_mut() {
            let before = wq.len();
            let result = wq.flush_to(&mut conn.sock);
            let after = wq.len();
            ShardStats::sub(&self.stats.write_queue_bytes, (before - after) as u64);
            ShardStats::add(&self.stats.bytes_out, (before - after) as u64);
            match result {
                Ok(true) => {
                    conn.wq = None;
                    conn.backlogged = false;
                }
                Ok(false) => {
                    conn.backlogged = true;
                    return;
                }
                Err(_) => {
                    self.kill(slot, Why::Io, CloseCode(1006));
                    return;
                }
            }
        }
        if let Some((why, code)) = conn.ending {
            self.kill(slot, why, code);
        }
    }

    /// Ends the connection once its output is written (at once if nothing is queued).
    pub fn finish(&mut self, slot: usize, why: Why, code: CloseCode) {
        let Some(conn) = self.conns.get_mut(slot) else {
            return;
        };
        if conn.ending.is_none() {
            conn.ending = Some((why, code));
        }
        if !conn.has_output() && self.corked != Some(slot) {
            self.kill(slot, why, code);
        }
    }

    /// Queues the connection for removal; nothing more is read or written. The first reason
    /// given for its end is the one reported (a peer's close followed by its EOF is a close).
    pub fn kill(&mut self, slot: usize, why: Why, code: CloseCode) {
        let Some(conn) = self.conns.get_mut(slot) else {
            return;
        };
        if conn.dead {
            return;
        }
        conn.dead = true;
        conn.ending.get_or_insert((why, code));
        self.dead.push(slot);
    }
}

/// Everything a shard owns except its poll, apps and read buffer.
pub struct Core {
    /// This shard's index.
    pub shard: u16,
    /// Connections and the write path.
    pub io: Io,
    /// Topic tables.
    pub topics: Topics,
    /// Timers.
    pub timers: TimerWheel,
    /// Every shard's mailbox, this one's included.
    pub peers: Arc<Vec<Peer>>,
    /// Settings.
    pub config: Arc<ServerConfig>,
    /// Protocol settings shared by every connection.
    pub proto: Arc<crate::proto::Config>,
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
            Phase::Handshake { deadline } => Some(*deadline),
            Phase::Open(c) => c.poll_timeout(),
        };
        // A connection that is only flushing its last bytes gets the close timeout to do it.
        if conn.ending.is_some() {
            let flush_by = self.now + self.config.close_timeout_ms;
            deadline = Some(deadline.map_or(flush_by, |d| d.min(flush_by)));
        }
        if let Some(t) = deadline {
            let tick = self.timers.tick_of(t);
            if conn.timer_tick == NO_TIMER || tick < conn.timer_tick {
                conn.timer_tick = self.timers.schedule(slot as u32, t);
            }
        }
    }

    /// Delivers a shared frame to this shard's subscribers of `topic`; returns how many.
    pub fn publish_local(&mut self, topic: &str, frame: &SharedFrame) -> usize {
        let mut delivered = 0;
        for &Sub { slot, generation } in self.topics.subscribers(topic) {
            let slot = slot as usize;
            let ok = self.io.conns.get_mut(slot).is_some_and(|c| {
                c.generation == generation && !c.dead && c.proto().is_some_and(|p| p.can_send())
            });
            if ok {
                self.io.output(slot, Out::Shared(frame.bytes()));
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
        if !conn.proto().is_some_and(|p| p.can_send()) {
            return Err(SendError::Closing);
        }
        self.io.output(slot, Out::Shared(frame.bytes()));
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
    }
}

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
