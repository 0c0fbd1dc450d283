//! The io_uring half of the write path: the cork becomes a send when nothing is ahead of it,
//! a write queue is handed to the kernel as one send at a time, and a send's completion lets
//! the queue move (or resumes a short send, or ends a connection that only waited for it).

use std::os::fd::AsRawFd;

use super::super::app::Why;
use super::super::metrics::ShardStats;
use super::super::write::Io;
use super::sends::Sent;
use crate::proto::CloseCode;

/// Corks up to this size are copied into a send of their own size rather than moved.
const COPIED_SEND_MAX: usize = 4 << 10;

impl Io {
    /// io_uring: when nothing is ahead of it, the cork's bytes become the send itself and this
    /// returns true; otherwise the caller queues them. A small cork is copied into a buffer of
    /// its own size, so the memory held by sends in flight follows their bytes (a burst of
    /// handshake answers does not hold a cork-sized buffer each); a large one moves whole, and
    /// a spare buffer takes its place.
    pub(in super::super) fn send_cork_ring(&mut self, slot: usize) -> bool {
        let (Some(conn), Some(ring)) = (self.conns.get_mut(slot), self.sink.ring()) else {
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
        conn.ring.send_key = ring.send(slot as u32, conn.generation, fd, cork, Vec::new());
        true
    }

    /// io_uring: hands the queue to the kernel unless a send is already in flight (its
    /// completion comes back here).
    pub(in super::super) fn drain_ring(&mut self, slot: usize) {
        let (Some(conn), Some(ring)) = (self.conns.get_mut(slot), self.sink.ring()) else {
            return;
        };
        if conn.dead || conn.sending {
            return;
        }
        if let Some(wq) = conn.wq.as_mut().filter(|q| !q.is_empty()) {
            let chunks = wq.take_chunks(super::super::writeq::MAX_IOV);
            let taken: usize = chunks.iter().map(|c| c.len()).sum();
            ShardStats::sub(&self.stats.write_queue_bytes, taken as u64);
            conn.sending = true;
            let fd = conn.sock.as_raw_fd();
            conn.ring.send_key = ring.send(slot as u32, conn.generation, fd, Vec::new(), chunks);
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
        let Some(sent) = self.sink.ring().map(|ring| ring.complete(key, result)) else {
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
                let Some(ring) = self.sink.ring() else {
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
}
