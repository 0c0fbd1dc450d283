//! Connection storage and the write path: the cork for the connection being processed,
//! write queues for the rest, gathered and written once per loop iteration; slow consumers
//! closed past the write-queue limit.

use std::sync::Arc;

use bytes::Bytes;
use slab::Slab;

use super::app::Why;
use super::conn::Conn;
use super::id::ConnId;
use super::metrics::ShardStats;
use super::tls::Sessions;
use super::uring::sends::UringIo;
use crate::proto::CloseCode;

/// Output for one connection: borrowed slices (copied only if they must wait) or a shared frame
/// (queued by reference).
pub enum Out<'a> {
    /// Header and payload, written together with one writev.
    Slices(&'a [&'a [u8]]),
    /// An encoded frame shared with other connections.
    Shared(&'a Bytes),
}

/// Connection storage and the write path.
pub struct Io {
    /// The connections.
    pub conns: Slab<Conn>,
    /// Generation counter per slot, bumped on every reuse.
    pub generations: Vec<u32>,
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
    /// How long gathered output may wait for more before it is written (`write_delay_ms`).
    pub delay_ms: u64,
    /// With a delay: when the oldest gathered output is due (shard milliseconds).
    pub flush_due: Option<u64>,
    /// The half of the write path that differs by backend.
    pub sink: Sink,
    /// wss://: each connection's TLS session; output is encrypted on its way into the cork's
    /// write or a write queue, so both backends write ciphertext like any other bytes.
    pub tls: Option<Box<Sessions>>,
}

/// Where output goes: the backend's half of the write path. The shared half (the cork, the
/// write queues, gathering per iteration, the slow-consumer check, ending connections) is
/// [`Io`]; each backend's half is an `impl Io` in its own module: `epoll.rs` (writes with
/// syscalls), `uring/write.rs` (sends submitted to the ring, their completions).
#[derive(Debug)]
pub enum Sink {
    /// epoll: output is written with `write`/`writev` at once.
    Syscalls,
    /// io_uring: sends in flight, entries waiting for submission, and the descriptors of
    /// ended connections waiting for those entries to be submitted.
    Ring(Box<UringIo>),
}

impl Sink {
    /// Whether the send in flight under `key` has been held by the kernel for a whole round
    /// (the socket has no room): the connection counts as backed up. Never under epoll, where
    /// a short write marks the connection backlogged instead.
    fn stalled(&self, key: u32) -> bool {
        match self {
            Sink::Syscalls => false,
            Sink::Ring(ring) => ring.stalled(key),
        }
    }

    /// The io_uring state, under io_uring.
    pub fn ring(&mut self) -> Option<&mut UringIo> {
        match self {
            Sink::Syscalls => None,
            Sink::Ring(ring) => Some(ring),
        }
    }

    /// Closes an ended connection's socket. Under io_uring it is taken out of the file table
    /// and shut down (which completes the operations still pending on it), and its descriptor
    /// is kept until the entries already gathered for it have been submitted, so that no entry
    /// can name a descriptor number the process has meanwhile reused.
    pub fn release(&mut self, slot: usize, conn: Conn, stats: &ShardStats) {
        match self {
            Sink::Syscalls => drop(conn),
            Sink::Ring(ring) => {
                if conn.ring.watch == super::uring::Watch::Parked {
                    ShardStats::sub(&stats.recv_parked, 1);
                }
                ring.bury(slot as u32, conn.sock);
            }
        }
    }
}

/// Gathered output past this size is written at once rather than at the end of the iteration.
const FLUSH_AT: usize = 64 << 10;

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
    pub fn live(&self, slot: u32, generation: u32) -> Option<usize> {
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
        if let Some(tls) = self.tls.as_deref_mut().filter(|t| t.has(slot)) {
            if self.conns.get(slot).is_none_or(|c| c.dead) {
                return;
            }
            // Encrypted for this connection: a shared frame, encoded once, becomes this
            // connection's own ciphertext.
            let mut sealed = tls.take_scratch();
            let ok = match out {
                Out::Slices(parts) => tls.seal(slot, parts, &mut sealed),
                Out::Shared(b) => tls.seal(slot, &[b], &mut sealed),
            };
            if ok {
                self.queue(slot, Out::Slices(&[&sealed]));
            } else {
                self.kill(slot, Why::Io, CloseCode(1006));
            }
            if let Some(tls) = self.tls.as_deref_mut() {
                tls.restore(sealed);
            }
            return;
        }
        self.queue(slot, out);
    }

    /// Queues bytes ready for the socket (after encryption, for TLS) on `slot`.
    fn queue(&mut self, slot: usize, out: Out<'_>) {
        let Some(conn) = self.conns.get_mut(slot) else {
            return;
        };
        if conn.dead {
            return;
        }
        // Backed up: the socket refused output (epoll: a short write; io_uring: a short send,
        // or a send the kernel has held for a whole round).
        let backed_up = conn.backlogged || (conn.sending && self.sink.stalled(conn.ring.send_key));
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

    /// Writes the gathered output at the end of an iteration: at once without a write delay;
    /// with one, once the oldest output has waited `delay_ms` (else the loop wakes for it:
    /// [`Io::flush_wait`]).
    pub fn flush_gathered(&mut self, now: u64) {
        if self.delay_ms == 0 || self.dirty.is_empty() {
            self.flush_due = None;
            return self.flush_dirty();
        }
        let due = *self.flush_due.get_or_insert(now + self.delay_ms);
        if now >= due {
            self.flush_due = None;
            self.flush_dirty();
        }
    }

    /// How long the loop may sleep before gathered output is due.
    pub fn flush_wait(&self, now: u64) -> Option<u64> {
        self.flush_due.map(|due| due.saturating_sub(now))
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

    /// Writes the cork to the connection it belongs to and resets it: at once when nothing is
    /// queued ahead of it (epoll: a write, the rest queued; io_uring: the cork becomes a send),
    /// else behind the queue.
    pub fn flush_cork(&mut self) {
        let Some(slot) = self.corked.take() else {
            return;
        };
        if let Some(tls) = self.tls.as_deref_mut().filter(|t| t.has(slot)) {
            // The cork becomes its ciphertext, led by whatever rustls has to send first (its
            // handshake records, or an alert), so this runs even when the cork is empty.
            let mut sealed = tls.take_scratch();
            let ok = tls.seal(slot, &[&self.cork], &mut sealed);
            std::mem::swap(&mut self.cork, &mut sealed);
            tls.restore(sealed);
            if !ok {
                self.cork.clear();
                self.kill(slot, Why::Io, CloseCode(1006));
            }
        }
        if self.cork.is_empty() {
            return;
        }
        let sent = match self.sink {
            Sink::Syscalls => self.write_cork(slot),
            Sink::Ring(_) => self.send_cork_ring(slot),
        };
        if !sent {
            let cork = std::mem::take(&mut self.cork);
            self.queue(slot, Out::Slices(&[&cork]));
            self.cork = cork;
        }
        self.cork.clear();
        // A huge echo must not pin its buffer forever.
        if self.cork.capacity() > 1 << 20 {
            self.cork = Vec::with_capacity(64 << 10);
        }
    }

    /// Tries to drain `slot`'s write queue (after the iteration, on a writable event or a
    /// send's completion). Frees the queue once empty and finishes a connection that was only
    /// waiting for its output.
    pub fn drain(&mut self, slot: usize) {
        match self.sink {
            Sink::Syscalls => self.drain_syscalls(slot),
            Sink::Ring(_) => self.drain_ring(slot),
        }
    }

    /// Ends the connection once its output is written (at once if nothing is queued).
    pub fn finish(&mut self, slot: usize, why: Why, code: CloseCode) {
        if self.corked != Some(slot) {
            self.close_notify(slot);
        }
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

    /// wss://: queues TLS `close_notify` behind the connection's output, so that the peer sees
    /// the end of the stream rather than a truncation (sent once; nothing for plain
    /// connections or after a fatal alert).
    fn close_notify(&mut self, slot: usize) {
        let Some(tls) = self.tls.as_deref_mut().filter(|t| t.has(slot)) else {
            return;
        };
        if self.conns.get(slot).is_none_or(|c| c.dead) {
            return;
        }
        tls.close_notify(slot);
        let mut sealed = tls.take_scratch();
        if tls.seal(slot, &[], &mut sealed) && !sealed.is_empty() {
            self.queue(slot, Out::Slices(&[&sealed]));
        }
        if let Some(tls) = self.tls.as_deref_mut() {
            tls.restore(sealed);
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
