//! Connection storage and the write path: the cork for the connection being processed,
//! write queues for the rest, gathered and written once per loop iteration; slow consumers
//! closed past the write-queue limit.

use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::sync::Arc;

use bytes::Bytes;
use slab::Slab;

use super::app::Why;
use super::conn::Conn;
use super::id::ConnId;
use super::metrics::ShardStats;
use super::uring::sends::{Sent, UringIo};
use crate::proto::CloseCode;

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
